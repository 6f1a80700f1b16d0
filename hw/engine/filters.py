"""Filter loader (direct mode): one output block's filters from weight memory into the ``m``
PE filter caches (DESIGN §4, weight-memory order in :mod:`nibble.hw.engine`)."""
from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import EngineConfig
from ..mem.port import BurstReader, read_port

__all__ = ["FilterLoader", "filter_cmd_layout"]


def filter_cmd_layout(config: EngineConfig):
    """The :class:`FilterLoader`'s command: ``base`` (weight word), ``tcb`` (words per filter),
    ``fbase`` (first filter-cache word)."""
    c = config
    return data.StructLayout({"base": range(c.weight_depth), "tcb": range(c.filter_depth + 1),
                              "fbase": range(c.filter_depth)})


class FilterLoader(wiring.Component):
    """Copies ``m·tcb`` weight words from ``base``: word ``p·tcb + a`` to PE ``p``'s cache word
    ``fbase + a``.

    Parameter: ``config`` (:class:`EngineConfig`).

    Members:
      * ``cmd``: ``In(stream.Signature({base: range(weight_depth), tcb: range(filter_depth + 1),
        fbase: range(filter_depth)}))`` — taken when idle; ``tcb`` (``kh·kw·in_cb``, ≥ 1) words
        per filter, from cache word ``fbase`` (0, or half of the cache: the next output block's
        filters load there while the PE array reads the block's own, :mod:`.control`).
      * ``w_rd``: ``Out(read_port(weight_depth, 4·vc))``; with ``weight_ports = 2`` also ``w_rd2``.
      * ``w_en``, ``w_pe`` (``range(m)``), ``w_addr`` (``range(filter_depth)``), ``w_data``
        (``4·vc`` bits): ``Out`` — the PE array's filter-cache write port, a word per cycle; with
        ``weight_ports = 2`` the lower half of the PEs' (from ``w_rd``), and ``w2_en``, ``w2_pe``,
        ``w2_addr``, ``w2_data`` the upper half's (from ``w_rd2``, weight words from
        ``base + (m/2)·tcb``), in the same cycles.
      * ``busy``: ``Out(1)``.

    Latency: ``m·tcb/P`` requests (``P`` = ``weight_ports``) plus the memory's latency
    (``m·tcb/P + 2`` cycles with a :class:`~nibble.hw.mem.port.SyncReadPort`). The cache words
    it writes must not be read meanwhile.
    """

    def __init__(self, config: EngineConfig):
        self.config = c = config
        #: the ports' name suffixes: "" (the first), "2"
        self.suffixes = ["", "2"][:c.weight_ports]
        super().__init__({
            "cmd": In(stream.Signature(filter_cmd_layout(c))),
            **{f"w_rd{sfx}": Out(read_port(c.weight_depth, 4 * c.vc)) for sfx in self.suffixes},
            **{n: v for sfx in self.suffixes for n, v in (
                (f"w{sfx}_en", Out(1)), (f"w{sfx}_pe", Out(range(c.m))), (f"w{sfx}_addr", Out(range(c.filter_depth))),
                (f"w{sfx}_data", Out(4 * c.vc)))},
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        c = self.config
        P = c.weight_ports
        share = c.m // P                    # PEs a port fills
        tcb = Signal.like(self.cmd.payload.tcb)
        fbase = Signal.like(self.cmd.payload.fbase)
        take = self.cmd.valid & self.cmd.ready
        with m.If(take):
            m.d.sync += [tcb.eq(self.cmd.payload.tcb), fbase.eq(self.cmd.payload.fbase)]
        ready, busy = [], []
        for j, sfx in enumerate(self.suffixes):
            burst = BurstReader(c.weight_depth, 4 * c.vc, share * c.filter_depth)
            m.submodules[f"burst{sfx}"] = burst
            wiring.connect(m, burst.port, wiring.flipped(getattr(self, f"w_rd{sfx}")))
            pe, addr = Signal(range(c.m + 1), name=f"pe{sfx}"), Signal(range(c.filter_depth + 1), name=f"addr{sfx}")
            m.d.comb += [burst.cmd.valid.eq(self.cmd.valid & self.cmd.ready),
                         burst.cmd.payload.base.eq(self.cmd.payload.base + self.cmd.payload.tcb * (j * share)),
                         burst.cmd.payload.n.eq(self.cmd.payload.tcb * share),
                         burst.o.ready.eq(1),
                         getattr(self, f"w{sfx}_en").eq(burst.o.valid), getattr(self, f"w{sfx}_pe").eq(pe),
                         getattr(self, f"w{sfx}_addr").eq(fbase + addr), getattr(self, f"w{sfx}_data").eq(burst.o.payload)]
            ready.append(burst.cmd.ready & ~burst.busy)
            busy.append(burst.busy)
            with m.If(take):
                m.d.sync += [pe.eq(j * share), addr.eq(0)]
            with m.Elif(burst.o.valid):
                with m.If(addr + 1 == tcb):
                    m.d.sync += [addr.eq(0), pe.eq(pe + 1)]
                with m.Else():
                    m.d.sync += addr.eq(addr + 1)
        m.d.comb += [self.cmd.ready.eq(Cat(*ready).all()), self.busy.eq(Cat(*busy).any())]
        return m
