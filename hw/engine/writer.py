"""Feature writer: the output stage's pixels into feature memory, ``k = m/vc`` words each (DESIGN §4)."""
from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import EngineConfig
from ..mem.port import write_port

__all__ = ["FeatureWriter", "pixel_layout"]


def pixel_layout(config: EngineConfig):
    """An output pixel: ``v`` (``m`` int8) and ``tag`` (its first feature word)."""
    return data.StructLayout({"v": data.ArrayLayout(signed(8), config.m), "tag": range(config.feature_depth)})


class FeatureWriter(wiring.Component):
    """Writes each output pixel's ``m`` int8 values as ``k = m/vc`` consecutive feature words.

    Parameter: ``config`` (:class:`EngineConfig`).

    Members:
      * ``i``: ``In(stream.Signature(pixel_layout(config)))`` — the output stage's pixels; ``tag``
        is the first word's address. With ``vp > 1`` pixel lanes also ``i1`` … ``i{vp−1}``, the
        other lanes' output stages, taken in round robin (from the lane after the last one written:
        the lanes drain in order and none runs ahead of the others), a pixel's ``k`` words
        before the next pixel's.
      * ``f_wr``: ``Out(write_port(feature_depth, 8·vc))`` — word ``j`` (channels ``j·vc …``) at
        ``tag + j``.

    Latency 0 (the write request is the input, combinationally). Throughput: one word per cycle;
    a pixel is taken with its last word (``k`` cycles per pixel, ``vp·k`` per beat of ``vp``
    pixels).
    """

    def __init__(self, config: EngineConfig):
        self.config = c = config
        super().__init__({
            "i": In(stream.Signature(pixel_layout(c))),
            **{f"i{j}": In(stream.Signature(pixel_layout(c))) for j in range(1, c.vp)},
            "f_wr": Out(write_port(c.feature_depth, 8 * c.vc)),
        })

    def elaborate(self, platform):
        m = Module()
        c = self.config
        k = c.m // c.vc
        req = self.f_wr.req
        ins = [self.i] + [getattr(self, f"i{j}") for j in range(1, c.vp)]
        j = Signal(range(k))                      # the word of the current pixel
        lock = Signal(range(max(c.vp, 2)))        # its lane, while j > 0
        nxt = Signal(range(max(c.vp, 2)))         # round robin: the lane after the last one written
        pick = Signal(range(max(c.vp, 2)))
        with m.Switch(nxt):
            for start in range(c.vp):
                with m.Case(start):
                    order = [(start + n) % c.vp for n in range(c.vp)]
                    for n in reversed(order):
                        with m.If(ins[n].valid):
                            m.d.comb += pick.eq(n)
        cur = Signal(range(max(c.vp, 2)))
        m.d.comb += cur.eq(Mux(j == 0, pick, lock))
        sel = Array(ins)[cur]
        last = j == k - 1
        m.d.comb += [req.valid.eq(sel.valid), req.payload.addr.eq(sel.payload.tag + j),
                     req.payload.data.eq(sel.payload.v.as_value().word_select(j, 8 * c.vc) if k > 1
                                         else sel.payload.v.as_value())]
        for n, s in enumerate(ins):
            m.d.comb += s.ready.eq(req.ready & last & (cur == n))
        if c.vp > 1:
            with m.If(req.valid & req.ready & last):
                m.d.sync += nxt.eq(Mux(cur == c.vp - 1, 0, cur + 1))
        if k > 1:
            with m.If(req.valid & req.ready):
                m.d.sync += [j.eq(Mux(last, 0, j + 1)), lock.eq(cur)]
        return m
