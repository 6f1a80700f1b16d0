"""Pass ``calibrate`` alone: the feature exponent of every tensor of a branching graph from the
float run with the INQ weights (ARITHMETIC §4.3); several inputs; the errors."""
import numpy as np
import pytest
from onnx import helper

from nibble.host.compiler import build_graph
from nibble.host.frontend.onnx import import_graph
from nibble.host.graph import run_graph
from nibble.host.ir import CompileError
from nibble.host.passes import calibrate, inq
from nibble.sim import golden
from onnx_models import conv, model

SEED = 67


def _branching(rng):
    c0, i0 = conv(rng, "c0", "x", "t", 2, 4)
    c1, i1 = conv(rng, "c1", "r", "y1", 4, 2, k=1)
    c2, i2 = conv(rng, "c2", "r", "s", 4, 3, k=1)
    nodes = [c0, helper.make_node("Relu", ["t"], ["r"], name="relu"), c1, c2,
             helper.make_node("Tanh", ["s"], ["y2"], name="tanh")]
    return inq(build_graph(model(nodes, {**i0, **i1, **i2}, outputs=["y1", "y2"])))


def test_exponents_of_every_tensor():
    rng = np.random.default_rng(SEED)
    g = _branching(rng)
    x = rng.normal(size=(20, 2, 6, 6))
    h = calibrate(g, x)
    vals = run_graph(g, x, weights="inq")
    assert h.tensors["x"].q == golden.feature_q(np.abs(x).max())
    for name in ("c0", "c1"):
        n = h.node(name)
        assert n.conv.q_out == h.tensors[n.outputs[0]].q == golden.feature_q(np.abs(vals[n.outputs[0]]).max())
        assert n.conv.q_in == h.tensors[n.inputs[0]].q and n.conv.q_act is None
    c2 = h.node("c2").conv
    assert (c2.q_out, c2.q_act, c2.q_in) == (golden.ACT_Q_OUT, golden.ACT_Q_IN, h.node("c0").conv.q_out)
    assert g.tensors["x"].q is None                                   # the argument is unchanged


def test_several_inputs():
    rng = np.random.default_rng(SEED)
    c0, i0 = conv(rng, "c0", "a", "y1", 2, 2)
    c1, i1 = conv(rng, "c1", "b", "y2", 3, 2)
    g = inq(build_graph(model([c0, c1], {**i0, **i1}, inputs={"a": ("N", 2, 5, 5), "b": ("N", 3, 5, 5)},
                              outputs=["y1", "y2"])))
    a, b = rng.normal(size=(4, 2, 5, 5)), 10 * rng.normal(size=(4, 3, 5, 5))
    for calib in ({"a": a, "b": b}, [a, b]):
        h = calibrate(g, calib)
        assert (h.tensors["a"].q, h.tensors["b"].q) == (golden.feature_q(np.abs(a).max()),
                                                          golden.feature_q(np.abs(b).max()))
    with pytest.raises(CompileError, match="calibration data for input\\(s\\) b is missing"):
        calibrate(g, {"a": a})
    with pytest.raises(CompileError, match="different batch sizes"):
        calibrate(g, [a, b[:2]])
    with pytest.raises(CompileError, match="calibration data for input 'b' has shape \\(2, 5, 5\\)"):
        calibrate(g, [a, a])
    with pytest.raises(CompileError, match="the model has 2 inputs"):
        calibrate(g, a)


def test_only_layers_are_calibrated():
    rng = np.random.default_rng(SEED)
    c0, i0 = conv(rng, "c0", "x", "t", 2, 4)
    g = inq(import_graph(model([c0, helper.make_node("Relu", ["t"], ["y"], name="r")], i0)))
    with pytest.raises(CompileError, match=r"node 'r' \(Relu\): calibration needs a graph of layers only"):
        calibrate(g, rng.normal(size=(2, 2, 6, 6)))
