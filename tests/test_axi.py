"""AXI4SlaveBridge (hw/axi.py) in amaranth.sim against a bus RAM with holes (tests/busram.py).

Traffic comes from the cycle-based master of tests/axisim.py; expected responses and bus writes
from its AxiModel, which applies the bursts in the order their address handshakes happened. Every
cycle the bus is checked: no access with addr_err, never w_en and r_en together.
"""
import random

import pytest
from amaranth import *
from amaranth.lib import wiring
from amaranth.sim import Simulator

from axisim import FULL_STRB, AxiModel, AxiSimMaster, read, write
from busram import BusRAM
from nibble.hw.axi import (BEAT_BYTES, BEAT_SIZE, FULL_RATE_R_DEPTH, R_DEPTH, AXI4SlaveBridge, AXI4Signature,
                           Burst, Resp)
from nibble.hw.bus import ADDR_BITS, READ_LATENCY

DEPTH = 600                 # RAM words: room for a 256-beat burst and more
HOLE = (300, 304)           # unmapped words inside the RAM
SEED = 20240
W = BEAT_BYTES              # bytes per beat


class Top(wiring.Component):
    def __init__(self, bridge, ram):
        self.bridge, self.ram = bridge, ram
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.bridge, m.submodules.ram = self.bridge, self.ram
        wiring.connect(m, self.bridge.bus, self.ram.bus)
        return m


def initial(seed=SEED):
    rng = random.Random(seed)
    return [rng.getrandbits(32) for _ in range(DEPTH)]


def simulate(txns, *, init=None, r_depth=R_DEPTH, addr_width=32, **master_kw):
    """Run ``txns``; check them against the model; return (master, bursts in served order)."""
    init = initial() if init is None else init
    ram = BusRAM(DEPTH, hole=HOLE, init=init)
    bridge = AXI4SlaveBridge(r_depth=r_depth, addr_width=addr_width)
    master = AxiSimMaster(bridge.axi, bridge.bus, txns, **master_kw)
    mem = {}

    async def tb(ctx):
        await master.run(ctx)
        await ctx.tick().repeat(4)
        mem.update({i: ctx.get(ram.mem.data[i]) for i in range(DEPTH)})

    sim = Simulator(Top(bridge, ram))
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    model = AxiModel(ram.mapped, dict(enumerate(init)))
    served = master.check(model)
    assert mem == {i: model.memory[i] for i in range(DEPTH)}
    return master, served


def rand_words(rng, n):
    return [rng.getrandbits(32) for _ in range(n)]


# ---- parameters

@pytest.mark.parametrize("kw,msg", [
    ({"addr_width": 11}, "AXI4 addr_width must be in 12..64, not 11"),
    ({"data_width": 24}, "AXI4 data_width must be a power of two in 8..1024, not 24"),
    ({"id_width": 0}, "AXI4 id_width must be in 1..32, not 0"),
])
def test_signature_validation(kw, msg):
    with pytest.raises(ValueError, match=f"^{msg}$"):
        AXI4Signature(**kw)


@pytest.mark.parametrize("value", [0, 257, 4.0])
def test_r_depth_validation(value):
    with pytest.raises(ValueError, match=rf"^AXI4SlaveBridge r_depth must be in 1\.\.256, not {value!r}$"):
        AXI4SlaveBridge(r_depth=value)


def test_signature_members_and_equality():
    sig = AXI4Signature(id_width=6)
    assert sig == AXI4Signature(32, 32, 6) and sig != AXI4Signature()
    assert sig.members["awid"].shape == 6 and sig.members["wstrb"].shape == 4
    assert sig.members["rdata"].flow == wiring.In and sig.members["awlen"].shape == 8
    assert AXI4SlaveBridge().axi.signature == AXI4Signature().flip()


# ---- named edge cases

def test_single_beats():
    """One-beat INCR and FIXED bursts, mapped (first, last, around the hole) and unmapped."""
    rng = random.Random(SEED)
    txns = []
    for word in (0, 1, 299, 304, DEPTH - 1):
        d = rng.getrandbits(32)
        txns += [write(W * word, [d], id=word % 16), read(W * word, 1, id=(word + 3) % 16)]
    for word in (HOLE[0], HOLE[1] - 1, DEPTH, 1 << 20):      # unmapped: SLVERR, no access
        txns += [write(W * word, [1]), read(W * word, 1)]
    txns += [write(W * 7, [5], burst=Burst.FIXED), read(W * 7, 1, burst=Burst.FIXED)]
    simulate(txns)


