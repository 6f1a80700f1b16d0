"""Parameter loader: the biases (and PReLU slopes, per-channel shift offsets) of one output block
(DESIGN §4, ARITHMETIC §4.4, §4.5)."""
from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import EngineConfig
from ..isa import DSH_BITS, PRELU_BITS
from ..mem.port import BurstReader, read_port
from ..output import BIAS_WIDTH

__all__ = ["ParamLoader"]


class ParamLoader(wiring.Component):
    """Loads ``m`` int32 biases, then (PReLU layers) ``m`` slope codes, then (``ch_sh`` layers)
    ``m`` shift offset codes, into registers.

    Parameter: ``config`` (:class:`EngineConfig`).

    Members:
      * ``cmd``: ``In(stream.Signature({bias, slope, shift: range(param_depth), prelu: 1,
        ch_sh: 1}))`` — word addresses of the block's first bias, slope and shift offset; taken
        when idle.
      * ``p_rd``: ``Out(read_port(param_depth, 32))``.
      * ``bias``: ``Out(ArrayLayout(signed(BIAS_WIDTH), m))``, ``slope``:
        ``Out(ArrayLayout(signed(PRELU_BITS), m))`` (the low bits of each slope word), ``dsh``:
        ``Out(ArrayLayout(unsigned(DSH_BITS), m))`` (the low bits of each shift word; 0 without
        ``ch_sh``) — held until the next command; the output stage reads them for the whole block.
      * ``busy``: ``Out(1)``.

    Latency: ``m`` requests per burst (1 to 3 bursts) plus the memory's latency (``m + 2`` cycles
    for one burst with a :class:`~nibble.hw.mem.port.SyncReadPort`, ``m + 1`` more per further burst).
    """

    def __init__(self, config: EngineConfig):
        self.config = c = config
        super().__init__({
            "cmd": In(stream.Signature(data.StructLayout({"bias": range(c.param_depth),
                                                          "slope": range(c.param_depth),
                                                          "shift": range(c.param_depth), "prelu": 1,
                                                          "ch_sh": 1}))),
            "p_rd": Out(read_port(c.param_depth, 32)),
            "bias": Out(data.ArrayLayout(signed(BIAS_WIDTH), c.m)),
            "slope": Out(data.ArrayLayout(signed(PRELU_BITS), c.m)),
            "dsh": Out(data.ArrayLayout(unsigned(DSH_BITS), c.m)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        M = self.config.m
        m.submodules.burst = burst = BurstReader(self.config.param_depth, 32, M)
        wiring.connect(m, burst.port, wiring.flipped(self.p_rd))
        bias = Array(Signal(signed(BIAS_WIDTH), name=f"bias{i}") for i in range(M))
        slope = Array(Signal(signed(PRELU_BITS), name=f"slope{i}") for i in range(M))
        dsh = Array(Signal(unsigned(DSH_BITS), name=f"dsh{i}") for i in range(M))
        for i in range(M):
            m.d.comb += [self.bias[i].eq(bias[i]), self.slope[i].eq(slope[i]), self.dsh[i].eq(dsh[i])]
        got = Signal(range(3 * M + 1))
        slope_base = Signal.like(self.cmd.payload.slope)
        shift_base = Signal.like(self.cmd.payload.shift)
        prelu, ch_sh = Signal(), Signal()
        m.d.comb += burst.o.ready.eq(1)
        with m.If(burst.o.valid):      # words in order: m biases, [m slopes], [m shift offsets]
            m.d.sync += got.eq(got + 1)
            with m.If(got < M):
                m.d.sync += bias[got].eq(burst.o.payload)
            with m.Elif((got < 2 * M) & prelu):
                m.d.sync += slope[got - M].eq(burst.o.payload)
            with m.Elif(got < 2 * M):
                m.d.sync += dsh[got - M].eq(burst.o.payload)
            with m.Else():
                m.d.sync += dsh[got - 2 * M].eq(burst.o.payload)
        with m.FSM(name="params") as fsm:
            with m.State("IDLE"):
                m.d.comb += [self.cmd.ready.eq(burst.cmd.ready), burst.cmd.valid.eq(self.cmd.valid),
                             burst.cmd.payload.base.eq(self.cmd.payload.bias), burst.cmd.payload.n.eq(M)]
                with m.If(self.cmd.valid & burst.cmd.ready):
                    m.d.sync += [got.eq(0), slope_base.eq(self.cmd.payload.slope),
                                 shift_base.eq(self.cmd.payload.shift), prelu.eq(self.cmd.payload.prelu),
                                 ch_sh.eq(self.cmd.payload.ch_sh)]
                    with m.If(~self.cmd.payload.ch_sh):
                        m.d.sync += [dsh[i].eq(0) for i in range(M)]
                    with m.If(self.cmd.payload.prelu):
                        m.next = "SLOPE"
                    with m.Elif(self.cmd.payload.ch_sh):
                        m.next = "SHIFT"
                    with m.Else():
                        m.next = "WAIT"
            with m.State("SLOPE"):      # the slope burst follows the bias burst
                m.d.comb += [burst.cmd.valid.eq(1), burst.cmd.payload.base.eq(slope_base),
                             burst.cmd.payload.n.eq(M)]
                with m.If(burst.cmd.ready):
                    with m.If(ch_sh):
                        m.next = "SHIFT"
                    with m.Else():
                        m.next = "WAIT"
            with m.State("SHIFT"):      # the shift-offset burst follows the bias (and slope) burst
                m.d.comb += [burst.cmd.valid.eq(1), burst.cmd.payload.base.eq(shift_base),
                             burst.cmd.payload.n.eq(M)]
                with m.If(burst.cmd.ready):
                    m.next = "WAIT"
            with m.State("WAIT"):
                with m.If(~burst.busy):
                    m.next = "IDLE"
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        return m
