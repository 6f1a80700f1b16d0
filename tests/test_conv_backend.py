"""ONNX's own backend node tests for Conv and ConvTranspose (the generators the ``onnx`` wheel
ships), with the weights made initializers: each is either refused with a :class:`CompileError`
(1-D and 3-D kernels, dilations, grouped transposed convolutions), or compiled, and then the
golden device's output equals ONNX's reference evaluator run on the device's int8 input with
the layer's INQ weights, within one output LSB (the requantization's rounding, ARITHMETIC §4.5)
— never accepted and computed differently. The accepted cases are listed: a regression that
refuses one fails."""
import numpy as np
import pytest

from nibble.host.driver import Device
from nibble.host.passes.fold_taps import unfold_op
from nibble.sim.golden import dequantize_features, inq_decode
from tests.onnx_models import backend_cases, backend_model, compile_backend_case


CASES = backend_cases("Conv", "ConvTranspose")
#: The cases that must compile.
ACCEPTED = {"test_basic_conv_with_padding", "test_basic_conv_without_padding", "test_conv_with_strides_padding",
            "test_conv_with_strides_no_padding", "test_conv_with_strides_and_asymmetric_padding",
            "test_conv_with_autopad_same", "test_convtranspose", "test_convtranspose_output_shape",
            "test_convtranspose_pad", "test_convtranspose_kernel_shape", "test_convtranspose_pads",
            "test_convtranspose_autopad_same"}


def test_the_wheel_ships_the_cases():
    assert ACCEPTED <= set(CASES) and len(CASES) >= 17, sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_backend_case(name):
    case = CASES[name]
    got = compile_backend_case(name, case, ACCEPTED)
    if got is None:
        return
    x, want, g, program = got
    model = backend_model(case)
    from onnx.reference import ReferenceEvaluator
    op, = [n.conv for n in g.nodes if n.conv is not None]
    fold = g.tensors[g.inputs[0]].fold              # taps folded into channels: the model's layer back
    op = unfold_op(op, fold) if fold else op
    d = Device("golden")
    d.load(program)
    out = d.run(x)
    xq = dequantize_features(d.quantize(x), program.input_q)
    inq_model = backend_model(case, {1: inq_decode(op.codes, op.n2)})
    ref = ReferenceEvaluator(inq_model).run(None, {model.graph.input[0].name: xq.astype(np.float32)})[0]
    assert out.shape == want.shape == ref.shape
    assert np.abs(out - ref).max() <= 2.0 ** -program.output_q, name
