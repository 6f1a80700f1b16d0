"""An AXI4 master for amaranth.sim testbenches and the reference model of an AXI4 slave on the
internal bus (hw/axi.py), for tests/test_axi.py.

:class:`AxiSimMaster` is cycle based: one testbench process drives all five channels, with a
seeded random idle probability on AW, W, AR and ready pauses on B and R (or a function of the
cycle for a fixed pattern), and stamps every handshake with its cycle. It also checks the bus
every cycle (never ``w_en`` and ``r_en`` together, no access with ``addr_err``) and logs it.

:class:`AxiModel` is the expected behaviour, written from the AXI4 rules and the bridge's
documented error policy, not from the gateware: bursts are applied in the order their address
handshakes happened (the bridge serves one burst at a time).
"""
import random
from dataclasses import dataclass, field

from nibble.hw.axi import BEAT_BYTES, BEAT_SIZE, Burst, Resp
from nibble.hw.bus import ADDR_BITS

FULL_STRB = (1 << BEAT_BYTES) - 1


@dataclass
class Txn:
    """One burst: ``write`` with ``data`` (and ``strb`` per beat), or a read of ``length`` beats."""
    write: bool
    addr: int
    length: int = 1
    data: list = field(default_factory=list)
    strb: list = None
    id: int = 0
    burst: int = Burst.INCR
    size: int = BEAT_SIZE
    after: int = 0                                  # not presented before this cycle
    # filled by the simulation
    addr_cycle: int = None
    resp_cycles: list = field(default_factory=list)
    resp: list = field(default_factory=list)       # write: [bresp]; read: [(data, rresp, rlast, rid)]
    bid: int = None

    def __post_init__(self):
        if self.write:
            self.length = len(self.data)
            if self.strb is None:
                self.strb = [FULL_STRB] * self.length


def write(addr, data, **kw):
    return Txn(True, addr, data=list(data), **kw)


def read(addr, length, **kw):
    return Txn(False, addr, length, **kw)


class AxiModel:
    """Expected responses and memory of an AXI4 slave in front of a bus with ``mapped(word)``."""

    def __init__(self, mapped, memory=None):
        self.mapped = mapped
        self.memory = dict(memory or {})
        self.bus_writes = []

    @staticmethod
    def burst_ok(t):
        return (t.size == BEAT_SIZE and t.burst in (Burst.INCR, Burst.FIXED)
                and t.addr % BEAT_BYTES == 0 and t.addr >> (ADDR_BITS + 2) == 0)

    @staticmethod
    def words(t):
        base = t.addr >> 2
        return [base + (i if t.burst == Burst.INCR else 0) for i in range(t.length)]

    def apply(self, t):
        """The expected responses of ``t`` (and its effect on the memory)."""
        ok_burst = self.burst_ok(t)
        if t.write:
            err = False
            for w, d, s in zip(self.words(t), t.data, t.strb):
                ok = ok_burst and s == FULL_STRB and self.mapped(w)
                if ok:
                    self.memory[w] = d
                    self.bus_writes.append((w, d))
                err |= not ok
            return [Resp.SLVERR if err else Resp.OKAY]
        out = []
        for i, w in enumerate(self.words(t)):
            ok = ok_burst and self.mapped(w)
            out.append((self.memory.get(w, 0) if ok else 0, Resp.OKAY if ok else Resp.SLVERR,
                        int(i == t.length - 1), t.id))
        return out


