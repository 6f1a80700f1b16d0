"""cocotb testbench: AXI4Master (hw/mem/axi_master.py) on cocotbext-axi's ``AxiRam``.

The slave is ``AxiRam`` (an AXI4 memory independent of the master), filled with seeded random
bytes, with seeded random pauses on all five channels; the command and data streams are driven
and taken by cocotbext-axi's generic stream source/sink, also with random pauses. A monitor on the
AXI port checks every burst (INCR, full size, aligned, at most ``burst_beats`` beats, no 4 KiB
crossing, ``WLAST`` on exactly the last beat of each AW burst) and the read bursts outstanding.
Expected read data come from the RAM's contents at the start of each phase (reads of a phase do
not overlap its writes); after each phase the whole RAM is compared with the contents expected
from the phase's writes. Parameters arrive in environment variables set by the pytest wrapper:
NIBBLE_TB_PARAMS (AXI4Master keyword arguments as JSON), NIBBLE_TB_SEED, NIBBLE_TB_RAM_BYTES.
"""
import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, with_timeout
from cocotb.utils import get_sim_time
from cocotbext.axi import AxiBus, AxiRam
from cocotbext.axi.stream import define_stream

from nibble.hw.axi import Burst
from nibble.hw.mem import (AXI4Master, ErrorCode, PAGE_BYTES, WRITE_DONE_LAYOUT, command_layout,
                           read_beat_layout)

PARAMS = json.loads(os.environ["NIBBLE_TB_PARAMS"])
SEED = int(os.environ["NIBBLE_TB_SEED"])
RAM_BYTES = int(os.environ["NIBBLE_TB_RAM_BYTES"])
MASTER = AXI4Master(**PARAMS)           # for its parameters and derived sizes only
B = MASTER.beat_bytes
CMD = command_layout(MASTER.addr_width)
BEAT = read_beat_layout(MASTER.data_width)
CLOCK_NS = 10
PAUSE = 0.3

StreamBus, StreamTransaction, StreamSource, StreamSink, _ = define_stream(
    "Nibble", signals=["payload", "valid", "ready"])


def field(value, layout, name):
    f = layout[name]
    return (value >> f.offset) & ((1 << f.width) - 1)


def command(addr, beats):
    return StreamTransaction(payload=(addr << CMD["addr"].offset) | (beats << CMD["beats"].offset))


def pauses(rng, p=PAUSE):
    while True:
        yield rng.random() < p


class AxiMonitor:
    """Checks the master's bursts on every clock edge (values sampled at the edge)."""

    def __init__(self, dut):
        self.dut = dut
        self.aw_lens, self.w_last = [], []
        self.open_reads = 0
        self.max_open_reads = 0
        self.bursts = {"ar": [], "aw": []}
        cocotb.start_soon(self.run())

    def check_burst(self, kind, addr, length, size, burst):
        n = length + 1
        assert size == (B - 1).bit_length(), f"{kind} AxSIZE {size}"
        assert burst == Burst.INCR, f"{kind} AxBURST {burst}"
        assert addr % B == 0, f"{kind} 0x{addr:x} not aligned"
        assert n <= MASTER.burst_beats, f"{kind} 0x{addr:x}: {n} beats"
        assert addr // PAGE_BYTES == (addr + n * B - 1) // PAGE_BYTES, f"{kind} 0x{addr:x} x{n} crosses 4 KiB"
        self.bursts[kind].append((addr, n))

    async def run(self):
        d = self.dut
        while True:
            await RisingEdge(d.clk)
            if d.rst.value:
                continue
            if d.axi__arvalid.value and d.axi__arready.value:
                self.check_burst("ar", int(d.axi__araddr.value), int(d.axi__arlen.value),
                                 int(d.axi__arsize.value), int(d.axi__arburst.value))
                self.open_reads += 1
                self.max_open_reads = max(self.max_open_reads, self.open_reads)
            if d.axi__rvalid.value and d.axi__rready.value and d.axi__rlast.value:
                self.open_reads -= 1
            if d.axi__awvalid.value and d.axi__awready.value:
                self.check_burst("aw", int(d.axi__awaddr.value), int(d.axi__awlen.value),
                                 int(d.axi__awsize.value), int(d.axi__awburst.value))
                self.aw_lens.append(int(d.axi__awlen.value) + 1)
            if d.axi__wvalid.value and d.axi__wready.value:
                assert int(d.axi__wstrb.value) == (1 << B) - 1
                self.w_last.append(int(d.axi__wlast.value))
            while self.aw_lens and len(self.w_last) >= self.aw_lens[0]:
                n = self.aw_lens.pop(0)
                flags, self.w_last = self.w_last[:n], self.w_last[n:]
                assert flags == [0] * (n - 1) + [1], f"WLAST of a {n}-beat burst: {flags}"


