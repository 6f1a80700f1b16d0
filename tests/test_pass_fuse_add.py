"""Pass ``fuse_add``: the Add of two feature tensors fused into the Conv producing one of them
(the residual reader), a ReLU after it fused after the Add; copies where neither can take it."""
import numpy as np
import pytest

from nibble.host.frontend.onnx import import_graph
from nibble.host.passes import fold_bn, fuse_add, fuse_epilogue
from new_ops_models import SMALL, check, node
from onnx_models import conv, model

SEED = 61


def _block(rng, relu_after=True):
    """ResNet's basic block: relu(conv2(relu(conv1(x))) + x) on an (8, 6, 6) map (x from conv0)."""
    c0, i0 = conv(rng, "c0", "x", "h0", 2, 8, pads=[1, 1, 1, 1])
    c1, i1 = conv(rng, "c1", "h0", "h1", 8, 8, pads=[1, 1, 1, 1])
    c2, i2 = conv(rng, "c2", "h1r", "h2", 8, 8, pads=[1, 1, 1, 1])
    nodes = [c0, c1, node("Relu", ["h1"], "h1r", "r1"), c2, node("Add", ["h2", "h0"], "s" if relu_after else "y", "add")]
    if relu_after:
        nodes.append(node("Relu", ["s"], "y", "r2"))
    return model(nodes, {**i0, **i1, **i2})


@pytest.mark.parametrize("config", [None, SMALL], ids=["default", "two_words_per_pixel"])
def test_residual_block(config):
    rng = np.random.default_rng(SEED)
    m = _block(rng)
    g = fuse_epilogue(fuse_add(fold_bn(import_graph(m))))
    c2 = g.node("c2")
    assert c2.conv.res and c2.conv.relu and c2.inputs == ["h1", "h0"] and [n.op for n in g.nodes] == ["Conv"] * 3
    _, p = check(m, (2, 6, 6), **({} if config is None else {"config": config}))
    L = p.layers[-1]
    assert L.res and L.res_src == "h0" and L.relu and 0 <= L.res_sh_hw <= 31


def test_neither_input_can_take_it():
    """Both addends have other readers (they are graph outputs too): an identity copy takes it."""
    rng = np.random.default_rng(SEED + 1)
    c0, i0 = conv(rng, "c0", "x", "a", 2, 4, pads=[1, 1, 1, 1])
    c1, i1 = conv(rng, "c1", "x", "b", 2, 4, pads=[1, 1, 1, 1])
    m = model([c0, c1, node("Add", ["a", "b"], "y", "add")], {**i0, **i1}, outputs=("y", "a", "b"))
    g = fuse_add(import_graph(m))
    assert [n.name for n in g.nodes] == ["c0", "c1", "add/copy"] and g.node("add/copy").conv.res
    check(m, (2, 6, 6))


def test_residual_from_the_network_input_is_copied():
    """x + conv(x): the input's layout is not a layer's output layout, so x is copied first."""
    rng = np.random.default_rng(SEED + 2)
    c0, i0 = conv(rng, "c0", "x", "a", 2, 2, pads=[1, 1, 1, 1])
    m = model([c0, node("Add", ["x", "a"], "y", "add")], i0)
    g = fuse_add(import_graph(m))
    assert g.node("c0").inputs == ["x", "add/residual_copy:out"]
    check(m, (2, 6, 6), config=SMALL)
