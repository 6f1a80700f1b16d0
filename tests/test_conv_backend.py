"""ONNX's own backend node tests for Conv and ConvTranspose (the generators the ``onnx`` wheel
ships), with the weights made initializers: each is either refused with a :class:`CompileError`
(1-D and 3-D kernels, dilations, grouped transposed convolutions), or compiled, and then the
golden device's output equals ONNX's reference evaluator run on the device's int8 input with
the layer's INQ weights, within one output LSB (the requantization's rounding, ARITHMETIC §4.5)
— never accepted and computed differently. The accepted cases are listed: a regression that
refuses one fails."""
import warnings

import numpy as np
import pytest
from onnx import helper, numpy_helper

from nibble.host.compiler import compile_graph
from nibble.host.driver import Device
from nibble.host.ir import CompileError
from nibble.sim.golden import dequantize_features, inq_decode


def _cases():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from onnx.backend.test.case.node import collect_testcases
        return [c for c in collect_testcases(None)
                if [n.op_type for n in c.model.graph.node] in (["Conv"], ["ConvTranspose"])]


CASES = {c.name: c for c in _cases()}
#: The cases that must compile.
ACCEPTED = {"test_basic_conv_with_padding", "test_basic_conv_without_padding", "test_conv_with_strides_padding",
            "test_conv_with_strides_no_padding", "test_conv_with_strides_and_asymmetric_padding",
            "test_conv_with_autopad_same", "test_convtranspose", "test_convtranspose_output_shape",
            "test_convtranspose_pad", "test_convtranspose_kernel_shape", "test_convtranspose_pads",
            "test_convtranspose_autopad_same"}


def _with_initializers(case, weights=None):
    m = case.model
    inputs, _ = case.data_sets[0]
    g = m.graph
    values = list(inputs[1:])
    if weights is not None:
        values[0] = weights
    inits = [numpy_helper.from_array(np.asarray(v, np.float32), i.name) for i, v in zip(g.input[1:], values)]
    graph = helper.make_graph(list(g.node), g.name, [g.input[0]], list(g.output), inits)
    return helper.make_model(graph, opset_imports=list(m.opset_import), ir_version=m.ir_version)


def test_the_wheel_ships_the_cases():
    assert ACCEPTED <= set(CASES) and len(CASES) >= 17, sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_backend_case(name):
    case = CASES[name]
    inputs, (want,) = case.data_sets[0]
    x = np.asarray(inputs[0], np.float64)
    model = _with_initializers(case)
    try:
        g, program = compile_graph(model, x)
    except CompileError as e:
        assert name not in ACCEPTED, f"{name} refused: {e}"
        return
    assert name in ACCEPTED, f"{name} compiled: add it to ACCEPTED"
    from onnx.reference import ReferenceEvaluator
    op, = [n.conv for n in g.nodes if n.conv is not None]
    d = Device("golden")
    d.load(program)
    out = d.run(x)
    xq = dequantize_features(d.quantize(x), program.input_q)
    inq_model = _with_initializers(case, inq_decode(op.codes, op.n2))
    ref = ReferenceEvaluator(inq_model).run(None, {model.graph.input[0].name: xq.astype(np.float32)})[0]
    assert out.shape == want.shape == ref.shape
    assert np.abs(out - ref).max() <= 2.0 ** -program.output_q, name