async def setup(dut, seed, pause=PAUSE):
    rng = random.Random(seed)
    dut.rst.value = 1
    dut.clear.value = 0
    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    ram = AxiRam(AxiBus.from_prefix(dut, "axi_"), dut.clk, dut.rst, size=RAM_BYTES)
    ram.write(0, rng.randbytes(RAM_BYTES))
    for ch in (ram.write_if.aw_channel, ram.write_if.w_channel, ram.write_if.b_channel,
               ram.read_if.ar_channel, ram.read_if.r_channel):
        ch.set_pause_generator(pauses(random.Random(rng.getrandbits(32)), pause))
    streams = {}
    for name, kind in (("rd_cmd", StreamSource), ("wr_cmd", StreamSource), ("wr_data", StreamSource),
                       ("rd_data", StreamSink), ("wr_done", StreamSink)):
        s = kind(StreamBus.from_prefix(dut, name + "_"), dut.clk, dut.rst)
        s.set_pause_generator(pauses(random.Random(rng.getrandbits(32)), pause))
        streams[name] = s
    mon = AxiMonitor(dut)
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)
    return ram, streams, mon, rng


def command_error(addr, n):
    return addr % B != 0 or n == 0 or addr + n * B > 1 << MASTER.addr_width


async def run_phase(ram, streams, rd, wr, wdata):
    """Issue one phase; return (read beats as (data, last, err), wr_done errs)."""
    for a, n in rd:
        await streams["rd_cmd"].send(command(a, n))
    for a, n in wr:
        await streams["wr_cmd"].send(command(a, n))
    for w in wdata:
        await streams["wr_data"].send(StreamTransaction(payload=w))
    beats, done = [], []
    for _ in range(sum(n for _, n in rd)):
        p = int((await streams["rd_data"].recv()).payload)
        beats.append((field(p, BEAT, "data"), field(p, BEAT, "last"), field(p, BEAT, "err")))
    for _ in wr:
        done.append(field(int((await streams["wr_done"].recv()).payload), WRITE_DONE_LAYOUT, "err"))
    return beats, done


def expect_phase(mem, rd, wr, wdata):
    """(expected read beats, expected wr_done errs, memory after the phase) from ``mem``."""
    beats = []
    for a, n in rd:
        for k in range(n):
            last = int(k == n - 1)
            if command_error(a, n):
                beats.append((0, last, 1))
            else:
                beats.append((int.from_bytes(mem[a + k * B:a + (k + 1) * B], "little"), last, 0))
    mem = bytearray(mem)
    done, it = [], iter(wdata)
    for a, n in wr:
        data = [next(it) for _ in range(n)]
        if command_error(a, n):
            done.append(1)
            continue
        for k, w in enumerate(data):
            mem[a + k * B:a + (k + 1) * B] = w.to_bytes(B, "little")
        done.append(0)
    return beats, done, bytes(mem)


