"""AXI4Master (hw/mem/axi_master.py) in amaranth.sim against a Python AXI4 slave memory.

:class:`SlaveMemory` is an AXI4 slave written from IHI 0022 (not from the gateware): byte memory
in NumPy, seeded random AWREADY/WREADY/ARREADY and RVALID/BVALID pauses, a configurable read
latency and write-response latency, W beats accepted before their AW, and byte ranges answered
SLVERR or DECERR. It checks every burst the master issues (INCR, full size, aligned, at most
``burst_beats`` beats, not crossing a 4 KiB boundary, ``WLAST`` on exactly the last beat, VALID
held with a stable payload until READY) and the limits the master documents (read bursts
outstanding, read buffer occupancy, RREADY high whenever RVALID is).

:class:`Host` drives the command and data streams (seeded idle and back-pressure) in phases; the
expected read beats, completions and final memory come from a NumPy reference memory to which
each phase's writes are applied in command order (reads of a phase never overlap its writes).
"""
import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from nibble.hw.axi import Burst, Resp
from nibble.hw.mem import (AXI_ID, AXI4Master, BEATS_WIDTH, BurstSplitter, DATA_WIDTHS, MAX_BURST,
                           PAGE_BYTES, ErrorCode)

SEED = 20261202
MEM_BYTES = 1 << 16
ERR_FILL = 0xEE                 # every byte of a beat the slave answers with an error


def addr_err(ranges, lo, hi):
    """The response of a beat (or burst) covering bytes [lo, hi): the first matching range's."""
    for a, b, resp in ranges:
        if lo < b and a < hi:
            return resp
    return Resp.OKAY


