"""8N1 UART receiver and transmitter with byte streams.

Both blocks run in the ``sync`` domain and take ``divisor``, the number of clock cycles per bit
(``divisor = f_clk / baud``, rounded to the nearest integer; the rounding error must stay below
about 2 % for a reliable link). The line format is 8N1: one start bit (0), eight data bits LSB
first, one stop bit (1); the line idles high.

Bytes move through :mod:`amaranth.lib.stream` interfaces with an ``unsigned(8)`` payload:
:class:`UARTRx` has an output stream ``o``, :class:`UARTTx` an input stream ``i``.
"""
from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["UARTRx", "UARTTx", "check_divisor"]

#: Smallest accepted ``divisor``: the receiver samples mid-bit after a 2-stage synchronizer.
MIN_DIVISOR = 4


def check_divisor(divisor):
    """Validate a UART ``divisor`` (clock cycles per bit) and return it.

    Raises
    ------
    ValueError
        ``"UART divisor must be an integer >= 4, not {divisor!r}"`` when ``divisor`` is not an
        ``int`` (``bool`` excluded) or is below 4.
    """
    if not isinstance(divisor, int) or isinstance(divisor, bool) or divisor < MIN_DIVISOR:
        raise ValueError(f"UART divisor must be an integer >= {MIN_DIVISOR}, not {divisor!r}")
    return divisor


