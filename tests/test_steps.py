"""Programs in external memory (host/steps.py) and weight streaming in the compiler: the DDR
layout, the load and run lists, the descriptors rewritten for the two halves of weight memory,
and the errors. The lists are checked with the sequencer's own rules (``check_step``) and read
back with ``decode_step``; the RTL runs them in tests/test_ddr_rtl.py."""
import numpy as np
import pytest

from nibble.hw.accelerator import regmap
from nibble.hw.config import EngineConfig
from nibble.hw.isa import (DDR_BASE, DESC_WORDS, STEP_BYTES, STEP_CHUNK, Region, StepOp, decode_descriptor,
                           decode_step)
from nibble.hw.sequencer import check_step
from nibble.host.compiler import CompileError, compile_model
from nibble.host.driver import Device, DeviceError
from nibble.host.program import Program
from nibble.host.steps import plan_ddr
from onnx_models import conv, model

SEED = 4242
#: The host-link test engine (tests/faults.py): 8×8, no Winograd, 32,768 weight words.
CONFIG = EngineConfig(m=8, vc=8, winograd=False)


def deep_model(rng, widths=(8, 96, 96, 96, 96, 96), size=8):
    """Conv 3×3 pad 1 + ReLU layers of ``widths`` channels on ``size``² maps: with 96 channels each
    layer after the first has 10,368 weight words on the 8×8 engine, all five 42,336 (> 32,768)."""
    nodes, inits, prev = [], {}, "x"
    for i, (ci, co) in enumerate(zip(widths, widths[1:])):
        n, w = conv(rng, f"c{i}", prev, f"t{i}", ci, co, pads=[1, 1, 1, 1])
        nodes += [n, __import__("onnx").helper.make_node("Relu", [f"t{i}"], [f"r{i}"], name=f"relu{i}")]
        inits.update(w)
        prev = f"r{i}"
    nodes[-1].output[0] = "y"
    return model(nodes, inits, inputs={"x": ("N", widths[0], size, size)})


@pytest.fixture(scope="module")
def programs():
    rng = np.random.default_rng(SEED)
    m = deep_model(rng)
    calib = rng.normal(0, 1, (4, 8, 8, 8))
    return m, calib, compile_model(m, calib, CONFIG, stream_weights=True)


def steps_at(plan, addr):
    raw = dict(plan.image)[addr]
    assert len(raw) % (STEP_CHUNK * STEP_BYTES) == 0
    return [decode_step(raw[i:i + STEP_BYTES]) for i in range(0, len(raw), STEP_BYTES)]


def test_weights_over_the_memory_need_streaming(programs):
    m, calib, _ = programs
    with pytest.raises(CompileError, match=r"c4.*weights need 10368 words, 42336 with the layers before it; the "
                                           r"weight memory has 32768 \(over by 9568"):
        compile_model(m, calib, CONFIG)


def test_a_descriptor_over_half_the_memory():
    rng = np.random.default_rng(SEED)
    m = deep_model(rng, widths=(8, 136, 8))      # c0: 17 blocks × 8 × 9 × 1 = 1,224 words
    small = EngineConfig(m=8, vc=8, winograd=False, weight_depth=2048)
    with pytest.raises(CompileError, match=r"'c0'.*1224 words in one descriptor; streamed weights hold one "
                                           r"descriptor's in half of the weight memory \(1024 words, over by 200\)"):
        compile_model(m, rng.normal(0, 1, (2, 8, 8, 8)), small, stream_weights=True)


def test_streamed_program_saves_and_loads(programs, tmp_path):
    p = programs[2]
    assert p.stream_weights and len(p.weights) // (CONFIG.vc // 4) == 42336
    p.save(tmp_path / "p.npz")
    q = Program.load(tmp_path / "p.npz")
    assert q.stream_weights and np.array_equal(q.weights, p.weights)