class SlaveMemory:
    """Cycle-based AXI4 slave on ``dut.axi`` (see the module docstring).

    ``ready_p``: probability that AWREADY, WREADY, ARREADY are high in a cycle; ``valid_p``:
    probability that a waiting R beat or B response is presented in a cycle; ``read_latency``:
    cycles from an AR handshake to its first beat; ``b_latency``: from a burst's last W beat (and
    its AW) to BVALID; ``w_before_aw``: accept W beats before their AW; ``ar_depth``: AR bursts
    the slave holds at most; ``err``: (lo, hi, Resp) byte ranges; ``bad_rlast``: flip RLAST on
    the last beat of the n-th read burst; ``strobes``: write the bytes WSTRB selects (else every
    W beat must have all strobes set, A3.4.3).
    """

    def __init__(self, dut, mem, *, rng, ready_p=1.0, valid_p=1.0, read_latency=3, b_latency=1,
                 w_before_aw=True, ar_depth=8, err=(), bad_rlast=None, strobes=False):
        self.strobes = strobes
        self.dut, self.a, self.mem, self.rng = dut, dut.axi, mem, rng
        self.B = dut.beat_bytes
        self.ready_p, self.valid_p = ready_p, valid_p
        self.read_latency, self.b_latency = read_latency, b_latency
        self.w_before_aw, self.ar_depth = w_before_aw, ar_depth
        self.err, self.bad_rlast = list(err), bad_rlast
        self.ar_q, self.aw_q, self.w_buf, self.b_q = [], [], [], []
        self.r_cur = None                 # (burst, beat index) presented on R
        self.b_cur = None
        self.ar_log, self.aw_log, self.r_cycles, self.w_cycles, self.b_cycles = [], [], [], [], []
        self.reads_open = []              # AR handshaked, last R beat not yet taken
        self.max_reads_open = 0
        self.r_blocked = 0                # cycles with RVALID high and RREADY low
        self.prev = {}
        self.n_ar = 0

    def busy(self):
        return bool(self.ar_q or self.aw_q or self.w_buf or self.b_q or self.r_cur or self.b_cur)

    def check_burst(self, kind, addr, length, size, burst, ident):
        n = length + 1
        assert size == (self.B - 1).bit_length(), f"{kind} AxSIZE {size}"
        assert burst == Burst.INCR, f"{kind} AxBURST {burst}"
        assert ident == AXI_ID, f"{kind} ID {ident}"
        assert addr % self.B == 0, f"{kind} 0x{addr:x} not aligned"
        assert n <= self.dut.burst_beats <= MAX_BURST, f"{kind} 0x{addr:x}: {n} beats"
        assert addr // PAGE_BYTES == (addr + n * self.B - 1) // PAGE_BYTES, \
            f"{kind} 0x{addr:x} x{n} crosses a 4 KiB boundary"
        assert addr + n * self.B <= len(self.mem), f"{kind} 0x{addr:x} x{n} beyond the memory"

    def beat(self, addr):
        resp = addr_err(self.err, addr, addr + self.B)
        if resp != Resp.OKAY:
            return int.from_bytes(bytes([ERR_FILL]) * self.B, "little"), resp
        return int.from_bytes(self.mem[addr:addr + self.B].tobytes(), "little"), resp

    def drive(self, ctx, cycle):
        a, rng = self.a, self.rng
        ctx.set(a.arready, len(self.ar_q) < self.ar_depth and rng.random() < self.ready_p)
        ctx.set(a.awready, rng.random() < self.ready_p)
        w_room = self.w_before_aw or sum(n for _, n, _ in self.aw_q) > len(self.w_buf)
        ctx.set(a.wready, w_room and rng.random() < self.ready_p)
        if self.r_cur is None and self.ar_q and self.ar_q[0]["at"] <= cycle and rng.random() < self.valid_p:
            self.r_cur = (self.ar_q[0], self.ar_q[0]["next"])
        if self.r_cur is not None:
            b, k = self.r_cur
            data, resp = self.beat(b["addr"] + k * self.B)
            last = k == b["n"] - 1
            if last and b["index"] == self.bad_rlast:
                last = not last
            ctx.set(a.rdata, data); ctx.set(a.rresp, resp); ctx.set(a.rlast, last); ctx.set(a.rid, AXI_ID)
        ctx.set(a.rvalid, self.r_cur is not None)
        if self.b_cur is None and self.b_q and self.b_q[0][0] <= cycle and rng.random() < self.valid_p:
            self.b_cur = self.b_q.pop(0)
        if self.b_cur is not None:
            ctx.set(a.bresp, self.b_cur[1]); ctx.set(a.bid, AXI_ID)
        ctx.set(a.bvalid, self.b_cur is not None)

    #: Master outputs sampled every cycle.
    OUTPUTS = ("arvalid", "araddr", "arlen", "arsize", "arburst", "arid", "rready",
               "awvalid", "awaddr", "awlen", "awsize", "awburst", "awid",
               "wvalid", "wdata", "wstrb", "wlast", "bready")
    INPUTS = ("arready", "awready", "wready", "rvalid", "bvalid")

    def signals(self):
        return [getattr(self.a, n) for n in self.OUTPUTS + self.INPUTS]

    def observe(self, v, cycle):
        """``v``: name → sampled value (of :attr:`OUTPUTS` and :attr:`INPUTS` among others)."""
        p = self.prev
        # A3.2.1: a VALID stays high, its payload stable, until the handshake
        for ch, payload in (("ar", ("araddr", "arlen")), ("aw", ("awaddr", "awlen")),
                            ("w", ("wdata", "wlast"))):
            if p.get(f"{ch}valid") and not p.get(f"{ch}ready"):
                assert v[f"{ch}valid"], f"cycle {cycle}: {ch.upper()}VALID dropped before {ch.upper()}READY"
                for name in payload:
                    assert v[name] == p[name], f"cycle {cycle}: {name} changed while waiting"
        self.prev = v
        if v["arvalid"] and v["arready"]:
            self.check_burst("AR", v["araddr"], v["arlen"], v["arsize"], v["arburst"], v["arid"])
            b = {"addr": v["araddr"], "n": v["arlen"] + 1, "at": cycle + self.read_latency, "next": 0,
                 "index": self.n_ar}
            self.n_ar += 1
            self.ar_q.append(b)
            self.ar_log.append((cycle, b["addr"], b["n"]))
            self.reads_open.append(b)
            self.max_reads_open = max(self.max_reads_open, len(self.reads_open))
        if self.r_cur is not None:
            if not v["rready"]:
                self.r_blocked += 1
            else:
                b, k = self.r_cur
                self.r_cycles.append(cycle)
                b["next"] = k + 1
                if k + 1 == b["n"]:
                    self.ar_q.pop(0)
                    self.reads_open.remove(b)
                self.r_cur = None
        if v["awvalid"] and v["awready"]:
            self.check_burst("AW", v["awaddr"], v["awlen"], v["awsize"], v["awburst"], v["awid"])
            self.aw_q.append((v["awaddr"], v["awlen"] + 1, cycle))
            self.aw_log.append((cycle, v["awaddr"], v["awlen"] + 1))
        if v["wvalid"] and v["wready"]:
            if not self.strobes:
                assert v["wstrb"] == (1 << self.B) - 1, f"cycle {cycle}: WSTRB 0x{v['wstrb']:x}"
            self.w_buf.append((v["wdata"], v["wlast"], v["wstrb"]))
            self.w_cycles.append(cycle)
        while self.aw_q and len(self.w_buf) >= self.aw_q[0][1]:
            addr, n, _ = self.aw_q.pop(0)
            beats, self.w_buf = self.w_buf[:n], self.w_buf[n:]
            assert [last for _, last, _ in beats] == [0] * (n - 1) + [1], \
                f"WLAST of the burst 0x{addr:x} x{n}: {[last for _, last, _ in beats]}"
            resp = addr_err(self.err, addr, addr + n * self.B)
            for k, (d, _, strb) in enumerate(beats):
                lo = addr + k * self.B
                if addr_err(self.err, lo, lo + self.B) == Resp.OKAY:
                    new = np.frombuffer(d.to_bytes(self.B, "little"), np.uint8)
                    keep = np.array([(strb >> i) & 1 for i in range(self.B)], bool)
                    old = np.array(self.mem[lo:lo + self.B], np.uint8)
                    self.mem[lo:lo + self.B] = np.where(keep, new, old)
            self.b_q.append((cycle + self.b_latency, resp))
        if not self.aw_q and self.w_buf:
            assert self.w_before_aw, f"cycle {cycle}: W beat before its AW"
        if self.b_cur is not None and v["bready"]:
            self.b_cycles.append(cycle)
            self.b_cur = None


