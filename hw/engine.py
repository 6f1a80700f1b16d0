"""The engine: runs a whole network from layer descriptors in device memory (DESIGN §4).

For every layer it fetches a descriptor, checks it, and for every block of ``m`` output channels
loads the biases and the ``m`` filter caches, then streams every (output pixel, tap, input-channel
block) beat through the PE array and the output stage, and writes the int8 results back to
feature memory (HWC, channels padded to ``vc``). Then the next layer, until a descriptor with the
``last`` flag. The host is not involved between layers.

Descriptor: :data:`nibble.hw.isa.DESCRIPTOR` (``DESC_WORDS`` 32-bit words in parameter memory,
layer ``l`` at ``desc_base + DESC_WORDS·l``); the engine views its descriptor registers through
that layout, and the fields' semantics are documented there.

Weight memory order per layer: for each output block, for each PE ``p``, for each tap
``t = ky·kw + kx``, for each input block ``cb``: one word of ``vc`` codes (input channels
``cb·vc …``), i.e. filter-cache word ``t·in_cb + cb`` of PE ``p``.

Schedule (cycles): per layer ``DESC_WORDS + 1 + 4`` (fetch, check) + per output block ``m + 1``
(biases; ``m + 1`` more for PReLU slopes) + ``m·T·in_cb + 1`` (filters, ``T = kh·kw``) +
``out_h·out_w·pool_kh·pool_kw·T·in_cb`` beats + the pipeline drain (about 9 cycles). With a
max-pool window the scheduler issues, for every output pixel, every position (dy, dx) of its
window (conv outputs shared by overlapping windows are computed again); a position outside the
conv output (the pool's padding, ``ceil_mode``) is issued with zero input and marked ``skip``, so
the output stage leaves it out of the max. The PE array is busy one beat per cycle while beats flow (backpressure
from the writer when ``m > vc`` stalls it for ``m/vc − 1`` cycles per output pixel).

Winograd mode (descriptor flag ``winograd``; ``kh = kw = 3``, stride 1; ARITHMETIC §2): the output is computed in
2×2 tiles (tile stride 2, input tiles 4×4 overlapping by 2, zero outside the input; edge-tile
outputs beyond ``out_h × out_w`` are not written; with pooling one tile is one pooled pixel).
Per tile and input block the scheduler reads the pixels of the 4×4 input tile that the
computed positions need (all 16 for a plain layer) into the tile buffer; ``vc`` pre-PEs compute
``V = Bᵀ d B``; one beat per computed transformed position ξν (``p`` = 16 for a plain layer, fewer
for TDC phases: only ``xmask × ymask``) goes through the PE array's multiplier lanes, each PE
accumulating ``M[ξν] = Σ_ci U ⊙ V`` over the input blocks in its 16 accumulators; after the last
block ``m`` post-PEs compute ``Y' = Aᵀ M A = 4·Y`` (the skipped positions enter as 0; the
compiler gives the output stage ``4·bias`` and ``sh + 2``) and the 4 outputs of the tile go to
the output stage. The filter load runs the weight transform ``U = G₂ g G₂ᵀ`` on the stored 4-bit
codes (same weight-memory image as direct mode; 16 cycles per PE and input block) into one half
of the transformed-weight caches: ``16·m·in_cb + ~12`` cycles before output block 0; block
b + 1's transform runs into the other half while block b computes. Then
``⌈out_h/2⌉·⌈out_w/2⌉·p·in_cb`` beats (``out_h·out_w·p·in_cb`` with pooling) — 16 beats per 4
outputs where direct mode needs 36 (2.25×).

Errors (``err_code``; the engine stops, ``error`` is set, ``layer`` names the layer):
:class:`nibble.hw.isa.EngineError`.
"""
import enum

from amaranth import *
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .config import EngineConfig
from .isa import DESC_MAGIC, DESC_WORDS, DESCRIPTOR, PRELU_BITS, SH_MAX, SH_MIN, EngineError
from .output import OutputStage
from .residual import ResidualReader
from .pe import ACC_ENTRIES, U_WIDTH, V_WIDTH, PEArray
from .winograd import (WINOGRAD_VARIANTS, WinogradPostPE, WinogradPrePE, code_value,
                       weight_transform_tile)

__all__ = ["Engine", "EngineError"]

#: The Winograd variant of the engine's multiplier-lane mode.
WINOGRAD_VARIANT = "F2x2_3x3"


def _bits_next(mask, cur, width=4):
    """``(has_next, next)``: the lowest set bit of ``mask`` above position ``cur`` (comb)."""
    has = Const(0)
    nxt = Const(0, range(width))
    for j in reversed(range(width)):
        hit = mask[j] & (cur < j)
        nxt = Mux(hit, j, nxt)
        has = has | hit
    return has, nxt


def _bits_first(mask, width=4):
    """The lowest set bit of ``mask`` (0 if none)."""
    first = Const(0, range(width))
    for j in reversed(range(width)):
        first = Mux(mask[j], j, first)
    return first


