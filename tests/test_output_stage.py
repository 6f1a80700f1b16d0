"""Output stage (bias, ReLU, requantize, saturate, max-pool) in amaranth.sim vs the golden model."""
import numpy as np
import pytest

from nibble.hw.output import SH_MAX, SH_MIN, OutputStage
from nibble.sim import golden
from tests.streams import run_sim, stream_recv, stream_send

SEED = 4711


def _run(m, aw, accs, pool_flags, bias, sh, relu, idle=0.0, stall=0.0):
    dut = OutputStage(m=m, acc_width=aw, tag_shape=8)
    beats = [{"acc": [int(v) for v in a], "pool_first": f, "pool_last": l, "tag": k % 256}
             for k, (a, (f, l)) in enumerate(zip(accs, pool_flags))]
    n_out = sum(l for _, l in pool_flags)
    got = []

    async def src(ctx):
        ctx.set(dut.bias, [int(b) for b in bias])
        ctx.set(dut.sh, sh)
        ctx.set(dut.relu, int(relu))
        await stream_send(ctx, dut.i, beats, idle=idle, seed=SEED)

    async def sink(ctx):
        got.extend(await stream_recv(ctx, dut.o, n_out, stall=stall, seed=SEED + 1))

    run_sim(dut, src, sink)
    return [list(p.v) for p in got], [p.tag for p in got]


@pytest.mark.parametrize("sh", [SH_MIN, -3, 0, 1, 2, 5, 13, 31, SH_MAX])
@pytest.mark.parametrize("relu", [False, True])
def test_requantize_edges(sh, relu):
    """acc = −7..7 (the ARITHMETIC §4.5 example), the accumulator extremes and a bias."""
    m, aw = 4, 32
    vals = list(range(-7, 8)) + [-(1 << 31), (1 << 31) - 1, 127 << max(sh, 0), -(129 << max(sh, 0))]
    vals += [(1 << (sh - 1)) if sh > 0 else 1, -(1 << (sh - 1)) if sh > 0 else -1]
    vals = [min(max(v, -(1 << 31)), (1 << 31) - 1) for v in vals]    # values the accumulator can hold
    vals += [0] * ((-len(vals)) % m)
    accs = np.array(vals, dtype=np.int64).reshape(-1, m)
    bias = np.array([0, 1, -1, -(1 << 31)], dtype=np.int64)
    got, _ = _run(m, aw, accs, [(1, 1)] * len(accs), bias, sh, relu)
    exp = golden.requantize(accs + bias, sh, relu)
    assert np.array_equal(np.array(got), exp)


def test_requantize_example_from_arithmetic():
    accs = np.arange(-7, 9).reshape(-1, 4)
    got, _ = _run(4, 24, accs, [(1, 1)] * 4, np.zeros(4), 2, False)
    assert np.array(got).ravel()[:15].tolist() == [-2, -1, -1, -1, -1, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2]


@pytest.mark.parametrize("idle,stall", [(0.0, 0.0), (0.3, 0.4)], ids=["full_rate", "throttled"])
def test_maxpool_random(idle, stall):
    rng = np.random.default_rng(SEED)
    m, aw, n_win = 3, 28, 30
    accs = rng.integers(-(1 << 20), 1 << 20, (n_win * 4, m))
    bias = rng.integers(-(1 << 12), 1 << 12, m)
    sh = 12
    flags = [(int(k % 4 == 0), int(k % 4 == 3)) for k in range(n_win * 4)]
    got, tags = _run(m, aw, accs, flags, bias, sh, True, idle, stall)
    q = golden.requantize(accs + bias, sh, True).reshape(n_win, 4, m)
    assert np.array_equal(np.array(got), q.max(axis=1))
    assert tags == [(4 * k + 3) % 256 for k in range(n_win)]


def test_latency():
    """A beat with pool_last appears on ``o`` OutputStage.latency cycles after its transfer."""
    dut = OutputStage(m=2, acc_width=24, tag_shape=8)
    seen = {}

    async def tb(ctx):
        ctx.set(dut.sh, 1)
        ctx.set(dut.bias, [0, 0])
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.i.payload, {"acc": [7, -7], "pool_first": 1, "pool_last": 1, "tag": 5})
        await ctx.tick()
        ctx.set(dut.i.valid, 0)
        for cyc in range(1, 8):
            if ctx.get(dut.o.valid):
                seen["cycles"], seen["v"] = cyc, list(ctx.get(dut.o.payload.v))
                break
            await ctx.tick()

    run_sim(dut, tb)
    assert seen["cycles"] == OutputStage.latency
    assert seen["v"] == golden.requantize(np.array([7, -7]), 1).tolist()