class Host:
    """The master's user side: ``phases`` of (read commands, write commands, write beats), one
    phase after the previous one has completed; seeded idle on the command and ``wr_data``
    streams (``idle``) and back-pressure on ``rd_data``/``wr_done`` (``stall``, or ``rd_ready``,
    a function of the cycle)."""

    def __init__(self, dut, phases, *, rng, idle=0.0, stall=0.0, rd_ready=None):
        self.dut, self.phases, self.rng = dut, [list(p) for p in phases], rng
        self.idle, self.stall, self.rd_ready = idle, stall, rd_ready
        self.rd_beats, self.wr_done = [], []          # per phase
        self.rd_cmd_cycles, self.wr_cmd_cycles = [], []
        self.wr_data_cycles, self.rd_data_cycles, self.wr_done_cycles = [], [], []
        self.phase = -1
        self._next_phase()

    def _next_phase(self):
        self.phase += 1
        if self.phase < len(self.phases):
            rd, wr, wd = self.phases[self.phase]
            self.rd_q, self.wr_q, self.wd_q = list(rd), list(wr), list(wd)
            self.rd_expect = sum(n for _, n in rd)
            self.wr_expect = len(wr)
            self.rd_beats.append([])
            self.wr_done.append([])
            self.cur = {"rd": None, "wr": None, "wd": None}

    def done(self):
        return self.phase >= len(self.phases)

    def _present(self, key, q):
        if self.cur[key] is None and q and not (self.idle and self.rng.random() < self.idle):
            self.cur[key] = q.pop(0)
        return self.cur[key]

    def drive(self, ctx, cycle):
        d = self.dut
        if self.done():
            for port in (d.rd_cmd, d.wr_cmd, d.wr_data):
                ctx.set(port.valid, 0)
            self.rr = self.dr = True
            ctx.set(d.rd_data.ready, 1)
            ctx.set(d.wr_done.ready, 1)
            return
        for key, port, q in (("rd", d.rd_cmd, self.rd_q), ("wr", d.wr_cmd, self.wr_q)):
            c = self._present(key, q)
            if c is not None:
                ctx.set(port.payload, {"addr": c[0], "beats": c[1]})
            ctx.set(port.valid, c is not None)
        w = self._present("wd", self.wd_q)
        if w is not None:
            ctx.set(d.wr_data.payload, w)
        ctx.set(d.wr_data.valid, w is not None)
        rr = self.rd_ready(cycle) if self.rd_ready else not (self.stall and self.rng.random() < self.stall)
        self.rr = rr
        ctx.set(d.rd_data.ready, rr)
        self.dr = not (self.stall and self.rng.random() < self.stall)
        ctx.set(d.wr_done.ready, self.dr)

    #: Master outputs sampled every cycle, in :meth:`signals` order.
    OUTPUTS = ("rd_cmd_ready", "wr_cmd_ready", "wr_data_ready", "rd_data_valid", "rd_data",
               "wr_done_valid", "wr_done")

    def signals(self):
        d = self.dut
        return [d.rd_cmd.ready, d.wr_cmd.ready, d.wr_data.ready, d.rd_data.valid, d.rd_data.payload,
                d.wr_done.valid, d.wr_done.payload]

    def observe(self, vals, cycle):
        rd_rdy, wr_rdy, wd_rdy, rv, rp, dv, dp = (vals[n] for n in self.OUTPUTS)
        if self.done():
            assert not rv, f"cycle {cycle}: an extra rd_data beat"
            assert not dv, f"cycle {cycle}: an extra wr_done"
            return
        if self.cur["rd"] is not None and rd_rdy:
            self.rd_cmd_cycles.append(cycle)
            self.cur["rd"] = None
        if self.cur["wr"] is not None and wr_rdy:
            self.wr_cmd_cycles.append(cycle)
            self.cur["wr"] = None
        if self.cur["wd"] is not None and wd_rdy:
            self.wr_data_cycles.append(cycle)
            self.cur["wd"] = None
        if rv and self.rr:
            self.rd_beats[-1].append((rp.data, rp.last, rp.err))
            self.rd_data_cycles.append(cycle)
        if dv and self.dr:
            self.wr_done[-1].append(dp.err)
            self.wr_done_cycles.append(cycle)
        if (len(self.rd_beats[-1]) == self.rd_expect and len(self.wr_done[-1]) == self.wr_expect
                and not (self.rd_q or self.wr_q or self.wd_q)
                and all(c is None for c in self.cur.values())):
            self._next_phase()