def test_stream_plan(programs):
    p = programs[2]
    rm = regmap(CONFIG, ddr=True)
    plan = plan_ddr(p, rm)
    half = CONFIG.weight_depth // 2
    load = steps_at(plan, plan.load_list)
    assert [s["op"] for s in load[:plan.load_steps]] == [StepOp.LOAD, StepOp.END]
    run = steps_at(plan, plan.run_list)
    assert len(run) == -(-plan.run_steps // STEP_CHUNK) * STEP_CHUNK
    assert all(s["op"] == StepOp.END for s in run[plan.run_steps - 1:])
    for s in load + run:
        assert check_step(CONFIG, s) is None, s
    ops = [StepOp(s["op"]) for s in run[:plan.run_steps]]
    n = len(p.layers)
    assert ops == [StepOp.LOAD, StepOp.LOAD] + [StepOp.RUN, StepOp.LOAD] * (n - 1) + [StepOp.RUN, StepOp.STORE,
                                                                                      StepOp.END]
    # the parameter image: descriptor i has last set and its weights in half i mod 2
    params = np.frombuffer(dict(plan.image)[plan.image[0][0]], "<u4")
    weights = p.weights.astype("<u2").tobytes()
    wbytes = CONFIG.vc // 2
    loads = [s for s in run if s["op"] == StepOp.LOAD and s["region"] == Region.WEIGHT]
    runs = [s for s in run if s["op"] == StepOp.RUN]
    assert len(loads) == len(runs) == n and sorted(plan.runs.values()) == list(range(n))
    for i, (L, ld, rn) in enumerate(zip(p.layers, loads, runs)):
        d = decode_descriptor(params[p.desc_base + DESC_WORDS * i:p.desc_base + DESC_WORDS * (i + 1)])
        assert d["last"] == 1 and d["w_base"] == (i % 2) * half
        assert rn["mem_addr"] == p.desc_base + DESC_WORDS * i and rn["wait"] == 1
        assert ld["mem_addr"] == (i % 2) * half and ld["wait"] == 0
        n_words = L.n_coblk(CONFIG.m) * CONFIG.m * L.kh * L.kw * L.cb_in
        assert ld["words"] >= n_words
        blob = bytes(np.concatenate([np.frombuffer(raw, np.uint8) for a, raw in plan.image
                                     if a <= ld["ddr_addr"] < a + len(raw) and a == ld["ddr_addr"]]))
        assert blob[:n_words * wbytes] == weights[L.w_base * wbytes:(L.w_base + n_words) * wbytes]
        # every other field of the descriptor as the program has it
        orig = decode_descriptor(p.params[p.desc_base + DESC_WORDS * i:p.desc_base + DESC_WORDS * (i + 1)])
        assert {k: v for k, v in d.items() if k not in ("w_base", "last")} == \
               {k: v for k, v in orig.items() if k not in ("w_base", "last")}
    assert plan.end - DDR_BASE < CONFIG.ddr_bytes


def test_resident_plan():
    rng = np.random.default_rng(SEED + 1)
    m = deep_model(rng, widths=(8, 16, 8))
    p = compile_model(m, rng.normal(0, 1, (2, 8, 8, 8)), CONFIG)
    assert not p.stream_weights
    plan = plan_ddr(p, regmap(CONFIG, ddr=True))
    load = steps_at(plan, plan.load_list)[:plan.load_steps]
    assert [(s["op"], s["region"]) for s in load] == [(StepOp.LOAD, Region.PARAM), (StepOp.LOAD, Region.WEIGHT),
                                                      (StepOp.END, 0)]
    run = steps_at(plan, plan.run_list)[:plan.run_steps]
    assert [s["op"] for s in run] == [StepOp.LOAD, StepOp.RUN, StepOp.STORE, StepOp.END]
    assert run[0]["mem_addr"] == p.inputs[0].base and run[2]["mem_addr"] == p.outputs[0].base
    assert run[0]["words"] * CONFIG.vc == plan.inputs[0][1]


def test_errors(programs):
    p = programs[2]
    with pytest.raises(ValueError, match="no external memory"):
        plan_ddr(p, regmap(CONFIG))
    small = regmap(CONFIG, ddr=True)
    small["regions"]["ddr"]["bytes"] = 64 * 1024
    with pytest.raises(ValueError, match=r"need \d+ bytes of DDR, the window has 65536"):
        plan_ddr(p, small)


def test_golden_runs_a_streamed_program(programs):
    """The golden device runs the plans as they are (streaming changes where weights wait, not
    what is computed): equal to the same model compiled with a larger weight memory."""
    m, calib, p = programs
    big = EngineConfig(m=8, vc=8, winograd=False, weight_depth=65536)
    q = compile_model(m, calib, big)
    x = np.random.default_rng(SEED + 2).normal(0, 1, (2, 8, 8, 8))
    with Device("golden") as a, Device("golden") as b:
        a.load(p)
        b.load(q)
        assert np.array_equal(a.run(x), b.run(x))


class RegisterFile:
    """A device without external memory as far as load() looks: the identification and
    configuration CSRs of ``rm``, and nothing else."""

    def __init__(self, rm, config):
        csr = lambda n: rm["regions"]["csr"]["base"] + rm["csrs"][n]["offset"]
        self.values = {csr("id"): rm["id"], **{csr(f"cfg_{f}"): getattr(config, f) for f in
                       ("m", "vc", "acc_width", "filter_depth", "feature_depth", "weight_depth", "param_depth")}}
        self.writes = []

    def read_u32(self, addr):
        return self.values[addr]

    def write(self, addr, data):
        self.writes.append(addr)


def test_device_without_ddr_refuses_a_streamed_program(programs):
    from nibble.host.driver import _TransportBackend
    rm = regmap(CONFIG)
    link = RegisterFile(rm, CONFIG)
    with pytest.raises(DeviceError, match="streams its weights from external memory.*has none"):
        _TransportBackend(link, rm).load(programs[2])
    assert link.writes == []


# ---- feature maps in DDR: row bands

def band_check(p):
    """Every band of every plan, run by the golden model on a feature memory holding only the
    band's input (and residual) rows, gives the plan's output rows as the whole-map golden run
    does (the geometry the RTL gets in its band descriptors)."""
    import dataclasses
    from nibble.host.driver import golden_plan
    from nibble.host.steps import band_view, tiling
    c = p.config
    rng = np.random.default_rng(SEED + 9)
    mem = np.zeros((p.feature_words, c.vc), np.int8)
    for spec in p.inputs:
        row, pix, cb = spec.view(c.vc)
        x = rng.integers(-128, 128, (cb * c.vc, *spec.shape[1:]))
        x[spec.shape[0]:] = 0
        from nibble.host.driver import write_view
        write_view(mem, spec.base, row, pix, x, c.vc)
    n_bands = 0
    for i, L in enumerate(p.layers):
        before = mem.copy()
        golden_plan(p, i, L, mem)
        out_row, out_pix = L.out_view
        t = tiling(L, c)
        for Lp, bl in t.parts:
            # the part's weights and biases are read from its own addresses
            q = dataclasses.replace(p, layers=p.layers[:i] + [Lp] + p.layers[i + 1:])
            for bd in bl:
                n_bands += 1
                on_chip = np.zeros((c.feature_depth, c.vc), np.int8)
                in_at = Lp.in_base + bd.a * Lp.in_view[0]
                on_chip[:bd.in_words] = before[in_at:in_at + bd.in_words]
                dense = lambda y, x: ((y - bd.q0) * L.out_w + x) * Lp.cb_out     # the band's pixel on chip
                if Lp.res:
                    for y in range(bd.q0, bd.q1):
                        for x in range(L.out_w):
                            r_at = Lp.res_base + y * out_row + x * out_pix
                            on_chip[bd.in_words + bd.out_words + dense(y, x):][:Lp.cb_out] = before[r_at:r_at + Lp.cb_out]
                golden_plan(q, i, band_view(Lp, bd), on_chip)
                assert bd.in_words + bd.out_words + bd.res_words <= t.depth
                for y in range(bd.q0, bd.q1):
                    for x in range(L.out_w):
                        got = on_chip[bd.in_words + dense(y, x):][:Lp.cb_out]
                        want = mem[Lp.out_base + y * out_row + x * out_pix:][:Lp.cb_out]
                        assert np.array_equal(got, want), (Lp.name, bd, y, x)
    return n_bands


def conv_pool_model(rng, h, w):
    """Conv 3×3 s1 pad 1 (3 → 16), conv 3×3 s2 pad 1 (16 → 24), 3×3/2 max-pool with ceil and
    padding, conv 1×1 (24 → 8), ReLUs, on an h × w input."""
    from onnx import helper
    n0, i0 = conv(rng, "c0", "x", "t0", 3, 16, pads=[1, 1, 1, 1])
    n1, i1 = conv(rng, "c1", "r0", "t1", 16, 24, pads=[1, 1, 1, 1], strides=[2, 2])
    n2, i2 = conv(rng, "c2", "p1", "y", 24, 8, k=1)
    nodes = [n0, helper.make_node("Relu", ["t0"], ["r0"]), n1, helper.make_node("Relu", ["t1"], ["r1"]),
             helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                              ceil_mode=1), n2]
    return model(nodes, {**i0, **i1, **i2}, inputs={"x": ("N", 3, h, w)})


