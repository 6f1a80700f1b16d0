"""Pass ``place_concat`` and the Concat placement: branches write their words of one map
(``dst_off``, ``dst_pix``), the readers' filters scattered onto its physical channels."""
import numpy as np
import pytest

from nibble.host.frontend.onnx import import_graph
from nibble.host.passes import place_concat
from new_ops_models import SMALL, check, node
from onnx_models import conv, model

SEED = 71


def _fire(rng, e1=8, e3=8):
    """SqueezeNet's fire module then a 1×1 conv reading the concatenated map."""
    s, i0 = conv(rng, "sq", "x", "s", 2, 4, k=1)
    a, i1 = conv(rng, "e1", "sr", "a", 4, e1, k=1)
    b, i2 = conv(rng, "e3", "sr", "b", 4, e3, pads=[1, 1, 1, 1])
    n, i3 = conv(rng, "next", "cat", "y", e1 + e3, 3, k=1)
    nodes = [s, node("Relu", ["s"], "sr", "r0"), a, b, node("Relu", ["a"], "ar", "r1"), node("Relu", ["b"], "br", "r2"),
             node("Concat", ["ar", "br"], "cat", "cat", axis=1), n]
    return model(nodes, {**i0, **i1, **i2, **i3})


@pytest.mark.parametrize("e1,e3,config", [(8, 8, SMALL), (5, 11, SMALL), (16, 32, None)],
                         ids=["aligned", "gaps", "default"])
def test_fire_module(e1, e3, config):
    rng = np.random.default_rng(SEED + e1)
    _, p = check(_fire(rng, e1, e3), (2, 6, 6), **({} if config is None else {"config": config}))
    e1p, e3p, nxt = (next(L for L in p.layers if L.name == k) for k in ("e1", "e3", "next"))
    assert e1p.dst == e3p.dst == nxt.src == "cat" and e1p.dst_off == 0 and e3p.dst_off == e1p.cb_out
    assert nxt.cin == e1p.dst_pix * p.config.vc


def test_four_branches_with_a_pool_branch():
    """GoogLeNet's inception: 1×1, 1×1 → 3×3, 3×3, and MaxPool 3×3 s1 → 1×1 of a tensor the
    other branches also read (the pool gets an identity layer of its own)."""
    rng = np.random.default_rng(SEED)
    c0, i0 = conv(rng, "c0", "x", "h", 2, 6, pads=[1, 1, 1, 1])
    b1, i1 = conv(rng, "b1", "h", "y1", 6, 4, k=1)
    b2a, i2 = conv(rng, "b2a", "h", "t2", 6, 3, k=1)
    b2, i3 = conv(rng, "b2", "t2", "y2", 3, 5, pads=[1, 1, 1, 1])
    b3, i4 = conv(rng, "b3", "h", "y3", 6, 2, pads=[1, 1, 1, 1])
    b4, i5 = conv(rng, "b4", "p", "y4", 6, 3, k=1)
    nodes = [c0, b1, b2a, b2, b3, node("MaxPool", ["h"], "p", "mp", kernel_shape=[3, 3], pads=[1, 1, 1, 1]), b4,
             node("Concat", ["y1", "y2", "y3", "y4"], "y", "cat", axis=1)]
    m = model(nodes, {**i0, **i1, **i2, **i3, **i4, **i5}, outputs=("z",))
    n5, i6 = conv(rng, "n5", "y", "z", 14, 2, k=1)
    m.graph.node.append(n5)
    from onnx import numpy_helper
    m.graph.initializer.extend(numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in i6.items())
    check(m, (2, 6, 6), config=SMALL)


def test_branch_with_other_readers_is_copied():
    rng = np.random.default_rng(SEED + 1)
    c0, i0 = conv(rng, "c0", "x", "a", 2, 4, pads=[1, 1, 1, 1])
    c1, i1 = conv(rng, "c1", "cat", "y", 6, 2, k=1)
    m = model([c0, node("Concat", ["a", "x"], "cat", "cat", axis=1), c1], {**i0, **i1}, outputs=("y", "a"))
    g = place_concat(import_graph(m))
    assert g.node("cat").inputs == ["cat/copy0:out", "cat/copy1:out"]
    check(m, (2, 6, 6), config=SMALL)