class Run:
    """One simulation: ``dut`` (AXI4Master), the slave, the host; results in attributes."""

    def __init__(self, dut, phases, *, seed=SEED, init=None, host_kw=None, clear_at=(), max_cycles=100000,
                 **slave_kw):
        rng = np.random.default_rng(seed)
        self.init = (rng.integers(0, 256, MEM_BYTES, dtype=np.uint8) if init is None else init.copy())
        self.mem = self.init.copy()
        self.dut = dut
        self.slave = SlaveMemory(dut, self.mem, rng=random.Random(seed + 1), **slave_kw)
        self.host = Host(dut, phases, rng=random.Random(seed + 2), **(host_kw or {}))
        self.errors = []                   # (cycle, error, err_code, err_addr) on every change
        self.occupancy = 0                 # R beats taken, not yet on rd_data (a lower bound)
        self.max_occupancy = 0
        self.cycles = 0
        clear_at = set(clear_at)

        async def tb(ctx):
            s, h = self.slave, self.host
            names = s.OUTPUTS + s.INPUTS + h.OUTPUTS + ("error", "err_code", "err_addr")
            sigs = s.signals() + h.signals() + [dut.error, dut.err_code, dut.err_addr]
            last_err = (0, 0, 0)
            cycle = finished_at = 0
            while True:
                assert cycle < max_cycles, f"unfinished after {max_cycles} cycles"
                finished = h.done() and not s.busy()
                s.drive(ctx, cycle)
                h.drive(ctx, cycle)
                ctx.set(dut.clear, cycle in clear_at)
                v = dict(zip(names, (await ctx.tick().sample(*sigs))[2:]))
                if finished:                  # nothing more may come out
                    active = [k for k in ("arvalid", "awvalid", "wvalid", "rd_data_valid", "wr_done_valid")
                              if v[k]]
                    assert not active, f"cycle {cycle}: activity after the end"
                    if cycle >= finished_at + 8:
                        break
                else:
                    finished_at = cycle
                r_taken = s.r_cur is not None and v["rready"]
                s.observe(v, cycle)
                h.observe(v, cycle)
                self.occupancy += bool(r_taken) - bool(v["rd_data_valid"] and h.rr)
                self.max_occupancy = max(self.max_occupancy, self.occupancy)
                err = (int(v["error"]), int(v["err_code"]), int(v["err_addr"]))
                if err != last_err:
                    self.errors.append((cycle, *err))
                    last_err = err
                cycle += 1
            self.cycles = cycle

        sim = Simulator(dut)
        sim.add_clock(1e-6)
        sim.add_testbench(tb)
        sim.run()
        # beats of read command errors come from the master itself, not from R
        assert self.occupancy == -sum(n for rd, _, _ in phases for a, n in rd if command_error(dut, a, n))
        assert self.slave.max_reads_open <= dut.max_reads, (self.slave.max_reads_open, dut.max_reads)
        assert self.max_occupancy <= dut.r_depth, (self.max_occupancy, dut.r_depth)


# ---- the reference

def command_error(dut, addr, n):
    return addr % dut.beat_bytes != 0 or n == 0 or addr + n * dut.beat_bytes > 1 << dut.addr_width


def expected(dut, run_, phases, err=()):
    """Per phase: the expected rd_data beats and wr_done errors; the final reference memory."""
    B = dut.beat_bytes
    ref = run_.init.copy()
    out = []
    for rd, wr, wd in phases:
        beats = []
        for addr, n in rd:
            for k in range(n):
                last = int(k == n - 1)
                if command_error(dut, addr, n):
                    beats.append((0, last, 1))
                    continue
                lo = addr + k * B
                if addr_err(err, lo, lo + B) != Resp.OKAY:
                    beats.append((int.from_bytes(bytes([ERR_FILL]) * B, "little"), last, 1))
                else:
                    beats.append((int.from_bytes(ref[lo:lo + B].tobytes(), "little"), last, 0))
        done, it = [], iter(wd)
        for addr, n in wr:
            data = [next(it) for _ in range(n)]
            if command_error(dut, addr, n):
                done.append(1)
                continue
            bad = False
            for k, d in enumerate(data):
                lo = addr + k * B
                if addr_err(err, lo, lo + B) == Resp.OKAY:
                    ref[lo:lo + B] = np.frombuffer(d.to_bytes(B, "little"), np.uint8)
                else:
                    bad = True
            done.append(int(bad))
        out.append((beats, done))
    return out, ref


def check(dut, phases, *, err=(), **kw):
    """Run ``phases`` and compare everything with the reference; return the run."""
    r = Run(dut, phases, err=err, **kw)
    exp, ref = expected(dut, r, phases, err)
    for k, ((beats, done), got_beats, got_done) in enumerate(zip(exp, r.host.rd_beats, r.host.wr_done)):
        assert len(got_beats) == len(beats), f"phase {k}: {len(got_beats)} beats, expected {len(beats)}"
        for j, (g, e) in enumerate(zip(got_beats, beats)):
            assert tuple(g) == e, f"phase {k} beat {j}: got {g}, expected {e}"
        assert got_done == done, f"phase {k}: wr_done {got_done}, expected {done}"
    np.testing.assert_array_equal(r.mem, ref)
    # a completion comes after the command's last wr_data beat was taken
    sizes = [n for _, wr, _ in phases for _, n in wr]
    ends = np.cumsum(sizes)
    for j, (n, end) in enumerate(zip(sizes, ends)):
        if n:
            assert r.host.wr_done_cycles[j] > r.host.wr_data_cycles[end - 1], f"wr_done {j} before its data"
    # the sticky error: set exactly when some beat or completion failed, never cleared here
    failed = (any(b[2] for beats, _ in exp for b in beats) or any(d for _, done in exp for d in done)
              or any(command_error(dut, a, n) for rd, _, _ in phases for a, n in rd))
    if not kw.get("clear_at"):
        assert bool(r.errors) == failed and len(r.errors) <= 1, r.errors
    return r


def words(rng, dut, n):
    return [rng.getrandbits(dut.data_width) for _ in range(n)]