def test_tiled_conv_pool_chain():
    """:func:`conv_pool_model` on 45 × 37: maps much larger than a 2,048-word feature memory."""
    rng = np.random.default_rng(SEED + 3)
    m = conv_pool_model(rng, 45, 37)
    cfg = EngineConfig(m=8, vc=8, winograd=False, feature_depth=2048)
    calib = rng.normal(0, 1, (2, 3, 45, 37))
    with pytest.raises(CompileError):
        compile_model(m, calib, cfg)
    p = compile_model(m, calib, cfg, tile_features=True)
    assert p.feature_space > cfg.feature_depth and p.stream_weights
    assert band_check(p) >= 2 * len(p.layers)
    plan = plan_ddr(p, regmap(cfg, ddr=True))
    for s in steps_at(plan, plan.run_list):
        assert check_step(cfg, s) is None, s
    # the golden device runs it as compiled on chip with a large feature memory
    q = compile_model(m, calib, EngineConfig(m=8, vc=8, winograd=False, feature_depth=1 << 16))
    x = rng.normal(0, 1, (1, 3, 45, 37))
    with Device("golden") as a, Device("golden") as b:
        a.load(p)
        b.load(q)
        assert np.array_equal(a.run(x), b.run(x))


def branch_model(rng, h, w):
    """conv 3×3 (8 → 32) + ReLU, two branches (1×1 and 3×3, 32 → 16 each) concatenated, a
    residual Add of the first conv's output, ReLU: Concat placement, a fused residual and, on a
    small weight memory, plans split into parts of output blocks."""
    from onnx import helper
    n0, i0 = conv(rng, "c0", "x", "t0", 8, 32, pads=[1, 1, 1, 1])
    n1, i1 = conv(rng, "c1", "r0", "b1", 32, 16, k=1)
    n2, i2 = conv(rng, "c2", "r0", "b2", 32, 16, pads=[1, 1, 1, 1])
    nodes = [n0, helper.make_node("Relu", ["t0"], ["r0"]), n1, n2,
             helper.make_node("Concat", ["b1", "b2"], ["cat"], axis=1),
             helper.make_node("Add", ["cat", "r0"], ["s"]), helper.make_node("Relu", ["s"], ["y"])]
    return model(nodes, {**i0, **i1, **i2}, inputs={"x": ("N", 8, h, w)})


