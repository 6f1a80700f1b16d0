"""The memory system on the RTL: the PCIe device under Verilator with its DDR model, programs
run from step lists in DDR, bit-identical to the golden model.

A 5-layer network whose weights (42,336 words) exceed the weight memory (32,768) runs with its
weights streamed descriptor by descriptor (host/steps.py) on the host-link test engine (8×8):
its outputs equal the golden device's, the accelerator's DDR byte counters equal the bytes the
step lists move (computed from the plan) and the DDR model's own counters, and the weight loads
are hidden under compute (the engine waits for memory only for the input, the first
descriptor's weights and the output). A corrupted step in DDR is refused by the sequencer and
reported naming the step.
"""
import numpy as np
import pytest

from nibble.hw.config import EngineConfig
from nibble.hw.isa import STEP_BYTES, Region, StepOp
from nibble.sim.perf.traffic import run_traffic
from nibble.host.compiler import compile_model
from nibble.host.driver import Device, DeviceError
from faults import LINK_TEST_CONFIG
from test_steps import SEED, deep_model

pytestmark = pytest.mark.slow
CONFIG = LINK_TEST_CONFIG


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(SEED)
    m = deep_model(rng)
    calib = rng.normal(0, 1, (4, 8, 8, 8))
    p = compile_model(m, calib, CONFIG, stream_weights=True)
    with Device("sim", config=CONFIG) as d:
        d.load(p)
        yield d, p, rng


def run_both(d, p, x):
    """Run ``x`` through ``p`` on the RTL device ``d`` and the golden device: bit-identical."""
    d.load(p)
    d.run(x)
    with Device("golden") as g:
        g.load(p)
        g.run(x)
        assert np.array_equal(d.raw, g.raw)


def test_streamed_network_bit_exact(setup):
    d, p, rng = setup
    x = rng.normal(0, 1, (2, 8, 8, 8))
    y = d.run(x)
    with Device("golden") as g:
        g.load(p)
        assert np.array_equal(d.raw, (g.run(x), g.raw)[1])
    t = run_traffic(d._be.ddr, CONFIG)
    rd, wr = t["read_bytes"], t["write_bytes"]
    for mem in d.memory:
        assert mem["ddr_read_bytes"] == rd and mem["ddr_write_bytes"] == wr
        # the stall counters split the cycles the engine waited by cause, exactly
        st = mem["stalls"]
        assert sorted(st) == ["feature_load", "param_load", "steps", "store", "weight_load"]
        assert sum(st.values()) == mem["cycles"] - mem["engine_cycles"]
        assert st["feature_load"] > 0 and st["store"] > 0 and st["weight_load"] > 0
        # only the input, the first weights, the output and the step overheads are not hidden
        first = p.layers[0]
        exposed = mem["cycles"] - mem["engine_cycles"]
        weight_words = sum(L.n_coblk(CONFIG.m) * CONFIG.m * L.kh * L.kw * L.cb_in for L in p.layers)
        assert exposed < weight_words // 4, (exposed, weight_words)
    stats = d.link.ep.ddr_stats()
    assert stats["bytes_read"] >= 2 * rd and stats["bytes_written"] >= 2 * wr
    assert y.shape == (2, 96, 8, 8)


def test_corrupted_step_is_refused(setup):
    d, p, rng = setup
    plan = d._be.ddr
    at = plan.run_list + STEP_BYTES * 2          # the first RUN step
    good = d.link.read(at, STEP_BYTES)
    d.link.write(at, b"\x00" + good[1:])
    try:
        with pytest.raises(DeviceError, match=r"error 'step' while running, at step 2"):
            d.run(rng.normal(0, 1, (1, 8, 8, 8)))
    finally:
        d.link.write(at, good)
    x = rng.normal(0, 1, (1, 8, 8, 8))
    d.run(x)                                      # and the device runs again
    with Device("golden") as g:
        g.load(p)
        g.run(x)
        assert np.array_equal(d.raw, g.raw)


