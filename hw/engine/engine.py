"""The engine: runs a whole network from layer descriptors in device memory (DESIGN §4).

Built from parts joined by streams, one component per file of this package; :class:`Engine`
only connects them::

    Controller ──cmd──▶ DescriptorFetch, ParamLoader, FilterLoader / WinogradFilterLoader, Scheduler
    Scheduler ──beats──▶ FeatureReader ──▶ PE array ──(LaneSerializer)────▶ ResidualReader
                                      ╰──▶ WinogradDatapath ⇄ PE array ──╯        │
                                                              OutputStage ◀───────╯ ──▶ FeatureWriter

With ``vp > 1`` output-pixel lanes (TF2's pixel parallelism, :attr:`EngineConfig.vp`) a
direct-mode beat carries ``vp`` neighbouring pixels of a row: the feature reader reads them
through ``vp`` ports, every PE computes them with ``vp`` sets of SAC lanes on one filter-cache
read, and the lane serializer hands the live ones, one per cycle, to the one residual reader,
output stage (a pool running max per lane) and writer.

Every memory port is a request stream and a response stream (:mod:`nibble.hw.mem.port`), so
the parts work with any memory latency; the accelerator puts a
:class:`~nibble.hw.mem.port.SyncReadPort` before each on-chip memory (2 cycles).

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

Schedule (cycles, behind ``SyncReadPort``s; the figures are the cycle model's,
:func:`nibble.host.passes.lower.layer_cycles`, measured on the RTL): per layer ``DESC_WORDS + 8``
(fetch, check) + per output block ``m`` biases (``m`` more PReLU slopes, ``m`` more per-channel
shift offsets) + ``m·T·in_cb/P`` filter
words (``T = kh·kw``, ``P`` = ``weight_ports``; for a block after the first, when ``T·in_cb`` fits
half of the filter cache, only what exceeds the block before: its filters load into the other
half of the caches while that block runs) + ``out_h·⌈out_w/vp⌉·pool_kh·pool_kw·T·in_cb`` beats
+ 20 cycles of hand-overs, memory latency and drain. With a
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
from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..config import EngineConfig
from ..isa import EngineError
from ..mem.port import ReadPortMux, read_port, write_port
from ..output import OutputStage
from ..pe import PEArray
from .control import Controller
from .fetch import DescriptorFetch
from .filters import FilterLoader
from .lanes import LaneSerializer
from .params import ParamLoader
from .reader import FeatureReader
from .residual import ResidualReader
from .scheduler import Scheduler, tag_layout
from .weight_transform import WinogradFilterLoader
from .winograd_path import WinogradDatapath
from .writer import FeatureWriter

__all__ = ["Engine", "EngineError"]


class Engine(wiring.Component):
    """Descriptor-driven layer engine (the parts of this package, connected).

    Parameter: ``config`` (:class:`EngineConfig`).

    Members (all in the ``sync`` domain):
      * ``start``: ``In(1)`` — pulse; starts at descriptor ``desc_base`` if not busy.
      * ``desc_base``: ``In(range(param_depth))``.
      * ``busy``, ``done``, ``error``: ``Out(1)`` — ``done``/``error`` hold until the next start.
      * ``err_code``: ``Out(4)`` (:class:`EngineError`), ``layer``: ``Out(16)`` (current layer).
      * ``cycles``: ``Out(32)`` — cycles from start to done/error; ``desc_end``: ``Out(1)`` —
        high for the last busy cycle of each descriptor (the cycles between two are the
        descriptor's: :func:`nibble.host.passes.lower.layer_cycles` models them).
      * ``beats``: ``Out(32)`` — beats (vectors of ``vc`` features) accepted by the PE array.
      * Memory ports (:mod:`nibble.hw.mem.port`, any latency): ``f_rd`` (feature reads of the
        beats; ``f_rd_px1`` … ``f_rd_px{vp−1}`` those of the other pixel lanes) and ``f_rd2`` (the
        residual operand), ``Out(read_port(feature_depth, 8·vc))``;
        ``f_wr``: ``Out(write_port(feature_depth, 8·vc))``; ``w_rd``:
        ``Out(read_port(weight_depth, 4·vc))`` (and ``w_rd2`` with ``weight_ports = 2``: the
        filter loader's second port, :class:`~.filters.FilterLoader`); ``p_rd``:
        ``Out(read_port(param_depth, 32))``.
        No request is issued while ``busy`` is low, and every response is taken before it falls.
    """

    def __init__(self, config: EngineConfig):
        self.config = c = config
        super().__init__({
            "start": In(1),
            "desc_base": In(range(c.param_depth)),
            "busy": Out(1), "done": Out(1), "error": Out(1),
            "err_code": Out(4), "layer": Out(16),
            "cycles": Out(32), "beats": Out(32), "desc_end": Out(1),
            "f_rd": Out(read_port(c.feature_depth, 8 * c.vc)),
            **{f"f_rd_px{j}": Out(read_port(c.feature_depth, 8 * c.vc)) for j in range(1, c.vp)},
            "f_rd2": Out(read_port(c.feature_depth, 8 * c.vc)),
            "f_wr": Out(write_port(c.feature_depth, 8 * c.vc)),
            "w_rd": Out(read_port(c.weight_depth, 4 * c.vc)),
            **({"w_rd2": Out(read_port(c.weight_depth, 4 * c.vc))} if c.weight_ports == 2 else {}),
            "p_rd": Out(read_port(c.param_depth, 32)),
        })

    def elaborate(self, platform):
        m = Module()
        c = self.config
        W = c.winograd
        m.submodules.ctrl = ctrl = Controller(c)
        m.submodules.fetch = fetch = DescriptorFetch(c)
        m.submodules.params = params = ParamLoader(c)
        m.submodules.filters = filters = FilterLoader(c)
        m.submodules.sched = sched = Scheduler(c)
        m.submodules.reader = reader = FeatureReader(c)
        m.submodules.pe_array = pea = PEArray(m=c.m, vc=c.vc, acc_width=c.acc_width, depth=c.filter_depth,
                                              tag_shape=tag_layout(c), winograd=W, vp=c.vp, w_buses=c.weight_ports)
        m.submodules.res_reader = rr = ResidualReader(c.m, c.vc, c.acc_width, c.feature_depth, lanes=c.vp)
        m.submodules.out_stage = ost = OutputStage(m=c.m, acc_width=c.acc_width, tag_shape=range(c.feature_depth),
                                                   lanes=c.vp)
        m.submodules.writer = writer = FeatureWriter(c)
        d = ctrl.desc

        # controller ⇄ parts
        m.d.comb += [ctrl.start.eq(self.start), ctrl.desc_base.eq(self.desc_base),
                     self.busy.eq(ctrl.busy), self.done.eq(ctrl.done), self.error.eq(ctrl.error),
                     self.err_code.eq(ctrl.err_code), self.layer.eq(ctrl.layer),
                     self.cycles.eq(ctrl.cycles), self.beats.eq(ctrl.beats), self.desc_end.eq(ctrl.desc_end),
                     ctrl.beat.eq(pea.i.valid & pea.i.ready)]
        wiring.connect(m, ctrl.fetch_cmd, fetch.cmd)
        wiring.connect(m, fetch.o, ctrl.fetch)
        wiring.connect(m, ctrl.param_cmd, params.cmd)
        wiring.connect(m, ctrl.filter_cmd, filters.cmd)
        wiring.connect(m, ctrl.sched_cmd, sched.cmd)
        m.d.comb += [ctrl.param_busy.eq(params.busy), ctrl.filter_busy.eq(filters.busy),
                     ctrl.sched_busy.eq(sched.busy),
                     sched.desc.eq(d), sched.tcb.eq(ctrl.tcb), sched.wmode.eq(ctrl.wmode)]

        # memory ports: parameter memory shared by the fetch and the parameter loader, weight
        # memory by the two filter loaders (never at the same time; the mux keeps the order)
        m.submodules.p_mux = p_mux = ReadPortMux(2, c.param_depth, 32)
        wiring.connect(m, fetch.p_rd, p_mux.c0)
        wiring.connect(m, params.p_rd, p_mux.c1)
        wiring.connect(m, p_mux.bus, wiring.flipped(self.p_rd))
        wiring.connect(m, reader.f_rd, wiring.flipped(self.f_rd))
        for j in range(1, c.vp):
            wiring.connect(m, getattr(reader, f"f_rd_px{j}"), wiring.flipped(getattr(self, f"f_rd_px{j}")))
        wiring.connect(m, rr.r_rd, wiring.flipped(self.f_rd2))
        wiring.connect(m, writer.f_wr, wiring.flipped(self.f_wr))

        # output stage: layer constants, the block's biases and slopes
        m.d.comb += [ost.sh.eq(d.sh[:7]), ost.relu.eq(d.relu), ost.act.eq(d.act), ost.prelu.eq(d.prelu),
                     ost.clip_lo.eq(d.clip_lo), ost.clip_hi.eq(d.clip_hi),
                     ost.res_en.eq(d.res), ost.res_sh.eq(d.res_sh),
                     ost.bias.eq(params.bias), ost.slope.eq(params.slope), ost.dsh.eq(params.dsh),
                     rr.en.eq(d.res), rr.offset.eq(d.res_base - d.out_base)]
        wiring.connect(m, rr.o, ost.i)
        wiring.connect(m, ost.o, writer.i)

        # filter caches: direct-mode loader (and the weight transform)
        m.d.comb += [pea.w_en.eq(filters.w_en), pea.w_pe.eq(filters.w_pe), pea.w_addr.eq(filters.w_addr),
                     pea.w_data.as_value().eq(filters.w_data)]
        if c.weight_ports == 2:
            m.d.comb += [pea.w2_en.eq(filters.w2_en), pea.w2_pe.eq(filters.w2_pe), pea.w2_addr.eq(filters.w2_addr),
                         pea.w2_data.as_value().eq(filters.w2_data)]
            wiring.connect(m, filters.w_rd2, wiring.flipped(self.w_rd2))

        # direct mode: beats → PE array → residual reader
        beat = reader.o.payload.beat
        direct_front = [
            pea.i.valid.eq(reader.o.valid), reader.o.ready.eq(pea.i.ready),
            pea.i.payload.addr.eq(beat.w), pea.i.payload.first.eq(beat.first),
            pea.i.payload.last.eq(beat.last), pea.i.payload.tag.eq(beat.tag),
        ] + [pea.i.payload.x[l].eq(reader.o.payload.x.word_select(l, 8).as_signed()) for l in range(c.vc)]
        if c.vp > 1:
            direct_front += [pea.i.payload.xl[j - 1][l].eq(reader.o.payload.xl[j - 1].word_select(l, 8).as_signed())
                             for j in range(1, c.vp) for l in range(c.vc)]
        res = pea.o.payload
        if c.vp == 1:
            direct_back = [
                rr.i.valid.eq(pea.o.valid), pea.o.ready.eq(rr.i.ready),
                rr.i.payload.acc.eq(res.acc), rr.i.payload.pool_first.eq(res.tag.pool_first),
                rr.i.payload.pool_last.eq(res.tag.pool_last), rr.i.payload.skip.eq(res.tag.skip),
                rr.i.payload.tag.eq(res.tag.addr),
            ]
        else:
            # the live pixel lanes of each result, one after the other, into the one residual
            # reader, output stage and writer
            m.submodules.lanes = ser = LaneSerializer(c)
            m.d.comb += [ser.i.payload.acc.eq(res.acc), ser.i.payload.tag.eq(res.tag),
                         ser.i.payload.accl.eq(res.accl)]
            direct_back = [ser.i.valid.eq(pea.o.valid), pea.o.ready.eq(ser.i.ready),
                           rr.i.valid.eq(ser.o.valid), ser.o.ready.eq(rr.i.ready), rr.i.payload.eq(ser.o.payload)]
        wino_busy = Const(0)
        if not W:
            m.d.comb += direct_front + direct_back
            wiring.connect(m, filters.w_rd, wiring.flipped(self.w_rd))
        else:
            m.submodules.wino_loader = wl = WinogradFilterLoader(c)
            m.submodules.winograd = wdp = WinogradDatapath(c)
            wiring.connect(m, ctrl.wino_cmd, wl.cmd)
            m.submodules.w_mux = w_mux = ReadPortMux(2, c.weight_depth, 4 * c.vc)
            wiring.connect(m, filters.w_rd, w_mux.c0)
            wiring.connect(m, wl.w_rd, w_mux.c1)
            wiring.connect(m, w_mux.bus, wiring.flipped(self.w_rd))
            m.d.comb += [ctrl.wino_busy.eq(wl.busy), wl.in_cb.eq(d.in_cb), wl.tcb.eq(ctrl.tcb),
                         pea.u_en.eq(wl.u_en), pea.u_data.eq(wl.u_data), pea.wmode.eq(ctrl.wmode),
                         wdp.in_cb.eq(d.in_cb), wdp.xmask.eq(d.xmask), wdp.ymask.eq(d.ymask),
                         wdp.pool_en.eq((d.pool_kh != 1) | (d.pool_kw != 1)), wdp.ubank.eq(ctrl.ubank),
                         wdp.out_row.eq(d.out_row), wdp.out_pix.eq(d.out_pix),
                         wdp.i.payload.eq(reader.o.payload),
                         # the pixel lanes' fields (vp > 1) come last in both layouts; lane 0 only
                         wdp.pe_o.payload.as_value().eq(pea.o.payload.as_value()[:wdp.pe_o.payload.shape().size])]
            with m.If(wl.u_en):
                m.d.comb += [pea.w_pe.eq(wl.w_pe), pea.w_addr.eq(wl.w_addr)]
            wino_front = [
                wdp.i.valid.eq(reader.o.valid), reader.o.ready.eq(wdp.i.ready),
                pea.i.valid.eq(wdp.pe_i.valid), wdp.pe_i.ready.eq(pea.i.ready),
                pea.i.payload.as_value().eq(wdp.pe_i.payload.as_value()),
            ]
            wino_back = [
                wdp.pe_o.valid.eq(pea.o.valid), pea.o.ready.eq(wdp.pe_o.ready),
                rr.i.valid.eq(wdp.o.valid), wdp.o.ready.eq(rr.i.ready),
                rr.i.payload.as_value().eq(wdp.o.payload.as_value()),      # lane 0 (the lane field is last)
            ]
            with m.If(ctrl.wmode):
                m.d.comb += wino_front + wino_back
            with m.Else():
                m.d.comb += direct_front + direct_back
            wino_busy = wdp.busy

        lanes_busy = ser.busy if c.vp > 1 else Const(0)
        m.d.comb += ctrl.pipe_busy.eq(sched.o.valid | reader.busy | pea.busy | rr.busy | ost.busy | wino_busy
                                      | lanes_busy)
        if not W:
            m.d.comb += ctrl.wino_busy.eq(0)
        wiring.connect(m, sched.o, reader.i)
        return m
