"""The graph IR (``host/graph``): DAG queries and edits, ``validate``'s invariants, ``summary``,
and the float evaluation against ONNX Runtime on a branching model."""
import numpy as np
import pytest
from onnx import helper

from nibble.host.frontend.onnx import import_graph
from nibble.host.graph import Graph, Node, run_graph
from nibble.host.ir import CompileError, ConvOp
from onnx_models import assert_graph_matches_ort, conv, model

SEED = 31


def _conv_op(name, ci, co, k=1):
    return ConvOp(name=name, w=np.ones((co, ci, k, k)), b=np.zeros(co))


def _two_heads():
    """x → a (conv) → {h1 (conv), h2 (conv)}; outputs h1, h2."""
    g = Graph("two_heads")
    g.add_input("x", (3, 4, 4))
    g.add_node(Node("a", "Conv", ["x"], ["ta"], conv=_conv_op("a", 3, 8)), [(8, 4, 4)])
    g.add_node(Node("h1", "Conv", ["ta"], ["t1"], conv=_conv_op("h1", 8, 2)), [(2, 4, 4)])
    g.add_node(Node("h2", "Conv", ["ta"], ["t2"], conv=_conv_op("h2", 8, 4)), [(4, 4, 4)])
    g.add_output("prob", "t1", ("softmax",))
    g.add_output("reg", "t2")
    return g.validate()


def test_queries():
    g = _two_heads()
    assert [n.name for n in g.consumers("ta")] == ["h1", "h2"]
    assert g.producer("ta").name == "a" and g.producer("x") is None
    assert g.output_tensors() == ["t1", "t2"] and g.is_output("t2") and not g.is_output("ta")
    assert [n.name for n in g.topological_order()] == ["a", "h1", "h2"]
    assert [n.name for n in g.compute_nodes()] == ["a", "h1", "h2"]
    assert g.node("h2").where == "node 'h2' (Conv)" and g.node("h2").layer == "layer 'h2' (Conv)"


def test_topological_order_of_a_shuffled_list():
    g = _two_heads()
    g.nodes = [g.nodes[2], g.nodes[0], g.nodes[1]]
    with pytest.raises(CompileError, match=r"node 'h2' \(Conv\): reads tensor 'ta' before it is written"):
        g.validate()
    g.nodes = g.topological_order()
    assert [n.name for n in g.validate().nodes] == ["a", "h2", "h1"]


def test_copy_is_independent():
    g = _two_heads()
    h = g.copy()
    h.node("a").conv.names.append("relu")
    h.node("a").inputs[0] = "y"
    h.tensors["ta"].q = 3
    h.outputs[0].tail = ()
    assert g.node("a").conv.names == [] and g.node("a").inputs == ["x"] and g.tensors["ta"].q is None
    assert g.outputs[0].tail == ("softmax",)


def test_edits():
    g = _two_heads()
    g.rename_tensor("t2", "reg")
    assert g.node("h2").outputs == ["reg"] and g.outputs[1].tensor == "reg" and g.tensors["reg"].producer == "h2"
    with pytest.raises(CompileError, match="cannot be renamed 'ta': that name is taken"):
        g.rename_tensor("t1", "ta")
    with pytest.raises(CompileError, match=r"node 'a' \(Conv\): cannot be removed, its output 'ta' is still read"):
        g.remove_node(g.node("a"))
    g.outputs = g.outputs[:1]                       # h2 is now dead code
    assert g.prune() == ["h2"] and "reg" not in g.tensors
    g.validate()


@pytest.mark.parametrize("breakage,msg", [
    (lambda g: setattr(g.nodes[1], "name", "a"), "two nodes are named 'a'"),
    (lambda g: g.nodes[1].inputs.__setitem__(0, "nowhere"), r"node 'h1' \(Conv\): reads tensor 'nowhere', which does not"),
    (lambda g: setattr(g.nodes[2], "outputs", ["t1"]), "tensor 't1' is written by node 'h2'"),
    (lambda g: setattr(g.nodes[0], "conv", None), r"node 'a' \(Conv\): a compute node carries a layer"),
    (lambda g: setattr(g.tensors["t1"], "producer", "h2"), r"node 'h1' \(Conv\): its output 't1' does not name it"),
    (lambda g: g.add_output("prob", "t2"), "two graph outputs are named 'prob'"),
    (lambda g: g.add_output("z", "nothing"), "graph output 'z' is tensor 'nothing', which does not exist"),
    (lambda g: setattr(g, "inputs", []), "the graph has no input"),
    (lambda g: g.tensors.__setitem__("orphan", g.tensors["x"].__class__("orphan", (1,))),
     "tensor 'orphan' is neither a graph input nor written by a node"),
])
def test_validate_names_the_broken_invariant(breakage, msg):
    g = _two_heads()
    breakage(g)
    with pytest.raises(CompileError, match=msg):
        g.validate()


def test_add_node_checks():
    g = _two_heads()
    with pytest.raises(CompileError, match=r"node 'b' \(Relu\): reads tensor 'q', which no node writes"):
        g.add_node(Node("b", "Relu", ["q"], ["tb"]), [(1,)])
    with pytest.raises(CompileError, match="tensor 'ta' is written twice"):
        g.add_node(Node("b", "Relu", ["x"], ["ta"]), [(1,)])


def test_summary_lists_nodes_epilogues_shapes_and_tail():
    rng = np.random.default_rng(SEED)
    c0, i0 = conv(rng, "c0", "x", "c", 2, 4, pads=[1, 1, 1, 1])
    nodes = [c0, helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)]
    c1, i1 = conv(rng, "c1", "p", "y", 4, 2, k=1)
    from nibble.host.compiler import build_graph
    g = build_graph(model(nodes + [c1, helper.make_node("Softmax", ["y"], ["prob"], name="sm", axis=1)],
                          {**i0, **i1}, outputs=["prob"]))
    text = g.summary()
    assert "c0: Conv 3x3 s1 pad (1, 1, 1, 1); bias, ReLU, maxpool 3x3 s2 pad (0, 1, 0, 1); (2, 6, 6) -> (4, 3, 3) " \
           "[fused: relu, pool]" in text
    assert "c1: Conv 1x1 s1; bias; (4, 3, 3) -> (2, 3, 3)" in text
    assert "output prob (2, 3, 3); host: softmax" in text and "input  x (2, 6, 6)" in text


def test_run_graph_of_a_branching_model_matches_ort():
    """The front end's graph (one node per operator) evaluates like ONNX Runtime, every output."""
    rng = np.random.default_rng(SEED)
    c0, i0 = conv(rng, "c0", "x", "c", 2, 4, pads=[1, 1, 1, 1])
    c1, i1 = conv(rng, "c1", "r", "y1", 4, 3)
    c2, i2 = conv(rng, "c2", "r", "c2o", 4, 2, k=1)
    nodes = [c0, helper.make_node("LeakyRelu", ["c"], ["r"], name="lr", alpha=0.2), c1, c2,
             helper.make_node("Sigmoid", ["c2o"], ["y2"], name="sg")]
    m = model(nodes, {**i0, **i1, **i2}, outputs=["y1", "y2"])
    g = import_graph(m)
    assert [n.op for n in g.nodes] == ["Conv", "LeakyRelu", "Conv", "Conv", "Sigmoid"]
    x = rng.normal(size=(3, 2, 6, 6))
    assert_graph_matches_ort(g, m, x)
    vals = run_graph(g, x, keep=["r"])
    assert list(vals) == ["r"] and vals["r"].shape == (3, 4, 6, 6)