def test_256_beat_bursts_full_rate():
    rng = random.Random(SEED + 1)
    data = rand_words(rng, 256)
    w, r = write(0, data, id=5), read(0, 256, id=9, after=10)
    simulate([w, r])
    assert w.addr_cycle < r.addr_cycle and w.resp == [Resp.OKAY] and w.bid == 5
    beats = w.resp_cycles[:-1]
    assert beats == list(range(beats[0], beats[0] + 256))           # one W beat per cycle
    assert r.resp_cycles == list(range(r.resp_cycles[0], r.resp_cycles[0] + 256))   # one R beat per cycle
    assert [d for d, *_ in r.resp] == data and [b[2] for b in r.resp] == [0] * 255 + [1]


def test_fixed_bursts():
    """FIXED: every beat at the same word; the last write stays, reads repeat the word."""
    rng = random.Random(SEED + 2)
    data = rand_words(rng, 9)
    w = write(W * 40, data, burst=Burst.FIXED)
    r = read(W * 40, 6, burst=Burst.FIXED, after=30)
    master, _ = simulate([w, r])
    assert [(x[1], x[2]) for x in master.bus_log] == [("w", 40)] * 9 + [("r", 40)] * 6
    assert [d for d, *_ in r.resp] == [data[-1]] * 6 and w.resp == [Resp.OKAY]


def test_wrap_and_reserved_bursts_slverr():
    txns = [write(0, [1, 2, 3, 4], burst=Burst.WRAP), read(0, 4, burst=Burst.WRAP),
            write(W * 8, [7, 8], burst=3), read(W * 8, 2, burst=3)]
    master, _ = simulate(txns)
    assert master.bus_log == []                                    # nothing accessed
    assert all(t.resp[0] == Resp.SLVERR if t.write else all(b[1] == Resp.SLVERR for b in t.resp)
               for t in txns)


@pytest.mark.parametrize("size", [0, 1, 3])
def test_other_sizes_slverr(size):
    txns = [write(W * 2, [1, 2, 3], size=size), read(W * 2, 3, size=size)]
    master, _ = simulate(txns)
    assert master.bus_log == []
    assert txns[0].resp == [Resp.SLVERR] and [b[:3] for b in txns[1].resp] == [
        (0, Resp.SLVERR, 0), (0, Resp.SLVERR, 0), (0, Resp.SLVERR, 1)]


def test_unaligned_and_high_address_slverr():
    txns = [write(W * 3 + 2, [1]), read(W * 3 + 1, 2)]
    master, _ = simulate(txns)
    assert master.bus_log == []
    hi = 1 << (ADDR_BITS + 2)                  # beyond the bus's word address range
    txns = [write(hi, [1, 2]), read(hi + W, 2), write(W, [3]), read(W, 1)]
    master, _ = simulate(txns, addr_width=64)
    assert txns[0].resp == [Resp.SLVERR] and txns[2].resp == [Resp.OKAY]
    assert [x[2] for x in master.bus_log] == [1, 1]


def test_partial_strobe_beat_not_written():
    data = [0x11111111, 0x22222222, 0x33333333, 0x44444444]
    strb = [FULL_STRB, 0b0111, FULL_STRB, 0]
    w = write(W * 50, data, strb=strb)
    master, _ = simulate([w])
    assert w.resp == [Resp.SLVERR]
    assert [(x[2], x[3]) for x in master.bus_log] == [(50, data[0]), (52, data[2])]


def test_addr_err_mid_burst():
    """A burst running into the hole: those beats are SLVERR and not accessed, the others are."""
    rng = random.Random(SEED + 3)
    start = HOLE[0] - 3
    data = rand_words(rng, 10)
    w, r = write(W * start, data), read(W * start, 10)
    master, _ = simulate([w], idle=0.3, stall=0.3, seed=1)
    assert w.resp == [Resp.SLVERR] and len(master.bus_log) == 10 - (HOLE[1] - HOLE[0])
    master, _ = simulate([r], idle=0.3, stall=0.3, seed=2)
    assert [b[1] for b in r.resp] == [Resp.SLVERR if HOLE[0] <= start + i < HOLE[1] else Resp.OKAY
                                      for i in range(10)]
    # at the end of the memory: the tail beyond DEPTH is SLVERR
    r2 = read(W * (DEPTH - 2), 5)
    simulate([r2])
    assert [b[1] for b in r2.resp] == [Resp.OKAY] * 2 + [Resp.SLVERR] * 3


@pytest.mark.parametrize("r_depth", [R_DEPTH, 2])
def test_rready_low_for_long(r_depth):
    """RREADY low for 400 cycles: the FIFO fills, issue stops at r_depth words, nothing lost."""
    hold = 400
    r = read(W * 10, 100, id=3)
    r2 = read(W * 250, 30, id=4)
    master, _ = simulate([r, r2], rready=lambda c: c >= hold, r_depth=r_depth)
    early = [x for x in master.bus_log if x[0] < hold]
    assert len(early) == r_depth
    assert all(rid == 3 for *_, rid in r.resp) and all(rid == 4 for *_, rid in r2.resp)
    simulate([read(0, 64)], stall=0.7, seed=9, r_depth=r_depth)


