"""The simulated DDR (``sim/ddr_model.h`` in ``sim/harness_axi.cpp``) under Verilator, served to
the AXI4 master of a small test design (``tests/ddr_top.py``: the accelerator's two AXI ports,
an :class:`~nibble.hw.mem.axi_master.AXI4Master` on a 128-bit ``m_axi`` port, a buffer and a few
CSRs), reached by the host through :class:`~nibble.host.transport.XdmaTransport` over
:class:`~nibble.sim.axi_device.SimAxiDevice`.

Data moves host → DDR → design and design → DDR → host at random addresses and lengths (so the
master's bursts take every length its 4 KiB rule gives), with back-pressure on R and B and gaps
in W; a window edge answers DECERR; the counters equal the bytes and bursts moved; and the
latency and bandwidth of :class:`~nibble.sim.ddr.DdrParams` show in the design's own cycle
counts, checked against bounds computed from the parameters.
"""
import re
from decimal import Decimal

import numpy as np
import pytest
from amaranth.back import verilog

from ddr_top import BUF_BASE, CSR, CTRL_CLEAR, CTRL_READ, CTRL_WRITE, DdrTestTop
from nibble.host.driver import default_cache_dir
from nibble.host.transport import TransportError, XdmaTransport, ddr_window
from nibble.hw.mem import AXI4Master, ErrorCode
from nibble.sim import axi_device
from nibble.sim.axi_device import DDR_MODEL, HARNESS_AXI, SimAxiDevice, beat_define
from nibble.sim.ddr import (DDR_BASE, DDR_BYTES, DDR_BYTES_PER_CYCLE, DDR_PEAK_BYTES_PER_CYCLE,
                            STAT_NAMES, DdrParams)
from nibble.sim.verilator import build_device

pytestmark = pytest.mark.slow
SEED = 20270301
WIDTH = 128
BEAT = WIDTH // 8
BUF_BEATS = 512
PAGE_BEATS = 4096 // BEAT
# AXI4Master's documented latencies (cycles): command to AxVALID, R handshake to rd_data,
# B handshake to wr_done.
CMD, RD, DONE = AXI4Master.cmd_latency, AXI4Master.rd_latency, AXI4Master.done_latency


@pytest.fixture(scope="module")
def design():
    return verilog.convert(DdrTestTop(WIDTH, BUF_BEATS), name="top")


@pytest.fixture(scope="module")
def exe(design):
    return build_device(design, default_cache_dir(), defines=(beat_define(WIDTH),), harness=HARNESS_AXI)


class Bench:
    """The test design over XdmaTransport: CSRs by the user BAR, the buffer and the DDR by DMA."""

    def __init__(self, exe, ddr=DdrParams(), **kw):
        self.dev = SimAxiDevice(exe, ddr=ddr)
        self.p = ddr
        self.t = XdmaTransport(self.dev, (0, 4 * len(CSR)), (ddr.base, ddr.bytes), **kw)

    def w(self, name, value):
        self.t.write_u32(4 * CSR[name], value)

    def r(self, name):
        return self.t.read_u32(4 * CSR[name])

    def run(self, *, read=None, write=None, throttle=0):
        """Start a read ``(ddr addr, beats, buffer beat)`` and/or a write likewise; wait; return
        ``(STATUS, CYCLES, FIRST)``."""
        self.w("THROTTLE", throttle)
        ctrl = 0
        if read:
            for name, v in zip(("RD_ADDR", "RD_BEATS", "RD_BUF"), read):
                self.w(name, v)
            ctrl |= CTRL_READ
        if write:
            for name, v in zip(("WR_ADDR", "WR_BEATS", "WR_BUF"), write):
                self.w(name, v)
            ctrl |= CTRL_WRITE
        self.w("CTRL", ctrl)
        assert self.dev.wait_irq()
        return self.r("STATUS"), self.r("CYCLES"), self.r("FIRST")

    def close(self):
        return self.dev.close()


@pytest.fixture
def bench(exe):
    b = Bench(exe)
    yield b
    assert b.close() == 0


