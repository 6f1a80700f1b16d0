"""The engine's parts alone (``hw/engine/``, ``hw/mem/port.py``) in amaranth.sim, and the whole
engine behind memories with random latency and back-pressure.

The memory models here answer requests after a seeded random 1 … 6 cycles (in order, as the
port rules say), stall requests and writes at random, so a part that assumed the one-cycle
on-chip memory would read the wrong word or drop one. Expected values: the memory contents
(ports), a Python loop nest written from the descriptor semantics in ``hw/isa.py`` (scheduler),
the golden device (whole engine).
"""
import collections
import random

import numpy as np
import pytest
from amaranth import *
from amaranth.lib import wiring

from nibble.hw.config import EngineConfig
from nibble.hw.engine import Engine
from nibble.hw.engine.fetch import DescriptorFetch
from nibble.hw.engine.reader import FeatureReader
from nibble.hw.engine.scheduler import Scheduler
from nibble.hw.isa import DESC_WORDS, DESCRIPTOR, EngineError, encode_descriptor
from nibble.hw.mem.port import BurstReader, ReadPortMux, SyncReadPort
from nibble.host.driver import golden_outputs, read_view
from nibble.host.program import TensorSpec, features_to_words
from tests.streams import run_sim, stream_recv, stream_send
from tests.test_engine_ops import CFG, Builder, _inputs

SEED = 77


def _sim(dut, testbenches, background=(), deadline=200000):
    run_sim(dut, *testbenches, deadline_cycles=deadline, background=background)


def read_server(port, mem, seed, max_latency=6, stall=0.3, log=None):
    """A testbench memory behind a :func:`~nibble.hw.mem.port.read_port` (the requester's side
    is ``port``): requests stalled with probability ``stall``; each answered after 1 …
    ``max_latency`` cycles, in order, the response held until taken. ``log`` collects the
    addresses."""
    rng = random.Random(seed)

    async def serve(ctx):
        due = collections.deque()
        cycle = last = 0
        while True:
            ready = rng.random() >= stall
            ctx.set(port.req.ready, int(ready))
            head = due and due[0][0] <= cycle
            ctx.set(port.resp.valid, int(bool(head)))
            if head:
                ctx.set(port.resp.payload, due[0][1])
            _, _, rv, addr, sv, sr = await ctx.tick().sample(port.req.valid, port.req.payload,
                                                             port.resp.valid, port.resp.ready)
            cycle += 1
            if sv and sr:
                due.popleft()
            if rv and ready:
                last = max(last, cycle + rng.randint(0, max_latency - 1))
                due.append((last, int(mem[addr])))
                if log is not None:
                    log.append(addr)
    return serve


def write_server(port, mem, seed, stall=0.3):
    """A testbench memory behind a write port: each write stalled with probability ``stall``."""
    rng = random.Random(seed)

    async def serve(ctx):
        while True:
            ready = rng.random() >= stall
            ctx.set(port.req.ready, int(ready))
            _, _, v, p = await ctx.tick().sample(port.req.valid, port.req.payload)
            if v and ready:
                mem[p.addr] = int(p.data)
    return serve


# ---- ports

def test_sync_read_port_order_backpressure_and_rate():
    """Random requests and a random consumer: every word in order; with a consumer that takes
    everything, one word per cycle and 2 cycles of latency (its docstring)."""
    mem_words = [random.Random(1).getrandbits(32) for _ in range(64)]
    m = Module()
    m.submodules.port = port = SyncReadPort(64, 32)
    data = Signal(32)
    m.d.sync += data.eq(Array(Const(w, 32) for w in mem_words)[port.addr])
    m.d.comb += port.data.eq(data)
    addrs = [random.Random(2).randrange(64) for _ in range(200)]
    got = {}

    async def send(ctx):
        await stream_send(ctx, port.bus.req, addrs, idle=0.3, seed=3)

    async def recv(ctx):
        got["slow"] = await stream_recv(ctx, port.bus.resp, len(addrs), stall=0.5, seed=4)
    _sim(m, [send, recv])
    assert got["slow"] == [mem_words[a] for a in addrs]

    times = []

    async def send_fast(ctx):
        await stream_send(ctx, port.bus.req, addrs[:50])

    async def recv_fast(ctx):
        ctx.set(port.bus.resp.ready, 1)
        cycle = 0
        while len(times) < 50:
            _, _, v = await ctx.tick().sample(port.bus.resp.valid)
            if v:
                times.append(cycle)
            cycle += 1
    _sim(m, [send_fast, recv_fast])
    assert times == list(range(times[0], times[0] + 50))       # one word per cycle
    assert times[0] == 2                                       # requested in cycle 0