def test_back_pressure_on_b():
    """BREADY low: the next write waits for the B slot, a read goes ahead meanwhile."""
    w1, w2, r = write(0, [1, 2]), write(W * 4, [3]), read(W * 100, 4, after=10)
    simulate([w1, w2, r], bready=lambda c: c >= 60)
    assert r.addr_cycle < w2.addr_cycle
    assert w1.resp_cycles[-1] >= 60 and w2.addr_cycle >= 60


def test_interleaved_reads_and_writes_alternate():
    """Both channels always busy: the bridge alternates read and write bursts, starving neither."""
    rng = random.Random(SEED + 4)
    txns = []
    for k in range(6):
        txns.append(write(W * 16 * k, rand_words(rng, 5), id=k))
        txns.append(read(W * 16 * k + W * 8, 7, id=k + 8))
    _, served = simulate(txns)
    assert [t.write for t in served] == [k % 2 == 1 for k in range(12)]     # a read first


def test_random_traffic_throttled():
    """Seeded random bursts (INCR/FIXED, errors, overlapping ranges) with idle and back-pressure."""
    print("seed", SEED)
    rng = random.Random(SEED + 5)
    txns = []
    for k in range(40):
        n = rng.choice([1, 2, rng.randrange(1, 40), rng.randrange(1, 257)])
        start = rng.randrange(0, DEPTH + 8 - min(n, 64))
        burst = rng.choice([Burst.INCR] * 6 + [Burst.FIXED, Burst.WRAP])
        size = BEAT_SIZE if rng.random() < 0.9 else rng.choice([0, 1, 3])
        kw = dict(id=rng.randrange(16), burst=burst, size=size)
        if rng.random() < 0.5:
            strb = [FULL_STRB if rng.random() < 0.95 else rng.randrange(15) for _ in range(n)]
            txns.append(write(W * start, rand_words(rng, n), strb=strb, **kw))
        else:
            txns.append(read(W * start, n, **kw))
    simulate(txns, idle=0.3, stall=0.3, seed=SEED)


@pytest.mark.parametrize("r_depth", [1, 2, 3, 5])
def test_small_read_fifo_random_stalls(r_depth):
    """Any FIFO size: back-to-back read bursts under random RREADY pauses lose nothing."""
    rng = random.Random(SEED + r_depth)
    txns = [read(W * rng.randrange(DEPTH - 40), rng.randrange(1, 40), id=k) for k in range(8)]
    simulate(txns, stall=0.5, seed=r_depth, r_depth=r_depth)


# ---- latency and throughput (the properties the docstring states)

def test_latency_and_throughput():
    b = AXI4SlaveBridge()
    n = 5
    ws = [write(W * 8 * k, list(range(k, k + n)), id=k) for k in range(3)]
    simulate(ws)
    w0 = ws[0]
    first_valid = 0                                         # the master presents at cycle 0
    assert w0.addr_cycle == first_valid + b.addr_latency
    assert w0.resp_cycles[0] == w0.addr_cycle + 1           # WREADY the cycle after AW
    assert w0.resp_cycles[-1] == w0.resp_cycles[n - 1] + b.b_latency
    assert w0.resp_cycles[-1] == first_valid + b.addr_latency + 1 + n - 1 + b.b_latency
    assert [t.addr_cycle for t in ws] == [ws[0].addr_cycle + k * b.write_burst_cycles(n) for k in range(3)]

    m, _ = simulate([write(W * 3, [9, 10, 11])])
    wcyc = [x[0] for x in m.bus_log]
    assert wcyc == [c + b.write_beat_latency for c in range(wcyc[0] - 1, wcyc[0] + 2)]

    rs = [read(W * 8 * k, n, id=k) for k in range(3)]
    m, _ = simulate(rs)
    assert rs[0].resp_cycles[0] == first_valid + b.read_latency
    assert b.read_latency == b.addr_latency + 1 + READ_LATENCY + 2
    period = b.read_burst_cycles(n)
    assert [t.resp_cycles[0] for t in rs] == [rs[0].resp_cycles[0] + k * period for k in range(3)]
    assert [t.addr_cycle for t in rs] == [rs[0].addr_cycle + k * period for k in range(3)]
    r_en = [x[0] for x in m.bus_log]
    assert r_en[:n] == list(range(r_en[0], r_en[0] + n))    # a read every cycle


@pytest.mark.parametrize("r_depth,full_rate", [(FULL_RATE_R_DEPTH, True), (FULL_RATE_R_DEPTH - 1, False)])
def test_full_rate_read_fifo_depth(r_depth, full_rate):
    """FULL_RATE_R_DEPTH is the smallest FIFO that keeps one R beat per cycle on a long burst."""
    r = read(0, 64)
    simulate([r], r_depth=r_depth)
    span = r.resp_cycles[-1] - r.resp_cycles[0] + 1
    assert (span == 64) == full_rate
