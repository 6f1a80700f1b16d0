"""SAC lane, PE and PE array in amaranth.sim against the golden model (ARITHMETIC §4.4)."""
import numpy as np
import pytest
from amaranth.sim import Simulator

from nibble.hw.pe import PE, PEArray, SACLane
from nibble.sim import golden
from tests.streams import run_sim, stream_recv, stream_send

SEED = 20261121


def test_sac_lane_exhaustive():
    """Every int8 value times every 4-bit code (both signs, every shift, zero codes)."""
    dut = SACLane()
    xs = np.arange(-128, 128)
    codes = np.arange(16)

    async def tb(ctx):
        for code in codes:
            ctx.set(dut.code, int(code))
            for x in xs:
                ctx.set(dut.x, int(x))
                assert ctx.get(dut.p) == golden.sac(x, code), (x, code)

    sim = Simulator(dut)
    sim.add_testbench(tb)
    sim.run()


def test_sac_lane_extremes():
    assert golden.sac(-128, 0b0111) == -8192
    assert golden.sac(-128, 0b1111) == 8192
    assert golden.sac(127, 0b1111) == -8128
    assert golden.sac(5, 0b1000) == 0 and golden.sac(5, 0) == 0


def _beats(rng, vc, depth, n_acc, max_len):
    """Random accumulations: list of (payloads, expected address list, x list)."""
    beats, groups = [], []
    for _ in range(n_acc):
        n = int(rng.integers(1, max_len + 1))
        g = []
        for k in range(n):
            x = rng.integers(-128, 128, vc)
            if rng.random() < 0.2:
                x[:] = rng.choice([-128, 127])
            addr = int(rng.integers(0, depth))
            beats.append({"x": [int(v) for v in x], "addr": addr, "first": int(k == 0), "last": int(k == n - 1)})
            g.append((x, addr))
        groups.append(g)
    return beats, groups


def _cache(rng, depth, vc):
    c = rng.integers(0, 16, (depth, vc))
    c[0, :] = 0b0111     # +64: the largest magnitude
    c[1, :] = 0b1111     # -64
    c[2, :] = 0b1000     # the unused "-0" code decodes to 0
    return c


def _expected(cache, groups):
    return [int(sum(golden.sac(x, cache[a]).sum() for x, a in g)) for g in groups]


async def _load_cache(ctx, dut, cache, pe=None):
    for a, row in enumerate(cache):
        ctx.set(dut.w_en, 1)
        if pe is not None:
            ctx.set(dut.w_pe, pe)
        ctx.set(dut.w_addr, a)
        ctx.set(dut.w_data, [int(v) for v in row])
        await ctx.tick()
    ctx.set(dut.w_en, 0)


@pytest.mark.parametrize("idle,stall", [(0.0, 0.0), (0.3, 0.4)], ids=["full_rate", "throttled"])
def test_pe_random(idle, stall):
    rng = np.random.default_rng(SEED)
    vc, depth = 4, 8
    dut = PE(vc=vc, acc_width=24, depth=depth)
    cache = _cache(rng, depth, vc)
    beats, groups = _beats(rng, vc, depth, 40, 9)
    expected = _expected(cache, groups)
    got = []

    async def src(ctx):
        await _load_cache(ctx, dut, cache)
        await stream_send(ctx, dut.i, beats, idle=idle, seed=SEED)

    async def sink(ctx):
        got.extend(p.acc for p in await stream_recv(ctx, dut.o, len(groups), stall=stall, seed=SEED + 1))

    run_sim(dut, src, sink)
    assert got == expected


def test_pe_latency_and_worst_case():
    """All lanes −128 × −64 for 3 beats: +3·4·8192 = 98304; result 3 cycles after the last beat."""
    vc, depth = 4, 4
    dut = PE(vc=vc, acc_width=20, depth=depth)
    cache = np.full((depth, vc), 0b1111)
    seen = {}

    async def tb(ctx):
        await _load_cache(ctx, dut, cache)
        ctx.set(dut.o.ready, 1)
        for k in range(3):
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, {"x": [-128] * vc, "addr": k, "first": int(k == 0), "last": int(k == 2)})
            await ctx.tick()
        ctx.set(dut.i.valid, 0)
        for cyc in range(1, 10):
            if ctx.get(dut.o.valid):
                seen["cycles"] = cyc
                seen["acc"] = ctx.get(dut.o.payload.acc)
                break
            await ctx.tick()

    run_sim(dut, tb)
    assert seen["acc"] == 3 * vc * 8192 == _expected(cache, [[(np.full(vc, -128), k) for k in range(3)]])[0]
    assert seen["cycles"] == PE.latency


def test_pe_parameter_errors():
    with pytest.raises(ValueError, match="at least one lane"):
        PE(vc=0, acc_width=24, depth=8)
    with pytest.raises(ValueError, match="at least 16 bits"):
        PE(vc=4, acc_width=8, depth=8)


@pytest.mark.parametrize("idle,stall", [(0.0, 0.0), (0.25, 0.35)], ids=["full_rate", "throttled"])
def test_pe_array_random(idle, stall):
    rng = np.random.default_rng(SEED + 7)
    m, vc, depth = 3, 8, 6
    dut = PEArray(m=m, vc=vc, acc_width=24, depth=depth, tag_shape=8)
    caches = [_cache(rng, depth, vc) for _ in range(m)]
    for k in range(m):
        rng.shuffle(caches[k])
    beats, groups = _beats(rng, vc, depth, 25, 7)
    tags = []
    for b in beats:
        b["tag"] = int(rng.integers(0, 256))
        if b["last"]:
            tags.append(b["tag"])
    expected = [[_expected(caches[k], [g])[0] for k in range(m)] for g in groups]
    got = []

    async def src(ctx):
        for k in range(m):
            await _load_cache(ctx, dut, caches[k], pe=k)
        await stream_send(ctx, dut.i, beats, idle=idle, seed=SEED)

    async def sink(ctx):
        got.extend(await stream_recv(ctx, dut.o, len(groups), stall=stall, seed=SEED + 2))

    run_sim(dut, src, sink)
    assert [list(p.acc) for p in got] == expected
    assert [p.tag for p in got] == tags
