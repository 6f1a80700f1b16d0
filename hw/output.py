"""Output stage: bias, ReLU or PReLU, requantization to int8 with clipping, activation, max-pool.

Requantization (ARITHMETIC §4.5) is round-half-up arithmetic shift then saturation to the
layer's bounds (int8, or a ReLU6-style clip). PReLU multiplies a negative pre-activation by the
channel's slope code and a non-negative one by ``2^PRELU_FRAC``, so that one shift rounds once
(:func:`nibble.sim.golden.requantize`). The optional
tanh/sigmoid activation is a 256-entry int8 lookup table on the saturated value, generated from
the golden model (:func:`nibble.sim.golden.activation_table`). Max-pool is applied last, to the
activated int8 results, in the golden model's order
``maxpool(activate(requantize(acc, sh, relu, slope, clip), act), pool)``
(:func:`nibble.sim.golden.requantize`, :func:`~nibble.sim.golden.activate`,
:func:`~nibble.sim.golden.maxpool`). Requantizer and tables
are monotonic, so pooling earlier would give the same result; the hardware keeps the golden order.
"""
from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..sim.golden import ACT_NONE, ACT_SIGMOID, ACT_TANH, PRELU_BITS, PRELU_FRAC, activation_table

__all__ = ["OutputStage", "SH_MIN", "SH_MAX", "BIAS_WIDTH", "ACT_NONE", "ACT_TANH", "ACT_SIGMOID"]

from .isa import DSH_BITS, RES_SH_MAX, SH_MAX, SH_MIN   # the requantization shift range (descriptor field ``sh``)
#: Bits of a bias entry (int32, in accumulator units).
BIAS_WIDTH = 32


