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
      * ``w_rd``: ``Out(read_port(weight_depth, 4·vc))``.
      * ``w_en``, ``w_pe`` (``range(m)``), ``w_addr`` (``range(filter_depth)``), ``w_data``
        (``4·vc`` bits): ``Out`` — the PE array's filter-cache write port, a word per cycle.
      * ``busy``: ``Out(1)``.

    Latency: ``m·tcb`` requests plus the memory's latency (``m·tcb + 2`` cycles with a
    :class:`~nibble.hw.mem.port.SyncReadPort`). The cache words it writes must not be read
    meanwhile.
    """

    def __init__(self, config: EngineConfig):
        self.config = c = config
        super().__init__({
            "cmd": In(stream.Signature(filter_cmd_layout(c))),
            "w_rd": Out(read_port(c.weight_depth, 4 * c.vc)),
            "w_en": Out(1), "w_pe": Out(range(c.m)), "w_addr": Out(range(c.filter_depth)),
            "w_data": Out(4 * c.vc),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        c = self.config
        m.submodules.burst = burst = BurstReader(c.weight_depth, 4 * c.vc, c.m * c.filter_depth)
        wiring.connect(m, burst.port, wiring.flipped(self.w_rd))
        tcb = Signal.like(self.cmd.payload.tcb)
        fbase = Signal.like(self.cmd.payload.fbase)
        pe, addr = Signal(range(c.m + 1)), Signal(range(c.filter_depth + 1))
        m.d.comb += [self.cmd.ready.eq(burst.cmd.ready & ~burst.busy), burst.cmd.valid.eq(self.cmd.valid & ~burst.busy),
                     burst.cmd.payload.base.eq(self.cmd.payload.base),
                     burst.cmd.payload.n.eq(self.cmd.payload.tcb * c.m),
                     burst.o.ready.eq(1),
                     self.w_en.eq(burst.o.valid), self.w_pe.eq(pe), self.w_addr.eq(fbase + addr),
                     self.w_data.eq(burst.o.payload), self.busy.eq(burst.busy)]
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += [tcb.eq(self.cmd.payload.tcb), fbase.eq(self.cmd.payload.fbase), pe.eq(0), addr.eq(0)]
        with m.Elif(burst.o.valid):
            with m.If(addr + 1 == tcb):
                m.d.sync += [addr.eq(0), pe.eq(pe + 1)]
            with m.Else():
                m.d.sync += addr.eq(addr + 1)
        return m
