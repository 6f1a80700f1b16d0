"""Pass ``flatten_gemm`` alone: Flatten / Reshape / Transpose between a feature map and a Gemm
folded into a permutation of the Gemm's weights (MTCNN's ``permute(0, 3, 2, 1)`` + flatten), so
the Gemm reads the (C, H, W) map; equal to ONNX Runtime in float."""
import numpy as np
import pytest
from onnx import helper

from nibble.host.frontend.onnx import import_graph
from nibble.host.ir import CompileError
from nibble.host.passes import flatten_gemm, fuse_epilogue
from onnx_models import assert_graph_matches_ort, conv, ints, model

SEED = 53


def _head(rng, layout, n_out=5, c=3, h=4, w=5):
    """conv (2 → c channels, h x w) → layout nodes → Gemm → y."""
    c0, inits = conv(rng, "c0", "x", "t0", 2, c, pads=[1, 1, 1, 1])
    nodes, prev, raw = [c0], "t0", []
    for i, (op, attrs) in enumerate(layout):
        out = f"t{i + 1}"
        ins = [prev]
        if op == "Reshape":
            raw.append(ints(f"shape{i}", [0, -1]))
            ins.append(f"shape{i}")
        nodes.append(helper.make_node(op, ins, [out], name=f"L{i}", **attrs))
        prev = out
    inits.update({"gw": rng.normal(size=(n_out, c * h * w)), "gb": rng.normal(size=n_out)})
    nodes.append(helper.make_node("Gemm", [prev, "gw", "gb"], ["y"], name="fc", transB=1))
    return model(nodes, inits, inputs={"x": ("N", 2, h, w)}, raw=raw)


@pytest.mark.parametrize("layout", [
    [("Flatten", {})],
    [("Reshape", {})],
    [("Transpose", {"perm": [0, 3, 2, 1]}), ("Reshape", {})],          # MTCNN RNet / ONet
    [("Transpose", {"perm": [0, 2, 3, 1]}), ("Flatten", {})],          # NHWC flatten
    [("Transpose", {"perm": [0, 2, 1, 3]}), ("Transpose", {"perm": [0, 1, 3, 2]}), ("Flatten", {})],
])
def test_gemm_reads_the_map_with_permuted_weights(layout):
    rng = np.random.default_rng(SEED)
    m = _head(rng, layout)
    g = import_graph(m)
    h = flatten_gemm(g).validate()
    assert [n.op for n in h.nodes] == ["Conv", "Gemm"] and h.node("fc").inputs == ["t0"]
    assert h.node("fc").conv.w.shape == (5, 3, 4, 5) and g.node("fc").conv.w.shape == (5, 60, 1, 1)
    assert h.node("fc").conv.names == ["fc", *(f"L{i}" for i in range(len(layout)))]
    assert_graph_matches_ort(h, m, rng.normal(size=(3, 2, 4, 5)))
    assert_graph_matches_ort(g, m, rng.normal(size=(2, 2, 4, 5)))        # the argument is unchanged


def test_two_gemms_share_one_flatten():
    rng = np.random.default_rng(SEED)
    c0, inits = conv(rng, "c0", "x", "t0", 2, 3)
    inits.update({"w1": rng.normal(size=(4, 12)), "w2": rng.normal(size=(2, 12))})
    nodes = [c0, helper.make_node("Transpose", ["t0"], ["tt"], name="tr", perm=[0, 3, 2, 1]),
             helper.make_node("Flatten", ["tt"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "w1"], ["y1"], name="g1", transB=1),
             helper.make_node("Gemm", ["f", "w2"], ["y2"], name="g2", transB=1)]
    m = model(nodes, inits, inputs={"x": ("N", 2, 4, 4)}, outputs=["y1", "y2"])
    h = flatten_gemm(import_graph(m)).validate()
    assert [n.op for n in h.nodes] == ["Conv", "Gemm", "Gemm"]
    assert_graph_matches_ort(h, m, rng.normal(size=(2, 2, 4, 4)))


def test_flattened_graph_output():
    rng = np.random.default_rng(SEED)
    c0, inits = conv(rng, "c0", "x", "t0", 2, 3)
    m = model([c0, helper.make_node("Flatten", ["t0"], ["y"], name="flat")], inits)
    h = flatten_gemm(import_graph(m)).validate()
    assert [n.op for n in h.nodes] == ["Conv"] and h.outputs[0].tensor == "t0" and h.outputs[0].flatten
    assert_graph_matches_ort(h, m, rng.normal(size=(2, 2, 6, 6)))
    m = model([c0, helper.make_node("Transpose", ["t0"], ["t1"], name="tr", perm=[0, 2, 3, 1]),
               helper.make_node("Flatten", ["t1"], ["y"], name="flat")], inits)
    with pytest.raises(CompileError, match=r"node 'tr' \(Transpose\): a Transpose is supported only in front of a Gemm, "
                                           r"not in front of the graph output 'y'"):
        flatten_gemm(import_graph(m))


def test_layout_read_by_something_else_is_refused():
    rng = np.random.default_rng(SEED)
    c0, inits = conv(rng, "c0", "x", "t0", 2, 3)
    m = model([c0, helper.make_node("Transpose", ["t0"], ["t1"], name="tr", perm=[0, 1, 3, 2]),
               helper.make_node("MaxPool", ["t1"], ["y"], name="mp", kernel_shape=[2, 2])], inits)
    with pytest.raises(CompileError, match=r"node 'mp' \(MaxPool\): MaxPool after the Transpose 'tr' is not supported"):
        flatten_gemm(fuse_epilogue(import_graph(m)))
    m = model([c0, helper.make_node("Transpose", ["t0"], ["t1"], name="tr", perm=[0, 1, 3, 2]),
               helper.make_node("Conv", ["t1", "w9"], ["y"], name="c1")], {**inits, "w9": rng.normal(size=(2, 3, 3, 3))})
    with pytest.raises(CompileError, match=r"node 'tr' \(Transpose\): a Transpose is supported only in front of a Gemm "
                                           r"\(or a graph output\); its output is read by node 'c1' \(Conv\)"):
        flatten_gemm(import_graph(m))
