"""Output-pixel lanes (``EngineConfig.vp``, TF2's pixel parallelism) on the engine in amaranth.sim.

Every case runs on the AcceleratorCore built with ``vp`` lanes and is compared with the golden
model bit for bit; the PE-array beats and the feature-memory reads equal the event model
(``layer_beats``, ``plan_events``) exactly, and the engine's cycles are within
:data:`CYCLE_TOLERANCE` of the cycle model. Row widths that are not multiples of ``vp`` (dead
lanes in a row's last group), strides 1 and 2, fused max-pools (2×2 and 3×3 s2 padded), a
writer-bound 1×1 layer with ``k = m/vc = 2``, transposed convolutions as TDC phases (cropped) and
NZP, a fused residual Add, a depthwise layer, and a Winograd layer (lane 0 only).
"""
import dataclasses

import numpy as np
import pytest
from onnx import helper

from nibble.host.compiler import compile_model, layer_beats, layer_cycles, plan_program
from nibble.host.driver import golden_forward
from nibble.host.ir import ConvOp
from nibble.hw.config import EngineConfig
from nibble.sim.perf.energy import plan_events
from onnx_models import conv, model
from tests.test_engine import SMALL, WINO_CFG, _ops, _run_core

SEED = 91
#: The cycle model against the engine with pixel lanes: within ±3 % (exact for vp = 1).
CYCLE_TOLERANCE = 0.03
K2 = dataclasses.replace(SMALL, m=16)           # k = m/vc = 2 words per output pixel


def _check(config, program, x):
    reads = []
    (y, cycles, beats), = _run_core(config, program, [x], reads=reads)
    assert np.array_equal(y, golden_forward(program, x))
    assert beats == sum(layer_beats(L, config) for L in program.layers)
    assert reads == [sum(plan_events(L, config)["feature_reads"] for L in program.layers)]
    model = sum(layer_cycles(L, config) for L in program.layers)
    assert cycles == pytest.approx(model, rel=CYCLE_TOLERANCE), (cycles, model)
    return cycles, beats


CHAINS = [
    # name, config, vp, cin, (H, W), [(cout, k, stride, pad, relu, pool)], mode
    ("3x3_w5_vp2", SMALL, 2, 8, (5, 5), [(8, 3, 1, (1, 1, 1, 1), True, 1)], "direct"),
    ("3x3_w7_vp3_k2", K2, 3, 5, (4, 7), [(16, 3, 1, (1, 1, 1, 1), False, 1)], "direct"),
    ("stride2_vp3", SMALL, 3, 12, (7, 7), [(11, 3, 2, (1, 0, 1, 0), False, 1)], "direct"),
    ("pool3x3s2_vp3", SMALL, 3, 5, (7, 8), [(8, 3, 1, (1, 1, 1, 1), True, (3, 3, 2, 2, 1, 1, 1, 1))], "direct"),
    ("pool2_then_1x1_map_vp4", SMALL, 4, 3, (6, 7), [(8, 3, 1, (1, 1, 1, 1), True, 2),
                                                      (5, 3, 1, (0, 0, 0, 0), False, 1)], "direct"),
    ("1x1_writer_bound_vp3_k2", K2, 3, 8, (4, 7), [(16, 1, 1, (0, 0, 0, 0), True, 1)], "direct"),
    ("winograd_lane0_vp2", WINO_CFG, 2, 8, (5, 6), [(8, 3, 1, (1, 1, 1, 1), True, 1)], "winograd"),
]


@pytest.mark.parametrize("name,config,vp,cin,hw,specs,mode", CHAINS, ids=[c[0] for c in CHAINS])
def test_chains_vs_golden(name, config, vp, cin, hw, specs, mode):
    config = dataclasses.replace(config, vp=vp)
    rng = np.random.default_rng(SEED)
    ops = _ops(rng, specs, cin)
    program = plan_program(ops, (cin, *hw), ops[0].q_in, config, winograd=mode)
    assert any(L.winograd for L in program.layers) == (mode == "winograd")
    x = rng.integers(-128, 128, (cin, *hw))
    x[:, 0, :] = -128
    x[:, -1, :] = 127
    cycles, beats = _check(config, program, x)
    one = dataclasses.replace(config, vp=1)
    if mode == "direct":      # the pixel groups of a row: ⌈out_w/vp⌉ beats where vp = 1 needs out_w
        assert beats < sum(layer_beats(L, one) for L in program.layers)


