"""Descriptor fetch: reads a layer descriptor from parameter memory and checks it (DESIGN §4).

The descriptor is :data:`nibble.hw.isa.DESCRIPTOR`, :data:`~nibble.hw.isa.DESC_WORDS` 32-bit
words at ``desc_base + DESC_WORDS·l``; the checks are those of
:class:`~nibble.hw.isa.EngineError` (the first failing one in the order of that enum's
documentation is reported).
"""
from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import EngineConfig
from ..isa import DESC_MAGIC, DESC_WORDS, DESCRIPTOR, SH_MAX, SH_MIN, EngineError
from ..mem.port import BurstReader, read_port

__all__ = ["DescriptorFetch", "fetched_layout", "CHECK_CYCLES"]

#: Cycles of the checks after the last descriptor word has arrived.
CHECK_CYCLES = 4


def fetched_layout():
    """A fetched descriptor: ``desc`` (:data:`DESCRIPTOR`), ``tcb`` (filter words per output
    channel, ``kh·kw·in_cb``) and ``err`` (:class:`EngineError`, ``NONE`` if it may run)."""
    return data.StructLayout({"desc": DESCRIPTOR, "tcb": 24, "err": 4})


class DescriptorFetch(wiring.Component):
    """Fetches and checks one descriptor per command.

    Parameter: ``config`` (:class:`EngineConfig`: the memory depths and ``m``, ``vc``, ``winograd``
    the checks compare against).

    Members:
      * ``cmd``: ``In(stream.Signature(range(param_depth)))`` — the descriptor's word address;
        taken when idle.
      * ``p_rd``: ``Out(read_port(param_depth, 32))`` — parameter memory.
      * ``o``: ``Out(stream.Signature(fetched_layout()))`` — the descriptor, held until taken.
      * ``busy``: ``Out(1)``.

    Latency: ``DESC_WORDS`` requests, the memory's latency, then :data:`CHECK_CYCLES` cycles
    (``DESC_WORDS + 2 + 4`` cycles from the command with a :class:`~nibble.hw.mem.port.SyncReadPort`).
    """

    def __init__(self, config: EngineConfig):
        self.config = c = config
        super().__init__({
            "cmd": In(stream.Signature(range(c.param_depth))),
            "p_rd": Out(read_port(c.param_depth, 32)),
            "o": Out(stream.Signature(fetched_layout())),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        c = self.config
        M, k, W = c.m, c.m // c.vc, c.winograd
        m.submodules.burst = burst = BurstReader(c.param_depth, 32, DESC_WORDS)
        wiring.connect(m, burst.port, wiring.flipped(self.p_rd))

        words = Array(Signal(32, name=f"desc{i}") for i in range(DESC_WORDS))
        d = data.View(DESCRIPTOR, Cat(*words)[:DESCRIPTOR.size])
        got = Signal(range(DESC_WORDS + 1))
        taps, tcb, out_cb = Signal(16), Signal(24), Signal(20)
        in_words, out_words, r_words, w_words = Signal(40), Signal(48), Signal(49), Signal(48)
        b_words, s_words, h_words = Signal(32), Signal(32), Signal(32)
        pool_en = Signal()
        m.d.comb += [pool_en.eq((d.pool_kh != 1) | (d.pool_kw != 1)),
                     self.o.payload.desc.as_value().eq(d.as_value()), self.o.payload.tcb.eq(tcb)]
        err = Signal(4)
        m.d.comb += self.o.payload.err.eq(err)

        m.d.comb += burst.o.ready.eq(1)
        with m.If(burst.o.valid):
            m.d.sync += [words[got].eq(burst.o.payload), got.eq(got + 1)]

        with m.FSM(name="fetch") as fsm:
            with m.State("IDLE"):
                m.d.comb += [self.cmd.ready.eq(burst.cmd.ready), burst.cmd.valid.eq(self.cmd.valid),
                             burst.cmd.payload.base.eq(self.cmd.payload), burst.cmd.payload.n.eq(DESC_WORDS)]
                with m.If(self.cmd.valid & burst.cmd.ready):
                    m.d.sync += got.eq(0)
                    m.next = "READ"
            with m.State("READ"):
                with m.If(got == DESC_WORDS):
                    m.d.sync += [taps.eq(d.kh * d.kw), out_cb.eq(d.n_coblk * k),
                                 b_words.eq(d.bias_base + d.n_coblk * M),
                                 s_words.eq(Mux(d.prelu, d.slope_base + d.n_coblk * M, 0)),
                                 h_words.eq(Mux(d.ch_sh, d.shift_base + d.n_coblk * M, 0))]
                    m.next = "CHECK2"
            with m.State("CHECK2"):
                m.d.sync += [
                    tcb.eq(taps * d.in_cb),
                    in_words.eq(d.in_base + (d.in_h - 1) * d.in_row + (d.in_w - 1) * d.in_pix
                                + Mux(d.grp != 0, d.in_pix, d.in_cb)),
                    out_words.eq(d.out_base + (d.out_h - 1) * d.out_row + (d.out_w - 1) * d.out_pix + out_cb),
                ]
                m.next = "CHECK3"
            with m.State("CHECK3"):
                m.d.sync += [w_words.eq(d.w_base + d.n_coblk * M * tcb),
                             r_words.eq(Mux(d.res, out_words - d.out_base + d.res_base, 0))]
                m.next = "CHECK4"
            with m.State("CHECK4"):
                code = Signal(4)
                with m.If(d.magic != DESC_MAGIC):
                    m.d.comb += code.eq(EngineError.BAD_MAGIC)
                with m.Elif((d.in_h == 0) | (d.in_w == 0) | (d.in_cb == 0) | (d.kh == 0) | (d.kw == 0) |
                            (d.sy == 0) | (d.sx == 0) | (d.out_h == 0) | (d.out_w == 0) | (d.n_coblk == 0) |
                            (d.out_row == 0) | (d.out_pix == 0) | (d.in_row == 0) | (d.in_pix == 0) |
                            (d.conv_h == 0) | (d.conv_w == 0) | (d.pool_kh == 0) | (d.pool_kw == 0) |
                            (d.pool_sy == 0) | (d.pool_sx == 0)):
                    m.d.comb += code.eq(EngineError.ZERO_SIZE)
                with m.Elif((d.pool_pt >= d.pool_kh) | (d.pool_pl >= d.pool_kw) | (d.res & pool_en)):
                    m.d.comb += code.eq(EngineError.POOL)
                with m.Elif(d.winograd & ((d.kh != 3) | (d.kw != 3) | (d.sy != 1) | (d.sx != 1) | (d.dil != 0) |
                                          (d.xmask == 0) | (d.ymask == 0) | (not W) |
                                          (pool_en & ((d.pool_kh != 2) | (d.pool_kw != 2) | (d.pool_sy != 2) |
                                                      (d.pool_sx != 2) | (d.pool_pt != 0) | (d.pool_pl != 0))))):
                    m.d.comb += code.eq(EngineError.WINOGRAD)
                with m.Elif((tcb > c.filter_depth) | (d.winograd & ((d.in_cb << 4) > c.filter_depth // 2))):
                    m.d.comb += code.eq(EngineError.FILTER_CACHE)
                with m.Elif((in_words > c.feature_depth) | (out_words > c.feature_depth) |
                            (r_words > c.feature_depth) | ((d.grp != 0) & (d.in_cb > d.in_pix))):
                    m.d.comb += code.eq(EngineError.FEATURE_RANGE)
                with m.Elif(w_words > c.weight_depth):
                    m.d.comb += code.eq(EngineError.WEIGHT_RANGE)
                with m.Elif((b_words > c.param_depth) | (s_words > c.param_depth) | (h_words > c.param_depth)):
                    m.d.comb += code.eq(EngineError.PARAM_RANGE)
                with m.Elif((d.sh < SH_MIN) | (d.sh > SH_MAX) | (d.clip_lo > d.clip_hi) | (d.ch_sh & d.res)):
                    m.d.comb += code.eq(EngineError.SHIFT_RANGE)
                m.d.sync += err.eq(code)
                m.next = "OFFER"
            with m.State("OFFER"):
                m.d.comb += self.o.valid.eq(1)
                with m.If(self.o.ready):
                    m.next = "IDLE"
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        return m