def test_burst_reader_and_mux_route_every_word_to_its_requester():
    """Two BurstReaders on one ReadPortMux behind a random-latency memory, commands at once."""
    mem = [random.Random(5).getrandbits(16) for _ in range(256)]
    m = Module()
    m.submodules.a = a = BurstReader(256, 16, 40)
    m.submodules.b = b = BurstReader(256, 16, 40)
    m.submodules.mux = mux = ReadPortMux(2, 256, 16)
    wiring.connect(m, a.port, mux.c0)
    wiring.connect(m, b.port, mux.c1)
    cmds = {"a": [(10, 40), (200, 7), (3, 1)], "b": [(100, 33), (0, 12)]}
    got = {}

    def client(name, dut, seed):
        async def tb(ctx):
            for i, (base, n) in enumerate(cmds[name]):
                await stream_send(ctx, dut.cmd, [{"base": base, "n": n}], idle=0.5, seed=seed + i)
        return tb

    async def recv_a(ctx):
        got["a"] = await stream_recv(ctx, a.o, sum(n for _, n in cmds["a"]), stall=0.3, seed=6)

    async def recv_b(ctx):
        got["b"] = await stream_recv(ctx, b.o, sum(n for _, n in cmds["b"]), stall=0.3, seed=7)
    _sim(m, [client("a", a, 8), client("b", b, 9), recv_a, recv_b],
         background=[read_server(mux.bus, mem, seed=10)])
    for name in "ab":
        assert got[name] == [mem[base + i] for base, n in cmds[name] for i in range(n)], name


# ---- descriptor fetch

def _desc(**kw):
    base = dict(in_h=4, in_w=4, in_cb=1, in_row=4, in_pix=1, kh=3, kw=3, sy=1, sx=1, pad_t=1, pad_l=1,
                conv_h=4, conv_w=4, pool_kh=1, pool_kw=1, pool_sy=1, pool_sx=1, out_base=100, out_h=4,
                out_w=4, out_row=4, out_pix=1, n_coblk=1, w_base=0, bias_base=64, sh=10, clip_lo=-128,
                clip_hi=127, last=1)
    base.update(kw)
    return encode_descriptor(**base)


@pytest.mark.parametrize("fields,err", [
    ({}, EngineError.NONE),
    ({"kh": 0}, EngineError.ZERO_SIZE),
    ({"pool_kh": 2, "pool_kw": 2, "pool_sy": 2, "pool_sx": 2, "pool_pt": 2}, EngineError.POOL),
    ({"winograd": 1, "kh": 5, "kw": 5}, EngineError.WINOGRAD),
    ({"in_cb": 20}, EngineError.FILTER_CACHE),
    ({"out_base": 1020}, EngineError.FEATURE_RANGE),
    ({"w_base": 1020}, EngineError.WEIGHT_RANGE),
    ({"bias_base": 510}, EngineError.PARAM_RANGE),
    ({"sh": 127}, EngineError.SHIFT_RANGE),
    ({"magic": 1}, EngineError.BAD_MAGIC),
], ids=lambda x: x.name if isinstance(x, EngineError) else None)
def test_descriptor_fetch_checks(fields, err):
    """Each check alone, through a random-latency parameter memory; the descriptor comes out as
    the words went in, with ``tcb = kh·kw·in_cb``."""
    cfg = EngineConfig(m=8, vc=8, acc_width=24, filter_depth=64, feature_depth=1024, weight_depth=1024,
                       param_depth=512, winograd=True)
    words = _desc(**{k: v for k, v in fields.items() if k != "magic"})
    words[0] ^= fields.get("magic", 0)          # the magic is the low bits of word 0
    mem = [0] * 512
    mem[40:40 + DESC_WORDS] = words
    dut = DescriptorFetch(cfg)
    out = {}

    async def tb(ctx):
        await stream_send(ctx, dut.cmd, [40])
        out["o"], = await stream_recv(ctx, dut.o, 1)
    _sim(dut, [tb], background=[read_server(dut.p_rd, mem, seed=11)])
    o = out["o"]
    assert int(o.err) == err
    assert o.desc.as_bits() == sum(w << (32 * i) for i, w in enumerate(words)) & ((1 << DESCRIPTOR.size) - 1)
    assert int(o.tcb) == fields.get("kh", 3) * fields.get("kw", 3) * fields.get("in_cb", 1)



