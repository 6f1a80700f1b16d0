"""Scheduler: the loop nest of one output block as a stream of beats (DESIGN §4).

Direct mode, outermost first: output pixel (py, px), pool-window position (dy, dx), tap (ky, kx),
input block cb — one beat (one feature word of ``vc`` input channels against filter-cache word
``(ky·kw + kx)·in_cb + cb``) each. A max-pool window's positions are issued for every output
pixel (conv outputs shared by overlapping windows are computed again); a position outside the
conv output (the pool's padding, ``ceil_mode``) is issued with zero input and marked ``skip``.

With ``vp`` output-pixel lanes (:attr:`EngineConfig.vp`) a direct-mode beat carries the pixels
(py, px + j), j < vp, of one row in lockstep (same window position, tap and input block, so one
filter-cache word serves them all): px advances by ``vp``, a lane past the row's end is dead.

Winograd mode (ARITHMETIC §2): 2×2 output tiles (py, px) (with the 2×2 pool, one tile is one
pooled pixel), input block cb, then the pixels (ky, kx) of the 4×4 input tile that the computed
transformed positions need (all 16 for a plain layer; fewer for TDC phases: rows/columns in
``supp(Bᵀ[ξ])`` for ξ in ``xmask``/``ymask``).

Input pixel (iy, ix) of a beat: ``((o·s + k − pad) >> dil)`` per axis in the zero-inserted view
(NZP, ARITHMETIC §1.3); outside the input, between inserted zeros, or outside the conv output,
the beat carries ``inb`` = 0 (zero input, no memory read).
"""
from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import EngineConfig
from ..isa import DESCRIPTOR
from ..pe import ACC_ENTRIES
from ..winograd import WINOGRAD_VARIANTS
from .weight_transform import WINOGRAD_VARIANT

__all__ = ["Scheduler", "sched_cmd_layout", "tag_layout", "beat_layout", "bits_next", "bits_first", "odometer"]


def tag_layout(config: EngineConfig):
    """What a beat carries to its result: ``addr`` (the output word: pixel, or a Winograd tile's
    first pixel), ``pool_first``/``pool_last`` (the window's first/last position), ``skip`` (a
    position outside the conv output), ``idx`` (Winograd transformed position), ``right``/
    ``bottom`` (the tile's second column/row is inside the output), ``tlast`` (the tile's last
    transformed position)."""
    fields = {"addr": range(config.feature_depth), "pool_first": 1, "pool_last": 1,
              "skip": 1, "idx": range(ACC_ENTRIES), "right": 1, "bottom": 1, "tlast": 1}
    if config.vp > 1:
        fields["lanes"] = data.ArrayLayout(lane_tag_layout(config), config.vp - 1)
    return data.StructLayout(fields)


def lane_tag_layout(config: EngineConfig):
    """What the beat carries for pixel lane ``j ≥ 1`` (direct mode, :attr:`EngineConfig.vp`):
    ``addr`` (its output word), ``skip`` (its window position is outside the conv output),
    ``live`` (its pixel exists: ``px + j < out_w``; a dead lane's result is dropped)."""
    return data.StructLayout({"addr": range(config.feature_depth), "skip": 1, "live": 1})


def beat_layout(config: EngineConfig):
    """A scheduled beat: ``faddr`` and ``inb`` (read feature word ``faddr``, or zero input),
    ``w`` (filter-cache word), ``first``/``last`` (of the accumulation), ``tag``
    (:func:`tag_layout`), Winograd: ``pos`` (pixel ky·4 + kx of the input tile), ``cb``, ``tl``
    (the tile's last pixel for this input block); with ``vp > 1`` pixel lanes, ``lanes``: the
    ``faddr``/``inb`` of lanes 1 … vp − 1 (lane 0's are ``faddr``/``inb``)."""
    fields = {"faddr": range(config.feature_depth), "inb": 1,
              "w": range(config.filter_depth), "first": 1, "last": 1,
              "tag": tag_layout(config), "pos": 4, "cb": 16, "tl": 1}
    if config.vp > 1:
        fields["lanes"] = data.ArrayLayout(data.StructLayout({"faddr": range(config.feature_depth), "inb": 1}),
                                           config.vp - 1)
    return data.StructLayout(fields)


def bits_next(mask, cur, width=4):
    """``(has_next, next)``: the lowest set bit of ``mask`` above position ``cur`` (comb)."""
    has = Const(0)
    nxt = Const(0, range(width))
    for j in reversed(range(width)):
        hit = mask[j] & (cur < j)
        nxt = Mux(hit, j, nxt)
        has = has | hit
    return has, nxt


