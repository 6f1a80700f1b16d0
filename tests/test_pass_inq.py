"""Pass ``inq`` alone: every layer of a graph gets its 4-bit codes and ``n2`` (ARITHMETIC §4.1–4.2)."""
import numpy as np
import pytest
from onnx import helper

from nibble.host.compiler import build_graph
from nibble.host.ir import CompileError
from nibble.host.passes import inq
from nibble.sim import golden
from onnx_models import conv, model

SEED = 61


def test_codes_for_every_layer():
    rng = np.random.default_rng(SEED)
    c0, i0 = conv(rng, "c0", "x", "t", 2, 4)
    c1, i1 = conv(rng, "c1", "t", "y1", 4, 2, k=1)
    c2, i2 = conv(rng, "c2", "t", "y2", 4, 3, k=1, exact=True)
    g = build_graph(model([c0, c1, c2], {**i0, **i1, **i2}, outputs=["y1", "y2"]))
    h = inq(g)
    for n in h.nodes:
        want, n2 = golden.inq_quantize(n.conv.w)
        assert np.array_equal(n.conv.codes, want) and n.conv.n2 == n2
        assert g.node(n.name).conv.codes is None
    assert np.array_equal(golden.inq_decode(h.node("c2").conv.codes, h.node("c2").conv.n2), i2["c2_w"])


def test_all_zero_weights_name_the_layer():
    m = model([helper.make_node("Conv", ["x", "w"], ["y"], name="zero")], {"w": np.zeros((2, 2, 3, 3))})
    with pytest.raises(CompileError, match="layer 'zero': INQ needs a finite non-zero weight tensor"):
        inq(build_graph(m))
