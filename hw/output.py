"""Output stage: bias, ReLU, requantization to int8, optional 2×2 max-pool (ARITHMETIC §4.5).

Requantization is round-half-up arithmetic shift then saturation; max-pool is applied to the int8
results, which equals pooling before requantization because the requantizer is monotonic
(golden model: :func:`nibble.sim.golden.requantize`, :func:`nibble.sim.golden.maxpool2`).
"""
from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["OutputStage", "SH_MIN", "SH_MAX", "BIAS_WIDTH"]

#: Smallest requantization shift the hardware supports (an exact left shift by 16).
SH_MIN = -16
#: Largest requantization shift the hardware supports.
SH_MAX = 47
#: Bits of a bias entry (int32, in accumulator units).
BIAS_WIDTH = 32


class OutputStage(wiring.Component):
    """Bias + ReLU + requantize + saturate + optional max-pool for ``m`` channels in parallel.

    Parameters: ``m`` channels, ``acc_width`` accumulator bits, ``tag_shape`` of the carried tag.

    Members:
      * ``i``: ``In(stream.Signature(StructLayout{acc: ArrayLayout(signed(acc_width), m),
        pool_first: 1, pool_last: 1, tag}))`` — one accumulator vector per conv output pixel.
        For a layer without pooling every beat has ``pool_first = pool_last = 1``; with 2×2
        pooling the four pixels of a window come in a row, first with ``pool_first``, fourth with
        ``pool_last``.
      * ``o``: ``Out(stream.Signature(StructLayout{v: ArrayLayout(signed(8), m), tag}))`` — one
        result per ``pool_last`` beat, with that beat's tag:
        ``v = max over the window of sat8(round_half_up((relu(acc + bias)) · 2^(−sh)))``.
      * ``bias``: ``In(ArrayLayout(signed(32), m))``, ``sh``: ``In(signed(7))`` in
        [``SH_MIN``, ``SH_MAX``], ``relu``: ``In(1)`` — layer constants, held stable while beats
        are in flight.
      * ``busy``: ``Out(1)``.

    Latency :attr:`latency` = 2 cycles; throughput one beat per cycle; backpressure: the pipeline
    holds while ``o.valid & ~o.ready`` (``i.ready = ~o.valid | o.ready``).
    """
    latency = 2

    def __init__(self, m, acc_width, tag_shape=1):
        if m < 1:
            raise ValueError(f"output stage needs at least one channel, not {m}")
        self.m, self.acc_width, self.tag_shape = m, acc_width, tag_shape
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "acc": data.ArrayLayout(signed(acc_width), m),
                "pool_first": 1, "pool_last": 1, "tag": tag_shape}))),
            "o": Out(stream.Signature(data.StructLayout({
                "v": data.ArrayLayout(signed(8), m), "tag": tag_shape}))),
            "bias": In(data.ArrayLayout(signed(BIAS_WIDTH), m)),
            "sh": In(signed(7)),
            "relu": In(1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        tw = max(self.acc_width, BIAS_WIDTH) + 1
        adv = Signal()
        m.d.comb += [adv.eq(~self.o.valid | self.o.ready), self.i.ready.eq(adv)]

        # Stage 1: bias and ReLU.
        s1_valid, s1_first, s1_last = Signal(), Signal(), Signal()
        s1_tag = Signal(self.tag_shape)
        s1_t = [Signal(signed(tw), name=f"t{k}") for k in range(self.m)]
        with m.If(adv):
            m.d.sync += [s1_valid.eq(self.i.valid), s1_first.eq(self.i.payload.pool_first),
                         s1_last.eq(self.i.payload.pool_last), s1_tag.eq(self.i.payload.tag)]
            for k in range(self.m):
                t = self.i.payload.acc[k] + self.bias[k]
                m.d.sync += s1_t[k].eq(Mux(self.relu & t[-1], 0, t))

        # Stage 2: round-half-up shift, saturate, running max over the pool window.
        sh_pos = Signal(6)
        sh_neg = Signal(5)
        m.d.comb += [sh_pos.eq(Mux(self.sh > 0, self.sh, 0)), sh_neg.eq(Mux(self.sh < 0, -self.sh, 0))]
        rnd = Signal(unsigned(48))
        m.d.comb += rnd.eq(Mux(sh_pos > 0, Const(1, 48) << (sh_pos - 1)[:6], 0))
        mx = [Signal(signed(8), name=f"max{k}") for k in range(self.m)]
        for k in range(self.m):
            shifted = Signal(signed(tw + 17), name=f"q{k}")
            with m.If(self.sh > 0):
                m.d.comb += shifted.eq((s1_t[k] + rnd) >> sh_pos)
            with m.Else():
                m.d.comb += shifted.eq(s1_t[k] << sh_neg)
            q = Signal(signed(8), name=f"sat{k}")
            with m.If(shifted > 127):
                m.d.comb += q.eq(127)
            with m.Elif(shifted < -128):
                m.d.comb += q.eq(-128)
            with m.Else():
                m.d.comb += q.eq(shifted)
            nxt = Mux(s1_first | (q > mx[k]), q, mx[k])
            with m.If(adv & s1_valid):
                m.d.sync += [mx[k].eq(nxt), self.o.payload.v[k].eq(nxt)]
        with m.If(adv):
            m.d.sync += self.o.valid.eq(s1_valid & s1_last)
            with m.If(s1_valid):
                m.d.sync += self.o.payload.tag.eq(s1_tag)
        m.d.comb += self.busy.eq(s1_valid | self.o.valid)
        return m