def test_tiled_branches_residual_and_parts():
    rng = np.random.default_rng(SEED + 5)
    m = branch_model(rng, 30, 26)
    cfg = EngineConfig(m=8, vc=8, winograd=False, feature_depth=1024, weight_depth=1024)
    calib = rng.normal(0, 1, (2, 8, 30, 26))
    p = compile_model(m, calib, cfg, tile_features=True)
    from nibble.host.steps import parts
    assert max(len(parts(L, cfg)) for L in p.layers) > 1
    assert any(L.res for L in p.layers) and any(L.dst_pix for L in p.layers)
    assert band_check(p) > len(p.layers)
    plan = plan_ddr(p, regmap(cfg, ddr=True))
    for s in steps_at(plan, plan.run_list):
        assert check_step(cfg, s) is None, s


def beside_runs(plan):
    """Indices of the feature copies of ``plan``'s run list that the sequencer may issue while a
    RUN before them is still running (no step with ``wait`` in between)."""
    out, running = [], False
    for i, (op, f) in enumerate(plan.run):
        if f.get("wait"):
            running = False
        if op == StepOp.RUN:
            running = True
        elif running and op in (StepOp.LOAD, StepOp.STORE) and f["region"] == Region.FEATURE:
            out.append(i)
    return out


def test_double_buffered_bands():
    """On a feature memory too small for the maps, the bands of a plan alternate between the two
    halves of feature memory: the next band's input LOAD and the band before's STORE are issued
    beside each RUN, in the other half (``check_overlaps`` passes on the list plan_ddr wrote),
    and where a band's input is the band before's output the STORE comes first and waits."""
    from nibble.host.steps import tiling
    rng = np.random.default_rng(SEED + 3)
    m = conv_pool_model(rng, 45, 37)
    cfg = EngineConfig(m=8, vc=8, winograd=False, feature_depth=2048)
    p = compile_model(m, rng.normal(0, 1, (2, 3, 45, 37)), cfg, tile_features=True)
    ts = [tiling(L, cfg) for L in p.layers]
    assert any(t.double_buffered for t in ts)
    for t in ts:
        assert all(bd.in_words + bd.out_words + bd.res_words <= t.depth for _, bl in t.parts for bd in bl)
    plan = plan_ddr(p, regmap(cfg, ddr=True))
    beside = beside_runs(plan)
    assert len(beside) > len(p.layers)
    ops = [op for op, _ in plan.run]
    # a STORE that waits is followed by the LOAD that reads what it stored
    for i, (op, f) in enumerate(plan.run):
        if op == StepOp.STORE and f["wait"] and i + 1 < len(plan.run) and ops[i + 1] == StepOp.LOAD:
            s_lo, s_hi = f["ddr_addr"], f["ddr_addr"] + (f["count"] - 1) * f["ddr_stride"] + f["words"] * cfg.vc
            g = plan.run[i + 1][1]
            assert g["ddr_addr"] < s_hi and s_lo < g["ddr_addr"] + g["words"] * cfg.vc


