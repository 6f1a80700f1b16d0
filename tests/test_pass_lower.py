"""Pass ``lower`` alone: a quantized graph → Program — plans in topological order reading and
writing the allocated views, one TensorSpec per input and output (host tail, flatten), PReLU
slope codes and clip bounds in parameter memory, the Winograd and range refusals."""
import numpy as np
import pytest
from onnx import helper, numpy_helper

from nibble.host.compiler import build_graph
from nibble.host.ir import CompileError
from nibble.host.passes import allocate, calibrate, inq, lower
from nibble.hw.config import EngineConfig
from nibble.hw.isa import DESC_WORDS, PRELU_FRAC
from nibble.sim import golden
from onnx_models import conv, model

SEED = 73
CFG = EngineConfig()


def _quantized(m, x, cfg=CFG):
    return allocate(calibrate(inq(build_graph(m)), x), cfg)


def _pnet_like(rng, slope=0.25):
    c0, i0 = conv(rng, "c0", "x", "t0", 3, 10)
    c1, i1 = conv(rng, "c1", "p", "t1", 10, 16)
    h1, j1 = conv(rng, "h1", "a1", "logits", 16, 2, k=1)
    h2, j2 = conv(rng, "h2", "a1", "reg", 16, 4, k=1)
    raw = [numpy_helper.from_array(np.full((10, 1, 1), slope, np.float32), "s0"),
           numpy_helper.from_array(np.float32(0.0), "zero"), numpy_helper.from_array(np.float32(6.0), "six")]
    nodes = [c0, helper.make_node("PRelu", ["t0", "s0"], ["a0"], name="pr0"),
             helper.make_node("MaxPool", ["a0"], ["p"], name="mp", kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
             c1, helper.make_node("Clip", ["t1", "zero", "six"], ["a1"], name="relu6"), h1,
             helper.make_node("Softmax", ["logits"], ["prob"], name="sm", axis=1), h2]
    return model(nodes, {**i0, **i1, **j1, **j2}, inputs={"x": ("N", 3, 12, 12)}, outputs=["reg", "prob"], raw=raw)


def test_program_of_a_branching_graph():
    rng = np.random.default_rng(SEED)
    x = rng.normal(size=(8, 3, 12, 12))
    g = _quantized(_pnet_like(rng), x)
    p = lower(g, CFG)
    p.validate()
    assert [L.name for L in p.layers] == ["c0", "c1", "h1", "h2"]
    assert [(L.src, L.dst) for L in p.layers] == [("x", "t0"), ("t0", "t1"), ("t1", "prob"), ("t1", "reg")]
    assert [(t.name, t.shape, t.tail, t.flatten) for t in p.outputs] == [("reg", (4, 3, 3), (), False),
                                                                         ("prob", (2, 3, 3), ("softmax",), False)]
    assert [(t.name, t.shape, t.q) for t in p.inputs] == [("x", (3, 12, 12), g.tensors["x"].q)]
    for L in p.layers:                                   # each plan reads and writes the allocated views
        assert (L.in_base, L.out_base) == (g.tensors[g.node(L.name).inputs[0]].base,
                                           g.tensors[g.node(L.name).outputs[0]].base)
    L0, L1 = p.layers[:2]
    assert L0.pool == (3, 3, 2, 2, 0, 1, 0, 1) and (L0.conv_h, L0.out_h) == (10, 5)
    assert L0.prelu and L0.sh_hw == L0.sh + PRELU_FRAC and not L0.winograd and "not the 2x2" in L0.mode_reason
    assert np.array_equal(p.layer_slopes(0), np.full(10, golden.prelu_codes(0.25)))
    assert L0.slope_base == L0.bias_base + L0.n_coblk(CFG.m) * CFG.m
    assert L1.relu is False and L1.clip == (0, min(127, int(np.floor(6.0 * 2.0 ** L1.q_out + 0.5))))
    assert len(p.params) == DESC_WORDS * 4 + 16 * 4 + 16


def test_winograd_refusal_and_pool():
    rng = np.random.default_rng(SEED)
    x = rng.normal(size=(4, 3, 12, 12))
    g = _quantized(_pnet_like(rng), x)
    with pytest.raises(CompileError, match=r"layer 'c0' \(Conv\): cannot run as Winograd: its maxpool 3x3 s2 pad "
                                           r"\(0, 1, 0, 1\) is not the 2x2 stride-2 unpadded max-pool"):
        lower(g, CFG, winograd={"c0": "winograd"})
    p = lower(g, CFG, winograd={"c1": "winograd"})
    assert p.layers[1].winograd and p.layers[1].mode_reason == "winograd: chosen"


def test_prelu_slope_out_of_range_names_the_layer():
    rng = np.random.default_rng(SEED)
    x = rng.normal(size=(4, 3, 12, 12))
    g = _quantized(_pnet_like(rng, slope=9.0), x)
    with pytest.raises(CompileError, match=r"layer 'c0' \(Conv\): PReLU slope 9 is outside the 16-bit code range"):
        lower(g, CFG)


def test_a_graph_that_is_not_quantized_or_not_fused():
    rng = np.random.default_rng(SEED)
    g = build_graph(_pnet_like(rng))
    with pytest.raises(CompileError, match=r"layer 'c0' \(Conv\): not quantized"):
        lower(g, CFG)
    with pytest.raises(CompileError, match="convolution mode given for unknown layer\\(s\\): nope"):
        lower(_quantized(_pnet_like(rng), rng.normal(size=(2, 3, 12, 12))), CFG, winograd={"nope": "direct"})