def bits_first(mask, width=4):
    """The lowest set bit of ``mask`` (0 if none)."""
    first = Const(0, range(width))
    for j in reversed(range(width)):
        first = Mux(mask[j], j, first)
    return first


def odometer(m, digits):
    """Step a nest of counters: ``digits`` = [(counter, has_next[, step]), …], innermost first.

    The innermost counter with a next value advances by its step (default 1); every counter
    inside it returns to 0.
    """
    sig, has_next, *step = digits[0]
    with m.If(has_next):
        m.d.sync += sig.eq(sig + (step[0] if step else 1))
    with m.Else():
        m.d.sync += sig.eq(0)
        if len(digits) > 1:
            odometer(m, digits[1:])


def sched_cmd_layout(config: EngineConfig):
    """The :class:`Scheduler`'s command: ``coblk``, ``g_off`` (input block), ``fbase`` (filter-cache word)."""
    return data.StructLayout({"coblk": 16, "g_off": 24, "fbase": range(config.filter_depth)})


class Scheduler(wiring.Component):
    """Issues the beats of one output block.

    Parameter: ``config`` (:class:`EngineConfig`).

    Members:
      * ``desc``: ``In(DESCRIPTOR)``, ``tcb``: ``In(24)`` (``kh·kw·in_cb``), ``wmode``: ``In(1)``
        (the layer runs in Winograd mode) — layer constants.
      * ``cmd``: ``In(stream.Signature(sched_cmd_layout(config)))`` — the output block, (grouped
        convolution) its group's first input block, and (direct mode) the filter-cache word its
        filters start at (``fbase``, added to every beat's ``w``); taken when idle, starts the
        block.
      * ``o``: ``Out(stream.Signature(beat_layout(config)))`` — registered.
      * ``busy``: ``Out(1)`` — beats left to issue or in the stages before ``o``; ``cmd`` is
        taken only when low.

    Latency: the first beat is offered :attr:`latency` = 3 cycles after ``cmd`` is taken (three
    register stages: counters' flags and conv coordinates; input coordinates, bounds and output
    address; feature addresses). Throughput: one beat per
    cycle (``o.ready`` high). Beats per block: ``out_h·⌈out_w/vp⌉·pool_kh·pool_kw·kh·kw·in_cb``
    (direct), ``tiles·pixels·in_cb`` (Winograd, ``pixels`` = 16 for a plain layer).
    """

    latency = 3

    def __init__(self, config: EngineConfig):
        self.config = c = config
        super().__init__({
            "desc": In(DESCRIPTOR), "tcb": In(24), "wmode": In(1),
            "cmd": In(stream.Signature(sched_cmd_layout(c))),
            "o": Out(stream.Signature(beat_layout(c))),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        c = self.config
        k = c.m // c.vc
        d, wmode, tcb = self.desc, self.wmode, self.tcb
        pool_en = Signal()
        m.d.comb += pool_en.eq((d.pool_kh != 1) | (d.pool_kw != 1))
        coblk, g_off = Signal(16), Signal(24)
        fbase = Signal(range(c.filter_depth))

        py, px, dy, dx = Signal(16), Signal(16), Signal(4), Signal(4)
        ky, kx, cb = Signal(8), Signal(8), Signal(16)
        taddr = Signal(24)
        gen = Signal()             # beats left to issue
        o = self.o
        adv = Signal()
        m.d.comb += adv.eq(~o.valid | o.ready)

        # input-tile rows/columns the computed transformed positions need: supp(Bᵀ[ξ]) for ξ in the mask
        bt = WINOGRAD_VARIANTS[WINOGRAD_VARIANT][1]
        rmask, cmask = Signal(4), Signal(4)
        for j in range(4):
            m.d.comb += [rmask[j].eq(Cat(*[d.xmask[a] for a in range(4) if bt[a][j]]).any()),
                         cmask[j].eq(Cat(*[d.ymask[a] for a in range(4) if bt[a][j]]).any())]
        kx_more, kx_next = bits_next(cmask, kx)
        ky_more, ky_next = bits_next(rmask, ky)
        kx_first, ky_first = bits_first(cmask), bits_first(rmask)

        t_h, t_w = Signal(16), Signal(16)       # Winograd tiles per column / row
        m.d.comb += [t_h.eq(Mux(pool_en, d.out_h, (d.out_h + 1) >> 1)),
                     t_w.eq(Mux(pool_en, d.out_w, (d.out_w + 1) >> 1))]

        # The beat's fields are computed in three register stages, all advancing with ``adv``:
        # (1) the counters' flags and the conv output coordinates (oy, ox); (2) the input
        # coordinates, the bounds checks and the output address; (3) the feature addresses, into
        # ``o``. No stage multiplies twice in series (DESIGN §4; the depth is in gen/baselines/).
        lanes_j = range(1, c.vp)

        def stage(values, prefix):
            """Registers (on ``adv``) holding ``values`` (name → Value): the next stage's inputs."""
            regs = {}
            for name, v in values.items():
                regs[name] = Signal(v.shape(), name=f"{prefix}_{name}")
                with m.If(adv):
                    m.d.sync += regs[name].eq(v)
            return regs

        # ---- stage 1: from the counters
        s0 = {"valid": gen, "ky": ky, "kx": kx, "cb": cb, "w": (taddr + fbase)[:len(taddr)]}
        oy0, ox0 = Signal(signed(22)), Signal(signed(22))    # conv output coordinates of the beat
        with m.If(wmode):
            m.d.comb += [oy0.eq(Cat(C(0, 1), py)), ox0.eq(Cat(C(0, 1), px))]
        with m.Else():             # position (dy, dx) of output pixel (py, px)'s pool window
            m.d.comb += [oy0.eq(py * d.pool_sy + dy - d.pool_pt), ox0.eq(px * d.pool_sx + dx - d.pool_pl)]
        s0["oy"], s0["ox"] = oy0, ox0
        # output address: pixel (py, px), or in Winograd mode the tile's first output pixel
        s0["opy"] = Mux(wmode & ~pool_en, Cat(C(0, 1), py), py)
        s0["opx"] = Mux(wmode & ~pool_en, Cat(C(0, 1), px), px)
        b_last, pool_last = Signal(), Signal()  # the counters are at the last tap and input block / window position
        m.d.comb += [b_last.eq(taddr == tcb - 1), pool_last.eq((dy + 1 >= d.pool_kh) & (dx + 1 >= d.pool_kw))]
        s0["first"], s0["last"] = taddr == 0, b_last
        s0["pool_first"], s0["pool_last"] = (dy == 0) & (dx == 0), pool_last
        s0["right"] = pool_en | (Cat(C(1, 1), px) < d.out_w)
        s0["bottom"] = pool_en | (Cat(C(1, 1), py) < d.out_h)
        s0["pos"], s0["tl"] = Cat(kx[:2], ky[:2]), ~kx_more & ~ky_more
        for j in lanes_j:          # pixel lane j: pixel (py, px + j) at the same window position and tap
            s0[f"live{j}"] = ~wmode & (px + j < d.out_w)
            oxj = Signal(signed(22), name=f"ox{j}")        # its own product: no adder after ox's
            m.d.comb += oxj.eq((px + j) * d.pool_sx + dx - d.pool_pl)
            s0[f"ox{j}"] = oxj
        s1 = stage(s0, "s1")

        # ---- stage 2: input coordinates in the (zero-inserted, NZP) input, bounds, output address
        lowmask = Signal(8)
        m.d.comb += lowmask.eq((C(1, 9) << d.dil) - 1)

        def in_bounds(oy, ox, ky, kx):
            """(ok, iy, ix): conv output (oy, ox) at tap (ky, kx) reads stored input (iy, ix)."""
            vy, vx = Signal(signed(32)), Signal(signed(32))
            m.d.comb += [vy.eq(oy * d.sy + ky - d.pad_t), vx.eq(ox * d.sx + kx - d.pad_l)]
            iy, ix = Signal(signed(28)), Signal(signed(28))    # in the stored input
            m.d.comb += [iy.eq(vy >> d.dil), ix.eq(vx >> d.dil)]
            ok = ((vy >= 0) & (iy < d.in_h) & (vx >= 0) & (ix < d.in_w)
                  & ((vy[:8] & lowmask) == 0) & ((vx[:8] & lowmask) == 0))
            return ok, iy, ix

        def win_inside(oy, ox):
            return (oy >= 0) & (oy < d.conv_h) & (ox >= 0) & (ox < d.conv_w)

        win_ok = Signal()          # the window position is inside the conv output (direct mode)
        m.d.comb += win_ok.eq(wmode | win_inside(s1["oy"], s1["ox"]))
        ok, iy, ix = in_bounds(s1["oy"], s1["ox"], s1["ky"], s1["kx"])
        s1n = {n: s1[n] for n in ("valid", "cb", "w", "first", "last", "pool_first", "pool_last",
                                  "right", "bottom", "pos", "tl")}
        s1n.update(inb=ok & win_ok, skip=~win_ok, iy=iy[:16], ix=ix[:16],
                   oaddr=(d.out_base + s1["opy"] * d.out_row + s1["opx"] * d.out_pix + coblk * k)[:48])
        for j in lanes_j:
            oxj = s1[f"ox{j}"]
            okj = Signal(name=f"win_ok{j}")
            m.d.comb += okj.eq(s1[f"live{j}"] & win_inside(s1["oy"], oxj))
            okb, _, ixj = in_bounds(s1["oy"], oxj, s1["ky"], s1["kx"])
            s1n.update({f"live{j}": s1[f"live{j}"], f"inb{j}": okb & okj, f"skip{j}": ~okj,
                        f"ix{j}": ixj[:16]})
        s2 = stage(s1n, "s2")

        # ---- stage 3: feature addresses, into o
        def faddr_of(ix):
            return d.in_base + s2["iy"] * d.in_row + ix * d.in_pix + g_off + s2["cb"]

        p = o.payload
        with m.If(adv):
            for j in lanes_j:
                q = p.lanes[j - 1]
                m.d.sync += [q.inb.eq(s2[f"inb{j}"]), q.faddr.eq(faddr_of(s2[f"ix{j}"])),
                             p.tag.lanes[j - 1].addr.eq(s2["oaddr"] + j * d.out_pix),
                             p.tag.lanes[j - 1].skip.eq(s2[f"skip{j}"]),
                             p.tag.lanes[j - 1].live.eq(s2[f"live{j}"])]
            m.d.sync += [
                o.valid.eq(s2["valid"]), p.inb.eq(s2["inb"]), p.faddr.eq(faddr_of(s2["ix"])),
                p.w.eq(s2["w"]), p.first.eq(s2["first"]), p.last.eq(s2["last"]),
                p.tag.addr.eq(s2["oaddr"]), p.tag.pool_first.eq(s2["pool_first"]),
                p.tag.pool_last.eq(s2["pool_last"]), p.tag.skip.eq(s2["skip"]),
                p.tag.right.eq(s2["right"]), p.tag.bottom.eq(s2["bottom"]),
                p.tag.idx.eq(0), p.tag.tlast.eq(0),
                p.pos.eq(s2["pos"]), p.cb.eq(s2["cb"]), p.tl.eq(s2["tl"]),
            ]
        m.d.comb += self.busy.eq(gen | s1["valid"] | s2["valid"])

        gen_done = Signal()        # the beat being issued is the block's final one
        with m.If(wmode):
            m.d.comb += gen_done.eq(~kx_more & ~ky_more & (cb + 1 >= d.in_cb)
                                    & (px + 1 >= t_w) & (py + 1 >= t_h))
        with m.Else():
            m.d.comb += gen_done.eq(b_last & pool_last & (px + c.vp >= d.out_w) & (py + 1 >= d.out_h))

        with m.If(gen & adv):
            with m.If(gen_done):
                m.d.sync += gen.eq(0)
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
                        odometer(m, [(cb, cb + 1 < d.in_cb), (px, px + 1 < t_w), (py, py + 1 < t_h)])
            with m.Else():
                # cb innermost, then kx, ky, then pool dx, dy, then px, py
                m.d.sync += taddr.eq(Mux(b_last, 0, taddr + 1))
                odometer(m, [(cb, cb + 1 < d.in_cb), (kx, kx + 1 < d.kw), (ky, ky + 1 < d.kh),
                             (dx, dx + 1 < d.pool_kw), (dy, dy + 1 < d.pool_kh),
                             (px, px + c.vp < d.out_w, c.vp), (py, py + 1 < d.out_h)])

        m.d.comb += self.cmd.ready.eq(~self.busy)
        with m.If(self.cmd.valid & ~self.busy):
            m.d.sync += [coblk.eq(self.cmd.payload.coblk), g_off.eq(self.cmd.payload.g_off),
                         fbase.eq(self.cmd.payload.fbase),
                         py.eq(0), px.eq(0), dy.eq(0), dx.eq(0), cb.eq(0), taddr.eq(0), gen.eq(1),
                         ky.eq(Mux(wmode, ky_first, 0)), kx.eq(Mux(wmode, kx_first, 0))]
        return m