@pytest.mark.parametrize("K,S,P,mode", [(4, 2, 1, "nzp"), (2, 2, 1, "tdc"), (3, 2, 1, "tdc")])
def test_transposed_convolution(K, S, P, mode):
    """TDC phases (K2 S2 P1 reads a cropped input; K3 has phases of different tap counts) and NZP."""
    config = dataclasses.replace(SMALL, vp=3)
    rng = np.random.default_rng(SEED + K)
    op = ConvOp(name="up", w=np.zeros((6, 5, K, K)), b=rng.normal(0, 0.5, 5), stride=S, pad=(P,) * 4,
                relu=True, kind="ConvTranspose", codes=rng.integers(0, 16, (6, 5, K, K)).astype(np.uint8),
                n2=-7, q_in=5, q_out=4)
    op.output_padding = (0, 0)
    program = plan_program([op], (6, 4, 5), 5, config, deconv=mode)
    assert len(program.layers) == (1 if mode == "nzp" else S * S)
    _check(config, program, rng.integers(-128, 128, (6, 4, 5)))


def test_residual_and_depthwise():
    """A 3×3 conv with the input added in the output stage (each lane's residual reader on the
    shared port; the graph input is first copied by an identity layer, itself depthwise), then a
    depthwise 3×3 (group = C), on 8 channels of a 5×7 map, vp = 3."""
    config = dataclasses.replace(SMALL, vp=3)
    rng = np.random.default_rng(SEED + 1)
    n, inits = conv(rng, "c", "x", "a", 8, 8, k=3, pads=[1, 1, 1, 1])
    inits.update(dw_w=rng.normal(0, 0.3, (8, 1, 3, 3)), dw_b=rng.normal(0, 0.1, 8))
    nodes = [n, helper.make_node("Add", ["a", "x"], ["r"]),
             helper.make_node("Conv", ["r", "dw_w", "dw_b"], ["y"], group=8, pads=[1, 1, 1, 1])]
    m = model(nodes, inits, inputs={"x": ("N", 8, 5, 7)})
    program = compile_model(m, rng.normal(0, 1, (4, 8, 5, 7)), config, winograd="direct")
    assert any(L.res for L in program.layers) and any(L.groups == 8 and L.grp for L in program.layers)
    x = rng.integers(-128, 128, (8, 5, 7))
    _check(config, program, x)


@pytest.mark.parametrize("config,channels", [(SMALL, 32), (K2, 32)], ids=["k1", "k2"])
def test_pool_copy(config, channels):
    """A max-pool 3×3 s2 of a graph input (run as a depthwise identity with the pool): one tap,
    one input block per output block, so every window position's result takes the lane
    serializer ``n`` cycles — the cycle model's ``P·n`` bound — on a 9 × 9 map at vp = 3."""
    config = dataclasses.replace(config, vp=3)
    rng = np.random.default_rng(SEED + 2)
    m = model([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2])], {},
              inputs={"x": ("N", channels, 9, 9)})
    program = compile_model(m, rng.normal(0, 1, (4, channels, 9, 9)), config, winograd="direct")
    L, = program.layers
    assert L.grp and L.kh == 1 and L.pool[:4] == (3, 3, 2, 2)
    _check(config, program, rng.integers(-128, 128, (channels, 9, 9)))


def test_vp_is_checked():
    for bad in (0, 9, 2.0):
        with pytest.raises(ValueError, match="EngineConfig.vp"):
            EngineConfig(vp=bad)
    assert EngineConfig(m=32, vc=16, vp=8).peak_ops_per_cycle == 4096


def test_resources_count_the_lanes():
    """The report composes the lanes: one feature-memory copy per read port (the vp lanes and the
    residual reader), one PE block with vp·vc SAC lanes, one output stage."""
    from nibble.gen.resources import BLOCKS, memory_table
    for vp in (1, 4):
        cfg = EngineConfig(vp=vp)
        feature, = [r for r in memory_table(cfg) if r["name"] == "feature"]
        assert feature["count"] == vp + 1
        assert BLOCKS["pe"](cfg) == cfg.m and BLOCKS["output_stage"](cfg) == 1
