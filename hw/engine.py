"""The engine: runs a whole network from layer descriptors in device memory (DESIGN §4).

For every layer it fetches a descriptor, checks it, and for every block of ``m`` output channels
loads the biases and the ``m`` filter caches, then streams every (output pixel, tap, input-channel
block) beat through the PE array and the output stage, and writes the int8 results back to
feature memory (HWC, channels padded to ``vc``). Then the next layer, until a descriptor with the
``last`` flag. The host is not involved between layers.

Descriptor: ``DESC_WORDS`` = 16 little 32-bit words in parameter memory (layer ``l`` at
``desc_base + 16·l``). Word addresses below are in the unit of the memory they point into.

====  ===========================================================================================
word  contents
====  ===========================================================================================
0     ``flags``: bit 0 ReLU, bit 1 2×2 max-pool, bit 2 last layer; bits 31:16 = ``DESC_MAGIC``
1     ``in_base``: feature-memory word of input pixel (0, 0), channel block 0
2     ``in_h``   3 ``in_w``   4 ``in_cb`` (input channel blocks = ⌈Cin / vc⌉)
5     ``kh`` [7:0], ``kw`` [15:8], ``stride`` [23:16]
6     ``pad_top`` [7:0], ``pad_left`` [15:8] (bottom/right padding is implied by the bounds)
7     ``out_base``: feature-memory word of output pixel (0, 0)
8     ``out_h``  9 ``out_w``: stored output size (after pooling)
10    ``n_coblk``: blocks of ``m`` output channels (output pixel stride = n_coblk·m/vc words)
11    ``w_base``: weight-memory word of the layer's first filter word
12    ``bias_base``: parameter-memory word of the layer's first bias (int32, accumulator units)
13    ``sh``: requantization shift (signed, ARITHMETIC §4.5), in [SH_MIN, SH_MAX]
14-15 reserved, 0
====  ===========================================================================================

Weight memory order per layer: for each output block, for each PE ``p``, for each tap
``t = ky·kw + kx``, for each input block ``cb``: one word of ``vc`` codes (input channels
``cb·vc …``), i.e. filter-cache word ``t·in_cb + cb`` of PE ``p``.

Schedule (cycles): per layer ``17 + 4`` (fetch, check) + per output block ``m + 1`` (biases)
+ ``m·T·in_cb + 1`` (filters, ``T = kh·kw``) + ``out_h·out_w·pool²·T·in_cb`` beats + the pipeline
drain (about 8 cycles). The PE array is busy one beat per cycle while beats flow (backpressure
from the writer when ``m > vc`` stalls it for ``m/vc − 1`` cycles per output pixel).

Errors (``err_code``; the engine stops, ``error`` is set, ``layer`` names the layer):
1 bad descriptor magic, 2 zero size field, 3 filters larger than the filter cache,
4 feature-memory range, 5 weight-memory range, 6 parameter-memory range, 7 shift out of range.
"""
import enum

from amaranth import *
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .config import DESC_WORDS, EngineConfig
from .output import SH_MAX, SH_MIN, OutputStage
from .pe import PEArray

__all__ = ["Engine", "DESC_MAGIC", "EngineError", "FLAG_RELU", "FLAG_POOL", "FLAG_LAST"]

DESC_MAGIC = 0xD35C
FLAG_RELU, FLAG_POOL, FLAG_LAST = 1, 2, 4


class EngineError(enum.IntEnum):
    """Error codes of the engine (``err_code`` CSR)."""
    NONE = 0
    BAD_MAGIC = 1
    ZERO_SIZE = 2
    FILTER_CACHE = 3
    FEATURE_RANGE = 4
    WEIGHT_RANGE = 5
    PARAM_RANGE = 6
    SHIFT_RANGE = 7


