"""ONNX's own backend node tests for Resize (the generators the ``onnx`` wheel ships), with every
input but the image made an initializer: each is either refused with a :class:`CompileError`, or
compiled, and then the golden device's output equals ONNX's reference evaluator on the device's
int8 input exactly (a copy adds no rounding) and ONNX's expected output within the input's
quantization — never accepted and computed differently."""
import warnings

import numpy as np
import pytest
from onnx import helper, numpy_helper

from nibble.host.compiler import compile_model
from nibble.host.driver import Device
from nibble.host.ir import CompileError
from nibble.sim.golden import dequantize_features


def _cases():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from onnx.backend.test.case.node import collect_testcases
        return collect_testcases("Resize")


CASES = {c.name: c for c in _cases()}
#: The cases that must compile (nearest, the same integer factor on both image axes).
#: (The other nearest cases resize by unequal or fractional factors, or their coordinate mode does
#: not replicate pixels at their sizes: refused.)
ACCEPTED = {"test_resize_upsample_sizes_nearest_not_smaller"}


def _with_initializers(case):
    m = case.model
    inputs, _ = case.data_sets[0]
    g = m.graph
    image = g.input[0]
    inits = [numpy_helper.from_array(np.asarray(v), i.name) for i, v in zip(g.input[1:], inputs[1:])]
    graph = helper.make_graph(list(g.node), g.name, [image], list(g.output), inits)
    return helper.make_model(graph, opset_imports=list(m.opset_import), ir_version=m.ir_version)


@pytest.mark.parametrize("name", sorted(CASES))
def test_backend_case(name):
    case = CASES[name]
    inputs, (want,) = case.data_sets[0]
    x = np.asarray(inputs[0], np.float64)
    model = _with_initializers(case)
    try:
        program = compile_model(model, x)
    except CompileError as e:
        assert name not in ACCEPTED, f"{name} refused: {e}"
        return
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