def write_phase(rng, dut, cmds):
    return ([], cmds, words(rng, dut, sum(n for _, n in cmds)))


def bursts_of(dut, addr, n):
    """The bursts the master must issue for a command (IHI 0022 A3.4.1), for the log checks."""
    B, out = dut.beat_bytes, []
    while n:
        k = min(n, dut.burst_beats, (PAGE_BYTES - addr % PAGE_BYTES) // B)
        out.append((addr, k))
        addr, n = addr + k * B, n - k
    return out


# ---- parameters

@pytest.mark.parametrize("kw,msg", [
    ({"data_width": 48}, "AXI4Master data_width must be one of 32, 64, 128, 256, 512, not 48"),
    ({"data_width": 1024}, "AXI4Master data_width must be one of 32, 64, 128, 256, 512, not 1024"),
    ({"data_width": 64, "max_burst": 0}, "AXI4Master max_burst must be in 1..256, not 0"),
    ({"data_width": 64, "max_burst": 257}, "AXI4Master max_burst must be in 1..256, not 257"),
    ({"data_width": 64, "max_reads": 0}, "AXI4Master max_reads must be in 1..64, not 0"),
    ({"data_width": 64, "max_writes": 65}, "AXI4Master max_writes must be in 1..64, not 65"),
    ({"data_width": 64, "max_burst": 16, "r_depth": 15}, "AXI4Master r_depth must be in 16..65536, not 15"),
    ({"data_width": 512, "r_depth": 63}, "AXI4Master r_depth must be in 64..65536, not 63"),
    ({"data_width": 64, "addr_width": 11}, "AXI4 addr_width must be in 12..64, not 11"),
])
def test_parameter_validation(kw, msg):
    with pytest.raises(ValueError, match=f"^{msg}$"):
        AXI4Master(**kw)


def test_splitter_parameter_validation():
    with pytest.raises(ValueError, match=r"^BurstSplitter burst_beats must be in 1\.\.64, not 65$"):
        BurstSplitter(32, 64, 65)
    with pytest.raises(ValueError,
                       match=r"^BurstSplitter beat_bytes must be one of 4, 8, 16, 32, 64, not 2$"):
        BurstSplitter(32, 2, 16)


@pytest.mark.parametrize("dw", DATA_WIDTHS)
def test_defaults_and_members(dw):
    dut = AXI4Master(data_width=dw)
    assert dut.beat_bytes == dw // 8
    assert dut.burst_beats == min(MAX_BURST, PAGE_BYTES // dut.beat_bytes)
    assert dut.r_depth == dut.max_reads * dut.burst_beats
    sig = dut.axi.signature
    assert (sig.data_width, sig.addr_width, sig.id_width) == (dw, 32, 4)
    assert len(dut.rd_data.payload.data) == dw and len(dut.wr_data.payload) == dw
    assert len(dut.rd_cmd.payload.beats) == BEATS_WIDTH and len(dut.rd_cmd.payload.addr) == 32


# ---- named edge cases

@pytest.mark.parametrize("dw", [32, 128])
def test_one_beat_commands(dw):
    dut = AXI4Master(data_width=dw, max_burst=16)
    rng = random.Random(SEED)
    B = dut.beat_bytes
    addrs = [0, B, PAGE_BYTES - B, PAGE_BYTES, MEM_BYTES - B]
    r = check(dut, [write_phase(rng, dut, [(a, 1) for a in addrs]),
                    ([(a, 1) for a in addrs], [], [])])
    assert [n for *_, n in r.slave.aw_log] == [1] * 5 and [n for *_, n in r.slave.ar_log] == [1] * 5
    assert [a for _, a, _ in r.slave.ar_log] == addrs


@pytest.mark.parametrize("dw", [32, 128])
def test_4k_boundary(dw):
    """A command ending exactly at a 4 KiB boundary is one burst; one beat across it is two."""
    dut = AXI4Master(data_width=dw, max_burst=16)
    rng = random.Random(SEED + 1)
    B = dut.beat_bytes
    at = (PAGE_BYTES - 4 * B, 4)              # ends exactly at the boundary
    across = (2 * PAGE_BYTES - 4 * B, 5)      # its last beat is in the next page
    r = check(dut, [write_phase(rng, dut, [at, across]), ([at, across], [], [])], ready_p=0.7, valid_p=0.7)
    want = bursts_of(dut, *at) + bursts_of(dut, *across)
    assert want == [at, (2 * PAGE_BYTES - 4 * B, 4), (2 * PAGE_BYTES, 1)]
    assert [(a, n) for _, a, n in r.slave.aw_log] == want
    assert [(a, n) for _, a, n in r.slave.ar_log] == want


@pytest.mark.parametrize("dw", [32, 128])
def test_longer_than_max_burst(dw):
    dut = AXI4Master(data_width=dw, max_burst=16)
    rng = random.Random(SEED + 2)
    B = dut.beat_bytes
    cmd = (PAGE_BYTES - 7 * B, 3 * 16 + 9)    # 7 beats to the boundary, then 16-beat bursts
    r = check(dut, [write_phase(rng, dut, [cmd]), ([cmd], [], [])], ready_p=0.6, valid_p=0.6,
              host_kw={"idle": 0.3, "stall": 0.3})
    want = bursts_of(dut, *cmd)
    assert [n for _, n in want] == [7, 16, 16, 16, 2]
    assert [(a, n) for _, a, n in r.slave.aw_log] == want == [(a, n) for _, a, n in r.slave.ar_log]


def test_max_burst_256_and_4k_cut():
    """With the AXI4 maximum, bursts are cut by the 4 KiB rule (32-bit: 256 beats = 1 KiB;
    128-bit: 256 beats = the whole page)."""
    for dw, n in ((32, 600), (128, 300)):
        dut = AXI4Master(data_width=dw, max_burst=MAX_BURST)
        rng = random.Random(SEED + 3)
        cmd = (PAGE_BYTES - 16 * dut.beat_bytes, n)
        r = check(dut, [write_phase(rng, dut, [cmd]), ([cmd], [], [])])
        assert [(a, k) for _, a, k in r.slave.ar_log] == bursts_of(dut, *cmd)
        assert max(k for *_, k in r.slave.ar_log) == min(MAX_BURST, PAGE_BYTES // dut.beat_bytes)


@pytest.mark.parametrize("dw", [32, 128])
def test_many_back_to_back_commands(dw):
    """40 short commands each way at once, with pauses; then 40 one-beat commands each way at
    full rate: one command, one AR, one R and one W beat per cycle throughout."""
    dut = AXI4Master(data_width=dw, max_burst=16, max_reads=8)
    rng = random.Random(SEED + 4)
    B = dut.beat_bytes
    wr = [(B * 3 * k, 1 + k % 3) for k in range(40)]
    rd = [(MEM_BYTES // 2 + B * 3 * k, 1 + k % 3) for k in range(40)]
    check(dut, [(rd, wr, words(rng, dut, sum(n for _, n in wr)))], read_latency=6, ready_p=0.8,
          valid_p=0.8, host_kw={"idle": 0.1, "stall": 0.1})

    wr = [(B * k, 1) for k in range(40)]
    rd = [(MEM_BYTES // 2 + B * k, 1) for k in range(40)]
    r = check(dut, [(rd, wr, words(rng, dut, 40))], read_latency=2, b_latency=1)
    h, s = r.host, r.slave

    def consecutive(cycles, n=40):
        return len(cycles) == n and cycles == list(range(cycles[0], cycles[0] + n))

    assert consecutive(h.rd_cmd_cycles) and consecutive([c for c, *_ in s.ar_log])
    assert consecutive(s.r_cycles) and consecutive(h.rd_data_cycles)
    assert consecutive(h.wr_data_cycles) and consecutive(s.w_cycles)
    assert s.r_blocked == 0 and s.max_reads_open <= dut.max_reads


@pytest.mark.parametrize("dw", [32, 128])
def test_rd_data_held_low(dw):
    """rd_data not ready for 600 cycles: the master issues only what its buffer holds, RREADY
    never drops, nothing is lost after release."""
    dut = AXI4Master(data_width=dw, max_burst=16, max_reads=4, r_depth=40)
    hold = 600
    rd = [(0, 100), (PAGE_BYTES - 3 * dut.beat_bytes, 50)]
    r = check(dut, [(rd, [], [])], host_kw={"rd_ready": lambda c: c >= hold}, ready_p=0.8, valid_p=0.8)
    early = [n for c, _, n in r.slave.ar_log if c < hold]
    assert sum(early) <= dut.r_depth and sum(early) > dut.r_depth - dut.burst_beats
    assert len([c for c in r.slave.r_cycles if c < hold]) == sum(early)
    assert r.slave.r_blocked == 0
    assert r.max_occupancy == sum(early)


@pytest.mark.parametrize("resp,code", [(Resp.SLVERR, ErrorCode.RD_SLVERR),
                                       (Resp.DECERR, ErrorCode.RD_DECERR)])
def test_read_error_response(resp, code):
    """A read burst answered SLVERR/DECERR: every beat still delivered (data as returned, err
    set on the failing beats), the sticky error holds the first failing beat's address."""
    dut = AXI4Master(data_width=128, max_burst=16)
    B = dut.beat_bytes
    bad = (0x2000 + 5 * B, 0x2000 + 7 * B, resp)             # beats 5 and 6 of the command
    rd = [(0x1000, 8), (0x2000, 20), (0x3000, 4)]
    r = check(dut, [(rd, [], [])], err=[bad], ready_p=0.7, valid_p=0.7, host_kw={"stall": 0.3})
    got = r.host.rd_beats[0]
    assert [e for *_, e in got] == [0] * 8 + [0] * 5 + [1, 1] + [0] * 13 + [0] * 4
    assert r.errors[0][1:] == (1, code, 0x2000 + 5 * B) and len(r.errors) == 1     # sticky, first kept


@pytest.mark.parametrize("resp,code", [(Resp.SLVERR, ErrorCode.WR_SLVERR),
                                       (Resp.DECERR, ErrorCode.WR_DECERR)])
def test_write_error_response(resp, code):
    """A write burst answered SLVERR/DECERR: its command completes with err, the others not."""
    dut = AXI4Master(data_width=32, max_burst=16)
    B = dut.beat_bytes
    wr = [(0x100, 4), (0x800, 40), (0x900, 3)]
    bad = (0x800 + 20 * B, 0x800 + 21 * B, resp)           # in the second burst of the command
    rng = random.Random(SEED + 5)
    r = check(dut, [write_phase(rng, dut, wr)], err=[bad])
    assert r.host.wr_done[0] == [0, 1, 0]
    assert r.errors[0][1:] == (1, code, 0x800 + 16 * B)       # the failing burst's address


def test_sticky_error_and_clear():
    """The first error is kept; clear resets it; an error in the clear cycle is recorded."""
    dut = AXI4Master(data_width=64, max_burst=16)
    B = dut.beat_bytes
    err = [(0x400, 0x400 + B, Resp.SLVERR), (0x800, 0x800 + B, Resp.DECERR)]
    phases = [([(0x400, 1)], [], []), ([(0x800, 1)], [], []), ([(0x800, 1)], [], [])]
    r = Run(dut, phases, err=err)
    assert [e[1:] for e in r.errors] == [(1, ErrorCode.RD_SLVERR, 0x400)]
    first = r.errors[0][0]
    r = Run(dut, phases, err=err, clear_at=[first + 2])
    assert [e[1:] for e in r.errors] == [(1, ErrorCode.RD_SLVERR, 0x400), (0, 0, 0),
                                         (1, ErrorCode.RD_DECERR, 0x800)]
    # R beat of the second read handshaked in cycle c: clear in that same cycle keeps it
    r2 = Run(dut, phases[:2], err=err)
    c = r2.slave.r_cycles[1]
    r3 = Run(dut, phases[:2], err=err, clear_at=[c])
    assert [e[1:] for e in r3.errors] == [(1, ErrorCode.RD_SLVERR, 0x400), (1, ErrorCode.RD_DECERR, 0x800)]


@pytest.mark.parametrize("dw", [32, 128])
def test_command_errors(dw):
    """Misaligned, zero-beat and past-the-end commands: nothing on AXI, the streams stay in step
    (read: beats of data 0 with err; write: beats dropped, wr_done err), sticky RD_CMD/WR_CMD."""
    dut = AXI4Master(data_width=dw, max_burst=16, addr_width=32)
    B = dut.beat_bytes
    rng = random.Random(SEED + 6)
    top = 1 << dut.addr_width
    good_w, good_r = (0x200, 3), (0x200, 3)
    wr = [(0x104, 2) if B > 4 else (0x102, 2), (0x300, 0), good_w, (0x101, 20), (top - B, 2)]
    rd = [(0x106, 3), (0x500, 0), good_r, (0x10 + 1, 17), (top - 2 * B, 3)]
    assert all(command_error(dut, a, n) for a, n in wr + rd if (a, n) not in (good_w, good_r))
    phases = [write_phase(rng, dut, wr), (rd, [], [])]
    r = check(dut, phases, ready_p=0.7, host_kw={"idle": 0.2, "stall": 0.2})
    assert [(a, n) for _, a, n in r.slave.aw_log] == [good_w]
    assert [(a, n) for _, a, n in r.slave.ar_log] == [good_r]
    assert r.host.wr_done[0] == [1, 1, 0, 1, 1]
    assert r.errors[0][1:] == (1, ErrorCode.WR_CMD, wr[0][0])
    # the read side alone: RD_CMD
    r = check(dut, [(rd, [], [])])
    assert r.errors[0][1:] == (1, ErrorCode.RD_CMD, rd[0][0])
    # the top of the address space exactly: no error
    r = Run(AXI4Master(data_width=dw, max_burst=16, addr_width=16), [([(MEM_BYTES - 2 * B, 2)], [], [])])
    assert r.errors == []


def test_protocol_error_rlast():
    """RLAST on the wrong beat (a slave fault): PROTOCOL, beats still counted from ARLEN."""
    dut = AXI4Master(data_width=64, max_burst=16)
    r = Run(dut, [([(0x40, 20)], [], [])], bad_rlast=1)
    assert r.errors[0][1:] == (1, ErrorCode.PROTOCOL, 0x40 + 19 * dut.beat_bytes)
    assert len(r.host.rd_beats[0]) == 20 and [b[1] for b in r.host.rd_beats[0]] == [0] * 19 + [1]


def test_w_after_aw_slave_and_slow_b():
    """A slave that takes W only after AW, with late B responses and wr_done back-pressure."""
    dut = AXI4Master(data_width=128, max_burst=16, max_writes=2)
    rng = random.Random(SEED + 7)
    wr = [(rng.randrange(0, MEM_BYTES // 16 - 40) * 16, rng.randrange(1, 40)) for _ in range(12)]
    check(dut, [write_phase(rng, dut, wr)], w_before_aw=False, b_latency=12, ready_p=0.6,
          host_kw={"stall": 0.5})


def test_512_bit_small():
    """512-bit beats: bursts of at most 64 beats (4 KiB), a command across a page boundary."""
    dut = AXI4Master(data_width=512, max_reads=2)
    assert dut.burst_beats == PAGE_BYTES // 64
    rng = random.Random(SEED + 8)
    cmd = (PAGE_BYTES - 3 * 64, 70)
    r = check(dut, [write_phase(rng, dut, [cmd, (0x8000, 1)]), ([cmd, (0x8000, 1)], [], [])],
              ready_p=0.8, valid_p=0.8)
    assert [(a, n) for _, a, n in r.slave.ar_log] == bursts_of(dut, *cmd) + [(0x8000, 1)] == [
        (PAGE_BYTES - 192, 3), (PAGE_BYTES, 64), (PAGE_BYTES + 4096, 3), (0x8000, 1)]


# ---- latency and throughput (the properties the docstring states)

@pytest.mark.parametrize("dw", [32, 128])
def test_latency_and_full_rate(dw):
    dut = AXI4Master(data_width=dw, max_burst=16, max_reads=4)
    rng = random.Random(SEED + 9)
    n = 100                                       # 7 bursts of 16 beats or fewer
    L = 5                                         # slave read latency, covered by max_reads bursts
    r = check(dut, [write_phase(rng, dut, [(0x1000, n)])], read_latency=L, b_latency=2)
    h, s = r.host, r.slave
    c = h.wr_cmd_cycles[0]
    assert s.aw_log[0][0] == c + dut.cmd_latency                       # AWVALID and AWREADY at once
    assert h.wr_data_cycles[0] == c + dut.cmd_latency
    assert s.w_cycles == [x + dut.w_latency for x in h.wr_data_cycles]
    assert s.w_cycles == list(range(s.w_cycles[0], s.w_cycles[0] + n))  # one W beat per cycle
    k = dut.max_writes                                                   # AW ahead of W
    assert [x for x, *_ in s.aw_log[:k]] == list(range(s.aw_log[0][0], s.aw_log[0][0] + k))
    assert h.wr_done_cycles == [s.b_cycles[-1] + dut.done_latency]

    r = check(dut, [([(0x1000, n)], [], [])], read_latency=L)
    h, s = r.host, r.slave
    assert s.ar_log[0][0] == h.rd_cmd_cycles[0] + dut.cmd_latency
    assert h.rd_data_cycles == [x + dut.rd_latency for x in s.r_cycles]
    assert s.r_cycles == list(range(s.r_cycles[0], s.r_cycles[0] + n))  # one R beat per cycle
    assert s.r_cycles[0] == s.ar_log[0][0] + L


# ---- seeded random mixes against the NumPy reference

def random_phases(rng, dut, n_phases, n_cmds, max_beats, *, errors=False):
    B = dut.beat_bytes
    limit = MEM_BYTES // B
    phases = []
    for _ in range(n_phases):
        wr, rd, spans = [], [], []
        for _ in range(n_cmds):
            n = rng.choice([1, 2, rng.randrange(1, max_beats), rng.randrange(1, 3 * max_beats)])
            a = B * rng.randrange(0, limit - n)
            if rng.random() < 0.25:                    # near a page boundary
                a = max(0, (a // PAGE_BYTES) * PAGE_BYTES + PAGE_BYTES - B * rng.randrange(1, 8))
                n = min(n, limit - a // B)
            if errors and rng.random() < 0.1:
                a, n = rng.choice([(a + 1, n), (a, 0)])
            wr.append((a, n))
            spans.append((a, a + n * B))
        while len(rd) < n_cmds:
            n = rng.choice([1, rng.randrange(1, max_beats), rng.randrange(1, 3 * max_beats)])
            a = B * rng.randrange(0, limit - n)
            if any(a < hi and lo < a + n * B for lo, hi in spans):
                continue                              # reads of a phase never meet its writes
            if errors and rng.random() < 0.1:
                a, n = rng.choice([(a + 2, n), (a, 0)])
            rd.append((a, n))
        phases.append((rd, wr, words(rng, dut, sum(n for _, n in wr))))
    return phases


@pytest.mark.parametrize("dw,max_burst,seed", [(32, 16, 0), (128, 16, 1), (64, 8, 2), (256, 32, 3)])
def test_random_mix(dw, max_burst, seed):
    print("seed", SEED + seed)
    rng = random.Random(SEED + seed)
    dut = AXI4Master(data_width=dw, max_burst=max_burst, max_reads=rng.choice([1, 2, 4]),
                     max_writes=rng.choice([1, 3, 4]))
    phases = random_phases(rng, dut, 4, 8, 3 * max_burst)
    err = [(0x3000, 0x3000 + 3 * dut.beat_bytes, Resp.SLVERR), (0xA000, 0xA100, Resp.DECERR)]
    r = check(dut, phases, seed=SEED + seed, err=err, ready_p=0.7, valid_p=0.7,
              read_latency=rng.randrange(1, 12), b_latency=rng.randrange(0, 6),
              w_before_aw=rng.random() < 0.5, host_kw={"idle": 0.25, "stall": 0.25})
    print(f"{r.cycles} cycles, {len(r.slave.ar_log)} AR, {len(r.slave.aw_log)} AW")


@pytest.mark.parametrize("dw,seed", [(32, 10), (128, 11)])
def test_random_mix_with_command_errors(dw, seed):
    print("seed", SEED + seed)
    rng = random.Random(SEED + seed)
    dut = AXI4Master(data_width=dw, max_burst=16, max_reads=2, r_depth=24)
    phases = random_phases(rng, dut, 3, 8, 24, errors=True)
    check(dut, phases, seed=SEED + seed, ready_p=0.6, valid_p=0.6, read_latency=4,
          host_kw={"idle": 0.3, "stall": 0.4})
