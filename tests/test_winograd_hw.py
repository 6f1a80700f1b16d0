"""Winograd transform blocks and the multiplier lane in amaranth.sim against the golden model (ARITHMETIC §2)."""
import itertools

import numpy as np
import pytest

from nibble.hw.winograd import MultiplierLane, WinogradPostPE, WinogradPrePE
from nibble.sim import winograd as wg
from tests.streams import run_sim, stream_recv, stream_send

SEED = 20261123
VARIANTS = ["F2x2_3x3", "F2x2_2x2"]
THROTTLE = [(0.0, 0.0), (0.3, 0.4)]
THROTTLE_IDS = ["full_rate", "throttled"]


def _named_tiles(alpha, lo, hi):
    """All lo, all hi, both alternations, a single lo or hi in each position over 0 and over the
    opposite extreme."""
    tiles = [np.full((alpha, alpha), lo), np.full((alpha, alpha), hi)]
    yy, xx = np.indices((alpha, alpha))
    tiles += [np.where((yy + xx) % 2, hi, lo), np.where((yy + xx) % 2, lo, hi),
              np.where(yy % 2, hi, lo), np.where(xx % 2, hi, lo)]
    for i, j in itertools.product(range(alpha), range(alpha)):
        for ext, bg in ((lo, 0), (hi, 0), (lo, hi), (hi, lo)):
            t = np.full((alpha, alpha), bg)
            t[i, j] = ext
            tiles.append(t)
    return tiles


def _adversarial_tiles(mat, lo, hi):
    """For each output position of ``mat·x·matᵀ``, the tiles that reach its maximum and minimum."""
    mat = np.asarray(mat)
    tiles = []
    for i, j in itertools.product(range(mat.shape[0]), range(mat.shape[0])):
        coef = np.outer(mat[i], mat[j])
        tiles += [np.where(coef > 0, hi, lo), np.where(coef > 0, lo, hi)]
    return tiles


def _as_list(t):
    return [[int(x) for x in row] for row in t]


def _stream_tiles(dut, tiles, out_shape, idle, stall):
    got = []

    async def src(ctx):
        await stream_send(ctx, dut.i, [_as_list(t) for t in tiles], idle=idle, seed=SEED)

    async def sink(ctx):
        for p in await stream_recv(ctx, dut.o, len(tiles), stall=stall, seed=SEED + 1):
            got.append([[int(p[a][b]) for b in range(out_shape)] for a in range(out_shape)])

    run_sim(dut, src, sink)
    return np.array(got, dtype=np.int64)


async def _latency(ctx, dut, payload):
    """Cycles from the transfer of one beat to ``o.valid``."""
    ctx.set(dut.o.ready, 1)
    ctx.set(dut.i.valid, 1)
    ctx.set(dut.i.payload, payload)
    await ctx.tick()
    ctx.set(dut.i.valid, 0)
    for cyc in range(1, 10):
        if ctx.get(dut.o.valid):
            return cyc
        await ctx.tick()
    raise AssertionError("no output")


# ---------------------------------------------------------------------------------------------
# WinogradPrePE

@pytest.mark.parametrize("idle,stall", THROTTLE, ids=THROTTLE_IDS)
@pytest.mark.parametrize("name", VARIANTS)
def test_pre_pe(name, idle, stall):
    var = wg.variant(name)
    a = var.alpha
    dut = WinogradPrePE(name)
    assert (dut.alpha, dut.o_width, dut.o_range) == (a, 10, wg.v_range(name))
    rng = np.random.default_rng(SEED)
    tiles = _named_tiles(a, -128, 127) + _adversarial_tiles(var.BT, -128, 127)
    tiles += list(rng.integers(-128, 128, (60, a, a)))
    got = _stream_tiles(dut, tiles, a, idle, stall)
    expected = wg.input_transform(np.array(tiles), name)
    assert np.array_equal(got, expected)
    assert (got.min(), got.max()) == wg.v_range(name)      # the §2.5 extremes pass through


@pytest.mark.parametrize("name", VARIANTS)
def test_pre_pe_latency(name):
    a = wg.variant(name).alpha
    dut = WinogradPrePE(name)
    seen = {}

    async def tb(ctx):
        seen["cycles"] = await _latency(ctx, dut, [[-128] * a] * a)
        seen["v"] = [[int(x) for x in row] for row in ctx.get(dut.o.payload)]

    run_sim(dut, tb)
    assert seen["cycles"] == WinogradPrePE.latency == dut.latency == 2
    assert seen["v"] == wg.input_transform(np.full((a, a), -128), name).tolist()


# ---------------------------------------------------------------------------------------------
# WinogradPostPE

@pytest.mark.parametrize("idle,stall", THROTTLE, ids=THROTTLE_IDS)
@pytest.mark.parametrize("name,acc_width,growth", [
    ("F2x2_3x3", 20, 4), ("F2x2_3x3", 28, 4), ("F2x2_2x2", 17, 2), ("F2x2_2x2", 25, 2)])