def random_phase(rng, n_cmds, errors=False):
    limit = RAM_BYTES // B
    wr, rd, spans = [], [], []

    def pick():
        bb = MASTER.burst_beats
        n = rng.choice([1, 2, rng.randrange(1, bb + 1), rng.randrange(1, 4 * bb)])
        a = B * rng.randrange(0, limit - n)
        if rng.random() < 0.3:                          # close to a 4 KiB boundary
            a = (a // PAGE_BYTES) * PAGE_BYTES + PAGE_BYTES - B * rng.randrange(1, 2 * MASTER.burst_beats)
            a = max(0, min(a, RAM_BYTES - n * B))
        return a, n

    for _ in range(n_cmds):
        a, n = pick()
        wr.append((a, n))
        spans.append((a, a + n * B))
    while len(rd) < n_cmds:
        a, n = pick()
        if not any(a < hi and lo < a + n * B for lo, hi in spans):
            rd.append((a, n))
    if errors:
        wr.insert(rng.randrange(len(wr)), (B + 1, 3))
        rd.insert(rng.randrange(len(rd)), (2 * B + 2, 2))
        rd.insert(rng.randrange(len(rd)), (0, 0))
    wdata = [rng.getrandbits(MASTER.data_width) for _ in range(sum(n for _, n in wr))]
    return rd, wr, wdata


async def check_phases(dut, ram, streams, phases):
    for k, (rd, wr, wdata) in enumerate(phases):
        before = ram.read(0, RAM_BYTES)
        exp_beats, exp_done, after = expect_phase(before, rd, wr, wdata)
        beats, done = await with_timeout(run_phase(ram, streams, rd, wr, wdata), 200_000, "ns")
        assert len(beats) == len(exp_beats)
        for j, (g, e) in enumerate(zip(beats, exp_beats)):
            assert g == e, f"phase {k} beat {j}: got {g}, expected {e}"
        assert done == exp_done, f"phase {k}: wr_done {done}, expected {exp_done}"
        await ClockCycles(dut.clk, 4)
        assert ram.read(0, RAM_BYTES) == after, f"phase {k}: RAM contents differ"
        for s in ("rd_data", "wr_done"):
            assert streams[s].empty(), f"phase {k}: extra {s}"


@cocotb.test()
async def random_traffic(dut):
    """Random read and write commands (1 beat, bursts across 4 KiB, longer than max_burst)."""
    dut._log.info("seed %d", SEED)
    ram, streams, mon, rng = await setup(dut, SEED)
    phases = [random_phase(rng, 12) for _ in range(8)]
    await check_phases(dut, ram, streams, phases)
    assert int(dut.error.value) == 0
    assert mon.max_open_reads <= MASTER.max_reads
    dut._log.info("%d AR, %d AW bursts; %d read bursts outstanding at most",
                  len(mon.bursts["ar"]), len(mon.bursts["aw"]), mon.max_open_reads)
    assert any(n == MASTER.burst_beats for _, n in mon.bursts["ar"])      # splitting happened
    assert any((a + n * B) % PAGE_BYTES == 0 for a, n in mon.bursts["ar"] + mon.bursts["aw"])


@cocotb.test()
async def command_errors(dut):
    """Misaligned and zero-beat commands among valid ones: nothing on AXI for them, the streams
    stay in step, the sticky error reports the first one."""
    ram, streams, mon, rng = await setup(dut, SEED + 1)
    phase = random_phase(rng, 4, errors=True)
    await check_phases(dut, ram, streams, [phase])
    assert int(dut.error.value) == 1
    assert int(dut.err_code.value) in (ErrorCode.RD_CMD, ErrorCode.WR_CMD)
    assert len(mon.bursts["ar"]) >= 4 and all(a % B == 0 for a, _ in mon.bursts["ar"])
    dut.clear.value = 1
    await RisingEdge(dut.clk)
    dut.clear.value = 0
    await ClockCycles(dut.clk, 2)
    assert (int(dut.error.value), int(dut.err_code.value), int(dut.err_addr.value)) == (0, ErrorCode.NONE, 0)


@cocotb.test()
async def full_rate(dut):
    """No pauses: a long read and a long write at once; reports the beats per cycle."""
    ram, streams, mon, rng = await setup(dut, SEED + 2, pause=0.0)
    n = 8 * MASTER.burst_beats
    wdata = [rng.getrandbits(MASTER.data_width) for _ in range(n)]
    phase = ([(0, n)], [(RAM_BYTES // 2, n)], wdata)
    start = get_sim_time("ns")
    await check_phases(dut, ram, streams, [phase])
    cycles = (get_sim_time("ns") - start) / CLOCK_NS
    dut._log.info("%d beats each way in %d cycles", n, cycles)
    assert cycles < 4 * n