def test_tiled_network_bit_exact(setup):
    """Every map in DDR, each layer in row bands (the first layer's output alone is 15,360 words,
    the feature memory has 8,192): bit-identical to the golden model."""
    from test_steps import conv_pool_model
    d, _, rng = setup
    m = conv_pool_model(rng, 96, 80)
    calib = rng.normal(0, 1, (2, 3, 96, 80))
    p = compile_model(m, calib, CONFIG, tile_features=True)
    run_both(d, p, rng.normal(0, 1, (1, 3, 96, 80)))
    plan = d._be.ddr
    assert len(plan.runs) > 2 * len(p.layers)       # banded
    # double-buffered bands: copies issued beside RUNs, so the engine waited for fewer cycles
    # than the feature copies take at a word per cycle
    from test_steps import beside_runs
    assert len(beside_runs(plan)) > len(p.layers)
    words = sum(f["count"] * f["words"] for op, f in plan.run if op != StepOp.RUN and f and f["region"] == Region.FEATURE)
    st = d.memory[0]["stalls"]
    assert st["feature_load"] + st["store"] < 0.8 * words, (st, words)


def test_tiled_concat_and_residual_bit_exact(setup):
    """Concat branches (each storing its channel words of every pixel) and a fused residual Add
    (its rows loaded beside the band's), every map in DDR: bit-identical to the golden model."""
    from test_steps import branch_model
    d, _, rng = setup
    m = branch_model(rng, 64, 48)
    p = compile_model(m, rng.normal(0, 1, (2, 8, 64, 48)), CONFIG, tile_features=True)
    assert any(L.res for L in p.layers) and any(L.dst_pix for L in p.layers)
    run_both(d, p, rng.normal(0, 1, (1, 8, 64, 48)))
    assert len(d._be.ddr.runs) > len(p.layers)


@pytest.mark.parametrize("name", ["squeezenet11", "resnet18"])
def test_imagenet_network_224_on_the_rtl(name):
    """SqueezeNet 1.1 and ResNet-18 at 224 × 224 (seeded weights, scripts/zoo.py) whole on the
    default accelerator through the network bench: maps in DDR in row bands, the classifiers in
    parts of output blocks, the fire modules' Concat by placement, ResNet's residual Adds and its
    GAP-folded classifier split into a depthwise sum and a 1×1 Gemm (``split_gap``);
    bit-identical to the golden model, and the figures the bench reports consistent with each
    other. Run from another directory: the bench finds scripts/zoo.py beside the package."""
    import os
    from nibble.host.bench import network_bench
    cwd = os.getcwd()
    os.chdir("/")
    try:
        r = network_bench(names=(name,))["networks"][name]
    finally:
        os.chdir(cwd)
    assert r["compiles"] and r["bit_exact_vs_golden"]
    assert r["parts"] > r["descriptors"] and r["bands"] > r["parts"]
    assert 0 < r["engine_cycles"] < r["cycles"] and r["stall_fraction"] == 1 - r["engine_cycles"] / r["cycles"]
    assert r["model_compute_cycles"] > 0
    # the descriptor cycle log: every row band's engine cycles, by plan, summing to the engine's
    assert sum(L["rtl_engine_cycles"] for L in r["layers"]) == r["engine_cycles"]
    assert sum(r["stall_cycles"].values()) == r["cycles"] - r["engine_cycles"]
    assert all(L["rtl_engine_cycles"] >= L["model_cycles"] * 0.97 for L in r["layers"])
    assert r["ddr_read_bytes"] > 1_000_000 and r["ddr_write_bytes"] > 1_000_000
    # the traffic model counts the run list exactly as the DMA counters do
    assert (r["model_ddr_read_bytes"], r["model_ddr_write_bytes"]) == (r["ddr_read_bytes"], r["ddr_write_bytes"])
    from nibble.sim.perf.energy import ENERGY_PJ
    assert r["energy_dram_uj"] == pytest.approx((r["ddr_read_bytes"] + r["ddr_write_bytes"]) * ENERGY_PJ["dram_byte"] / 1e6)
    assert r["energy_uj"] > r["energy_dram_uj"]


def test_conv_bench_without_the_winograd_path():
    """``nibble bench`` on an engine built without the Winograd path (the large configurations of
    the README's Scaling section): the direct form measured, the Winograd form reported as not
    available with the reason, no ratios."""
    from nibble.host.bench import winograd_bench
    assert not CONFIG.winograd
    r = winograd_bench(CONFIG, cin=16, cout=8, size=6)
    d = r["direct"]
    assert d["bit_exact_vs_golden"] is True and d["model_cycles"] == d["rtl_cycles"]
    assert d["multiplications"] == 16 * 8 * 9 * 36 and d["ideal_cycles"] == d["multiplications"] / CONFIG.peak_ops_per_cycle
    assert r["winograd"]["available"] is False and "without the Winograd path" in r["winograd"]["reason"]
    assert "direct_over_winograd_cycles" not in r and "outputs_identical" not in r


