"""Output stage (bias, ReLU, requantize, saturate, activation, max-pool) in amaranth.sim vs golden."""
import numpy as np
import pytest

from nibble.hw.output import SH_MAX, SH_MIN, OutputStage
from nibble.sim import golden
from tests.streams import run_sim, stream_recv, stream_send

SEED = 4711


def _run(m, aw, accs, pool_flags, bias, sh, relu, idle=0.0, stall=0.0, act=None):
    """Stream ``accs`` through a stage; ``act=None`` leaves the ``act`` port undriven."""
    dut = OutputStage(m=m, acc_width=aw, tag_shape=8)
    beats = [{"acc": [int(v) for v in a], "pool_first": f, "pool_last": l, "tag": k % 256}
             for k, (a, (f, l)) in enumerate(zip(accs, pool_flags))]
    n_out = sum(l for _, l in pool_flags)
    got = []

    async def src(ctx):
        ctx.set(dut.bias, [int(b) for b in bias])
        ctx.set(dut.sh, sh)
        ctx.set(dut.relu, int(relu))
        if act is not None:
            ctx.set(dut.act, act)
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


@pytest.mark.parametrize("act", [golden.ACT_NONE, golden.ACT_TANH, golden.ACT_SIGMOID])
def test_latency(act):
    """A beat with pool_last appears on ``o`` OutputStage.latency cycles after its transfer."""
    assert OutputStage.latency == 5          # the documented figure (bias, PReLU, shift, lookup, max)
    dut = OutputStage(m=2, acc_width=24, tag_shape=8)
    seen = {}

    async def tb(ctx):
        ctx.set(dut.sh, 1)
        ctx.set(dut.bias, [0, 0])
        ctx.set(dut.act, act)
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
    assert seen["v"] == golden.activate(golden.requantize(np.array([7, -7]), 1), act).tolist()


# ---- activation lookup (tanh / sigmoid) -------------------------------------------------------

ACT_H, ACT_W, ACT_SH = 18, 16, 3     # 288 pixels: all 256 int8 values per channel + 32 saturating


def _act_map(m, seed):
    """Accumulators (m, ACT_H, ACT_W) and biases whose requantized values (sh = ACT_SH) hit every
    int8 value in every channel (a different order per channel) plus saturating values."""
    rng = np.random.default_rng(seed)
    bias = rng.integers(-1000, 1000, m)
    n = ACT_H * ACT_W
    t = np.empty((m, n), dtype=np.int64)
    for k in range(m):
        extra = rng.choice([-1, 1], n - 256) * rng.integers(129, 5000, n - 256)
        t[k] = rng.permutation(np.concatenate([np.arange(-128, 128), extra]))
    # t·2^sh + r with r in [−2^(sh−1), 2^(sh−1)) rounds half up to exactly t
    r = rng.integers(-(1 << (ACT_SH - 1)), 1 << (ACT_SH - 1), (m, n))
    acc = (t << ACT_SH) + r - bias[:, None]
    return acc.reshape(m, ACT_H, ACT_W), bias


def _stream_order(acc, pool):
    """Beats (pixel vectors) and pool flags: raster order, or 2×2 windows one after another."""
    m, h, w = acc.shape
    if not pool:
        return [acc[:, y, x] for y in range(h) for x in range(w)], [(1, 1)] * (h * w)
    beats, flags = [], []
    for wy in range(h // 2):
        for wx in range(w // 2):
            for j, (dy, dx) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
                beats.append(acc[:, 2 * wy + dy, 2 * wx + dx])
                flags.append((int(j == 0), int(j == 3)))
    return beats, flags


@pytest.mark.parametrize("idle,stall", [(0.0, 0.0), (0.3, 0.4)], ids=["full_rate", "throttled"])
@pytest.mark.parametrize("pool", [False, True], ids=["no_pool", "pool"])
@pytest.mark.parametrize("act", [golden.ACT_NONE, golden.ACT_TANH, golden.ACT_SIGMOID],
                         ids=["none", "tanh", "sigmoid"])
def test_activation_all_values(act, pool, idle, stall):
    """Every int8 value in every channel through the lookup, against
    ``maxpool2(activate(requantize(acc + bias, sh), act))`` of the golden model, bit for bit."""
    m = 4
    acc, bias = _act_map(m, SEED + act)
    q = golden.requantize(acc + bias[:, None, None], ACT_SH)
    for k in range(m):
        assert set(q[k].ravel().tolist()) == set(range(-128, 128))
    exp = golden.activate(q, act)
    if pool:
        exp = golden.maxpool2(exp)
    beats, flags = _stream_order(acc, pool)
    got, tags = _run(m, 32, beats, flags, bias, ACT_SH, False, idle, stall, act=act)
    got = np.array(got).T.reshape(exp.shape)             # results come in raster / window order
    assert np.array_equal(got, exp)
    assert tags == [k % 256 for k in range(len(beats)) if flags[k][1]]


@pytest.mark.parametrize("act", [3, None], ids=["code3", "undriven"])
def test_activation_unused_code_is_identity(act):
    """``act`` = 3 and an undriven ``act`` port behave as ACT_NONE."""
    m = 4
    acc, bias = _act_map(m, SEED)
    beats, flags = _stream_order(acc, False)
    got, _ = _run(m, 32, beats, flags, bias, ACT_SH, False, act=act)
    exp = golden.requantize(acc + bias[:, None, None], ACT_SH)
    assert np.array_equal(np.array(got).T.reshape(exp.shape), exp)


def test_activation_with_relu_and_pool():
    """ReLU before the lookup: sigmoid of max(t, 0) ≥ 64, tanh ≥ 0; pooled, throttled."""
    m = 3
    acc, bias = _act_map(m, SEED + 7)
    beats, flags = _stream_order(acc, True)
    for act in (golden.ACT_TANH, golden.ACT_SIGMOID):
        got, _ = _run(m, 32, beats, flags, bias, ACT_SH, True, 0.2, 0.3, act=act)
        q = golden.requantize(acc + bias[:, None, None], ACT_SH, True)
        exp = golden.maxpool2(golden.activate(q, act))
        assert np.array_equal(np.array(got).T.reshape(exp.shape), exp)