def test_post_pe(name, acc_width, growth, idle, stall):
    var = wg.variant(name)
    a, mo = var.alpha, var.m
    dut = WinogradPostPE(name, acc_width)
    assert (dut.alpha, dut.m, dut.growth, dut.o_width) == (a, mo, growth, acc_width + growth)
    lo, hi = -(1 << (acc_width - 1)), (1 << (acc_width - 1)) - 1
    rng = np.random.default_rng(SEED + acc_width)
    tiles = _named_tiles(a, lo, hi) + _adversarial_tiles(var.AT, lo, hi)
    tiles += list(rng.integers(lo, hi + 1, (50, a, a)))
    # accumulators of a real tile: Σ_ci U ⊙ V for random codes and int8 inputs
    for _ in range(10):
        cin = int(rng.integers(1, 9))
        U = wg.weight_transform(rng.integers(0, 16, (1, cin, var.r, var.r)), name, codes=True)
        V = wg.input_transform(rng.integers(-128, 128, (cin, a, a)), name)
        tiles.append((U[0] * V).sum(axis=0))
    got = _stream_tiles(dut, tiles, mo, idle, stall)
    expected = wg.output_transform(np.array(tiles), name)
    assert np.array_equal(got, expected)
    # the extremes reach the full acc_width + growth range
    assert got.min() < -(1 << (acc_width + growth - 2)) and got.max() >= (1 << (acc_width + growth - 2))


def test_post_pe_latency():
    dut = WinogradPostPE("F2x2_3x3", 20)
    seen = {}

    async def tb(ctx):
        seen["cycles"] = await _latency(ctx, dut, [[-(1 << 19)] * 4] * 4)
        seen["y"] = [[int(x) for x in row] for row in ctx.get(dut.o.payload)]

    run_sim(dut, tb)
    assert seen["cycles"] == WinogradPostPE.latency == dut.latency == 2
    assert seen["y"] == wg.output_transform(np.full((4, 4), -(1 << 19)), "F2x2_3x3").tolist()


def test_pre_post_tile_equals_direct_conv():
    """One F(2,3) tile through PrePE, golden U ⊙ V, PostPE: 4 × the direct correlation."""
    from nibble.sim import golden
    rng = np.random.default_rng(SEED + 5)
    cin = 3
    d = rng.integers(-128, 128, (cin, 4, 4))
    d[0, 0, 0], d[1, 3, 3] = -128, 127
    codes = rng.integers(0, 16, (1, cin, 3, 3))
    pre = WinogradPrePE("F2x2_3x3")
    V = _stream_tiles(pre, list(d), 4, 0.0, 0.0)
    M = (wg.weight_transform(codes, "F2x2_3x3", codes=True)[0] * V).sum(axis=0)
    post = WinogradPostPE("F2x2_3x3", 24)
    Y = _stream_tiles(post, [M], 2, 0.0, 0.0)[0]
    assert np.array_equal(Y, 4 * golden.conv_acc(d, codes)[0])


# ---------------------------------------------------------------------------------------------
# MultiplierLane

@pytest.mark.parametrize("idle,stall", THROTTLE, ids=THROTTLE_IDS)
@pytest.mark.parametrize("a_width,b_width", [(10, 11), (10, 10), (25, 18)])
def test_multiplier_lane(a_width, b_width, idle, stall):
    dut = MultiplierLane(a_width, b_width, tag_shape=8)
    amin, amax = -(1 << (a_width - 1)), (1 << (a_width - 1)) - 1
    bmin, bmax = -(1 << (b_width - 1)), (1 << (b_width - 1)) - 1
    named = list(itertools.product([amin, amin + 1, -1, 0, 1, amax], [bmin, bmin + 1, -1, 0, 1, bmax]))
    rng = np.random.default_rng(SEED + a_width)
    pairs = named + [(int(x), int(y)) for x, y in zip(rng.integers(amin, amax + 1, 100),
                                                       rng.integers(bmin, bmax + 1, 100))]
    beats = [{"a": x, "b": y, "tag": k % 256} for k, (x, y) in enumerate(pairs)]
    got = []

    async def src(ctx):
        await stream_send(ctx, dut.i, beats, idle=idle, seed=SEED)

    async def sink(ctx):
        got.extend(await stream_recv(ctx, dut.o, len(beats), stall=stall, seed=SEED + 1))

    run_sim(dut, src, sink)
    assert [p.p for p in got] == [x * y for x, y in pairs]
    assert [p.tag for p in got] == [b["tag"] for b in beats]
    assert max(p.p for p in got) == amin * bmin


def test_multiplier_lane_latency():
    dut = MultiplierLane(10, 11)
    seen = {}

    async def tb(ctx):
        seen["cycles"] = await _latency(ctx, dut, {"a": -512, "b": 576})
        seen["p"] = ctx.get(dut.o.payload.p)

    run_sim(dut, tb)
    assert seen["cycles"] == MultiplierLane.latency == 2
    assert seen["p"] == -512 * 576


# ---------------------------------------------------------------------------------------------
# Parameter errors

