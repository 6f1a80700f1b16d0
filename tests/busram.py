"""Test-only bus slaves and a device top for the UART bridge tests."""
from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from nibble.hw.bridge import UARTBridge
from nibble.hw.bus import READ_LATENCY, BusSignature

__all__ = ["BusRAM", "DeviceTop"]


class BusRAM(wiring.Component):
    """A RAM of ``depth`` 32-bit words at word addresses ``0 .. depth-1`` on the internal bus.

    Words ``hole[0] .. hole[1]-1`` and every address ``>= depth`` are unmapped: ``addr_err`` is
    high for them (combinational). Reads answer ``READ_LATENCY`` cycles after ``r_en``.

    Members
    -------
    bus : In(BusSignature())
        Slave side of the internal bus.
    """

    bus: In(BusSignature())

    def __init__(self, depth, hole=(0, 0), init=()):
        self.depth = depth
        self.hole = hole
        self.mem = Memory(shape=32, depth=depth, init=init)
        self._w_port = self.mem.write_port()
        self._r_port = self.mem.read_port()
        super().__init__()

    def mapped(self, word_addr):
        """Python mirror of ``~addr_err`` for a word address."""
        return word_addr < self.depth and not self.hole[0] <= word_addr < self.hole[1]

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = self.mem
        w_port, r_port = self._w_port, self._r_port
        lo, hi = self.hole
        m.d.comb += [
            self.bus.addr_err.eq((self.bus.addr >= self.depth)
                                 | ((self.bus.addr >= lo) & (self.bus.addr < hi))),
            w_port.addr.eq(self.bus.addr),
            r_port.addr.eq(self.bus.addr),
            w_port.data.eq(self.bus.w_data),
            w_port.en.eq(self.bus.w_en & ~self.bus.addr_err),
        ]
        # r_port.data is valid 1 cycle after r_en; delay r_valid and data to READ_LATENCY.
        valid = Signal(READ_LATENCY)
        m.d.sync += valid.eq(Cat(self.bus.r_en, valid[:-1]))
        data = r_port.data
        for _ in range(READ_LATENCY - 1):
            reg = Signal(32)
            m.d.sync += reg.eq(data)
            data = reg
        m.d.comb += [self.bus.r_data.eq(data), self.bus.r_valid.eq(valid[-1])]
        return m


class DeviceTop(wiring.Component):
    """Bridge + :class:`BusRAM`, with the simulated device's port names.

    Members: ``uart_rx`` In(1), ``uart_tx`` Out(1), ``idle`` Out(1) (plus ``clk``/``rst`` in the
    generated Verilog).
    """

    uart_rx: In(1, init=1)
    uart_tx: Out(1, init=1)
    idle: Out(1)

    def __init__(self, divisor, depth, hole=(0, 0), max_payload=1024, init=()):
        self.bridge = UARTBridge(divisor, max_payload=max_payload)
        self.ram = BusRAM(depth, hole=hole, init=init)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.bridge = self.bridge
        m.submodules.ram = self.ram
        wiring.connect(m, self.bridge.bus, self.ram.bus)
        m.d.comb += [
            self.bridge.rx.eq(self.uart_rx),
            self.uart_tx.eq(self.bridge.tx),
            self.idle.eq(self.bridge.idle),
        ]
        return m
