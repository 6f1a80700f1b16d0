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
    ``beat`` (:func:`~.scheduler.beat_layout`)."""
    return data.StructLayout({"x": 8 * config.vc, "beat": beat_layout(config)})


class FeatureReader(wiring.Component):
    """Reads feature word ``faddr`` for every beat with ``inb`` and passes the beat on with it.

    Parameters: ``config`` (:class:`EngineConfig`); ``depth`` (default 4) beats in flight: at
    least the memory's latency + 2 for one beat per cycle.

    Members:
      * ``i``: ``In(stream.Signature(beat_layout(config)))``.
      * ``f_rd``: ``Out(read_port(feature_depth, 8·vc))``.
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
            "o": Out(stream.Signature(read_beat_layout(config))),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        layout = beat_layout(self.config)
        m.submodules.fifo = fifo = SyncFIFO(width=layout.size, depth=self.depth)
        i, req, resp = self.i, self.f_rd.req, self.f_rd.resp
        m.d.comb += [
            req.valid.eq(i.valid & i.payload.inb & fifo.w_rdy), req.payload.eq(i.payload.faddr),
            i.ready.eq(fifo.w_rdy & (~i.payload.inb | req.ready)),
            fifo.w_en.eq(i.valid & i.ready), fifo.w_data.eq(i.payload.as_value()),
        ]
        head = data.View(layout, fifo.r_data)
        m.d.comb += [
            self.o.valid.eq(fifo.r_rdy & (~head.inb | resp.valid)),
            self.o.payload.beat.eq(head),
            self.o.payload.x.eq(Mux(head.inb, resp.payload, 0)),
            resp.ready.eq(self.o.ready & fifo.r_rdy & head.inb),
            fifo.r_en.eq(self.o.valid & self.o.ready),
            self.busy.eq(fifo.r_rdy),
        ]
        return m
