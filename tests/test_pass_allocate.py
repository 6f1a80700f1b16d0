"""Pass ``allocate`` alone: feature-memory ranges by liveness — no two tensors live at the same
time overlap, a layer's output never overlaps its input, outputs stay; chains alternate between
the two ends of the memory; the error names the tensor and by how much."""
import numpy as np
import pytest

from nibble.host.compiler import build_graph
from nibble.host.ir import CompileError
from nibble.host.passes import allocate
from nibble.hw.config import EngineConfig
from onnx_models import conv, model

SEED = 71


def _check_liveness(g):
    """Simulate the run: every tensor's range is untouched from its write to its last read."""
    last = {}
    for i, n in enumerate(g.nodes):
        for t in n.inputs:
            last[t] = i
    end = len(g.nodes)
    life = {t: (-1, last.get(t, -1) if t not in g.output_tensors() else end) for t in g.inputs}
    for i, n in enumerate(g.nodes):
        for t in n.outputs:
            life[t] = (i, end if t in g.output_tensors() else last.get(t, i))
    names = list(life)
    for a in names:
        for b in names:
            if a >= b:
                continue
            (sa, ea), (sb, eb) = life[a], life[b]
            ta, tb = g.tensors[a], g.tensors[b]
            if sa <= eb and sb <= ea:                      # live at the same time
                assert ta.base + ta.words <= tb.base or tb.base + tb.words <= ta.base, (a, b)


def test_branching_graph():
    rng = np.random.default_rng(SEED)
    c0, i0 = conv(rng, "c0", "x", "t0", 3, 16, pads=[1, 1, 1, 1])
    c1, i1 = conv(rng, "c1", "t0", "t1", 16, 32, pads=[1, 1, 1, 1])
    h1, j1 = conv(rng, "h1", "t1", "y1", 32, 2, k=1)
    h2, j2 = conv(rng, "h2", "t1", "y2", 32, 4, k=1)
    c3, i3 = conv(rng, "c3", "t0", "y3", 16, 8, k=1)
    g = build_graph(model([c0, c1, h1, h2, c3], {**i0, **i1, **j1, **j2, **i3}, inputs={"x": ("N", 3, 8, 8)},
                          outputs=["y1", "y2", "y3"]))
    cfg = EngineConfig(m=16, vc=16, feature_depth=1024)
    a = allocate(g, cfg)
    assert [a.tensors[t].words for t in ("x", "t0", "t1", "y1", "y2", "y3")] == [64, 64, 128, 64, 64, 64]
    assert a.tensors["t1"].cb == 2 and a.tensors["t1"].pix == 2 and a.tensors["t1"].row == 16
    _check_liveness(a)
    assert all(a.tensors[t].base + a.tensors[t].words <= 1024 for t in a.tensors)
    assert g.tensors["x"].base is None


def test_chain_alternates_and_beats_two_buffers():
    """Maps of 64, 512 and 64 words: two buffers of the largest need 1024 words; by liveness the
    three fit 640 (the small ones share the bottom, the large one sits at the top)."""
    rng = np.random.default_rng(SEED)
    c0, i0 = conv(rng, "c0", "x", "t0", 16, 128, k=1)
    c1, i1 = conv(rng, "c1", "t0", "y", 128, 16, k=1)
    g = build_graph(model([c0, c1], {**i0, **i1}, inputs={"x": ("N", 16, 8, 8)}))
    a = allocate(g, EngineConfig(feature_depth=640))
    assert (a.tensors["x"].base, a.tensors["t0"].base, a.tensors["y"].base) == (0, 128, 0)
    _check_liveness(a)
    with pytest.raises(CompileError, match=r"the output 't0' of layer 'c0' \(Conv\): its 8x8 map of 128 channels needs 512 "
                                           r"words; with the 64 words of the tensors live at the same time \('x' \(64\)\) "
                                           r"the feature memory needs 576, it has 560 \(over by 16 words\)"):
        allocate(g, EngineConfig(feature_depth=560))


def test_outputs_stay_live():
    rng = np.random.default_rng(SEED)
    c0, i0 = conv(rng, "c0", "x", "y1", 16, 16, k=1)
    c1, i1 = conv(rng, "c1", "y1", "t", 16, 16, k=1)
    c2, i2 = conv(rng, "c2", "t", "y2", 16, 16, k=1)
    g = build_graph(model([c0, c1, c2], {**i0, **i1, **i2}, inputs={"x": ("N", 16, 4, 4)}, outputs=["y1", "y2"]))
    a = allocate(g, EngineConfig(feature_depth=64))
    _check_liveness(a)
    with pytest.raises(CompileError, match=r"the output 'y2' of layer 'c2' \(Conv\): .*\('t' \(16\), 'y1' \(16\)\) the "
                                           r"feature memory needs 48, it has 47 \(over by 1 words\)"):
        allocate(g, EngineConfig(feature_depth=47))
