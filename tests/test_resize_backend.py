"""ONNX's own backend node tests for Resize (the generators the ``onnx`` wheel ships), with every
input but the image made an initializer: each is either refused with a :class:`CompileError`, or
compiled, and then the golden device's output equals ONNX's reference evaluator on the device's
int8 input exactly (a copy adds no rounding) and ONNX's expected output within the input's
quantization — never accepted and computed differently."""
import numpy as np
import pytest

from nibble.host.driver import Device
from nibble.sim.golden import dequantize_features
from tests.onnx_models import backend_cases, backend_model, compile_backend_case

CASES = backend_cases("Resize")
#: The cases that must compile (nearest, the same integer factor on both image axes).
#: (The other nearest cases resize by unequal or fractional factors, or their coordinate mode does
#: not replicate pixels at their sizes: refused.)
ACCEPTED = {"test_resize_upsample_sizes_nearest_not_smaller"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_backend_case(name):
    case = CASES[name]
    got = compile_backend_case(name, case, ACCEPTED)
    if got is None:
        return
    x, want, _, program = got
    model = backend_model(case)
    from onnx.reference import ReferenceEvaluator
    d = Device("golden")
    d.load(program)
    out = d.run(x)
    xq = dequantize_features(d.quantize(x), program.input_q)
    ref = ReferenceEvaluator(model).run(None, {model.graph.input[0].name: xq.astype(np.float32)})[0]
    assert out.shape == want.shape == ref.shape
    assert np.array_equal(out, ref), name
    step = 2.0 ** -program.input_q
    assert np.max(np.abs(out - want)) <= step, name


def test_some_cases_are_accepted():
    """The list of accepted cases is not empty and names real cases."""
    assert ACCEPTED <= set(CASES)
