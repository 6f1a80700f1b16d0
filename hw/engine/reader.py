"""Feature reader: the feature word of every scheduled beat, from any-latency memory (DESIGN §4)."""
from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from ..config import EngineConfig
from ..mem.port import read_port
from .scheduler import beat_layout

__all__ = ["FeatureReader", "read_beat_layout"]


def read_beat_layout(config: EngineConfig):
    """A beat with its input: ``x`` (``vc`` int8 features, 0 for a beat without ``inb``) and
    ``beat`` (:func:`~.scheduler.beat_layout`); with ``vp > 1`` pixel lanes also ``xl``, the
    feature words of lanes 1 … vp − 1."""
    fields = {"x": 8 * config.vc, "beat": beat_layout(config)}
    if config.vp > 1:
        fields["xl"] = data.ArrayLayout(8 * config.vc, config.vp - 1)
    return data.StructLayout(fields)


class FeatureReader(wiring.Component):
    """Reads feature word ``faddr`` for every beat with ``inb`` and passes the beat on with it.

    With ``vp > 1`` pixel lanes, lane ``j`` reads its ``lanes[j − 1].faddr`` through its own port
    ``f_rd_px{j}``; a beat's requests are issued in one cycle and its words leave together (lockstep).

    Parameters: ``config`` (:class:`EngineConfig`); ``depth`` (default 4) beats in flight: at
    least the memory's latency + 2 for one beat per cycle.

    Members:
      * ``i``: ``In(stream.Signature(beat_layout(config)))``.
      * ``f_rd``: ``Out(read_port(feature_depth, 8·vc))``; ``f_rd_px1`` … ``f_rd_px{vp−1}`` the same.
      * ``o``: ``Out(stream.Signature(read_beat_layout(config)))`` — in order.
      * ``busy``: ``Out(1)`` — beats in flight.

    A beat without ``inb`` (padding, inserted zeros, pool padding) reads nothing and leaves with
    ``x`` = 0. Latency: the memory's (2 cycles behind a :class:`~nibble.hw.mem.port.SyncReadPort`;
    a beat without ``inb``: 1 cycle). Throughput: one beat per cycle. Back-pressure: ``o.ready``
    low holds the response and, once ``depth`` beats are in flight, ``i``.
    """

    def __init__(self, config: EngineConfig, depth=4):
        self.config, self.depth = config, depth
        super().__init__({
            "i": In(stream.Signature(beat_layout(config))),
            "f_rd": Out(read_port(config.feature_depth, 8 * config.vc)),
            **{f"f_rd_px{j}": Out(read_port(config.feature_depth, 8 * config.vc)) for j in range(1, config.vp)},
            "o": Out(stream.Signature(read_beat_layout(config))),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        vp = self.config.vp
        layout = beat_layout(self.config)
        m.submodules.fifo = fifo = SyncFIFO(width=layout.size, depth=self.depth)
        i = self.i
        head = data.View(layout, fifo.r_data)
        # (port, the incoming beat's inb and address, the head beat's inb) per lane
        lanes = [(self.f_rd, i.payload.inb, i.payload.faddr, head.inb)]
        lanes += [(getattr(self, f"f_rd_px{j}"), i.payload.lanes[j - 1].inb, i.payload.lanes[j - 1].faddr,
                   head.lanes[j - 1].inb) for j in range(1, vp)]
        # the ports' ready does not depend on valid (SyncReadPort), so every lane's request can
        # wait for the other lanes' ports: a beat's reads go out in one cycle
        can = Signal()
        m.d.comb += can.eq(fifo.w_rdy & Cat(~inb | port.req.ready for port, inb, _, _ in lanes).all())
        arrived = Signal()
        m.d.comb += arrived.eq(fifo.r_rdy & Cat(~h_inb | port.resp.valid for port, _, _, h_inb in lanes).all())
        m.d.comb += [
            i.ready.eq(can),
            fifo.w_en.eq(i.valid & i.ready), fifo.w_data.eq(i.payload.as_value()),
            self.o.valid.eq(arrived),
            self.o.payload.beat.eq(head),
            fifo.r_en.eq(self.o.valid & self.o.ready),
            self.busy.eq(fifo.r_rdy),
        ]
        for j, (port, inb, faddr, h_inb) in enumerate(lanes):
            x = self.o.payload.x if j == 0 else self.o.payload.xl[j - 1]
            others = Cat(fifo.w_rdy, *[~inb2 | port2.req.ready for port2, inb2, _, _ in lanes if port2 is not port])
            m.d.comb += [port.req.valid.eq(i.valid & inb & others.all()), port.req.payload.eq(faddr),
                         x.eq(Mux(h_inb, port.resp.payload, 0)),
                         port.resp.ready.eq(self.o.valid & self.o.ready & h_inb)]
        return m
