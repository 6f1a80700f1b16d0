"""Pass ``fold_pad`` alone: zero Pads folded into the padding of the Conv layers that read them,
equal to ONNX Runtime in float; a Pad anywhere else is refused naming it."""
import numpy as np
import pytest
from onnx import helper

from nibble.host.frontend.onnx import import_graph
from nibble.host.ir import CompileError
from nibble.host.passes import fold_pad
from onnx_models import assert_graph_matches_ort, conv, ints, model

SEED = 43


def _pad(inp, out, pads, name="pad"):
    """A Pad node (ONNX pads: begin of every axis, then end) and its pads initializer."""
    return helper.make_node("Pad", [inp, f"{name}_p"], [out], name=name), ints(f"{name}_p", pads)


def test_pad_into_two_convs_and_pad_of_pad():
    rng = np.random.default_rng(SEED)
    p0, r0 = _pad("x", "xp", [0, 0, 1, 0, 0, 0, 2, 1], "p0")        # top 1, left 0, bottom 2, right 1
    p1, r1 = _pad("xp", "xpp", [0, 0, 0, 1, 0, 0, 0, 1], "p1")
    c0, i0 = conv(rng, "c0", "xp", "y1", 2, 3, pads=[1, 1, 1, 1])
    c1, i1 = conv(rng, "c1", "xpp", "y2", 2, 2, k=1)
    c2, i2 = conv(rng, "c2", "xp", "y3", 2, 2, auto_pad="SAME_UPPER")
    m = model([p0, p1, c0, c1, c2], {**i0, **i1, **i2}, outputs=["y1", "y2", "y3"], raw=[r0, r1])
    g = import_graph(m)
    h = fold_pad(g).validate()
    assert [n.op for n in h.nodes] == ["Conv", "Conv", "Conv"] and [n.op for n in g.nodes][:2] == ["Pad", "Pad"]
    assert h.node("c0").conv.pad == (2, 3, 1, 2) and h.node("c1").conv.pad == (1, 2, 1, 2)
    assert h.node("c0").inputs == ["x"] and h.node("c0").conv.names == ["c0", "p0"]
    assert_graph_matches_ort(h, m, rng.normal(size=(2, 2, 6, 6)))


@pytest.mark.parametrize("reader", ["MaxPool", "output", "ConvTranspose"])
def test_pad_in_front_of_anything_else_is_refused(reader):
    rng = np.random.default_rng(SEED)
    p0, r0 = _pad("x", "xp", [0, 0, 1, 1, 0, 0, 1, 1])
    c0, inits = conv(rng, "c0", "x", "y", 2, 2)
    if reader == "MaxPool":
        nodes, outs = [p0, helper.make_node("MaxPool", ["xp"], ["y"], name="mp", kernel_shape=[2, 2])], ["y"]
        msg = r"read by node 'mp' \(MaxPool\)"
    elif reader == "output":
        nodes, outs, msg = [p0, c0], ["y", "xp"], "read by a graph output"
    else:
        inits = {"w": rng.normal(size=(2, 2, 3, 3))}
        nodes, outs = [p0, helper.make_node("ConvTranspose", ["xp", "w"], ["y"], name="dc")], ["y"]
        msg = r"read by node 'dc' \(ConvTranspose\)"
    with pytest.raises(CompileError, match=r"node 'pad' \(Pad\): zero padding is supported only in front of a Conv.*"
                                           + msg):
        fold_pad(import_graph(model(nodes, inits, outputs=outs, raw=[r0])))