# ---- scheduler

def _reference_beats(d, tcb, k, coblk=0, g_off=0):
    """The direct-mode beat sequence from the descriptor semantics (hw/isa.py): (faddr or None,
    filter word, first, last, output address, pool_first, pool_last, skip)."""
    out = []
    for py in range(d["out_h"]):
        for px in range(d["out_w"]):
            for dy in range(d["pool_kh"]):
                for dx in range(d["pool_kw"]):
                    oy, ox = py * d["pool_sy"] + dy - d["pool_pt"], px * d["pool_sx"] + dx - d["pool_pl"]
                    win = 0 <= oy < d["conv_h"] and 0 <= ox < d["conv_w"]
                    t = 0
                    for ky in range(d["kh"]):
                        for kx in range(d["kw"]):
                            for cb in range(d["in_cb"]):
                                vy, vx = oy * d["sy"] + ky - d["pad_t"], ox * d["sx"] + kx - d["pad_l"]
                                s = 1 << d["dil"]
                                inb = (win and vy >= 0 and vx >= 0 and vy % s == 0 and vx % s == 0
                                       and vy // s < d["in_h"] and vx // s < d["in_w"])
                                fa = (d["in_base"] + (vy // s) * d["in_row"] + (vx // s) * d["in_pix"]
                                      + g_off + cb) if inb else None
                                out.append((fa, t, t == 0, t == tcb - 1,
                                            d["out_base"] + py * d["out_row"] + px * d["out_pix"] + coblk * k,
                                            dy == 0 and dx == 0,
                                            dy == d["pool_kh"] - 1 and dx == d["pool_kw"] - 1, not win))
                                t += 1
    return out


@pytest.mark.parametrize("fields", [
    dict(),
    dict(sy=2, sx=2, conv_h=2, conv_w=2, out_h=2, out_w=2, in_cb=2, in_pix=2, in_row=8),
    dict(pool_kh=3, pool_kw=3, pool_sy=2, pool_sx=2, pool_pt=0, pool_pl=1, out_h=2, out_w=2, in_base=7),
    dict(dil=1, in_h=2, in_w=2, in_row=2, kh=2, kw=3, pad_t=1, pad_l=2, conv_h=4, conv_w=4),
], ids=["plain", "stride2_two_blocks", "pool3x3_s2_padded", "nzp_x2_rect_kernel"])
def test_scheduler_direct_beats(fields):
    """Every beat of a block equals the loop nest of the descriptor (random consumer stalls)."""
    d = dict(in_base=0, in_h=4, in_w=4, in_cb=1, in_row=4, in_pix=1, kh=3, kw=3, sy=1, sx=1, pad_t=1,
             pad_l=1, conv_h=4, conv_w=4, pool_kh=1, pool_kw=1, pool_sy=1, pool_sx=1, pool_pt=0, pool_pl=0,
             out_base=500, out_h=4, out_w=4, out_row=9, out_pix=2, dil=0, n_coblk=3)
    d.update(fields)
    tcb = d["kh"] * d["kw"] * d["in_cb"]
    dut = Scheduler(CFG)
    k = CFG.m // CFG.vc
    want = _reference_beats(d, tcb, k, coblk=2, g_off=3)
    out = {}

    async def tb(ctx):
        ctx.set(dut.desc, DESCRIPTOR.const({**d}))
        ctx.set(dut.tcb, tcb)
        await stream_send(ctx, dut.cmd, [{"coblk": 2, "g_off": 3}])
        out["beats"] = await stream_recv(ctx, dut.o, len(want), stall=0.3, seed=13)
        for _ in range(3):
            await ctx.tick()
        out["busy"] = ctx.get(dut.busy) or ctx.get(dut.o.valid)
    _sim(dut, [tb])
    got = [(int(b.faddr) if b.inb else None, int(b.w), bool(b.first), bool(b.last), int(b.tag.addr),
            bool(b.tag.pool_first), bool(b.tag.pool_last), bool(b.tag.skip)) for b in out["beats"]]
    assert got == want
    assert not out["busy"]                      # exactly len(want) beats


def test_feature_reader_random_latency():
    """Beats with and without ``inb`` through a random-latency memory and a stalling consumer:
    every beat once, in order, with its word (0 without ``inb``), and no read without ``inb``."""
    rng = random.Random(14)
    mem = [rng.getrandbits(64) for _ in range(CFG.feature_depth)]
    beats = [{"faddr": rng.randrange(CFG.feature_depth), "inb": rng.random() < 0.7, "w": i % 64,
              "cb": i} for i in range(300)]
    dut = FeatureReader(CFG)
    log, out = [], {}

    async def send(ctx):
        await stream_send(ctx, dut.i, beats, idle=0.2, seed=15)

    async def recv(ctx):
        out["o"] = await stream_recv(ctx, dut.o, len(beats), stall=0.3, seed=16)
    _sim(dut, [send, recv], background=[read_server(dut.f_rd, mem, seed=17, log=log)])
    assert [int(o.beat.cb) for o in out["o"]] == list(range(300))
    assert [int(o.x) for o in out["o"]] == [mem[b["faddr"]] if b["inb"] else 0 for b in beats]
    assert log == [b["faddr"] for b in beats if b["inb"]]


# ---- the whole engine

def _engine_run(program, v, seed, max_latency):
    """``program`` on a bare :class:`Engine` whose five memory ports are testbench memories with
    random latency (1 … ``max_latency``) and stalls; returns the outputs read back."""
    c = program.config
    params = [int(w) for w in program.params] + [0] * (c.param_depth - len(program.params))
    per = c.vc // 4
    w16 = np.asarray(program.weights, np.uint64)
    weights = [sum(int(w16[i * per + j]) << (16 * j) for j in range(per)) for i in range(len(w16) // per)]
    weights += [0] * (c.weight_depth - len(weights))
    feature = [0] * c.feature_depth
    spec = program.inputs[0]
    raw = np.frombuffer(features_to_words(v, c.vc, spec.view(c.vc)[2]), np.uint8).reshape(-1, c.vc)
    for i, row in enumerate(raw):
        feature[spec.base + i] = int.from_bytes(row.tobytes(), "little")
    dut = Engine(c)
    res = {}

    async def tb(ctx):
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        await ctx.tick().until(dut.done | dut.error)
        res["err"] = ctx.get(dut.err_code)
    _sim(dut, [tb], deadline=400000, background=[
        read_server(dut.p_rd, params, seed, max_latency), read_server(dut.w_rd, weights, seed + 1, max_latency),
        read_server(dut.f_rd, feature, seed + 2, max_latency), read_server(dut.f_rd2, feature, seed + 3, max_latency),
        write_server(dut.f_wr, feature, seed + 4)])
    assert res["err"] == 0
    outs = []
    for o in program.outputs:
        row, pix, cb = o.view(c.vc)
        words = np.array([np.frombuffer(feature[o.base + i].to_bytes(c.vc, "little"), np.int8)
                          for i in range(o.words(c.vc))])
        outs.append(read_view(words, 0, o.shape[1], o.shape[2], row, pix, cb)[:o.shape[0]])
    return outs


@pytest.mark.parametrize("case", ["pool_prelu", "winograd_residual"])
def test_engine_behind_random_latency_memories(case):
    """Two-layer programs (direct 3×3 + pooled PReLU; Winograd with a residual Add and a 1×1
    layer) on the engine with every memory answering after 1 … 6 cycles with random stalls:
    bit-identical to the golden device."""
    rng = np.random.default_rng(SEED)
    b = Builder(CFG, rng)
    if case == "pool_prelu":
        b.layer("a", "x", "t", (5, 6, 6), 0, 100, 8, relu=True, q_out=4)
        b.layer("b", "t", "y", (8, 6, 6), 100, 200, 8, pool=(3, 3, 2, 2, 0, 1, 0, 1), prelu=True, q_in=4, q_out=3)
        p = b.program([TensorSpec("x", (5, 6, 6), 5, 0)], [TensorSpec("y", (8, 3, 3), 3, 200)])
    else:
        b.layer("a", "x", "t", (8, 5, 6), 0, 100, 8, k=1, pad=(0, 0, 0, 0), relu=True, q_out=4)
        b.layer("b", "t", "y", (8, 5, 6), 100, 200, 8, winograd=True, q_in=4, q_out=3,
                res_src="x", res_base=0, res_q=5)
        p = b.program([TensorSpec("x", (8, 5, 6), 5, 0)], [TensorSpec("y", (8, 5, 6), 3, 200)])
    v = _inputs(rng, p.inputs[0].shape)[0]
    got = _engine_run(p, v, seed=20, max_latency=6)
    want = golden_outputs(p, v)
    assert all(np.array_equal(g, w) for g, w in zip(got, want))