class UARTRx(wiring.Component):
    """8N1 UART receiver.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least 4.

    Members
    -------
    rx : In(1), init 1
        Serial line (idle high). Asynchronous: passes through a 2-stage
        :class:`~amaranth.lib.cdc.FFSynchronizer` first.
    o : Out(stream.Signature(unsigned(8)))
        Received bytes. ``o.payload`` is held and ``o.valid`` stays high until ``o.ready``.
        One byte of output buffering: a byte whose stop bit is sampled while the previous byte
        is still waiting (``o.valid & ~o.ready``) is dropped and ``overrun`` pulses.
    busy : Out(1)
        High from the detected start bit until the stop bit is sampled (or, after a framing
        error, until the line is high again).
    frame_err : Out(1)
        One-cycle pulse when the stop bit is sampled low (framing error); the byte is discarded
        and the receiver waits for the line to return high, then for the next start bit edge.
    overrun : Out(1)
        One-cycle pulse when a good byte is dropped because ``o`` was still full.

    Timing
    ------
    A falling edge on ``rx`` (seen after the synchronizer) starts a byte. The start bit is
    checked ``divisor // 2`` cycles later (mid-bit); a high line there is a glitch and the
    receiver goes back to idle. Data bits and the stop bit are then sampled every ``divisor``
    cycles, i.e. at the middle of each bit. After the stop bit sample the receiver is idle again,
    half a bit before the stop bit ends, so it resynchronises on each start bit edge and tolerates
    a transmitter that is slightly faster.

    Latency: :attr:`latency` = ``9 * divisor + divisor // 2 + 3`` cycles from the first cycle
    ``rx`` is low (start bit) to ``o.valid``. Throughput: one byte per ``10 * divisor`` cycles
    (full line rate, back-to-back bytes), provided the sink takes each byte within
    ``10 * divisor`` cycles.
    """

    rx: In(1, init=1)
    o: Out(stream.Signature(unsigned(8)))
    busy: Out(1)
    frame_err: Out(1)
    overrun: Out(1)

    def __init__(self, divisor):
        self.divisor = check_divisor(divisor)
        super().__init__()

    @property
    def latency(self):
        """Cycles from the start bit's first cycle on ``rx`` to ``o.valid``."""
        return 9 * self.divisor + self.divisor // 2 + 3

    def elaborate(self, platform):
        m = Module()
        divisor = self.divisor

        rx_s = Signal(init=1)
        m.submodules.rx_sync = FFSynchronizer(self.rx, rx_s, init=1)

        timer = Signal(range(divisor))
        bitno = Signal(range(8))
        shreg = Signal(8)

        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        with m.FSM(name="rx_fsm"):
            with m.State("IDLE"):
                with m.If(~rx_s):
                    m.d.sync += timer.eq(divisor // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                m.d.comb += self.busy.eq(1)
                with m.If(timer == 0):
                    m.d.sync += timer.eq(divisor - 1)
                    with m.If(rx_s):
                        m.next = "IDLE"          # glitch: not a start bit
                    with m.Else():
                        m.d.sync += bitno.eq(0)
                        m.next = "DATA"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("DATA"):
                m.d.comb += self.busy.eq(1)
                with m.If(timer == 0):
                    m.d.sync += [
                        timer.eq(divisor - 1),
                        shreg.eq(Cat(shreg[1:], rx_s)),
                        bitno.eq(bitno + 1),
                    ]
                    with m.If(bitno == 7):
                        m.next = "STOP"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("STOP"):
                m.d.comb += self.busy.eq(1)
                with m.If(timer == 0):
                    with m.If(rx_s):
                        with m.If(self.o.valid & ~self.o.ready):
                            m.d.comb += self.overrun.eq(1)
                        with m.Else():
                            m.d.sync += [
                                self.o.payload.eq(shreg),
                                self.o.valid.eq(1),
                            ]
                        m.next = "IDLE"
                    with m.Else():
                        m.d.comb += self.frame_err.eq(1)
                        m.next = "BREAK"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("BREAK"):
                m.d.comb += self.busy.eq(1)
                with m.If(rx_s):
                    m.next = "IDLE"

        return m


class UARTTx(wiring.Component):
    """8N1 UART transmitter.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least 4.

    Members
    -------
    i : In(stream.Signature(unsigned(8)))
        Bytes to send. ``i.ready`` is high while the transmitter is idle and in the last cycle of
        a stop bit, so a byte offered continuously follows the previous one without a gap.
    tx : Out(1), init 1
        Serial line, driven from a register (glitch free), idle high.
    busy : Out(1)
        High from the cycle after a byte is accepted until its stop bit has lasted ``divisor``
        cycles.

    Timing
    ------
    Latency: the start bit appears on ``tx`` 1 cycle after the transfer on ``i``
    (:attr:`latency`); every bit lasts ``divisor`` cycles. Throughput: one byte per
    ``10 * divisor`` cycles (full line rate) when ``i.valid`` is held high.
    """

    i: In(stream.Signature(unsigned(8)))
    tx: Out(1, init=1)
    busy: Out(1)

    def __init__(self, divisor):
        self.divisor = check_divisor(divisor)
        super().__init__()

    @property
    def latency(self):
        """Cycles from the transfer on ``i`` to the first cycle of the start bit on ``tx``."""
        return 1

    def elaborate(self, platform):
        m = Module()
        divisor = self.divisor

        timer = Signal(range(divisor))
        bitno = Signal(range(10))
        shreg = Signal(9)                         # data bits then the stop bit
        active = Signal()
        last = Signal()                           # last cycle of the stop bit

        m.d.comb += [
            last.eq(active & (timer == 0) & (bitno == 9)),
            self.i.ready.eq(~active | last),
            self.busy.eq(active),
        ]

        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [
                self.tx.eq(0),
                shreg.eq(Cat(self.i.payload, C(1, 1))),
                timer.eq(divisor - 1),
                bitno.eq(0),
                active.eq(1),
            ]
        with m.Elif(active):
            with m.If(timer == 0):
                m.d.sync += timer.eq(divisor - 1)
                with m.If(bitno == 9):
                    m.d.sync += active.eq(0)
                with m.Else():
                    m.d.sync += [
                        self.tx.eq(shreg[0]),
                        shreg.eq(shreg >> 1),
                        bitno.eq(bitno + 1),
                    ]
            with m.Else():
                m.d.sync += timer.eq(timer - 1)

        return m
