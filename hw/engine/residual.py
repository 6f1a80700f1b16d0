"""Residual reader: fetches the second operand of a fused residual Add for each output pixel.

Between the PE array (or the Winograd back end) and the output stage. For a layer with a fused
residual Add (descriptor ``res``, ARITHMETIC §4.5: ``acc + bias + (r << res_sh)`` before the
activation), the residual tensor ``r`` is an int8 map with the same layout as the layer's output
(the same row and pixel pitch), at ``res_base``; the output pixel at feature word ``addr`` has
its residual at ``addr − out_base + res_base``. For every beat the reader reads the ``k = m/vc``
words of that pixel through its own feature-memory read port and passes the beat on with the
``m`` residual values.
"""
from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..mem.port import read_port

__all__ = ["ResidualReader", "beat_layout"]


def beat_layout(m, acc_width, tag_shape, res=False, lanes=1):
    """The output stage's input beat: ``acc`` (m × signed(acc_width)), ``pool_first``,
    ``pool_last``, ``skip``, ``tag``; with ``res`` also ``res`` (m × signed(8)); with ``lanes > 1``
    output-pixel lanes also ``lane`` (``range(lanes)``, the pixel lane the beat belongs to)."""
    fields = {"acc": data.ArrayLayout(signed(acc_width), m), "pool_first": 1, "pool_last": 1, "skip": 1,
              "tag": tag_shape}
    if res:
        fields["res"] = data.ArrayLayout(signed(8), m)
    if lanes > 1:
        fields["lane"] = range(lanes)
    return data.StructLayout(fields)


class ResidualReader(wiring.Component):
    """Adds the residual operand to each beat.

    Parameters: ``m`` channels, ``vc`` int8 per feature word (``m`` a multiple of ``vc``),
    ``acc_width``, ``depth`` feature-memory words (the tag is the output word address,
    ``range(depth)``), ``lanes`` (output-pixel lanes: the beats carry their ``lane``, passed on).

    Members:
      * ``i``: ``In(stream.Signature(beat_layout(m, acc_width, range(depth))))``; ``o``: the same
        with ``res``.
      * ``en``: ``In(1)`` — the layer has a residual Add; ``offset``: ``In(signed(26))`` —
        ``res_base − out_base`` (words); layer constants.
      * ``r_rd``: ``Out(read_port(depth, vc·8))`` — a feature-memory read port (any latency).
      * ``busy``: ``Out(1)`` — reads in flight.

    Without ``en`` the beats pass through combinationally (``res`` = 0, no latency). With ``en``:
    the ``k`` words are requested in cycles 0 … k − 1 after the beat arrives; the beat is offered
    on ``o`` the cycle after the last word arrives (cycle ``k + 2`` behind a
    :class:`~nibble.hw.mem.port.SyncReadPort`); the input beat is taken (``i.ready``) when ``o``
    takes it. Throughput one beat per ``k + 3`` cycles behind a
    ``SyncReadPort`` (the cycle model's figure, :func:`nibble.host.passes.lower.layer_cycles`) (the engine offers at most one pixel per ``T·in_cb`` beats of the PE array).
    Backpressure: ``i.ready = o.ready`` once the residual is read; ``i.payload`` must stay stable
    while ``i.valid`` and not ``i.ready`` (stream rule).
    """

    def __init__(self, m, vc, acc_width, depth, lanes=1):
        if m % vc:
            raise ValueError(f"m ({m}) must be a multiple of vc ({vc})")
        self.m, self.vc, self.acc_width, self.depth, self.lanes = m, vc, acc_width, depth, lanes
        super().__init__({
            "i": In(stream.Signature(beat_layout(m, acc_width, range(depth), lanes=lanes))),
            "o": Out(stream.Signature(beat_layout(m, acc_width, range(depth), res=True, lanes=lanes))),
            "en": In(1),
            "offset": In(signed(26)),
            "r_rd": Out(read_port(depth, vc * 8)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        k = self.m // self.vc
        words = Array(Signal(self.vc * 8, name=f"res{j}") for j in range(k))
        issued = Signal(range(k + 1))     # words requested for the current beat
        got = Signal(range(k + 1))        # words arrived
        for f in ("acc", "pool_first", "pool_last", "skip", "tag") + (("lane",) if self.lanes > 1 else ()):
            m.d.comb += getattr(self.o.payload, f).eq(getattr(self.i.payload, f))
        req, resp = self.r_rd.req, self.r_rd.resp
        with m.If(~self.en):
            m.d.comb += [self.o.valid.eq(self.i.valid), self.i.ready.eq(self.o.ready)]
            for ch in range(self.m):
                m.d.comb += self.o.payload.res[ch].eq(0)
        with m.Else():
            have = Signal()
            m.d.comb += have.eq(got == k)
            addr = Signal(signed(27))
            m.d.comb += addr.eq(self.i.payload.tag + self.offset + issued)
            m.d.comb += [req.valid.eq(self.i.valid & (issued < k)), req.payload.eq(addr[:len(req.payload)]),
                         resp.ready.eq(1)]
            with m.If(req.valid & req.ready):
                m.d.sync += issued.eq(issued + 1)
            with m.If(resp.valid):
                m.d.sync += [words[got].eq(resp.payload), got.eq(got + 1)]
            m.d.comb += [self.o.valid.eq(self.i.valid & have), self.i.ready.eq(self.o.ready & have)]
            with m.If(self.o.valid & self.o.ready):
                m.d.sync += [issued.eq(0), got.eq(0)]
            res = Cat(*words)
            for ch in range(self.m):
                m.d.comb += self.o.payload.res[ch].eq(res.word_select(ch, 8).as_signed())
        m.d.comb += self.busy.eq(self.en & (issued != 0))
        return m