def test_parameter_errors():
    msg = "unknown Winograd variant 'F4x4_3x3'; expected one of 'F2x2_3x3', 'F2x2_2x2'"
    for make in (lambda: WinogradPrePE("F4x4_3x3"), lambda: WinogradPostPE("F4x4_3x3", 24)):
        with pytest.raises(ValueError) as e:
            make()
        assert str(e.value) == msg
    with pytest.raises(ValueError) as e:
        WinogradPostPE("F2x2_3x3", 1)
    assert str(e.value) == "Winograd output transform needs at least 2 accumulator bits, not 1"
    with pytest.raises(ValueError) as e:
        MultiplierLane(1, 18)
    assert str(e.value) == "multiplier operands need at least 2 bits each, not 1 and 18"


def test_hw_and_golden_share_the_variant_names():
    from nibble.hw.winograd import WINOGRAD_VARIANTS
    assert list(WINOGRAD_VARIANTS) == list(wg.VARIANTS)
    for name, (m, bt, at) in WINOGRAD_VARIANTS.items():
        var = wg.variant(name)
        assert m == var.m and np.array_equal(bt, var.BT) and np.array_equal(at, var.AT)


# ---------------------------------------------------------------------------------------------
# Throughput and conversion

@pytest.mark.parametrize("make,payload", [
    (lambda: WinogradPrePE("F2x2_3x3"), lambda k: [[k - 128] * 4] * 4),
    (lambda: WinogradPostPE("F2x2_2x2", 20), lambda k: [[k] * 3] * 3),
    (lambda: MultiplierLane(10, 11), lambda k: {"a": k, "b": -k}),
], ids=["pre", "post", "mult"])
def test_one_beat_per_cycle(make, payload):
    """Back-to-back beats with a ready sink: ``i.ready`` never drops and ``o.valid`` is high for
    exactly ``n`` consecutive cycles starting ``latency`` cycles after the first transfer."""
    dut = make()
    n = 12
    trace = []

    async def tb(ctx):
        ctx.set(dut.o.ready, 1)
        for k in range(n + dut.latency + 2):
            ctx.set(dut.i.valid, int(k < n))
            ctx.set(dut.i.payload, payload(k % n))
            trace.append((ctx.get(dut.i.ready), ctx.get(dut.o.valid)))
            await ctx.tick()

    run_sim(dut, tb)
    assert all(r for r, _ in trace)
    assert [v for _, v in trace] == [0] * dut.latency + [1] * n + [0] * 2


@pytest.mark.parametrize("make", [
    lambda: WinogradPrePE("F2x2_3x3"), lambda: WinogradPrePE("F2x2_2x2"),
    lambda: WinogradPostPE("F2x2_3x3", 28), lambda: MultiplierLane(25, 18, tag_shape=4),
], ids=["pre_f23", "pre_f22", "post_f23", "mult"])
def test_converts_to_rtlil(make):
    from amaranth.back import rtlil
    dut = make()
    assert "module" in rtlil.convert(dut)


def test_weight_transform_matches_golden():
    """The loader's U = G₂ g G₂ᵀ on 4-bit codes (``code_value``, ``weight_transform_tile``) equals
    the golden ``weight_transform`` exactly: every code in every tap, the extremes (all −64, all
    +64, alternating signs that reach ±576) and seeded random filters (ARITHMETIC §2.3, §2.5)."""
    from amaranth import Module, Signal, signed
    from amaranth.sim import Simulator
    from nibble.hw.pe import U_WIDTH
    from nibble.hw.winograd import code_value, weight_transform_tile

    codes = [Signal(4, name=f"c{t}") for t in range(9)]
    m = Module()
    g = [[code_value(codes[r * 3 + c]) for c in range(3)] for r in range(3)]
    exprs = weight_transform_tile(g, "F2x2_3x3")
    u = [[Signal(signed(U_WIDTH), name=f"u{a}{b}") for b in range(4)] for a in range(4)]
    for a in range(4):
        for b in range(4):
            m.d.comb += u[a][b].eq(exprs[a][b])
    rng = np.random.default_rng(SEED)
    filters = [np.full(9, 0b0111), np.full(9, 0b1111), np.full(9, 0b1000), np.zeros(9, int)]
    filters += [np.where(np.arange(9) % 2, 0b0111, 0b1111), np.where(np.arange(9) % 2, 0b1111, 0b0111)]
    for t in range(9):
        for code in range(16):
            f = np.zeros(9, int)
            f[t] = code
            filters.append(f)
    filters += list(rng.integers(0, 16, (200, 9)))
    seen = []

    async def tb(ctx):
        for f in filters:
            for t in range(9):
                ctx.set(codes[t], int(f[t]))
            seen.append([[ctx.get(u[a][b]) for b in range(4)] for a in range(4)])

    sim = Simulator(m)
    sim.add_testbench(tb)
    sim.run()
    want = wg.weight_transform(np.array(filters).reshape(-1, 1, 3, 3), "F2x2_3x3", codes=True)[:, 0]
    assert np.array_equal(np.array(seen), want)
    assert np.abs(want).max() == 576                # the §2.5 extreme is reached
