"""Winograd filter loader: the weight transform ``U = G₂ g G₂ᵀ`` of one output block into the
PE array's transformed-weight caches (DESIGN §4, ARITHMETIC §2.3)."""
from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import EngineConfig
from ..mem.port import read_port
from ..pe import ACC_ENTRIES, U_WIDTH
from ..winograd import code_value, weight_transform_tile

__all__ = ["WinogradFilterLoader", "WINOGRAD_VARIANT", "TRANSFORM_CYCLES"]

#: The Winograd variant of the engine's multiplier-lane mode.
WINOGRAD_VARIANT = "F2x2_3x3"
#: Cycles per filter (one PE, one input block): the 16 ``U`` words are written one per cycle.
TRANSFORM_CYCLES = ACC_ENTRIES


class WinogradFilterLoader(wiring.Component):
    """For every PE ``p`` and input block ``cb``: reads the 9 code words of the 3×3 filter
    (weight word ``base + p·tcb + (ky·3 + kx)·in_cb + cb``, the direct-mode image), transforms
    them per lane and writes the 16 ``U`` words to PE ``p``'s transformed-weight cache at
    ``cb·16 + ξν`` (+ half the cache for ``bank`` 1).

    Parameter: ``config`` (:class:`EngineConfig`).

    Members:
      * ``cmd``: ``In(stream.Signature({base: range(weight_depth), bank: 1}))`` — taken when idle.
      * ``in_cb``: ``In(16)``, ``tcb``: ``In(24)`` (``9·in_cb``) — layer constants.
      * ``w_rd``: ``Out(read_port(weight_depth, 4·vc))``.
      * ``u_en``, ``w_pe``, ``w_addr``, ``u_data`` (``vc × signed(U_WIDTH)``): ``Out`` — the PE
        array's transformed-weight write port.
      * ``busy``: ``Out(1)`` — until the last ``U`` word is written.

    Reading a filter's 9 words overlaps writing the previous filter's 16: :data:`TRANSFORM_CYCLES`
    cycles per filter while the memory's latency is below 7 cycles, ``16·m·in_cb + ~12`` cycles
    for a block. It uses only the weight-memory read port and the caches' write port, so it runs
    while the PE array computes from the other half.
    """

    def __init__(self, config: EngineConfig):
        self.config = c = config
        super().__init__({
            "cmd": In(stream.Signature(data.StructLayout({"base": range(c.weight_depth), "bank": 1}))),
            "in_cb": In(16), "tcb": In(24),
            "w_rd": Out(read_port(c.weight_depth, 4 * c.vc)),
            "u_en": Out(1), "w_pe": Out(range(c.m)), "w_addr": Out(range(c.filter_depth)),
            "u_data": Out(data.ArrayLayout(signed(U_WIDTH), c.vc)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        c = self.config
        M, vc = c.m, c.vc
        half = c.filter_depth // 2
        in_cb, tcb = self.in_cb, self.tcb
        busy = Signal()
        m.d.comb += self.busy.eq(busy)

        # read side: the 9 requests of a filter, issued once the previous filter's words moved on
        rd_active = Signal()
        rd_tap = Signal(4)
        rd_off = Signal(24)                        # tap · in_cb
        rd_base = Signal(range(c.weight_depth + 1))  # PE base + cb
        pe_base = Signal(range(c.weight_depth + 1))
        rd_cb = Signal(16)
        groups_left = Signal(32)                   # filters (pe, cb) still to be read
        req = self.w_rd.req
        m.d.comb += [req.valid.eq(rd_active), req.payload.eq(rd_base + rd_off)]
        with m.If(req.valid & req.ready):
            with m.If(rd_tap == 8):
                m.d.sync += [rd_active.eq(0), rd_tap.eq(0), rd_off.eq(0)]
                with m.If(rd_cb + 1 < in_cb):
                    m.d.sync += [rd_cb.eq(rd_cb + 1), rd_base.eq(rd_base + 1)]
                with m.Else():
                    m.d.sync += [rd_cb.eq(0), pe_base.eq(pe_base + tcb), rd_base.eq(pe_base + tcb)]
            with m.Else():
                m.d.sync += [rd_tap.eq(rd_tap + 1), rd_off.eq(rd_off + in_cb)]

        # response side: the 9 words of the filter (pe, cb), in order
        resp = self.w_rd.resp
        g = Array(Signal(vc * 4, name=f"g{t}") for t in range(9))
        cap_tap = Signal(4)
        resp_pe, resp_cb = Signal(range(M)), Signal(16)
        g_full = Signal()
        g_pe, g_cb = Signal(range(M)), Signal(16)
        m.d.comb += resp.ready.eq(1)               # at most one filter's words are due (see move)
        with m.If(resp.valid):
            m.d.sync += g[cap_tap].eq(resp.payload)
            with m.If(cap_tap == 8):
                m.d.sync += [cap_tap.eq(0), g_full.eq(1), g_pe.eq(resp_pe), g_cb.eq(resp_cb)]
                with m.If(resp_cb + 1 < in_cb):
                    m.d.sync += resp_cb.eq(resp_cb + 1)
                with m.Else():
                    m.d.sync += [resp_cb.eq(0), resp_pe.eq(resp_pe + 1)]
            with m.Else():
                m.d.sync += cap_tap.eq(cap_tap + 1)

        # write side: U = G₂ g G₂ᵀ per lane, 16 words one per cycle
        u = Array(Signal(vc * U_WIDTH, name=f"u{j}") for j in range(ACC_ENTRIES))
        u_busy = Signal()
        u_cnt = Signal(4)
        u_pe, u_cb = Signal(range(M)), Signal(16)
        writes_left = Signal(32)
        ld_bank = Signal()
        move = Signal()
        m.d.comb += move.eq(g_full & (~u_busy | (u_cnt == ACC_ENTRIES - 1)))
        with m.If(move & ~(resp.valid & (cap_tap == 8))):
            m.d.sync += g_full.eq(0)
        with m.If(move & (groups_left != 0)):
            m.d.sync += [rd_active.eq(1), groups_left.eq(groups_left - 1)]
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
        m.d.comb += [self.u_en.eq(u_busy), self.w_pe.eq(u_pe),
                     self.w_addr.eq(Cat(u_cnt, u_cb) + Mux(ld_bank, half, 0)),
                     self.u_data.as_value().eq(u[u_cnt])]
        with m.If(u_busy & (u_cnt == ACC_ENTRIES - 1)):
            m.d.sync += writes_left.eq(writes_left - 1)
            with m.If(writes_left == 1):
                m.d.sync += busy.eq(0)

        m.d.comb += self.cmd.ready.eq(~busy)
        with m.If(self.cmd.valid & ~busy):
            total = Signal(32)
            m.d.comb += total.eq(M * in_cb)
            m.d.sync += [busy.eq(1), ld_bank.eq(self.cmd.payload.bank),
                         rd_active.eq(1), rd_tap.eq(0), rd_off.eq(0),
                         rd_base.eq(self.cmd.payload.base), pe_base.eq(self.cmd.payload.base),
                         rd_cb.eq(0), groups_left.eq(total - 1), writes_left.eq(total),
                         cap_tap.eq(0), resp_pe.eq(0), resp_cb.eq(0), g_full.eq(0), u_busy.eq(0)]
        return m
