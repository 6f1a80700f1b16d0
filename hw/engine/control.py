"""The engine's controller: layers, output blocks and the parts' commands (DESIGN §4).

Per layer: descriptor fetch and check (:class:`~.fetch.DescriptorFetch`); per output block:
biases and slopes (:class:`~.params.ParamLoader`), filters (:class:`~.filters.FilterLoader`, or
in Winograd mode :class:`~.weight_transform.WinogradFilterLoader`), then the beats
(:class:`~.scheduler.Scheduler`) until the datapath has drained. Then the next block, the next
layer, or — after the descriptor with ``last`` — done.

The filter caches are **double-buffered** (TF2's ping-pong filter buffers): block 0's filters
load before it runs, and block b + 1's into the other half of the caches while block b runs —
always in Winograd mode (the transformed-weight caches have two halves), and in direct mode when
a block's filters fit half of the caches (``kh·kw·in_cb ≤ filter_depth / 2``; otherwise each
block's load comes before its beats, into the whole cache).
"""
from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import EngineConfig
from ..isa import DESC_WORDS, DESCRIPTOR, EngineError
from .fetch import fetched_layout
from .filters import filter_cmd_layout
from .scheduler import sched_cmd_layout

__all__ = ["Controller"]


class Controller(wiring.Component):
    """Sequences layers and output blocks.

    Parameter: ``config`` (:class:`EngineConfig`).

    Members:
      * ``start``: ``In(1)`` — pulse; starts at descriptor ``desc_base`` if not busy.
      * ``desc_base``: ``In(range(param_depth))``.
      * ``busy``, ``done``, ``error``: ``Out(1)`` — ``done``/``error`` hold until the next start;
        ``err_code``: ``Out(4)`` (:class:`EngineError`), ``layer``: ``Out(16)``.
      * ``cycles``: ``Out(32)`` — cycles from start to done/error; ``beats``: ``Out(32)`` — pulses
        of ``beat`` (``In(1)``, a beat taken by the PE array) in that time; ``desc_end``:
        ``Out(1)`` — high for the last cycle of each descriptor (its last block drained; the
        cycle after it fetches the next descriptor or is idle).
      * ``desc``: ``Out(DESCRIPTOR)``, ``tcb``: ``Out(24)``, ``wmode``: ``Out(1)`` — the current
        layer's constants; ``ubank``: ``Out(1)`` — the transformed-weight cache half being read.
      * ``fetch_cmd`` / ``fetch``: to / from :class:`~.fetch.DescriptorFetch`; ``param_cmd``,
        ``filter_cmd``, ``wino_cmd``, ``sched_cmd``: the other parts' commands, with their
        ``*_busy`` inputs; ``pipe_busy``: ``In(1)`` — a beat is in the datapath.

    Latency per layer: the fetch's; per output block: the parameter and filter loads, the beats,
    the drain; 1 cycle between consecutive phases.
    """

    def __init__(self, config: EngineConfig):
        self.config = c = config
        super().__init__({
            "start": In(1), "desc_base": In(range(c.param_depth)),
            "busy": Out(1), "done": Out(1), "error": Out(1), "err_code": Out(4), "layer": Out(16),
            "cycles": Out(32), "beats": Out(32), "beat": In(1), "desc_end": Out(1),
            "desc": Out(DESCRIPTOR), "tcb": Out(24), "wmode": Out(1), "ubank": Out(1),
            "fetch_cmd": Out(stream.Signature(range(c.param_depth))),
            "fetch": In(stream.Signature(fetched_layout())),
            "param_cmd": Out(stream.Signature(data.StructLayout({"bias": range(c.param_depth),
                                                                 "slope": range(c.param_depth),
                                                                 "shift": range(c.param_depth),
                                                                 "prelu": 1, "ch_sh": 1}))),
            "param_busy": In(1),
            "filter_cmd": Out(stream.Signature(filter_cmd_layout(c))),
            "filter_busy": In(1),
            "wino_cmd": Out(stream.Signature(data.StructLayout({"base": range(c.weight_depth), "bank": 1}))),
            "wino_busy": In(1),
            "sched_cmd": Out(stream.Signature(sched_cmd_layout(c))),
            "sched_busy": In(1),
            "pipe_busy": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        c = self.config
        M, W = c.m, c.winograd
        desc = Signal(DESCRIPTOR)
        d = desc
        tcb = Signal(24)
        wmode = Signal()
        ubank = Signal()
        m.d.comb += [self.desc.eq(desc), self.tcb.eq(tcb), self.wmode.eq(wmode), self.ubank.eq(ubank)]
        dptr = Signal(range(c.param_depth + DESC_WORDS + 1))
        coblk = Signal(16)
        g_off = Signal(24)         # grouped conv: the current group's first input block
        g_cnt = Signal(16)         # output blocks of the current group done
        w_ptr = Signal(range(c.weight_depth + 1))
        b_ptr = Signal(range(c.param_depth + 1))
        s_ptr = Signal(range(c.param_depth + 1))
        h_ptr = Signal(range(c.param_depth + 1))
        prefetched = Signal()      # the next block's filters are loaded or loading
        half = c.filter_depth // 2
        fdbl = Signal()            # direct mode: a block's filters fit half of the filter caches
        fbank = Signal()           # direct mode: the half the current block's filters are in
        fbase = Signal(range(c.filter_depth))
        m.d.comb += fbase.eq(Mux(fbank, half, 0))

        busy = Signal()
        m.d.comb += self.busy.eq(busy)
        with m.If(busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        with m.If(self.beat):
            m.d.sync += self.beats.eq(self.beats + 1)

        def fail(code):
            m.d.sync += [self.error.eq(1), self.err_code.eq(code)]
            m.next = "IDLE"

        running = Signal()         # RUN: the PE array works on the current block
        if W:
            with m.If(wmode & running & ~prefetched & ~self.wino_busy & (coblk + 1 < d.n_coblk)):
                m.d.comb += [self.wino_cmd.valid.eq(1), self.wino_cmd.payload.base.eq(w_ptr + tcb * M),
                             self.wino_cmd.payload.bank.eq(~ubank)]
                with m.If(self.wino_cmd.ready):
                    m.d.sync += prefetched.eq(1)

        # direct mode: the next block's filters into the other half while this block runs
        with m.If(~wmode & fdbl & running & ~prefetched & ~self.filter_busy & (coblk + 1 < d.n_coblk)):
            m.d.comb += [self.filter_cmd.valid.eq(1), self.filter_cmd.payload.base.eq(w_ptr + tcb * M),
                         self.filter_cmd.payload.tcb.eq(tcb), self.filter_cmd.payload.fbase.eq(Mux(fbank, 0, half))]
            with m.If(self.filter_cmd.ready):
                m.d.sync += prefetched.eq(1)

        m.d.comb += [self.sched_cmd.payload.coblk.eq(coblk), self.sched_cmd.payload.g_off.eq(g_off),
                     self.sched_cmd.payload.fbase.eq(Mux(wmode, 0, fbase))]

        with m.FSM(name="ctrl") as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [self.done.eq(0), self.error.eq(0), self.err_code.eq(0),
                                 self.cycles.eq(0), self.beats.eq(0), self.layer.eq(0),
                                 dptr.eq(self.desc_base)]
                    m.next = "DESC"

            with m.State("DESC"):
                m.d.comb += [self.fetch_cmd.valid.eq(1), self.fetch_cmd.payload.eq(dptr)]
                with m.If(self.fetch_cmd.ready):
                    m.next = "CHECK"

            with m.State("CHECK"):
                m.d.comb += self.fetch.ready.eq(1)
                f = self.fetch.payload
                with m.If(self.fetch.valid):
                    m.d.sync += [desc.eq(f.desc), tcb.eq(f.tcb), wmode.eq(f.desc.winograd if W else 0),
                                 fdbl.eq(f.tcb <= half), fbank.eq(0)]
                    with m.If(f.err != EngineError.NONE):
                        fail(f.err)
                    with m.Else():
                        m.d.sync += [coblk.eq(0), g_off.eq(0), g_cnt.eq(0), w_ptr.eq(f.desc.w_base),
                                     b_ptr.eq(f.desc.bias_base), s_ptr.eq(f.desc.slope_base),
                                     h_ptr.eq(f.desc.shift_base),
                                     prefetched.eq(0), ubank.eq(0)]
                        m.next = "PARAMS"

            with m.State("PARAMS"):
                m.d.comb += [self.param_cmd.valid.eq(1), self.param_cmd.payload.bias.eq(b_ptr),
                             self.param_cmd.payload.slope.eq(s_ptr), self.param_cmd.payload.prelu.eq(d.prelu),
                             self.param_cmd.payload.shift.eq(h_ptr), self.param_cmd.payload.ch_sh.eq(d.ch_sh)]
                with m.If(self.param_cmd.ready):
                    m.next = "PWAIT"

            with m.State("PWAIT"):
                with m.If(~self.param_busy):
                    if W:
                        with m.If(wmode & ~prefetched):     # block 0: load now into half ubank
                            m.d.comb += [self.wino_cmd.valid.eq(1), self.wino_cmd.payload.base.eq(w_ptr),
                                         self.wino_cmd.payload.bank.eq(ubank)]
                    with m.If(prefetched | wmode):          # loaded or loading beside the block before
                        m.next = "WFILT"
                    with m.Else():
                        m.next = "FILT"

            with m.State("FILT"):
                m.d.comb += [self.filter_cmd.valid.eq(1), self.filter_cmd.payload.base.eq(w_ptr),
                             self.filter_cmd.payload.tcb.eq(tcb), self.filter_cmd.payload.fbase.eq(fbase)]
                with m.If(self.filter_cmd.ready):
                    m.next = "WFILT"

            with m.State("WFILT"):      # the block's filters are loading (direct or transform)
                with m.If(~self.filter_busy & ~self.wino_busy):
                    m.d.comb += self.sched_cmd.valid.eq(1)
                    with m.If(self.sched_cmd.ready):
                        m.d.sync += prefetched.eq(0)
                        m.next = "RUN"

            with m.State("RUN"):
                m.d.comb += running.eq(1)
                with m.If(~self.sched_busy & ~self.pipe_busy):
                    g_next = Signal(25)
                    m.d.comb += g_next.eq(g_off + d.in_cb)
                    g_move = Signal()
                    m.d.comb += g_move.eq((d.grp != 0) & (g_cnt + 1 == d.grp))
                    with m.If((coblk + 1 < d.n_coblk) & g_move & (g_next + d.in_cb > d.in_pix)):
                        fail(EngineError.FEATURE_RANGE)     # the next group leaves the input pixel
                    with m.Elif(coblk + 1 < d.n_coblk):
                        m.d.sync += [coblk.eq(coblk + 1), w_ptr.eq(w_ptr + tcb * M),
                                     b_ptr.eq(b_ptr + M), s_ptr.eq(s_ptr + M), h_ptr.eq(h_ptr + M),
                                     g_cnt.eq(Mux(g_move, 0, g_cnt + 1)), g_off.eq(Mux(g_move, g_next, g_off))]
                        if W:
                            with m.If(wmode):
                                m.d.sync += ubank.eq(~ubank)
                        with m.If(~wmode & fdbl):
                            m.d.sync += fbank.eq(~fbank)
                        m.next = "PARAMS"
                    with m.Elif(d.last):
                        m.d.comb += self.desc_end.eq(1)
                        m.d.sync += self.done.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.comb += self.desc_end.eq(1)
                        m.d.sync += [self.layer.eq(self.layer + 1), dptr.eq(dptr + DESC_WORDS)]
                        m.next = "DESC"
        m.d.comb += busy.eq(~fsm.ongoing("IDLE"))
        return m