def _gather(m, name, n, width, valid, idx, data, last, meta_in, ready_out):
    """A buffer of ``n`` words of ``width`` bits filled one word per transfer (``valid``, word
    ``idx`` = ``data``), then offered whole (``full``) to a transform until ``ready_out``.

    The transfer with ``last`` completes the buffer and samples ``meta_in``. A new fill may start
    in the cycle the full buffer is taken (the transform samples the words at that edge).
    Returns ``(words, full, meta, ready_in)``: ``Array`` of the words, the full flag, the
    sampled ``meta_in`` and the input's ready (``~full | ready_out``).
    """
    words = Array(Signal(width, name=f"{name}{j}") for j in range(n))
    full = Signal(name=f"{name}_full")
    meta = Signal(meta_in.shape(), name=f"{name}_meta")
    ready_in = Signal(name=f"{name}_ready")
    m.d.comb += ready_in.eq(~full | ready_out)
    take = valid & ready_in
    with m.If(take):
        m.d.sync += words[idx].eq(data)
    with m.If(take & last):
        m.d.sync += [full.eq(1), meta.eq(meta_in)]
    with m.Elif(ready_out):
        m.d.sync += full.eq(0)
    return words, full, meta, ready_in


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
        latency); a second read port ``f_r2_*`` for the residual operand (:mod:`nibble.hw.residual`); write ``f_w_addr``, ``f_w_en``, ``f_w_data``.
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
            "f_r2_addr": Out(range(c.feature_depth)), "f_r2_en": Out(1), "f_r2_data": In(c.vc * 8),
            "f_w_addr": Out(range(c.feature_depth)), "f_w_en": Out(1), "f_w_data": Out(c.vc * 8),
            "w_r_addr": Out(range(c.weight_depth)), "w_r_en": Out(1), "w_r_data": In(c.vc * 4),
            "p_r_addr": Out(range(c.param_depth)), "p_r_en": Out(1), "p_r_data": In(32),
        })

    def elaborate(self, platform):
        m = Module()
        c = self.config
        M, k = c.m, self.k
        W = c.winograd
        vc = c.vc

        tag_layout = data.StructLayout({"addr": range(c.feature_depth), "pool_first": 1, "pool_last": 1,
                                        "skip": 1, "idx": range(ACC_ENTRIES), "right": 1, "bottom": 1,
                                        "tlast": 1})
        m.submodules.pe_array = pea = PEArray(m=M, vc=vc, acc_width=c.acc_width,
                                              depth=c.filter_depth, tag_shape=tag_layout, winograd=W)
        m.submodules.out_stage = ost = OutputStage(m=M, acc_width=c.acc_width,
                                                   tag_shape=range(c.feature_depth))
        m.submodules.res_reader = rr = ResidualReader(M, vc, c.acc_width, c.feature_depth)
        wiring.connect(m, rr.o, ost.i)

        # ---- descriptor registers, viewed through the one descriptor layout (hw/isa.py)
        desc = Array(Signal(32, name=f"desc{i}") for i in range(DESC_WORDS))
        d = data.View(DESCRIPTOR, Cat(*desc)[:DESCRIPTOR.size])
        relu, last_layer, wino_flag, act, magic = d.relu, d.last, d.winograd, d.act, d.magic
        in_base, in_h, in_w, in_cb, in_row, in_pix = d.in_base, d.in_h, d.in_w, d.in_cb, d.in_row, d.in_pix
        kh, kw, sy, sx = d.kh, d.kw, d.sy, d.sx
        dil = d.dil                # log2 of the input zero insertion (NZP), 0 = none
        pad_t, pad_l = d.pad_t, d.pad_l
        conv_h, conv_w = d.conv_h, d.conv_w
        pool_kh, pool_kw, pool_sy, pool_sx = d.pool_kh, d.pool_kw, d.pool_sy, d.pool_sx
        pool_pt, pool_pl = d.pool_pt, d.pool_pl
        out_base, out_h, out_w, n_coblk = d.out_base, d.out_h, d.out_w, d.n_coblk
        w_base, bias_base, slope_base = d.w_base, d.bias_base, d.slope_base
        sh = d.sh
        xmask, ymask = d.xmask, d.ymask    # Winograd rows ξ / columns ν computed
        out_row, out_pix = d.out_row, d.out_pix
        prelu = d.prelu
        pool_en = Signal()         # the layer max-pools (Winograd mode: the 2×2 window, one tile)
        m.d.comb += pool_en.eq((pool_kh != 1) | (pool_kw != 1))
        wmode = Signal()           # this layer runs in Winograd mode
        m.d.comb += wmode.eq(wino_flag if W else 0)

        taps = Signal(16)          # kh·kw
        tcb = Signal(24)           # words per filter = kh·kw·in_cb
        out_cb = Signal(20)        # output words per pixel = n_coblk·m/vc
        in_words = Signal(40)
        out_words = Signal(48)
        r_words = Signal(49)
        w_words = Signal(48)
        b_words = Signal(32)

        bias = Array(Signal(signed(32), name=f"bias{i}") for i in range(M))
        g_off = Signal(24)         # grouped conv: the current group's first input block
        g_cnt = Signal(16)         # output blocks of the current group done
        slope = Array(Signal(32, name=f"slope{i}") for i in range(M))
        s_ptr = Signal(range(c.param_depth + 1))
        s_words = Signal(32)
        dptr = Signal(range(c.param_depth + DESC_WORDS + 1))
        coblk = Signal(16)
        w_ptr = Signal(range(c.weight_depth + 1))
        b_ptr = Signal(range(c.param_depth + 1))
        cnt = Signal(32)
        cnt_d = Signal(32)
        cap = Signal()

        # Output stage constants
        m.d.comb += [ost.sh.eq(sh[:7]), ost.relu.eq(relu), ost.act.eq(act), ost.prelu.eq(prelu),
                     ost.clip_lo.eq(d.clip_lo), ost.clip_hi.eq(d.clip_hi),
                     ost.res_en.eq(d.res), ost.res_sh.eq(d.res_sh),
                     rr.en.eq(d.res), rr.offset.eq(d.res_base - out_base),
                     self.f_r2_addr.eq(rr.r_addr), self.f_r2_en.eq(rr.r_en), rr.r_data.eq(self.f_r2_data)]
        for i in range(M):
            m.d.comb += [ost.bias[i].eq(bias[i]), ost.slope[i].eq(slope[i][:PRELU_BITS])]

        busy = Signal()
        m.d.comb += self.busy.eq(busy)
        with m.If(busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        with m.If(pea.i.valid & pea.i.ready):
            m.d.sync += self.beats.eq(self.beats + 1)

        # ---- beat generator (scheduler) and its 2-stage pipeline (address, feature read)
        # Direct mode: (py, px) output pixel, (dy, dx) pool window, (ky, kx) tap, cb input block.
        # Winograd mode: (py, px) tile, cb input block, (ky, kx) pixel of the 4×4 input tile.
        py, px, dy, dx = Signal(16), Signal(16), Signal(4), Signal(4)
        ky, kx, cb = Signal(8), Signal(8), Signal(16)
        taddr = Signal(24)
        gen = Signal()             # the scheduler is issuing beats
        s1_valid, s2_valid = Signal(), Signal()
        s1_inb, s2_inb = Signal(), Signal()
        s1_faddr = Signal(range(c.feature_depth))
        s1_w, s2_w = Signal(range(c.filter_depth)), Signal(range(c.filter_depth))
        s1_first, s1_last, s2_first, s2_last = Signal(), Signal(), Signal(), Signal()
        s1_tag, s2_tag = Signal(tag_layout), Signal(tag_layout)
        s1_pos, s2_pos = Signal(4), Signal(4)
        s1_tl, s2_tl = Signal(), Signal()        # the last pixel read of a Winograd input tile
        s1_cb, s2_cb = Signal(16), Signal(16)

        sink_ready = Signal()      # the consumer of stage 2 (PE array or Winograd tile buffer)
        adv = Signal()
        m.d.comb += adv.eq(~s2_valid | sink_ready)

        # input-tile rows/columns the computed transformed positions need: supp(Bᵀ[ξ]) for ξ in the mask
        bt = WINOGRAD_VARIANTS[WINOGRAD_VARIANT][1]
        rmask, cmask = Signal(4), Signal(4)
        for j in range(4):
            m.d.comb += [rmask[j].eq(Cat(*[xmask[a] for a in range(4) if bt[a][j]]).any()),
                         cmask[j].eq(Cat(*[ymask[a] for a in range(4) if bt[a][j]]).any())]
        kx_more, kx_next = _bits_next(cmask, kx)
        ky_more, ky_next = _bits_next(rmask, ky)
        kx_first, ky_first = _bits_first(cmask), _bits_first(rmask)

        t_h = Signal(16)           # Winograd tiles per column / row
        t_w = Signal(16)
        m.d.comb += [t_h.eq(Mux(pool_en, out_h, (out_h + 1) >> 1)),
                     t_w.eq(Mux(pool_en, out_w, (out_w + 1) >> 1))]

        oy = Signal(signed(22))    # conv output coordinates of the beat
        ox = Signal(signed(22))
        with m.If(wmode):
            m.d.comb += [oy.eq(Cat(C(0, 1), py)), ox.eq(Cat(C(0, 1), px))]
        with m.Else():             # position (dy, dx) of output pixel (py, px)'s pool window
            m.d.comb += [oy.eq(py * pool_sy + dy - pool_pt), ox.eq(px * pool_sx + dx - pool_pl)]
        win_ok = Signal()          # the window position is inside the conv output (direct mode)
        m.d.comb += win_ok.eq(wmode | ((oy >= 0) & (oy < conv_h) & (ox >= 0) & (ox < conv_w)))
        vy = Signal(signed(32))    # coordinates in the (zero-inserted, NZP) input
        vx = Signal(signed(32))
        m.d.comb += [vy.eq(oy * sy + ky - pad_t), vx.eq(ox * sx + kx - pad_l)]
        lowmask = Signal(8)
        m.d.comb += lowmask.eq((C(1, 9) << dil) - 1)
        iy = Signal(signed(28))    # coordinates in the stored input
        ix = Signal(signed(28))
        m.d.comb += [iy.eq(vy >> dil), ix.eq(vx >> dil)]
        inb = Signal()
        m.d.comb += inb.eq((vy >= 0) & (iy < in_h) & (vx >= 0) & (ix < in_w) & win_ok
                           & ((vy[:8] & lowmask) == 0) & ((vx[:8] & lowmask) == 0))
        faddr = Signal(64)
        m.d.comb += faddr.eq(in_base + iy[:16] * in_row + ix[:16] * in_pix + g_off + cb)
        # output address: pixel (py, px), or in Winograd mode the tile's first output pixel
        opy = Signal(17)
        opx = Signal(17)
        m.d.comb += [opy.eq(Mux(wmode & ~pool_en, Cat(C(0, 1), py), py)),
                     opx.eq(Mux(wmode & ~pool_en, Cat(C(0, 1), px), px))]
        oaddr = Signal(48)
        m.d.comb += oaddr.eq(out_base + opy * out_row + opx * out_pix + coblk * k)
        b_first = Signal()
        b_last = Signal()
        m.d.comb += [b_first.eq(taddr == 0), b_last.eq(taddr == tcb - 1)]
        pool_first = Signal()
        pool_last = Signal()
        m.d.comb += [pool_first.eq((dy == 0) & (dx == 0)),
                     pool_last.eq((dy + 1 >= pool_kh) & (dx + 1 >= pool_kw))]
        tile_right = Signal()
        tile_bottom = Signal()
        m.d.comb += [tile_right.eq(pool_en | (Cat(C(1, 1), px) < out_w)),
                     tile_bottom.eq(pool_en | (Cat(C(1, 1), py) < out_h))]
        gen_done = Signal()       # the beat just issued is the block's final one

        with m.If(adv):
            m.d.sync += [
                s1_valid.eq(gen), s1_inb.eq(inb), s1_faddr.eq(faddr), s1_w.eq(taddr),
                s1_first.eq(b_first), s1_last.eq(b_last),
                s1_tag.addr.eq(oaddr), s1_tag.pool_first.eq(pool_first), s1_tag.pool_last.eq(pool_last),
                s1_tag.skip.eq(~win_ok),
                s1_tag.right.eq(tile_right), s1_tag.bottom.eq(tile_bottom),
                s1_pos.eq(Cat(kx[:2], ky[:2])), s1_cb.eq(cb), s1_tl.eq(~kx_more & ~ky_more),
                s2_tl.eq(s1_tl),
                s2_valid.eq(s1_valid), s2_inb.eq(s1_inb), s2_w.eq(s1_w),
                s2_first.eq(s1_first), s2_last.eq(s1_last), s2_tag.eq(s1_tag),
                s2_pos.eq(s1_pos), s2_cb.eq(s1_cb),
            ]

        with m.If(gen & adv):
            with m.If(wmode):
                # (kx, ky) innermost over the needed pixels of the 4×4 input tile, then cb, tiles
                with m.If(kx_more):
                    m.d.sync += kx.eq(kx_next)
                with m.Else():
                    m.d.sync += kx.eq(kx_first)
                    with m.If(ky_more):
                        m.d.sync += ky.eq(ky_next)
                    with m.Else():
                        m.d.sync += ky.eq(ky_first)
                        _odometer(m, [(cb, cb + 1 < in_cb), (px, px + 1 < t_w), (py, py + 1 < t_h)])
            with m.Else():
                # cb innermost, then kx, ky, then pool dx, dy, then px, py
                m.d.sync += taddr.eq(Mux(b_last, 0, taddr + 1))
                _odometer(m, [(cb, cb + 1 < in_cb), (kx, kx + 1 < kw), (ky, ky + 1 < kh),
                              (dx, dx + 1 < pool_kw), (dy, dy + 1 < pool_kh),
                              (px, px + 1 < out_w), (py, py + 1 < out_h)])
        with m.If(wmode):
            m.d.comb += gen_done.eq(~kx_more & ~ky_more & (cb + 1 >= in_cb)
                                    & (px + 1 >= t_w) & (py + 1 >= t_h))
        with m.Else():
            m.d.comb += gen_done.eq(b_last & pool_last & (px + 1 >= out_w) & (py + 1 >= out_h))

        # feature memory read (stage 1 → 2)
        s2_x = Signal(vc * 8)
        m.d.comb += [self.f_r_addr.eq(s1_faddr), self.f_r_en.eq(adv),
                     s2_x.eq(Mux(s2_inb, self.f_r_data, 0))]

        # PE array → (Winograd back end) → output stage → writer
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
                self.f_w_data.eq(v_bits.word_select(wcnt, vc * 8)), ost.o.ready.eq(wcnt == k - 1),
            ]
            with m.If(ost.o.valid):
                m.d.sync += wcnt.eq(Mux(wcnt == k - 1, 0, wcnt + 1))

        direct_front = [
            pea.i.valid.eq(s2_valid),
            pea.i.payload.addr.eq(s2_w),
            pea.i.payload.first.eq(s2_first),
            pea.i.payload.last.eq(s2_last),
            pea.i.payload.tag.eq(s2_tag),
            sink_ready.eq(pea.i.ready),
        ] + [pea.i.payload.x[l].eq(s2_x.word_select(l, 8).as_signed()) for l in range(vc)]
        direct_back = [
            rr.i.valid.eq(pea.o.valid),
            rr.i.payload.acc.eq(pea.o.payload.acc),
            rr.i.payload.pool_first.eq(pea.o.payload.tag.pool_first),
            rr.i.payload.pool_last.eq(pea.o.payload.tag.pool_last),
            rr.i.payload.skip.eq(pea.o.payload.tag.skip),
            rr.i.payload.tag.eq(pea.o.payload.tag.addr),
            pea.o.ready.eq(rr.i.ready),
        ]
        wino_busy = Const(0)
        if not W:
            m.d.comb += direct_front + direct_back
        else:
            ubank = Signal()       # transformed-weight cache half the scheduler reads
            wino_busy = self._winograd_datapath(m, pea, rr, tag_layout, wmode, pool_en, in_cb,
                                                out_row, out_pix, s2_valid, s2_x, s2_pos, s2_cb,
                                                s2_tag, s2_tl, sink_ready, direct_front, direct_back,
                                                xmask, ymask, ubank)

        pipe_busy = Signal()
        m.d.comb += pipe_busy.eq(s1_valid | s2_valid | pea.busy | rr.busy | ost.busy | wino_busy)

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

        def start_run():
            m.d.sync += [py.eq(0), px.eq(0), dy.eq(0), dx.eq(0), cb.eq(0), taddr.eq(0), gen.eq(1),
                         ky.eq(Mux(wmode, ky_first, 0)), kx.eq(Mux(wmode, kx_first, 0))]
            m.next = "RUN"

        fsm_running = Signal()     # RUN or DRAIN: the PE array works on the current block
        # Winograd weight-transform loader (FILT in Winograd mode). It loads output block 0 into
        # half ``ubank`` of the transformed-weight caches before the block runs, and block b + 1
        # into the other half while block b runs (the halves swap at the block boundary).
        if W:
            wl_start, wl_busy = Signal(), Signal()
            wl_base, wl_bank = Signal.like(w_ptr), Signal()
            self._winograd_loader(m, pea, in_cb, tcb, wl_start, wl_busy, wl_base, wl_bank)
            prefetched = Signal()      # the next block's filters are loaded or loading
            with m.If(wmode & fsm_running & ~prefetched & ~wl_busy & (coblk + 1 < n_coblk)):
                m.d.comb += [wl_start.eq(1), wl_base.eq(w_ptr + tcb * M), wl_bank.eq(~ubank)]
                m.d.sync += prefetched.eq(1)

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
                    s_words.eq(Mux(prelu, slope_base + n_coblk * M, 0)),
                ]
                m.next = "CHECK2"

            with m.State("CHECK2"):
                m.d.sync += [
                    tcb.eq(taps * in_cb),
                    in_words.eq(in_base + (in_h - 1) * in_row + (in_w - 1) * in_pix + Mux(d.grp != 0, in_pix, in_cb)),
                    out_words.eq(out_base + (out_h - 1) * out_row + (out_w - 1) * out_pix + out_cb),
                ]
                m.next = "CHECK3"

            with m.State("CHECK3"):
                m.d.sync += [w_words.eq(w_base + n_coblk * M * tcb),
                             r_words.eq(Mux(d.res, out_words - out_base + d.res_base, 0))]
                m.next = "CHECK4"

            with m.State("CHECK4"):
                with m.If(magic != DESC_MAGIC):
                    fail(EngineError.BAD_MAGIC)
                with m.Elif((in_h == 0) | (in_w == 0) | (in_cb == 0) | (kh == 0) | (kw == 0) |
                            (sy == 0) | (sx == 0) | (out_h == 0) | (out_w == 0) | (n_coblk == 0) |
                            (out_row == 0) | (out_pix == 0) | (in_row == 0) | (in_pix == 0) |
                            (conv_h == 0) | (conv_w == 0) | (pool_kh == 0) | (pool_kw == 0) |
                            (pool_sy == 0) | (pool_sx == 0)):
                    fail(EngineError.ZERO_SIZE)
                with m.Elif((pool_pt >= pool_kh) | (pool_pl >= pool_kw) | (d.res & pool_en)):
                    fail(EngineError.POOL)
                with m.Elif(wino_flag & ((kh != 3) | (kw != 3) | (sy != 1) | (sx != 1) | (dil != 0) |
                                         (xmask == 0) | (ymask == 0) | (not W) |
                                         (pool_en & ((pool_kh != 2) | (pool_kw != 2) | (pool_sy != 2) |
                                                     (pool_sx != 2) | (pool_pt != 0) | (pool_pl != 0))))):
                    fail(EngineError.WINOGRAD)
                with m.Elif((tcb > c.filter_depth) | (wino_flag & ((in_cb << 4) > c.filter_depth // 2))):
                    fail(EngineError.FILTER_CACHE)
                with m.Elif((in_words > c.feature_depth) | (out_words > c.feature_depth) |
                            (r_words > c.feature_depth) | ((d.grp != 0) & (in_cb > in_pix))):
                    fail(EngineError.FEATURE_RANGE)
                with m.Elif(w_words > c.weight_depth):
                    fail(EngineError.WEIGHT_RANGE)
                with m.Elif((b_words > c.param_depth) | (s_words > c.param_depth)):
                    fail(EngineError.PARAM_RANGE)
                with m.Elif((sh < SH_MIN) | (sh > SH_MAX) | (d.clip_lo > d.clip_hi)):
                    fail(EngineError.SHIFT_RANGE)
                with m.Else():
                    m.d.sync += [coblk.eq(0), g_off.eq(0), g_cnt.eq(0),
                                 w_ptr.eq(w_base), b_ptr.eq(bias_base), s_ptr.eq(slope_base),
                                 cnt.eq(0)]
                    if W:
                        m.d.sync += [prefetched.eq(0), ubank.eq(0)]
                    m.next = "BIAS"

            def filters_next():
                """After the block's biases (and slopes): load its filters."""
                m.d.sync += cap.eq(0)
                if W:
                    with m.If(wmode):
                        with m.If(~prefetched):     # block 0: load now into half ubank
                            m.d.comb += [wl_start.eq(1), wl_base.eq(w_ptr), wl_bank.eq(ubank)]
                        m.next = "WFILT"
                    with m.Else():
                        m.next = "FILT"
                else:
                    m.next = "FILT"

            with m.State("BIAS"):
                with m.If(param_burst(b_ptr, bias, M)):
                    with m.If(prelu):
                        m.next = "SLOPE"
                    with m.Else():
                        filters_next()

            with m.State("SLOPE"):
                with m.If(param_burst(s_ptr, slope, M)):
                    filters_next()

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
                    m.d.sync += [cnt.eq(0), cap.eq(0), pe_idx.eq(0), pe_addr.eq(0)]
                    start_run()

            if W:
                with m.State("WFILT"):
                    with m.If(~wl_busy):
                        m.d.sync += prefetched.eq(0)
                        start_run()

            with m.State("RUN"):
                m.d.comb += fsm_running.eq(1)
                with m.If(adv & gen_done):
                    m.d.sync += gen.eq(0)
                    m.next = "DRAIN"

            with m.State("DRAIN"):
                m.d.comb += fsm_running.eq(1)
                with m.If(~pipe_busy):
                    g_next = Signal(25)
                    m.d.comb += g_next.eq(g_off + in_cb)
                    g_move = Signal()
                    m.d.comb += g_move.eq((d.grp != 0) & (g_cnt + 1 == d.grp))
                    with m.If((coblk + 1 < n_coblk) & g_move & (g_next + in_cb > in_pix)):
                        fail(EngineError.FEATURE_RANGE)     # the next group leaves the input pixel
                    with m.Elif(coblk + 1 < n_coblk):
                        m.d.sync += [coblk.eq(coblk + 1), w_ptr.eq(w_ptr + tcb * M),
                                     b_ptr.eq(b_ptr + M), s_ptr.eq(s_ptr + M), cnt.eq(0),
                                     g_cnt.eq(Mux(g_move, 0, g_cnt + 1)), g_off.eq(Mux(g_move, g_next, g_off))]
                        if W:
                            with m.If(wmode):
                                m.d.sync += ubank.eq(~ubank)
                        m.next = "BIAS"
                    with m.Elif(last_layer):
                        m.d.sync += self.done.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [self.layer.eq(self.layer + 1), dptr.eq(dptr + DESC_WORDS), cnt.eq(0)]
                        m.next = "DESC"
        m.d.comb += busy.eq(~fsm.ongoing("IDLE"))
        return m

    def _winograd_datapath(self, m, pea, rr, tag_layout, wmode, pool_en, in_cb, out_row, out_pix,
                           s2_valid, s2_x, s2_pos, s2_cb, s2_tag, s2_tl, sink_ready, direct_front,
                           direct_back, xmask, ymask, ubank):
        """Tile buffer → ``vc`` pre-PEs → beat serializer → PE array (multiplier lanes) →
        collector → ``m`` post-PEs → output serializer → output stage. Returns its busy signal."""
        c = self.config
        M, vc, aw = c.m, c.vc, c.acc_width
        alpha2 = ACC_ENTRIES
        meta_layout = data.StructLayout({"cb": 16, "tag": tag_layout})

        # tile buffer: the 16 pixels (one feature word each) of the current input tile
        pre = [WinogradPrePE(WINOGRAD_VARIANT, meta_layout if l == 0 else 0) for l in range(vc)]
        for l, p in enumerate(pre):
            m.submodules[f"pre_pe{l}"] = p
        tb_meta_in = Signal(meta_layout)
        m.d.comb += [tb_meta_in.cb.eq(s2_cb), tb_meta_in.tag.eq(s2_tag)]
        tb_d, tb_full, tb_meta, tb_ready = _gather(m, "tile", alpha2, vc * 8, wmode & s2_valid, s2_pos, s2_x,
                                                   s2_tl, tb_meta_in, pre[0].i.ready)
        for l, p in enumerate(pre):
            m.d.comb += p.i.valid.eq(tb_full)
            for r in range(4):
                for col in range(4):
                    m.d.comb += p.i.payload[r][col].eq(tb_d[r * 4 + col].word_select(l, 8).as_signed())
        m.d.comb += pre[0].tag_i.eq(tb_meta)

        # beat serializer: one beat per transformed position ξν, all vc lanes
        # (only the positions ξν with xmask[ξ] & ymask[ν]: the others are structurally zero)
        sr_v = Array(Signal(vc * V_WIDTH, name=f"v{j}") for j in range(alpha2))
        sr_valid = Signal()
        sr_xi, sr_nu = Signal(2), Signal(2)
        sr_pos = Signal(4)
        m.d.comb += sr_pos.eq(Cat(sr_nu, sr_xi))
        nu_more, nu_next = _bits_next(ymask, sr_nu)
        xi_more, xi_next = _bits_next(xmask, sr_xi)
        sr_last = Signal()
        m.d.comb += sr_last.eq(~nu_more & ~xi_more)
        sr_meta = Signal(meta_layout)
        sr_ready = Signal()
        m.d.comb += sr_ready.eq(~sr_valid | (pea.i.ready & sr_last))
        for p in pre:
            m.d.comb += p.o.ready.eq(sr_ready)
        with m.If(sr_valid & pea.i.ready):
            with m.If(nu_more):
                m.d.sync += sr_nu.eq(nu_next)
            with m.Elif(xi_more):
                m.d.sync += [sr_nu.eq(_bits_first(ymask)), sr_xi.eq(xi_next)]
            with m.Else():
                m.d.sync += sr_valid.eq(0)
        with m.If(pre[0].o.valid & sr_ready):
            m.d.sync += [sr_valid.eq(1), sr_xi.eq(_bits_first(xmask)), sr_nu.eq(_bits_first(ymask)),
                         sr_meta.eq(pre[0].tag_o)]
            for r in range(4):
                for col in range(4):
                    m.d.sync += sr_v[r * 4 + col].eq(Cat(p.o.payload[r][col] for p in pre))

        # collector: the 16 accumulators M[ξν] of every PE for one tile
        post = [WinogradPostPE(WINOGRAD_VARIANT, aw, tag_layout if q == 0 else 0) for q in range(M)]
        for q, p in enumerate(post):
            m.submodules[f"post_pe{q}"] = p
        res = pea.o.payload
        co_m, co_full, co_tag, co_ready = _gather(m, "m", alpha2, M * aw, wmode & pea.o.valid, res.tag.idx,
                                                  res.acc.as_value(), res.tag.tlast, res.tag, post[0].i.ready)
        for q, p in enumerate(post):
            m.d.comb += p.i.valid.eq(co_full)
            for r in range(4):
                for col in range(4):
                    m.d.comb += p.i.payload[r][col].eq(
                        Mux(xmask[r] & ymask[col], co_m[r * 4 + col].word_select(q, aw).as_signed(), 0))
        m.d.comb += post[0].tag_i.eq(co_tag)

        # output serializer: the tile's 2×2 outputs (Y' = 4·Y, wrapped to acc_width bits)
        os_y = Array(Signal(M * aw, name=f"y{j}") for j in range(4))
        os_valid = Signal()
        os_k = Signal(2)
        os_tag = Signal(tag_layout)
        in_range = Signal()
        m.d.comb += in_range.eq(Mux(os_k[0], os_tag.right, 1) & Mux(os_k[1], os_tag.bottom, 1))
        step = Signal()
        m.d.comb += step.eq(os_valid & (~in_range | rr.i.ready))
        os_ready = Signal()
        m.d.comb += os_ready.eq(~os_valid | (step & (os_k == 3)))
        for p in post:
            m.d.comb += p.o.ready.eq(os_ready)
        with m.If(step):
            m.d.sync += os_k.eq(os_k + 1)
            with m.If(os_k == 3):
                m.d.sync += os_valid.eq(0)
        with m.If(post[0].o.valid & os_ready):
            m.d.sync += [os_valid.eq(1), os_k.eq(0), os_tag.eq(post[0].tag_o)]
            for dy in range(2):
                for dx in range(2):
                    m.d.sync += os_y[dy * 2 + dx].eq(Cat(p.o.payload[dy][dx][:aw] for p in post))
        wino_front = [
            pea.i.valid.eq(sr_valid),
            pea.i.payload.addr.eq(Cat(sr_pos, sr_meta.cb) + Mux(ubank, c.filter_depth // 2, 0)),
            pea.i.payload.idx.eq(sr_pos),
            pea.i.payload.first.eq(sr_meta.cb == 0),
            pea.i.payload.last.eq(sr_meta.cb + 1 == in_cb),
            pea.i.payload.tag.eq(sr_meta.tag),
            pea.i.payload.tag.idx.eq(sr_pos),
            pea.i.payload.tag.tlast.eq(sr_last),
            sink_ready.eq(tb_ready),
        ] + [pea.i.payload.x[l].eq(sr_v[sr_pos].word_select(l, V_WIDTH).as_signed()) for l in range(vc)]
        o_addr = os_tag.addr + Mux(pool_en, 0, Mux(os_k[1], out_row, 0) + Mux(os_k[0], out_pix, 0))
        wino_back = [
            rr.i.valid.eq(os_valid & in_range),
            rr.i.payload.acc.eq(os_y[os_k]),
            rr.i.payload.pool_first.eq(~pool_en | (os_k == 0)),
            rr.i.payload.pool_last.eq(~pool_en | (os_k == 3)),
            rr.i.payload.skip.eq(0),
            rr.i.payload.tag.eq(o_addr),
            pea.o.ready.eq(co_ready),
        ]
        m.d.comb += pea.wmode.eq(wmode)
        with m.If(wmode):
            m.d.comb += wino_front + wino_back
        with m.Else():
            m.d.comb += direct_front + direct_back
        busy = Signal()
        m.d.comb += busy.eq(tb_full | pre[0].busy | sr_valid | co_full | post[0].busy | os_valid)
        return busy

    def _winograd_loader(self, m, pea, in_cb, tcb, start, busy, base, bank):
        """Filter loader of Winograd mode: for every PE and input block read the 9 code words of
        the 3×3 filter (weight-memory word ``base + pe·tcb + (ky·3+kx)·in_cb + cb``), transform
        them (``U = G₂ g G₂ᵀ`` per lane, ARITHMETIC §2.3) and write the 16 ``U`` words to the
        PE's transformed-weight cache at ``cb·16 + ξν`` (+ half the cache when ``bank``). Reading
        the next filter overlaps writing this one: 16 cycles per filter, ``16·m·in_cb + ~12``
        cycles. ``start`` (one cycle, with ``base`` and ``bank``) begins; ``busy`` is high until
        the last word is written. It uses only the weight-memory read port and the caches' write
        ports, so it runs while the PE array computes from the other half."""
        c = self.config
        M, vc = c.m, c.vc
        half = c.filter_depth // 2

        # read side
        rd_active = Signal()
        rd_tap = Signal(4)
        rd_off = Signal(24)           # tap · in_cb
        rd_base = Signal(range(c.weight_depth + 1))  # pe base + cb
        pe_base = Signal(range(c.weight_depth + 1))
        rd_pe = Signal(range(M + 1))
        rd_cb = Signal(16)
        groups_left = Signal(32)      # filters (pe, cb) still to be read
        cap_v, cap_tap = Signal(), Signal(4)
        g = Array(Signal(vc * 4, name=f"g{t}") for t in range(9))
        g_full = Signal()
        g_pe, g_cb = Signal(range(M)), Signal(16)
        rd_pe_d, rd_cb_d = Signal(range(M)), Signal(16)
        ld_bank = Signal()

        # write side
        u = Array(Signal(vc * U_WIDTH, name=f"u{j}") for j in range(ACC_ENTRIES))
        u_busy = Signal()
        u_cnt = Signal(4)
        u_pe, u_cb = Signal(range(M)), Signal(16)
        writes_left = Signal(32)

        with m.If(rd_active):
            m.d.comb += [self.w_r_addr.eq(rd_base + rd_off), self.w_r_en.eq(1)]
        m.d.sync += [cap_v.eq(rd_active), cap_tap.eq(rd_tap), rd_pe_d.eq(rd_pe), rd_cb_d.eq(rd_cb)]
        with m.If(rd_active):
            with m.If(rd_tap == 8):
                m.d.sync += [rd_active.eq(0), rd_tap.eq(0), rd_off.eq(0)]
                with m.If(rd_cb + 1 < in_cb):
                    m.d.sync += [rd_cb.eq(rd_cb + 1), rd_base.eq(rd_base + 1)]
                with m.Else():
                    m.d.sync += [rd_cb.eq(0), rd_pe.eq(rd_pe + 1), pe_base.eq(pe_base + tcb),
                                 rd_base.eq(pe_base + tcb)]
            with m.Else():
                m.d.sync += [rd_tap.eq(rd_tap + 1), rd_off.eq(rd_off + in_cb)]
        with m.If(cap_v):
            m.d.sync += g[cap_tap].eq(self.w_r_data)
        move = Signal()
        m.d.comb += move.eq(g_full & (~u_busy | (u_cnt == ACC_ENTRIES - 1)))
        with m.If(cap_v & (cap_tap == 8)):
            m.d.sync += [g_full.eq(1), g_pe.eq(rd_pe_d), g_cb.eq(rd_cb_d)]
        with m.Elif(move):
            m.d.sync += g_full.eq(0)
        with m.If(move & (groups_left != 0)):
            m.d.sync += [rd_active.eq(1), groups_left.eq(groups_left - 1)]

        # transform: U = G₂ g G₂ᵀ per lane
        lanes = []
        for l in range(vc):
            gv = [[code_value(g[r * 3 + col].word_select(l, 4)) for col in range(3)] for r in range(3)]
            lanes.append(weight_transform_tile(gv, WINOGRAD_VARIANT))
        with m.If(u_busy):
            m.d.sync += u_cnt.eq(u_cnt + 1)
            with m.If(u_cnt == ACC_ENTRIES - 1):
                m.d.sync += u_busy.eq(0)
        with m.If(move):
            m.d.sync += [u_busy.eq(1), u_cnt.eq(0), u_pe.eq(g_pe), u_cb.eq(g_cb)]
            for a in range(4):
                for b in range(4):
                    m.d.sync += u[a * 4 + b].eq(Cat(lanes[l][a][b][:U_WIDTH] for l in range(vc)))
        m.d.comb += [pea.u_en.eq(u_busy), pea.w_pe.eq(u_pe),
                     pea.w_addr.eq(Cat(u_cnt, u_cb) + Mux(ld_bank, half, 0)),
                     pea.u_data.eq(u[u_cnt])]
        last_write = Signal()
        m.d.comb += last_write.eq(u_busy & (u_cnt == ACC_ENTRIES - 1) & (writes_left == 1))
        with m.If(u_busy & (u_cnt == ACC_ENTRIES - 1)):
            m.d.sync += writes_left.eq(writes_left - 1)
        with m.If(last_write):
            m.d.sync += busy.eq(0)

        with m.If(start):
            total = Signal(32)
            m.d.comb += total.eq(M * in_cb)
            m.d.sync += [busy.eq(1), ld_bank.eq(bank),
                         rd_active.eq(1), rd_tap.eq(0), rd_off.eq(0), rd_base.eq(base), pe_base.eq(base),
                         rd_pe.eq(0), rd_cb.eq(0), groups_left.eq(total - 1), writes_left.eq(total),
                         g_full.eq(0), u_busy.eq(0)]