class OutputStage(wiring.Component):
    """Bias + ReLU/PReLU + requantize + clip + activation + max-pool, ``m`` channels in parallel.

    Parameters: ``m`` channels, ``acc_width`` accumulator bits, ``tag_shape`` of the carried tag,
    ``lanes`` (default 1): output-pixel lanes sharing the stage (:attr:`EngineConfig.vp`): the
    input has ``lane`` (``range(lanes)``) and the pool window's running max is kept per lane, so
    the lanes' window positions may come interleaved.

    Members:
      * ``i``: ``In(stream.Signature(StructLayout{acc: ArrayLayout(signed(acc_width), m),
        pool_first: 1, pool_last: 1, skip: 1, tag, res: ArrayLayout(signed(8), m)}))`` — one
        accumulator vector per conv output pixel, with the int8 residual operand ``res`` of a
        fused residual Add (used when ``res_en``). For a layer without pooling every beat has ``pool_first = pool_last = 1``; with
        pooling the positions of a window come in a row, the first with ``pool_first``, the last
        with ``pool_last``; a beat with ``skip`` (a window position in the pool's padding) takes
        no part in the max. Every window has at least one beat without ``skip``.
      * ``o``: ``Out(stream.Signature(StructLayout{v: ArrayLayout(signed(8), m), tag}))`` — one
        result per ``pool_last`` beat, with that beat's tag:
        ``v = max over the window of table_act[clip(round_half_up(p(acc + bias + R) · 2^(−sh))) + 128]``
        with ``R = res << res_sh`` if ``res_en`` (else 0)
        with ``p(t) = max(t, 0)`` (``relu``), ``t·A`` for ``t < 0`` and ``t·2^PRELU_FRAC`` else
        (``prelu``; ``sh`` then includes ``PRELU_FRAC``), or ``t``.
      * ``bias``: ``In(ArrayLayout(signed(32), m))``, ``slope``: ``In(ArrayLayout(signed(PRELU_BITS),
        m))``, ``sh``: ``In(signed(7))``, ``dsh``: ``In(ArrayLayout(unsigned(DSH_BITS), m))`` (per-channel
        offsets: lane ``k`` shifts by ``sh − dsh[k]``, in [``SH_MIN``, ``SH_MAX``]; all 0 for one shift
        per layer), ``relu``: ``In(1)``,
        ``prelu``: ``In(1)``, ``clip_lo``, ``clip_hi``: ``In(signed(8))`` (saturation bounds,
        ``clip_lo ≤ clip_hi``), ``act``: ``In(2)`` — layer constants, set by the cycle the first beat
        is transferred on ``i`` and held stable while beats are in flight (``sh``, ``dsh`` are
        registered once more: the shift amounts and rounding constants of stage 2).
      * ``busy``: ``Out(1)``.

    Activation ``act`` (ARITHMETIC §4.5 requantization, then a lookup): ``ACT_NONE`` = 0
    (identity), ``ACT_TANH`` = 1, ``ACT_SIGMOID`` = 2; the unused code 3 behaves as ``ACT_NONE``,
    and so does an undriven ``act`` (an ``In`` port left unconnected is 0). ``table_act`` is
    :func:`nibble.sim.golden.activation_table`, from which the hardware tables are generated: for
    a tanh/sigmoid layer the saturated value ``t`` means ``t · 2^−5`` (``ACT_Q_IN``) and the table
    gives ``sat8(round_half_up(f(t · 2^−5) · 2^7))`` (``ACT_Q_OUT`` = 7; ``f`` = tanh or the
    logistic sigmoid). The lookup is applied per channel to the saturated int8 value, before the
    pool window's running max: the golden model's order ``requantize`` → ``activate`` →
    ``maxpool2``. (The tables are monotonic, so pooling first would give the same values; the
    hardware keeps the golden order.) Each channel has one constant 256 × 8 table per function,
    written as a case statement that Yosys turns into a ROM and maps to LUTs (no block RAM).

    Pipeline, one register stage each: (1) bias, residual and ReLU; (2) the PReLU product (one
    ``(acc_width + 1) × PRELU_BITS`` multiplier per channel, DSP48); (3) round-half-up shift and
    saturation to the clip bounds (an int8 test of the shifted value's upper bits, then 8-bit
    compares); (4) activation lookup; (5) running max over the pool window
    into ``o``. The lookup has its own stage so that neither the shifter nor the max compare is
    in series with the ROM. Latency :attr:`latency` = 5 cycles: a ``pool_last`` beat transferred
    on ``i`` at cycle ``n`` gives ``o.valid`` at cycle ``n + 5`` (if ``o`` is not stalled);
    throughput one beat per cycle; backpressure: the whole pipeline holds while
    ``o.valid & ~o.ready`` (``i.ready = ~o.valid | o.ready``).
    """
    latency = 5

    def __init__(self, m, acc_width, tag_shape=1, lanes=1):
        if m < 1:
            raise ValueError(f"output stage needs at least one channel, not {m}")
        self.m, self.acc_width, self.tag_shape, self.lanes = m, acc_width, tag_shape, lanes
        fields = {"acc": data.ArrayLayout(signed(acc_width), m),
                  "pool_first": 1, "pool_last": 1, "skip": 1, "tag": tag_shape,
                  "res": data.ArrayLayout(signed(8), m)}
        if lanes > 1:
            fields["lane"] = range(lanes)
        super().__init__({
            "i": In(stream.Signature(data.StructLayout(fields))),
            "o": Out(stream.Signature(data.StructLayout({
                "v": data.ArrayLayout(signed(8), m), "tag": tag_shape}))),
            "bias": In(data.ArrayLayout(signed(BIAS_WIDTH), m)),
            "slope": In(data.ArrayLayout(signed(PRELU_BITS), m)),
            "sh": In(signed(7)),
            "dsh": In(data.ArrayLayout(unsigned(DSH_BITS), m)),
            "relu": In(1),
            "prelu": In(1),
            "res_en": In(1),
            "res_sh": In(range(RES_SH_MAX + 1)),
            "clip_lo": In(signed(8), init=-128),
            "clip_hi": In(signed(8), init=127),
            "act": In(2),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        tw = max(self.acc_width, BIAS_WIDTH, 8 + RES_SH_MAX) + 2
        # the stages carry the tag and (with pixel lanes) the lane as one value
        tag_in = Value.cast(self.i.payload.tag)
        tag_bits = len(tag_in)
        carried = Cat(tag_in, self.i.payload.lane) if self.lanes > 1 else tag_in
        carry_shape = unsigned(len(carried))
        adv = Signal()
        m.d.comb += [adv.eq(~self.o.valid | self.o.ready), self.i.ready.eq(adv)]

        # Stage 1: bias and ReLU.
        s1_valid, s1_first, s1_last, s1_skip = Signal(), Signal(), Signal(), Signal()
        s1_tag = Signal(carry_shape)
        s1_t = [Signal(signed(tw), name=f"t{k}") for k in range(self.m)]
        with m.If(adv):
            m.d.sync += [s1_valid.eq(self.i.valid), s1_first.eq(self.i.payload.pool_first),
                         s1_last.eq(self.i.payload.pool_last), s1_skip.eq(self.i.payload.skip),
                         s1_tag.eq(carried)]
            for k in range(self.m):
                r = Mux(self.res_en, self.i.payload.res[k] << self.res_sh, 0)
                t = self.i.payload.acc[k] + self.bias[k] + r
                m.d.sync += s1_t[k].eq(Mux(self.relu & t[-1], 0, t))

        # Stage 1b: PReLU — t·A for t < 0, t·2^PRELU_FRAC for t ≥ 0 (one multiplier per channel).
        pw = tw + PRELU_BITS
        s1b_valid, s1b_first, s1b_last, s1b_skip = Signal(), Signal(), Signal(), Signal()
        s1b_tag = Signal(carry_shape)
        s1b_t = [Signal(signed(pw), name=f"p{k}") for k in range(self.m)]
        with m.If(adv):
            m.d.sync += [s1b_valid.eq(s1_valid), s1b_first.eq(s1_first), s1b_last.eq(s1_last),
                         s1b_skip.eq(s1_skip), s1b_tag.eq(s1_tag)]
            for k in range(self.m):
                mul = Mux(s1_t[k][-1], self.slope[k], Const(1 << PRELU_FRAC, signed(PRELU_BITS + 1)))
                m.d.sync += s1b_t[k].eq(Mux(self.prelu, s1_t[k] * mul, s1_t[k]))

        # Stage 2: round-half-up shift (per lane: sh − dsh[k]) and saturation to [clip_lo, clip_hi].
        # The shift amounts and rounding constants come from layer constants: registered (they
        # are set before a layer's first beat enters stage 1, two cycles ahead of stage 2), so
        # the path here starts at the rounding add.
        s2_valid, s2_first, s2_last, s2_skip = Signal(), Signal(), Signal(), Signal()
        s2_tag = Signal(carry_shape)
        s2_q = [Signal(signed(8), name=f"sat{k}") for k in range(self.m)]
        for k in range(self.m):
            shk = Signal(signed(8), name=f"sh{k}")
            right = Signal(name=f"sh_right{k}")
            sh_pos = Signal(6, name=f"sh_pos{k}")
            sh_neg = Signal(5, name=f"sh_neg{k}")
            rnd = Signal(unsigned(48), name=f"rnd{k}")
            m.d.comb += shk.eq(self.sh - self.dsh[k])
            m.d.sync += [right.eq(shk > 0),
                         sh_pos.eq(Mux(shk > 0, shk, 0)),
                         sh_neg.eq(Mux(shk < 0, Mux(shk < SH_MIN, -SH_MIN, -shk), 0)),
                         rnd.eq(Mux(shk > 0, Const(1, 48) << (shk - 1)[:6], 0))]
            shifted = Signal(signed(pw + 17), name=f"q{k}")
            with m.If(right):
                m.d.comb += shifted.eq((s1b_t[k] + rnd) >> sh_pos)
            with m.Else():
                m.d.comb += shifted.eq(s1b_t[k] << sh_neg)
            # saturation without a full-width compare: a value outside int8 is beyond either bound
            # (clip_lo ≤ clip_hi are int8); inside, its low byte is compared
            upper = shifted[7:]
            fits = Signal(name=f"fits{k}")
            m.d.comb += fits.eq((upper == 0) | (upper == (1 << len(upper)) - 1))
            low = shifted[:8].as_signed()
            neg = shifted[-1]
            with m.If(adv):
                with m.If(Mux(fits, low > self.clip_hi, ~neg)):
                    m.d.sync += s2_q[k].eq(self.clip_hi)
                with m.Elif(Mux(fits, low < self.clip_lo, neg)):
                    m.d.sync += s2_q[k].eq(self.clip_lo)
                with m.Else():
                    m.d.sync += s2_q[k].eq(low)
        with m.If(adv):
            m.d.sync += [s2_valid.eq(s1b_valid), s2_first.eq(s1b_first), s2_last.eq(s1b_last),
                         s2_skip.eq(s1b_skip), s2_tag.eq(s1b_tag)]

        # Stage 3: activation lookup. The tables are indexed by the two's complement bits of t,
        # so entry u holds the value for t = u − 256·[u ≥ 128] (golden index t + 128 = u ^ 0x80).
        tables = {}
        for act in (ACT_TANH, ACT_SIGMOID):
            spec = activation_table(act)
            tables[act] = [int(spec[u ^ 0x80]) for u in range(256)]
        s3_valid, s3_first, s3_last, s3_skip = Signal(), Signal(), Signal(), Signal()
        s3_tag = Signal(carry_shape)
        s3_y = [Signal(signed(8), name=f"act{k}") for k in range(self.m)]
        for k in range(self.m):
            u = s2_q[k].as_unsigned()
            y = Signal(signed(8), name=f"lut{k}")
            with m.Switch(self.act):
                for act, table in tables.items():
                    with m.Case(act):
                        m.d.comb += y.eq(Array(Const(v, signed(8)) for v in table)[u])
                with m.Default():                         # ACT_NONE and the unused code 3
                    m.d.comb += y.eq(s2_q[k])
            with m.If(adv):
                m.d.sync += s3_y[k].eq(y)
        with m.If(adv):
            m.d.sync += [s3_valid.eq(s2_valid), s3_first.eq(s2_first), s3_last.eq(s2_last),
                         s3_skip.eq(s2_skip), s3_tag.eq(s2_tag)]

        # Stage 4: running max over the pool window into ``o`` (skipped positions left out); one
        # running max per pixel lane (their windows' positions come interleaved, lane by lane).
        L = self.lanes
        lane = s3_tag[tag_bits:] if L > 1 else Const(0)
        mxs = [[Signal(signed(8), name=f"max{k}" if L == 1 else f"max{k}_lane{n}") for k in range(self.m)]
               for n in range(L)]
        seens = Signal(L)          # per lane: the window so far has a position without skip
        seen = seens.bit_select(lane, 1) if L > 1 else seens[0]
        seen_now = Signal()
        m.d.comb += seen_now.eq(seen & ~s3_first)
        with m.If(adv & s3_valid):
            m.d.sync += seen.eq((seen_now | ~s3_skip) & ~s3_last)
        for k in range(self.m):
            mx = Array(mxs[n][k] for n in range(L))[lane] if L > 1 else mxs[0][k]
            cur = Signal(signed(8), name=f"cur{k}")
            m.d.comb += cur.eq(mx)
            nxt = Mux(s3_skip, cur, Mux(~seen_now | (s3_y[k] > cur), s3_y[k], cur))
            with m.If(adv & s3_valid):
                m.d.sync += [mx.eq(nxt), self.o.payload.v[k].eq(nxt)]
        with m.If(adv):
            m.d.sync += self.o.valid.eq(s3_valid & s3_last)
            with m.If(s3_valid):
                m.d.sync += self.o.payload.tag.eq(s3_tag[:tag_bits])
        m.d.comb += self.busy.eq(s1_valid | s1b_valid | s2_valid | s3_valid | self.o.valid)
        return m
