"""The Winograd-domain datapath around the PE array's multiplier lanes (DESIGN §4, ARITHMETIC §2).

Tile buffer → ``vc`` pre-PEs (``V = Bᵀ d B``) → beat serializer → (the PE array) → collector →
``m`` post-PEs (``Y' = Aᵀ M A = 4·Y``) → output serializer → towards the output stage.
"""
from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import EngineConfig
from ..pe import ACC_ENTRIES, V_WIDTH, pe_input_layout
from ..winograd import WinogradPostPE, WinogradPrePE
from .reader import read_beat_layout
from .residual import beat_layout as out_beat_layout
from .scheduler import bits_first, bits_next, tag_layout
from .weight_transform import WINOGRAD_VARIANT

__all__ = ["WinogradDatapath", "gather", "pe_result_layout"]


def pe_result_layout(config: EngineConfig):
    """The PE array's result: ``acc`` (``m × signed(acc_width)``) and ``tag``
    (:func:`~.scheduler.tag_layout`)."""
    return data.StructLayout({"acc": data.ArrayLayout(signed(config.acc_width), config.m),
                              "tag": tag_layout(config)})


def gather(m, name, n, width, valid, idx, word, last, meta_in, ready_out):
    """A buffer of ``n`` words of ``width`` bits filled one word per transfer (``valid``, word
    ``idx`` = ``word``), then offered whole (``full``) to a transform until ``ready_out``.

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
        m.d.sync += words[idx].eq(word)
    with m.If(take & last):
        m.d.sync += [full.eq(1), meta.eq(meta_in)]
    with m.Elif(ready_out):
        m.d.sync += full.eq(0)
    return words, full, meta, ready_in


class WinogradDatapath(wiring.Component):
    """F(2×2, 3×3) transforms and serializers of the Winograd mode.

    Parameter: ``config`` (:class:`EngineConfig`).

    Members:
      * ``i``: ``In(stream.Signature(read_beat_layout(config)))`` — the pixels of a 4×4 input
        tile for one input block (``beat.pos``, ``beat.tl`` on the tile's last one).
      * ``pe_i``: ``Out(stream.Signature(pe_input_layout(vc, filter_depth, tag, winograd=True)))``
        — one beat per computed transformed position ξν (``xmask[ξ] & ymask[ν]``), filter word
        ``cb·16 + ξν`` (+ half the cache for ``ubank``), accumulator ``ξν``.
      * ``pe_o``: ``In(stream.Signature(pe_result_layout(config)))`` — the 16 accumulators
        ``M[ξν]`` of a tile (after the last input block).
      * ``o``: ``Out(stream.Signature(residual.beat_layout(m, acc_width, range(feature_depth))))``
        — the tile's outputs (``Y' = 4·Y``) in order (0,0), (0,1), (1,0), (1,1), those outside
        the output left out; with pooling one pixel, the max over the four.
      * ``in_cb``: ``In(16)``, ``xmask``, ``ymask``: ``In(4)``, ``pool_en``, ``ubank``: ``In(1)``,
        ``out_row``, ``out_pix``: ``In(24)`` — layer / block constants.
      * ``busy``: ``Out(1)``.

    Latency: tile buffer 1, pre-PE :attr:`WinogradPrePE.latency`, serializer 1, collector 1,
    post-PE :attr:`WinogradPostPE.latency`, output serializer 1 cycle. Throughput: one beat per
    cycle into the PE array (``p·in_cb`` beats per tile); four outputs per tile.
    """

    def __init__(self, config: EngineConfig):
        self.config = c = config
        tag = tag_layout(c)
        super().__init__({
            "i": In(stream.Signature(read_beat_layout(c))),
            "pe_i": Out(stream.Signature(pe_input_layout(c.vc, c.filter_depth, tag, winograd=True))),
            "pe_o": In(stream.Signature(pe_result_layout(c))),
            "o": Out(stream.Signature(out_beat_layout(c.m, c.acc_width, range(c.feature_depth)))),
            "in_cb": In(16), "xmask": In(4), "ymask": In(4), "pool_en": In(1), "ubank": In(1),
            "out_row": In(24), "out_pix": In(24),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        c = self.config
        M, vc, aw = c.m, c.vc, c.acc_width
        alpha2 = ACC_ENTRIES
        tag = tag_layout(c)
        meta_layout = data.StructLayout({"cb": 16, "tag": tag})
        xmask, ymask, in_cb, pool_en = self.xmask, self.ymask, self.in_cb, self.pool_en

        # tile buffer: the 16 pixels (one feature word each) of the current input tile
        pre = [WinogradPrePE(WINOGRAD_VARIANT, meta_layout if l == 0 else 0) for l in range(vc)]
        for l, p in enumerate(pre):
            m.submodules[f"pre_pe{l}"] = p
        beat = self.i.payload.beat
        tb_meta_in = Signal(meta_layout)
        m.d.comb += [tb_meta_in.cb.eq(beat.cb), tb_meta_in.tag.eq(beat.tag)]
        tb_d, tb_full, tb_meta, tb_ready = gather(m, "tile", alpha2, vc * 8, self.i.valid, beat.pos,
                                                  self.i.payload.x, beat.tl, tb_meta_in, pre[0].i.ready)
        m.d.comb += self.i.ready.eq(tb_ready)
        for l, p in enumerate(pre):
            m.d.comb += p.i.valid.eq(tb_full)
            for r in range(4):
                for col in range(4):
                    m.d.comb += p.i.payload[r][col].eq(tb_d[r * 4 + col].word_select(l, 8).as_signed())
        m.d.comb += pre[0].tag_i.eq(tb_meta)

        # beat serializer: one beat per computed transformed position ξν, all vc lanes
        sr_v = Array(Signal(vc * V_WIDTH, name=f"v{j}") for j in range(alpha2))
        sr_valid = Signal()
        sr_xi, sr_nu = Signal(2), Signal(2)
        sr_pos = Signal(4)
        m.d.comb += sr_pos.eq(Cat(sr_nu, sr_xi))
        nu_more, nu_next = bits_next(ymask, sr_nu)
        xi_more, xi_next = bits_next(xmask, sr_xi)
        sr_last = Signal()
        m.d.comb += sr_last.eq(~nu_more & ~xi_more)
        sr_meta = Signal(meta_layout)
        sr_ready = Signal()
        pe_i = self.pe_i
        m.d.comb += sr_ready.eq(~sr_valid | (pe_i.ready & sr_last))
        for p in pre:
            m.d.comb += p.o.ready.eq(sr_ready)
        with m.If(sr_valid & pe_i.ready):
            with m.If(nu_more):
                m.d.sync += sr_nu.eq(nu_next)
            with m.Elif(xi_more):
                m.d.sync += [sr_nu.eq(bits_first(ymask)), sr_xi.eq(xi_next)]
            with m.Else():
                m.d.sync += sr_valid.eq(0)
        with m.If(pre[0].o.valid & sr_ready):
            m.d.sync += [sr_valid.eq(1), sr_xi.eq(bits_first(xmask)), sr_nu.eq(bits_first(ymask)),
                         sr_meta.eq(pre[0].tag_o)]
            for r in range(4):
                for col in range(4):
                    m.d.sync += sr_v[r * 4 + col].eq(Cat(p.o.payload[r][col] for p in pre))
        m.d.comb += [
            pe_i.valid.eq(sr_valid),
            pe_i.payload.addr.eq(Cat(sr_pos, sr_meta.cb) + Mux(self.ubank, c.filter_depth // 2, 0)),
            pe_i.payload.idx.eq(sr_pos),
            pe_i.payload.first.eq(sr_meta.cb == 0),
            pe_i.payload.last.eq(sr_meta.cb + 1 == in_cb),
            pe_i.payload.tag.eq(sr_meta.tag),
            pe_i.payload.tag.idx.eq(sr_pos),
            pe_i.payload.tag.tlast.eq(sr_last),
        ] + [pe_i.payload.x[l].eq(sr_v[sr_pos].word_select(l, V_WIDTH).as_signed()) for l in range(vc)]

        # collector: the 16 accumulators M[ξν] of every PE for one tile
        post = [WinogradPostPE(WINOGRAD_VARIANT, aw, tag if q == 0 else 0) for q in range(M)]
        for q, p in enumerate(post):
            m.submodules[f"post_pe{q}"] = p
        res = self.pe_o.payload
        co_m, co_full, co_tag, co_ready = gather(m, "m", alpha2, M * aw, self.pe_o.valid, res.tag.idx,
                                                 res.acc.as_value(), res.tag.tlast, res.tag, post[0].i.ready)
        m.d.comb += self.pe_o.ready.eq(co_ready)
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
        os_tag = Signal(tag)
        in_range = Signal()
        m.d.comb += in_range.eq(Mux(os_k[0], os_tag.right, 1) & Mux(os_k[1], os_tag.bottom, 1))
        step = Signal()
        m.d.comb += step.eq(os_valid & (~in_range | self.o.ready))
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
        o_addr = os_tag.addr + Mux(pool_en, 0, Mux(os_k[1], self.out_row, 0) + Mux(os_k[0], self.out_pix, 0))
        m.d.comb += [
            self.o.valid.eq(os_valid & in_range),
            self.o.payload.acc.eq(os_y[os_k]),
            self.o.payload.pool_first.eq(~pool_en | (os_k == 0)),
            self.o.payload.pool_last.eq(~pool_en | (os_k == 3)),
            self.o.payload.skip.eq(0),
            self.o.payload.tag.eq(o_addr),
        ]
        m.d.comb += self.busy.eq(tb_full | pre[0].busy | sr_valid | co_full | post[0].busy | os_valid)
        return m