def _odometer(m, digits):
    """Step a nest of counters: ``digits`` = [(counter, has_next), …], innermost first.

    The innermost counter with a next value increments; every counter inside it returns to 0.
    """
    sig, has_next = digits[0]
    with m.If(has_next):
        m.d.sync += sig.eq(sig + 1)
    with m.Else():
        m.d.sync += sig.eq(0)
        if len(digits) > 1:
            _odometer(m, digits[1:])


class Engine(wiring.Component):
    """Descriptor-driven layer engine: controller, loaders, scheduler, PE array, output stage.

    Parameter: ``config`` (:class:`EngineConfig`).

    Members (all in the ``sync`` domain):
      * ``start``: ``In(1)`` — pulse; starts at descriptor ``desc_base`` if not busy.
      * ``desc_base``: ``In(range(param_depth))``.
      * ``busy``, ``done``, ``error``: ``Out(1)`` — ``done``/``error`` hold until the next start.
      * ``err_code``: ``Out(4)`` (:class:`EngineError`), ``layer``: ``Out(16)`` (current layer).
      * ``cycles``: ``Out(32)`` — cycles from start to done/error.
      * ``beats``: ``Out(32)`` — beats (vectors of ``vc`` features) accepted by the PE array.
      * Feature memory: read ``f_r_addr``, ``f_r_en``, ``f_r_data`` (``In(vc·8)``, 1-cycle
        latency); write ``f_w_addr``, ``f_w_en``, ``f_w_data``.
      * Weight memory read ``w_r_*`` (``vc·4`` bits), parameter memory read ``p_r_*`` (32 bits);
        both 1-cycle latency.
    """

    def __init__(self, config: EngineConfig):
        self.config = c = config
        self.k = c.m // c.vc
        super().__init__({
            "start": In(1),
            "desc_base": In(range(c.param_depth)),
            "busy": Out(1), "done": Out(1), "error": Out(1),
            "err_code": Out(4), "layer": Out(16),
            "cycles": Out(32), "beats": Out(32),
            "f_r_addr": Out(range(c.feature_depth)), "f_r_en": Out(1), "f_r_data": In(c.vc * 8),
            "f_w_addr": Out(range(c.feature_depth)), "f_w_en": Out(1), "f_w_data": Out(c.vc * 8),
            "w_r_addr": Out(range(c.weight_depth)), "w_r_en": Out(1), "w_r_data": In(c.vc * 4),
            "p_r_addr": Out(range(c.param_depth)), "p_r_en": Out(1), "p_r_data": In(32),
        })

    def elaborate(self, platform):
        m = Module()
        c = self.config
        M, k = c.m, self.k

        tag_layout = data.StructLayout({"addr": range(c.feature_depth), "pool_first": 1, "pool_last": 1})
        m.submodules.pe_array = pea = PEArray(m=M, vc=c.vc, acc_width=c.acc_width,
                                              depth=c.filter_depth, tag_shape=tag_layout)
        m.submodules.out_stage = ost = OutputStage(m=M, acc_width=c.acc_width,
                                                   tag_shape=range(c.feature_depth))

        # ---- descriptor registers and decoded fields
        desc = Array(Signal(32, name=f"desc{i}") for i in range(DESC_WORDS))
        flags = desc[0]
        relu, pool_en, last_layer = flags[0], flags[1], flags[2]
        magic = flags[16:32]
        in_base, in_h, in_w, in_cb = desc[1][:24], desc[2][:16], desc[3][:16], desc[4][:16]
        kh, kw, stride = desc[5][0:8], desc[5][8:16], desc[5][16:24]
        pad_t, pad_l = desc[6][0:8], desc[6][8:16]
        out_base, out_h, out_w, n_coblk = desc[7][:24], desc[8][:16], desc[9][:16], desc[10][:16]
        w_base, bias_base = desc[11][:24], desc[12][:24]
        sh = desc[13].as_signed()

        taps = Signal(16)          # kh·kw
        tcb = Signal(24)           # words per filter = kh·kw·in_cb
        out_cb = Signal(20)        # output words per pixel = n_coblk·m/vc
        in_words = Signal(40)
        out_words = Signal(40)
        w_words = Signal(48)
        b_words = Signal(32)

        bias = Array(Signal(signed(32), name=f"bias{i}") for i in range(M))
        dptr = Signal(range(c.param_depth + DESC_WORDS + 1))
        coblk = Signal(16)
        w_ptr = Signal(range(c.weight_depth + 1))
        b_ptr = Signal(range(c.param_depth + 1))
        cnt = Signal(32)
        cnt_d = Signal(32)
        cap = Signal()

        # Output stage constants
        m.d.comb += [ost.sh.eq(sh[:7]), ost.relu.eq(relu)]
        for i in range(M):
            m.d.comb += ost.bias[i].eq(bias[i])

        busy = Signal()
        m.d.comb += self.busy.eq(busy)
        with m.If(busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        with m.If(pea.i.valid & pea.i.ready):
            m.d.sync += self.beats.eq(self.beats + 1)

        # ---- beat generator (scheduler) and its 2-stage pipeline into the PE array
        py, px, dy, dx = Signal(16), Signal(16), Signal(1), Signal(1)
        ky, kx, cb = Signal(8), Signal(8), Signal(16)
        taddr = Signal(24)
        gen = Signal()             # the scheduler is issuing beats
        s1_valid, s2_valid = Signal(), Signal()
        s1_inb, s2_inb = Signal(), Signal()
        s1_faddr = Signal(range(c.feature_depth))
        s1_w, s2_w = Signal(range(c.filter_depth)), Signal(range(c.filter_depth))
        s1_first, s1_last, s2_first, s2_last = Signal(), Signal(), Signal(), Signal()
        s1_tag, s2_tag = Signal(tag_layout), Signal(tag_layout)

        adv = Signal()
        m.d.comb += adv.eq(~s2_valid | pea.i.ready)

        oy = Signal(17)
        ox = Signal(17)
        m.d.comb += [oy.eq(Mux(pool_en, Cat(dy, py), py)), ox.eq(Mux(pool_en, Cat(dx, px), px))]
        iy = Signal(signed(28))
        ix = Signal(signed(28))
        m.d.comb += [iy.eq(oy * stride + ky - pad_t), ix.eq(ox * stride + kx - pad_l)]
        inb = Signal()
        m.d.comb += inb.eq((iy >= 0) & (iy < in_h) & (ix >= 0) & (ix < in_w))
        faddr = Signal(48)
        m.d.comb += faddr.eq(in_base + (iy[:16] * in_w + ix[:16]) * in_cb + cb)
        oaddr = Signal(48)
        m.d.comb += oaddr.eq(out_base + (py * out_w + px) * out_cb + coblk * k)
        b_first = Signal()
        b_last = Signal()
        m.d.comb += [b_first.eq(taddr == 0), b_last.eq(taddr == tcb - 1)]
        pool_first = Signal()
        pool_last = Signal()
        m.d.comb += [pool_first.eq(~pool_en | ((dy == 0) & (dx == 0))),
                     pool_last.eq(~pool_en | ((dy == 1) & (dx == 1)))]
        gen_done = Signal()       # the beat just issued is the block's final one

        with m.If(adv):
            m.d.sync += [
                s1_valid.eq(gen), s1_inb.eq(inb), s1_faddr.eq(faddr), s1_w.eq(taddr),
                s1_first.eq(b_first), s1_last.eq(b_last),
                s1_tag.addr.eq(oaddr), s1_tag.pool_first.eq(pool_first), s1_tag.pool_last.eq(pool_last),
                s2_valid.eq(s1_valid), s2_inb.eq(s1_inb), s2_w.eq(s1_w),
                s2_first.eq(s1_first), s2_last.eq(s1_last), s2_tag.eq(s1_tag),
            ]

        # counters: cb innermost, then kx, ky, then pool dx, dy, then px, py
        with m.If(gen & adv):
            m.d.sync += taddr.eq(Mux(b_last, 0, taddr + 1))
            _odometer(m, [(cb, cb + 1 < in_cb), (kx, kx + 1 < kw), (ky, ky + 1 < kh),
                          (dx, pool_en & (dx == 0)), (dy, pool_en & (dy == 0)),
                          (px, px + 1 < out_w), (py, py + 1 < out_h)])
        m.d.comb += gen_done.eq(b_last & (~pool_en | ((dy == 1) & (dx == 1)))
                                & (px + 1 >= out_w) & (py + 1 >= out_h))

        # feature memory read (stage 1 → 2) and PE array input
        m.d.comb += [
            self.f_r_addr.eq(s1_faddr), self.f_r_en.eq(adv),
            pea.i.valid.eq(s2_valid),
            pea.i.payload.x.eq(Mux(s2_inb, self.f_r_data, 0)),
            pea.i.payload.addr.eq(s2_w),
            pea.i.payload.first.eq(s2_first),
            pea.i.payload.last.eq(s2_last),
            pea.i.payload.tag.eq(s2_tag),
        ]

        # PE array → output stage → writer
        m.d.comb += [
            ost.i.valid.eq(pea.o.valid),
            ost.i.payload.acc.eq(pea.o.payload.acc),
            ost.i.payload.pool_first.eq(pea.o.payload.tag.pool_first),
            ost.i.payload.pool_last.eq(pea.o.payload.tag.pool_last),
            ost.i.payload.tag.eq(pea.o.payload.tag.addr),
            pea.o.ready.eq(ost.i.ready),
        ]
        v_bits = ost.o.payload.v.as_value()
        if k == 1:
            m.d.comb += [
                self.f_w_en.eq(ost.o.valid), self.f_w_addr.eq(ost.o.payload.tag),
                self.f_w_data.eq(v_bits), ost.o.ready.eq(1),
            ]
        else:
            wcnt = Signal(range(k))
            m.d.comb += [
                self.f_w_en.eq(ost.o.valid), self.f_w_addr.eq(ost.o.payload.tag + wcnt),
                self.f_w_data.eq(v_bits.word_select(wcnt, c.vc * 8)), ost.o.ready.eq(wcnt == k - 1),
            ]
            with m.If(ost.o.valid):
                m.d.sync += wcnt.eq(Mux(wcnt == k - 1, 0, wcnt + 1))

        pipe_busy = Signal()
        m.d.comb += pipe_busy.eq(s1_valid | s2_valid | pea.busy | ost.busy)

        # ---- controller
        m.d.sync += cnt_d.eq(cnt)

        def param_burst(base, regs, n):
            """Read ``n`` parameter-memory words from ``base`` into ``regs`` (n + 1 cycles: the
            address is issued in cycle ``cnt``, the word captured in cycle ``cnt + 1``).
            Returns the condition of the burst's last cycle (``cnt`` is then back to 0)."""
            m.d.comb += [self.p_r_addr.eq(base + cnt), self.p_r_en.eq(1)]
            with m.If(cnt > 0):
                m.d.sync += regs[cnt - 1].eq(self.p_r_data)
            m.d.sync += cnt.eq(Mux(cnt == n, 0, cnt + 1))
            return cnt == n

        def fail(code):
            m.d.sync += [self.error.eq(1), self.err_code.eq(code)]
            m.next = "IDLE"

        with m.FSM(name="ctrl") as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [
                        self.done.eq(0), self.error.eq(0), self.err_code.eq(0),
                        self.cycles.eq(0), self.beats.eq(0), self.layer.eq(0),
                        dptr.eq(self.desc_base), cnt.eq(0),
                    ]
                    m.next = "DESC"

            with m.State("DESC"):
                with m.If(param_burst(dptr, desc, DESC_WORDS)):
                    m.next = "CHECK1"

            with m.State("CHECK1"):
                m.d.sync += [
                    taps.eq(kh * kw),
                    out_cb.eq(n_coblk * k),
                    b_words.eq(bias_base + n_coblk * M),
                ]
                m.next = "CHECK2"

            with m.State("CHECK2"):
                m.d.sync += [
                    tcb.eq(taps * in_cb),
                    in_words.eq(in_base + in_h * in_w * in_cb),
                    out_words.eq(out_base + out_h * out_w * out_cb),
                ]
                m.next = "CHECK3"

            with m.State("CHECK3"):
                m.d.sync += w_words.eq(w_base + n_coblk * M * tcb)
                m.next = "CHECK4"

            with m.State("CHECK4"):
                with m.If(magic != DESC_MAGIC):
                    fail(EngineError.BAD_MAGIC)
                with m.Elif((in_h == 0) | (in_w == 0) | (in_cb == 0) | (kh == 0) | (kw == 0) |
                            (stride == 0) | (out_h == 0) | (out_w == 0) | (n_coblk == 0)):
                    fail(EngineError.ZERO_SIZE)
                with m.Elif(tcb > c.filter_depth):
                    fail(EngineError.FILTER_CACHE)
                with m.Elif((in_words > c.feature_depth) | (out_words > c.feature_depth)):
                    fail(EngineError.FEATURE_RANGE)
                with m.Elif(w_words > c.weight_depth):
                    fail(EngineError.WEIGHT_RANGE)
                with m.Elif(b_words > c.param_depth):
                    fail(EngineError.PARAM_RANGE)
                with m.Elif((sh < SH_MIN) | (sh > SH_MAX)):
                    fail(EngineError.SHIFT_RANGE)
                with m.Else():
                    m.d.sync += [coblk.eq(0), w_ptr.eq(w_base), b_ptr.eq(bias_base), cnt.eq(0)]
                    m.next = "BIAS"

            with m.State("BIAS"):
                with m.If(param_burst(b_ptr, bias, M)):
                    m.d.sync += cap.eq(0)
                    m.next = "FILT"

            with m.State("FILT"):
                # weight word cnt is read in cycle cnt and written into a PE cache in cycle cnt+1
                pe_idx = Signal(range(M + 1))
                pe_addr = Signal(24)
                total = Signal(48)
                m.d.comb += [total.eq(tcb * M), self.w_r_addr.eq(w_ptr + cnt), self.w_r_en.eq(1),
                             pea.w_en.eq(cap), pea.w_pe.eq(pe_idx), pea.w_addr.eq(pe_addr),
                             pea.w_data.eq(self.w_r_data)]
                with m.If(cap):
                    with m.If(pe_addr + 1 == tcb):
                        m.d.sync += [pe_addr.eq(0), pe_idx.eq(pe_idx + 1)]
                    with m.Else():
                        m.d.sync += pe_addr.eq(pe_addr + 1)
                m.d.sync += [cap.eq(cnt < total), cnt.eq(cnt + 1)]
                with m.If(cnt == total):
                    m.d.sync += [cnt.eq(0), cap.eq(0), pe_idx.eq(0), pe_addr.eq(0),
                                 py.eq(0), px.eq(0), dy.eq(0), dx.eq(0), ky.eq(0), kx.eq(0),
                                 cb.eq(0), taddr.eq(0), gen.eq(1)]
                    m.next = "RUN"

            with m.State("RUN"):
                with m.If(adv & gen_done):
                    m.d.sync += gen.eq(0)
                    m.next = "DRAIN"

            with m.State("DRAIN"):
                with m.If(~pipe_busy):
                    with m.If(coblk + 1 < n_coblk):
                        m.d.sync += [coblk.eq(coblk + 1), w_ptr.eq(w_ptr + tcb * M),
                                     b_ptr.eq(b_ptr + M), cnt.eq(0)]
                        m.next = "BIAS"
                    with m.Elif(last_layer):
                        m.d.sync += self.done.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [self.layer.eq(self.layer + 1), dptr.eq(dptr + DESC_WORDS), cnt.eq(0)]
                        m.next = "DESC"
        m.d.comb += busy.eq(~fsm.ongoing("IDLE"))
        return m
