"""Feature writer: the output stage's pixels into feature memory, ``k = m/vc`` words each (DESIGN §4)."""
from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import EngineConfig
from ..mem.port import write_port

__all__ = ["FeatureWriter"]


class FeatureWriter(wiring.Component):
    """Writes each output pixel's ``m`` int8 values as ``k = m/vc`` consecutive feature words.

    Parameter: ``config`` (:class:`EngineConfig`).

    Members:
      * ``i``: ``In(stream.Signature({v: ArrayLayout(signed(8), m), tag: range(feature_depth)}))``
        — the output stage's pixels; ``tag`` is the first word's address.
      * ``f_wr``: ``Out(write_port(feature_depth, 8·vc))`` — word ``j`` (channels ``j·vc …``) at
        ``tag + j``.

    Latency 0 (the write request is the input, combinationally). Throughput: one word per cycle;
    a pixel is taken with its last word (``k`` cycles per pixel).
    """

    def __init__(self, config: EngineConfig):
        self.config = c = config
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({"v": data.ArrayLayout(signed(8), c.m),
                                                        "tag": range(c.feature_depth)}))),
            "f_wr": Out(write_port(c.feature_depth, 8 * c.vc)),
        })

    def elaborate(self, platform):
        m = Module()
        c = self.config
        k = c.m // c.vc
        req = self.f_wr.req
        bits = self.i.payload.v.as_value()
        if k == 1:
            m.d.comb += [req.valid.eq(self.i.valid), req.payload.addr.eq(self.i.payload.tag),
                         req.payload.data.eq(bits), self.i.ready.eq(req.ready)]
        else:
            j = Signal(range(k))
            m.d.comb += [req.valid.eq(self.i.valid), req.payload.addr.eq(self.i.payload.tag + j),
                         req.payload.data.eq(bits.word_select(j, 8 * c.vc)),
                         self.i.ready.eq(req.ready & (j == k - 1))]
            with m.If(req.valid & req.ready):
                m.d.sync += j.eq(Mux(j == k - 1, 0, j + 1))
        return m