def test_check_overlaps_names_the_clash():
    """A copy beside a RUN that uses its words is refused, naming both steps; ``wait`` or other
    words make it safe; a copy before a RUN that does not wait counts too."""
    from nibble.host.steps import check_overlaps
    load = lambda at, wait=0, region=Region.FEATURE: (StepOp.LOAD, dict(
        region=region, mem_addr=at, count=1, words=10, mem_stride=0, ddr_addr=DDR_BASE, ddr_stride=0, wait=wait))
    run = lambda wait=1: (StepOp.RUN, dict(mem_addr=0, wait=wait))
    feet = {1: [(Region.FEATURE, 0, 100), (Region.WEIGHT, 0, 50)]}
    check_overlaps([load(0), run(), load(100), load(200)], feet)
    check_overlaps([load(0), run(), load(95, wait=1)], feet)
    check_overlaps([load(0), run(), load(40, region=Region.PARAM)], feet)
    with pytest.raises(ValueError, match=r"step 3 \(LOAD of FEATURE words 95\.\.104\) can run beside step 1 "
                                         r"\(RUN\), which uses words 0\.\.99"):
        check_overlaps([load(0), run(), load(100), load(95)], feet)
    with pytest.raises(ValueError, match=r"step 2 \(LOAD of WEIGHT"):
        check_overlaps([load(0), run(), load(45, region=Region.WEIGHT)], feet)
    with pytest.raises(ValueError, match=r"step 0 \(LOAD of FEATURE.*beside step 1"):
        check_overlaps([load(0), run(wait=0)], feet)
    # a strided copy counts from its first to its last chunk: chunks at 150, 210, 270 (2 words
    # each) pass a RUN on words 0..99, and are refused beside one on 200..209, between them
    strided = (StepOp.STORE, dict(region=Region.FEATURE, mem_addr=150, count=3, words=2, mem_stride=60,
                                  ddr_addr=DDR_BASE, ddr_stride=16, wait=0))
    check_overlaps([load(0), run(), strided], feet)
    with pytest.raises(ValueError, match=r"step 2 \(STORE of FEATURE words 150\.\.271\)"):
        check_overlaps([load(300), run(), strided], {1: [(Region.FEATURE, 200, 210)]})


def test_parts_chosen_to_save_bands():
    """A 1×1 classifier whose input and output rows do not fit feature memory together runs in
    parts of output blocks (each part loads the input again), in the modelled cycles fewer than
    whole in bands that each load every output block's filters again; its parts' output rows
    are dense on chip and stored a chunk per pixel."""
    from nibble.host.steps import bands, parts, tiling, tiling_cost
    rng = np.random.default_rng(SEED + 11)
    n0, i0 = conv(rng, "fc", "x", "y", 128, 256, k=1)
    m = model([n0], i0, inputs={"x": ("N", 128, 13, 13)})
    cfg = EngineConfig(m=8, vc=8, winograd=False, feature_depth=4096)
    p = compile_model(m, rng.normal(0, 1, (2, 128, 13, 13)), cfg, tile_features=True)
    L, = p.layers
    whole = [(L, bands(L, cfg.feature_depth))]
    assert len(parts(L, cfg)) == 1 and len(whole[0][1]) > 1       # whole: 16 + 32 words a pixel
    t = tiling(L, cfg)
    assert len(t.parts) > 1 and t.cost < tiling_cost(whole, False, cfg)
    assert band_check(p) == sum(len(bl) for _, bl in t.parts)
    plan = plan_ddr(p, regmap(cfg, ddr=True))
    stores = [f for op, f in plan.run if op == StepOp.STORE]
    assert all(f["count"] % 13 == 0 and f["mem_stride"] == f["words"] and f["ddr_stride"] == 32 * cfg.vc
               for f in stores)
    assert sum(f["count"] * f["words"] for f in stores) == 13 * 13 * 32
    with Device("golden") as a:
        a.load(p)
        x = rng.normal(0, 1, (1, 128, 13, 13))
        q = compile_model(m, rng.normal(0, 1, (2, 128, 13, 13)), EngineConfig(m=8, vc=8, winograd=False,
                                                                             feature_depth=1 << 16))
        with Device("golden") as b:
            b.load(q)
            assert np.array_equal(a.run_int(a.quantize(x)), b.run_int(b.quantize(x)))