class AxiSimMaster:
    """Drives ``txns`` on ``axi`` (the bridge's slave port) and monitors ``bus``.

    ``idle``: probability that AW/W/AR stay idle in a cycle before presenting the next item;
    ``stall``: probability that BREADY/RREADY are low in a cycle; ``rready``/``bready``:
    optional functions ``cycle -> bool`` overriding ``stall``. AW and AR items go out in list
    order, independently of each other; W beats follow the writes' order.
    """

    def __init__(self, axi, bus, txns, *, idle=0.0, stall=0.0, seed=0, rready=None, bready=None):
        self.axi, self.bus, self.txns = axi, bus, txns
        self.idle, self.stall = idle, stall
        self.rng = random.Random(seed)
        self.rready_fn, self.bready_fn = rready, bready
        self.bus_log = []            # (cycle, "w"/"r", word, data)
        self.cycle = 0

    @staticmethod
    def _first(q):
        return q[0][0] if isinstance(q[0], tuple) else q[0]

    async def run(self, ctx, max_cycles=100000):
        a, rng = self.axi, self.rng
        writes = [t for t in self.txns if t.write]
        reads = [t for t in self.txns if not t.write]
        aw_q, ar_q = list(writes), list(reads)
        w_q = [(t, i) for t in writes for i in range(t.length)]
        b_q, r_q = list(writes), [(t, i) for t in reads for i in range(t.length)]
        aw_cur = w_cur = ar_cur = None

        def present(q, cur):
            if (cur is None and q and self._first(q).after <= self.cycle
                    and not (self.idle and rng.random() < self.idle)):
                return q.pop(0)
            return cur

        while b_q or r_q:
            assert self.cycle < max_cycles, f"AXI traffic unfinished after {max_cycles} cycles"
            aw_cur = present(aw_q, aw_cur)
            ar_cur = present(ar_q, ar_cur)
            w_cur = present(w_q, w_cur)
            if aw_cur is not None:
                t = aw_cur
                ctx.set(a.awid, t.id); ctx.set(a.awaddr, t.addr); ctx.set(a.awlen, t.length - 1)
                ctx.set(a.awsize, t.size); ctx.set(a.awburst, t.burst)
            ctx.set(a.awvalid, aw_cur is not None)
            if ar_cur is not None:
                t = ar_cur
                ctx.set(a.arid, t.id); ctx.set(a.araddr, t.addr); ctx.set(a.arlen, t.length - 1)
                ctx.set(a.arsize, t.size); ctx.set(a.arburst, t.burst)
            ctx.set(a.arvalid, ar_cur is not None)
            if w_cur is not None:
                t, i = w_cur
                ctx.set(a.wdata, t.data[i]); ctx.set(a.wstrb, t.strb[i])
                ctx.set(a.wlast, i == t.length - 1)
            ctx.set(a.wvalid, w_cur is not None)
            bready = (self.bready_fn(self.cycle) if self.bready_fn
                      else not (self.stall and rng.random() < self.stall))
            rready = (self.rready_fn(self.cycle) if self.rready_fn
                      else not (self.stall and rng.random() < self.stall))
            ctx.set(a.bready, bready)
            ctx.set(a.rready, rready)
            b = self.bus
            (_, _, awready, wready, arready, bvalid, bid, bresp, rvalid, rid, rdata, rresp, rlast,
             w_en, r_en, addr, addr_err, w_data) = await ctx.tick().sample(
                a.awready, a.wready, a.arready, a.bvalid, a.bid, a.bresp,
                a.rvalid, a.rid, a.rdata, a.rresp, a.rlast,
                b.w_en, b.r_en, b.addr, b.addr_err, b.w_data)
            assert not (w_en and r_en), f"cycle {self.cycle}: w_en and r_en together"
            assert not ((w_en or r_en) and addr_err), f"cycle {self.cycle}: access to unmapped word {addr}"
            if w_en:
                self.bus_log.append((self.cycle, "w", addr, w_data))
            if r_en:
                self.bus_log.append((self.cycle, "r", addr, None))
            if aw_cur is not None and awready:
                aw_cur.addr_cycle = self.cycle
                aw_cur = None
            if ar_cur is not None and arready:
                ar_cur.addr_cycle = self.cycle
                ar_cur = None
            if w_cur is not None and wready:
                w_cur[0].resp_cycles.append(self.cycle)      # W handshakes, then B
                w_cur = None
            if bvalid and bready:
                assert b_q, f"cycle {self.cycle}: unexpected B response"
                t = b_q.pop(0)
                assert t.addr_cycle is not None and len(t.resp_cycles) == t.length, \
                    f"cycle {self.cycle}: B before the burst's address and data"
                t.resp.append(Resp(bresp))
                t.bid = bid
                t.resp_cycles.append(self.cycle)
            if rvalid and rready:
                assert r_q, f"cycle {self.cycle}: unexpected R beat"
                t, i = r_q.pop(0)
                t.resp.append((rdata, Resp(rresp), rlast, rid))
                t.resp_cycles.append(self.cycle)
            self.cycle += 1
        for name in ("awvalid", "wvalid", "arvalid", "bready", "rready"):
            ctx.set(getattr(a, name), 0)

    def check(self, model):
        """Compare every response with ``model`` (bursts in address-handshake order) and the
        bus writes with the model's; returns the bursts in the order they were served."""
        served = sorted(self.txns, key=lambda t: t.addr_cycle)
        for t in served:
            exp = model.apply(t)
            assert t.resp == exp, (f"{'write' if t.write else 'read'} 0x{t.addr:x} x{t.length} "
                                   f"burst {t.burst} size {t.size}: got {t.resp}, expected {exp}")
            if t.write:
                assert t.bid == t.id
        got_writes = [(w, d) for _, kind, w, d in self.bus_log if kind == "w"]
        assert got_writes == model.bus_writes
        return served