def _bursts(addr, beats):
    """The INCR bursts AXI4Master issues for a command: at most 256 beats, none across 4 KiB."""
    n = 0
    while beats:
        k = min(beats, 256, PAGE_BEATS - (addr % 4096) // BEAT)
        addr, beats, n = addr + k * BEAT, beats - k, n + 1
    return n


def _random_command(rng, span=1 << 20):
    beats = int(rng.integers(1, BUF_BEATS + 1))
    addr = DDR_BASE + BEAT * int(rng.integers(0, (span - beats * BEAT) // BEAT))
    return addr, beats


def test_host_to_design_and_back(bench):
    """Random data written by the host into the DDR is read by the design over AXI; the design
    writes the buffer back elsewhere in the DDR and the host reads it; the counters are the
    bytes and bursts of those commands, and nothing broke a rule."""
    rng = np.random.default_rng(SEED)
    moved = {"bytes_read": 0, "bytes_written": 0, "read_bursts": 0, "write_bursts": 0}
    for _ in range(12):
        (src, n), (dst, _) = _random_command(rng), _random_command(rng)
        data = rng.integers(0, 256, n * BEAT, dtype=np.uint8).tobytes()
        bench.t.write(src, data)
        status, cycles, first = bench.run(read=(src, n, 0))
        assert status == 0, hex(status)
        assert bench.t.read(BUF_BASE, n * BEAT) == data, (hex(src), n)
        dst = min(dst, DDR_BASE + (1 << 20) - n * BEAT)
        if abs(dst - src) < n * BEAT:                           # keep the source intact
            dst = src + n * BEAT
        status, _, _ = bench.run(write=(dst, n, 0))
        assert status == 0, hex(status)
        assert bench.t.read(dst, n * BEAT) == data, (hex(dst), n)
        assert bench.t.read(src, n * BEAT) == data
        moved["bytes_read"] += n * BEAT
        moved["bytes_written"] += n * BEAT
        moved["read_bursts"] += _bursts(src, n)
        moved["write_bursts"] += _bursts(dst, n)
    stats = bench.dev.ddr_stats()
    assert {k: stats[k] for k in moved} == moved
    assert stats["error_bursts"] == stats["protocol_errors"] == 0
    assert stats["busy_cycles"] > 0
    # cleared: counters and the bytes given
    bench.dev.ddr_clear(DDR_BASE, 1 << 20)
    assert set(bench.dev.ddr_stats().values()) == {0}
    assert bench.t.read(DDR_BASE, 4096) == bytes(4096)


def test_back_pressure_on_r_and_b(bench):
    """R and B back-pressured (RREADY/BREADY low about half the cycles) and gaps in W, a read
    and a write running at once: every byte arrives, no rule is broken, and it takes longer."""
    rng = np.random.default_rng(SEED + 1)
    for _ in range(6):
        (src, n), (dst, m) = _random_command(rng), _random_command(rng, 1 << 19)
        n, m = min(n, BUF_BEATS // 2), min(m, BUF_BEATS // 2)
        dst += 1 << 20                                      # disjoint from the read
        data = rng.integers(0, 256, n * BEAT, dtype=np.uint8).tobytes()
        out = rng.integers(0, 256, m * BEAT, dtype=np.uint8).tobytes()
        bench.t.write(src, data)
        bench.t.write(BUF_BASE + BUF_BEATS // 2 * BEAT, out)
        args = dict(read=(src, n, 0), write=(dst, m, BUF_BEATS // 2))
        status, slow, _ = bench.run(throttle=7, **args)
        assert status == 0, hex(status)
        assert bench.t.read(BUF_BASE, n * BEAT) == data
        assert bench.t.read(dst, m * BEAT) == out
        status, fast, _ = bench.run(**args)
        assert status == 0 and fast < slow, (fast, slow)
    stats = bench.dev.ddr_stats()
    assert stats["protocol_errors"] == stats["error_bursts"] == 0


def _stderr_lines(dev, n, timeout=10.0):
    """The harness's first ``n`` stderr lines from the DDR model (written before the replies
    that followed them, but read by a thread of their own: waits for them)."""
    import time
    deadline = time.monotonic() + timeout
    while True:
        lines = [l for l in dev._stderr if l.startswith("ddr: ")]
        if len(lines) >= n or time.monotonic() > deadline:
            assert len(lines) == n, lines
            return lines
        time.sleep(0.01)


def test_outside_the_window_is_decerr(bench):
    """A command running past the end of the window: its bursts inside are served, the one
    outside answers DECERR (the master's error names its address) and the harness names it."""
    end = DDR_BASE + DDR_BYTES
    status, _, _ = bench.run(read=(end - 2 * BEAT, 4, 0))
    assert status & 2 and (status >> 4) & 7 == ErrorCode.RD_DECERR and status & (1 << 8)
    assert bench.r("ERR_ADDR") == end
    bench.w("CTRL", CTRL_CLEAR)
    status, _, _ = bench.run(write=(end - BEAT, 2, 0))
    assert status & 2 and (status >> 4) & 7 == ErrorCode.WR_DECERR and status & (1 << 9)
    stats = bench.dev.ddr_stats()
    assert stats["error_bursts"] == 2 and stats["bytes_read"] == 2 * BEAT and stats["bytes_written"] == BEAT
    lines = _stderr_lines(bench.dev, 2)
    assert re.match(rf"ddr: read burst at 0x{end:08x}, 2 beats, .*DECERR, outside the DDR window", lines[0])
    assert re.match(rf"ddr: write burst at 0x{end:08x}, 1 beats, .*DECERR", lines[1])
    # the host: refused across the edge, DECERR outside
    with pytest.raises(TransportError, match=f"crosses an edge of the DDR window 0x{DDR_BASE:08x}"):
        bench.t.write(end - 8, bytes(16))
    with pytest.raises(OSError, match="DECERR"):
        bench.dev.ddr_read(end, 4)
    with pytest.raises(OSError, match="DECERR"):
        bench.dev.ddr_clear(end - 4, 8)


def test_host_dma_in_chunks(exe):
    """Host transfers into the DDR go in chunks of ``dma_chunk`` bytes, take no design cycles,
    and land at their addresses whatever their alignment within the window."""
    b = Bench(exe, dma_chunk=4096)
    calls = []
    h2c = b.dev.h2c
    b.dev.h2c = lambda addr, data: (calls.append((addr, len(data))), h2c(addr, data))
    data = np.random.default_rng(SEED + 2).integers(0, 256, 10_000, dtype=np.uint8).tobytes()
    b.t.ddr_stats()                                                      # a reply: cycles known
    before = b.dev.cycles
    b.t.write(DDR_BASE + 0x3004, data)
    assert calls == [(DDR_BASE + 0x3004, 4096), (DDR_BASE + 0x4004, 4096), (DDR_BASE + 0x5004, 1808)]
    assert b.t.read(DDR_BASE + 0x3004, 10_000) == data
    assert b.dev.ddr_read(DDR_BASE + 0x3005, 3) == data[1:4]             # any alignment
    assert b.dev.cycles == before
    assert b.t.ddr_stats()["bytes_read"] == 0                            # host access is not counted
    # 1 GiB of DDR costs memory only where written: reading 64 MiB of it untouched adds nothing
    assert b.dev.ddr_read(DDR_BASE + (256 << 20), 64 << 20) == bytes(64 << 20)
    assert _rss_bytes(b.dev) < 32 << 20
    assert b.close() == 0


def _rss_bytes(dev):
    """Resident memory of the harness process (Linux ``/proc``), bytes."""
    with open(f"/proc/{dev._proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/<pid>/status")


def _first_bounds(p):
    """FIRST (start to the first read beat in the buffer) for parameters ``p``: the model's
    latency plus the master's command and read latencies, one cycle for the AR handshake and one
    for the start write."""
    return p.read_latency + CMD + RD, p.read_latency + CMD + RD + 3


@pytest.mark.parametrize("latency,bpc", [(30, DDR_BYTES_PER_CYCLE), (100, 4), (12, 8), (60, 24)])
def test_read_latency_and_bandwidth(exe, latency, bpc):
    """A long read takes its latency plus bytes / rate cycles, the rate being the model's
    bandwidth or one beat per cycle, whichever is lower: bounds from the parameters."""
    p = DdrParams(read_latency=latency, bytes_per_cycle=bpc)
    b = Bench(exe, p)
    n = 4 * PAGE_BEATS if p.bytes_per_cycle >= BEAT else PAGE_BEATS     # 16 or 4 KiB
    n = min(n, BUF_BEATS)
    status, cycles, first = b.run(read=(DDR_BASE, n, 0))
    assert status == 0
    lo, hi = _first_bounds(p)
    assert lo <= first <= hi, (first, lo, hi)
    rate = min(float(p.bytes_per_cycle), BEAT)                        # bytes per cycle
    cap = max(float(p.bytes_per_cycle), 2 * BEAT)                     # credit the model holds at most
    t_min = first + (n * BEAT - cap) / rate - 1
    t_max = hi + n * BEAT / rate + 2
    assert t_min <= cycles <= t_max, (cycles, t_min, t_max)
    stats = b.dev.ddr_stats()
    assert stats["bytes_read"] == n * BEAT and stats["read_bursts"] == _bursts(DDR_BASE, n)
    # busy from the first AR handshake to the last R beat: inside the command's cycles
    assert cycles - CMD - RD - 3 <= stats["busy_cycles"] <= cycles, (stats["busy_cycles"], cycles)
    assert b.close() == 0


def test_shared_bandwidth_and_write_latency(exe):
    """Reads and writes share the bandwidth: both at once take the bytes of both at the rate;
    the write's end waits for the model's write latency."""
    p = DdrParams(read_latency=20, write_latency=50, bytes_per_cycle=8)
    b = Bench(exe, p)
    status, cycles, _ = b.run(write=(DDR_BASE + 0x8000, 1, 0))
    assert status == 0
    assert p.write_latency + CMD + DONE <= cycles <= p.write_latency + CMD + DONE + 4, cycles
    n = BUF_BEATS // 2
    total = 2 * n * BEAT
    status, both, _ = b.run(read=(DDR_BASE, n, 0), write=(DDR_BASE + 0x10000, n, n))
    assert status == 0
    rate, cap = float(p.bytes_per_cycle), 2 * BEAT
    assert (total - cap) / rate <= both <= total / rate + p.read_latency + p.write_latency + 12, both
    status, alone, _ = b.run(read=(DDR_BASE, n, 0))
    assert alone < 0.6 * both, (alone, both)
    assert b.close() == 0


def test_device_without_the_ddr_port(design, exe):
    """Built without the define the harness accepts the --ddr-* arguments, and answers every DDR
    command DECERR; with it, it refuses to start without them."""
    plain = build_device(design, default_cache_dir(), harness=HARNESS_AXI)
    dev = SimAxiDevice(plain)
    with pytest.raises(OSError, match="DECERR .*without DDR"):
        dev.h2c(DDR_BASE, bytes(16))
    with pytest.raises(OSError, match="DECERR"):
        dev.c2h(DDR_BASE, 16)
    with pytest.raises(OSError, match="DECERR"):
        dev.ddr_stats()
    with pytest.raises(OSError, match="DECERR"):
        dev.ddr_clear()
    dev.user_write(4 * CSR["RD_BUF"], (7).to_bytes(4, "little"))           # the s_axi port works
    assert dev.user_read(4 * CSR["RD_BUF"], 4) == (7).to_bytes(4, "little")
    assert dev.close() == 0
    dev = SimAxiDevice(exe, ddr=None)
    with pytest.raises(OSError, match=r"has a DDR port .* needs --ddr-base"):
        dev.user_read(0, 4)
    assert dev.close() == 2


def test_params_and_regmap_window():
    assert DdrParams().bytes_per_cycle == DDR_PEAK_BYTES_PER_CYCLE * Decimal("0.8") == Decimal("51.2")
    assert DdrParams().args()[-4:] == ["--ddr-bytes-per-cycle", "51.2", "--ddr-outstanding", "8"]
    assert DdrParams(bytes_per_cycle=64).args()[-3] == "64"
    for bad, match in (({"bytes_per_cycle": "0.0005"}, "three decimals"), ({"bytes_per_cycle": 0}, "above 0"),
                       ({"read_latency": 0}, "read_latency"), ({"base": 0xF000_0000}, "32-bit"),
                       ({"outstanding": True}, "outstanding")):
        with pytest.raises(ValueError, match=match):
            DdrParams(**bad)
    rm = {"regions": {"csr": {"base": 0, "words": 4}}}
    assert ddr_window(rm) is None and DdrParams.from_regmap(rm) is None
    rm["regions"]["ddr"] = {"base": DDR_BASE, "bytes": 1 << 28, "beat_bits": 128}
    assert ddr_window(rm) == (DDR_BASE, 1 << 28)
    assert DdrParams.from_regmap(rm, read_latency=7) == DdrParams(bytes=1 << 28, read_latency=7)
    with pytest.raises(ValueError, match="'ddr' needs integer 'base' and 'bytes'"):
        ddr_window({"regions": {"ddr": {"base": DDR_BASE}}})
    assert beat_define(64) == "NIBBLE_DDR_BEAT_BYTES=8"
    with pytest.raises(ValueError, match="32, 64, 128, 256 or 512"):
        beat_define(48)
    t = XdmaTransport(object(), (0, 64))
    with pytest.raises(TransportError, match="keeps none"):
        t.ddr_stats()


def test_ddr_constants_match():
    """The DDR command codes and counters are written in the harness and the model and mirrored
    in Python."""
    text = HARNESS_AXI.read_text()
    consts = dict((k, int(v, 0)) for k, v in re.findall(r"\b(k[A-Z]\w*) = (0x[0-9a-fA-F]+|\d+)", text))
    assert (consts["kOpDdrWrite"], consts["kOpDdrRead"], consts["kOpDdrStats"], consts["kOpDdrClear"]) == (
        axi_device.OP_DDR_WRITE, axi_device.OP_DDR_READ, axi_device.OP_DDR_STATS, axi_device.OP_DDR_CLEAR)
    assert consts["kDecErr"] == axi_device.AXI_DECERR
    model = DDR_MODEL.read_text()
    stats = dict((k, int(v)) for k, v in re.findall(r"\bkStat(\w+) = (\d+),", model))
    assert stats.pop("Count") == axi_device.DDR_STAT_COUNT == len(STAT_NAMES)
    snake = {re.sub(r"(?<!^)([A-Z])", r"_\1", k).lower(): v for k, v in stats.items()}
    assert snake == {name: i for i, name in enumerate(STAT_NAMES)}


def test_model_unit(tmp_path):
    """The model on its own (``tests/ddr_model_test.cpp``, a scripted master, no Verilator): the
    cycle of every handshake (latency, a beat per cycle, the bandwidth's spacing, B after the
    write latency), W before AW, WSTRB, an unaligned start, each DECERR/SLVERR case, the
    outstanding limit, the master checks, host access, and the Port on 32-, 64-, 128- and
    512-bit data (Verilator's IData, QData and VlWide types)."""
    import shutil
    import subprocess
    from pathlib import Path
    cxx = shutil.which("g++") or shutil.which("c++")
    assert cxx, "a C++ compiler (g++) is needed, as for the Verilator builds"
    src = Path(__file__).with_name("ddr_model_test.cpp")
    exe = tmp_path / "ddr_model_test"
    build = subprocess.run([cxx, "-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror", f"-I{DDR_MODEL.parent}",
                            str(src), "-o", str(exe)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-4000:]
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-4000:]
    assert re.fullmatch(r"ddr_model_test: \d+ checks passed\n", run.stdout)