def test_mtcnn_stages_in_the_network_bench():
    """MTCNN's RNet and ONet (published weights, models/mtcnn) in the network bench: several
    outputs each (box regression, landmarks, face probability), every one bit-identical to the
    golden model on the RTL with the maps in DDR; the engine's cycles at least the compute model's."""
    from nibble.host.bench import MTCNN_CASES, NETWORK_CASES, network_bench
    from nibble.hw.config import EngineConfig
    assert set(MTCNN_CASES) <= set(NETWORK_CASES)
    res = network_bench(names=tuple(MTCNN_CASES))["networks"]
    for name, size in (("mtcnn_rnet", 24), ("mtcnn_onet", 48)):
        r = res[name]
        assert r["compiles"] and r["bit_exact_vs_golden"] and r["size"] == size, name
        assert r["engine_cycles"] >= 0.97 * r["model_compute_cycles"] > 0
        assert r["images_per_s_at_clk"] == pytest.approx(EngineConfig().clk_hz / r["cycles"])


def test_per_channel_shifts_in_parts(setup):
    """Per-channel weight exponents with every map in DDR and a classifier split into parts of
    output blocks (its weights exceed half the weight memory): each part's parameter blob carries
    its slice of the shift offsets; bit-identical to the golden model."""
    from onnx import helper

    from nibble.host.steps import parts
    from onnx_models import model
    from test_channel_exponents import _spread
    d, _, rng = setup
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="c1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="r1"),
             helper.make_node("Flatten", ["r1"], ["f"], name="f"),
             helper.make_node("Gemm", ["f", "w2", "b2"], ["y"], name="fc", transB=1)]
    inits = {"w1": _spread(rng, (16, 8, 3, 3)), "b1": rng.normal(0, 0.05, 16),
             "w2": _spread(rng, (40, 16 * 16 * 16)), "b2": rng.normal(0, 0.05, 40)}
    m = model(nodes, inits, inputs={"x": ("N", 8, 16, 16)})
    p = compile_model(m, rng.normal(0, 1, (4, 8, 16, 16)), CONFIG, exponents="channel", tile_features=True)
    assert all(L.ch_sh for L in p.layers) and len(parts(p.layers[1], CONFIG)) == 2
    assert len({int(v) for v in p.layer_shifts(1)}) > 2          # the parts have different offsets
    run_both(d, p, rng.normal(0, 1, (2, 8, 16, 16)))


#: A 512-bit DDR port (``beat_words`` = 4): feature memory in 4 banks, a beat of 4 feature words a
#: cycle, two steps a beat.
WIDE_CONFIG = EngineConfig(m=16, vc=16, winograd=False, beat_words=4)


def test_wide_beats_tiled_networks_bit_exact():
    """``beat_words`` = 4 on the RTL: a banded conv/pool chain (row bands starting at any word of a
    beat) and Concat branches with a residual Add (a chunk per pixel, partial beats written with
    strobes), every map in DDR: bit-identical to the golden model; the DMA's byte counters equal
    the traffic model's count of the covering beats; and the double-buffered feature copies,
    moving a beat a cycle, leave the engine waiting for fewer cycles than a quarter of their
    words."""
    from test_steps import branch_model, conv_pool_model
    rng = np.random.default_rng(SEED + 7)
    with Device("sim", config=WIDE_CONFIG) as d:
        for model, shape in ((conv_pool_model, (3, 96, 80)), (branch_model, (8, 64, 48))):
            m = model(rng, shape[1], shape[2])
            p = compile_model(m, rng.normal(0, 1, (2, *shape)), WIDE_CONFIG, tile_features=True)
            run_both(d, p, rng.normal(0, 1, (1, *shape)))
            plan, mem = d._be.ddr, d.memory[0]
            t = run_traffic(plan, WIDE_CONFIG)
            assert (mem["ddr_read_bytes"], mem["ddr_write_bytes"]) == (t["read_bytes"], t["write_bytes"])
            assert any(op != StepOp.RUN and f and f["region"] == Region.FEATURE and f["ddr_addr"] % 64
                       for op, f in plan.run), "no chunk starts inside a beat"
            if model is conv_pool_model:
                words = sum(f["count"] * f["words"] for op, f in plan.run
                            if op != StepOp.RUN and f and f["region"] == Region.FEATURE)
                st = mem["stalls"]
                assert st["feature_load"] + st["store"] < words / 4, (st, words)
