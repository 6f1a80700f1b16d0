"""UARTRx / UARTTx in amaranth.sim: loopback, line waveforms, latency, errors, backpressure."""
import random

import pytest
from amaranth import *
from amaranth.sim import Simulator

from nibble.hw.bridge import UARTBridge
from nibble.hw.uart import UARTRx, UARTTx

SEED = 1729


def line_bits(byte, d, stop=1):
    """Reference 8N1 waveform of one byte, one entry per clock cycle."""
    bits = [0] + [(byte >> i) & 1 for i in range(8)] + [stop]
    return [b for b in bits for _ in range(d)]


async def drive_line(ctx, pin, waveform):
    for level in waveform:
        ctx.set(pin, level)
        await ctx.tick()


class Loopback(Elaboratable):
    def __init__(self, d):
        self.tx = UARTTx(d)
        self.rx = UARTRx(d)

    def elaborate(self, platform):
        m = Module()
        m.submodules.tx = self.tx
        m.submodules.rx = self.rx
        m.d.comb += self.rx.rx.eq(self.tx.tx)
        return m


def run(dut, *testbenches, background=()):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for tb in testbenches:
        sim.add_testbench(tb)
    for tb in background:
        sim.add_testbench(tb, background=True)
    sim.run()


@pytest.mark.parametrize("divisor", [3, 0, -8, 2.5, True, "4"])
def test_divisor_validation(divisor):
    for cls in (UARTRx, UARTTx, UARTBridge):
        with pytest.raises(ValueError, match=rf"^UART divisor must be an integer >= 4, not {divisor!r}$"):
            cls(divisor)


@pytest.mark.parametrize("throttled", [False, True], ids=["full_rate", "throttled"])
def test_loopback_all_bytes(throttled):
    """Every byte value through Tx → line → Rx, at full rate and with source gaps / sink stalls."""
    print("seed", SEED)
    rng = random.Random(SEED)
    d = 4
    dut = Loopback(d)
    data = list(range(256))
    got, errors, starts = [], [], []

    async def source(ctx):
        cycle = 0
        for byte in data:
            if throttled and rng.random() < 0.3:
                ctx.set(dut.tx.i.valid, 0)
                gap = rng.randrange(1, 3 * d)
                await ctx.tick().repeat(gap)
                cycle += gap
            ctx.set(dut.tx.i.payload, byte)
            ctx.set(dut.tx.i.valid, 1)
            while True:
                _, _, ready = await ctx.tick().sample(dut.tx.i.ready)
                cycle += 1
                if ready:
                    starts.append(cycle)
                    break
        ctx.set(dut.tx.i.valid, 0)

    async def sink(ctx):
        while len(got) < len(data):
            ready = rng.random() < 0.5 if throttled else 1
            ctx.set(dut.rx.o.ready, ready)
            _, _, valid, payload, fe, ov = await ctx.tick().sample(
                dut.rx.o.valid, dut.rx.o.payload, dut.rx.frame_err, dut.rx.overrun)
            if valid and ready:
                got.append(payload)
            if fe or ov:
                errors.append((len(got), fe, ov))

    run(dut, source, sink)
    assert got == data
    assert errors == []
    if not throttled:
        assert {b - a for a, b in zip(starts, starts[1:])} == {10 * d}


@pytest.mark.parametrize("divisor", [4, 7])
def test_tx_waveform_back_to_back(divisor):
    """Bytes offered continuously leave without gaps; start bit 1 cycle after the transfer."""
    d = divisor
    dut = UARTTx(d)
    data = [0x55, 0x00, 0xFF, 0xA5]
    wave = []

    async def source(ctx):
        for byte in data:
            ctx.set(dut.i.payload, byte)
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def monitor(ctx):
        assert ctx.get(dut.tx) == 1
        await ctx.tick()                          # the first transfer happens at this edge
        for _ in range(len(data) * 10 * d + 3):
            wave.append(ctx.get(dut.tx))
            assert ctx.get(dut.busy) == (len(wave) <= len(data) * 10 * d)
            await ctx.tick()

    run(dut, source, monitor)
    assert dut.latency == 1
    expected = [b for byte in data for b in line_bits(byte, d)] + [1] * 3
    assert wave == expected


@pytest.mark.parametrize("divisor", [4, 7])
def test_rx_back_to_back_and_latency(divisor):
    print("seed", SEED)
    rng = random.Random(SEED + divisor)
    d = divisor
    dut = UARTRx(d)
    data = [rng.randrange(256) for _ in range(8)]
    valid_at, got = [], []

    async def line(ctx):
        await ctx.tick().repeat(3)
        await drive_line(ctx, dut.rx, [b for byte in data for b in line_bits(byte, d)] + [1] * 2 * d)

    async def sink(ctx):
        ctx.set(dut.o.ready, 1)
        await ctx.tick().repeat(3)               # the start bit is driven from here: cycle 0
        for cycle in range(1, (len(data) + 1) * 10 * d):
            _, _, valid, payload, fe = await ctx.tick().sample(dut.o.valid, dut.o.payload,
                                                               dut.frame_err)
            assert not fe
            if ctx.get(dut.o.valid):
                valid_at.append(cycle)
            if valid:
                got.append(payload)

    run(dut, line, sink)
    assert got == data
    assert valid_at == [dut.latency + 10 * d * k for k in range(len(data))]
    assert dut.latency == 9 * d + d // 2 + 3


@pytest.mark.parametrize("bit_cycles", [31, 33])
def test_rx_tolerates_clock_mismatch(bit_cycles):
    """A transmitter 3 % fast or slow: the receiver resynchronises on every start bit."""
    print("seed", SEED)
    rng = random.Random(SEED)
    dut = UARTRx(32)
    data = [rng.randrange(256) for _ in range(6)]
    got = []

    async def line(ctx):
        await drive_line(ctx, dut.rx, [b for byte in data for b in line_bits(byte, bit_cycles)]
                         + [1] * 40)

    async def sink(ctx):
        ctx.set(dut.o.ready, 1)
        while len(got) < len(data):
            _, _, valid, payload, fe = await ctx.tick().sample(dut.o.valid, dut.o.payload,
                                                               dut.frame_err)
            assert not fe
            if valid:
                got.append(payload)

    run(dut, sink, background=[line])
    assert got == data


def test_rx_bad_stop_bit():
    """A low stop bit is a framing error: the byte is dropped, the line must go high again,
    and the next start bit edge is received normally."""
    d = 4
    dut = UARTRx(d)
    got, errors = [], []

    async def line(ctx):
        await ctx.tick().repeat(2)
        await drive_line(ctx, dut.rx,
                         line_bits(0x3C, d, stop=0)     # bad stop bit...
                         + [0] * 5 * d                  # ...followed by a break
                         + [1] * d
                         + line_bits(0x81, d)
                         + line_bits(0x00, d, stop=0)   # bad stop bit, then at once a byte
                         + [1] * d
                         + line_bits(0x7E, d) + [1] * 3 * d)

    async def sink(ctx):
        ctx.set(dut.o.ready, 1)
        for _ in range(2 + 50 * d):
            _, _, valid, payload, fe = await ctx.tick().sample(dut.o.valid, dut.o.payload,
                                                               dut.frame_err)
            if valid:
                got.append(payload)
            if fe:
                errors.append(len(got))

    run(dut, line, sink)
    assert got == [0x81, 0x7E]
    assert errors == [0, 1]


def test_rx_glitch_is_not_a_start_bit():
    d = 8
    dut = UARTRx(d)
    got = []

    async def line(ctx):
        await ctx.tick().repeat(2)
        await drive_line(ctx, dut.rx, [0, 0, 1] + [1] * 3 * d + line_bits(0x42, d) + [1] * 2 * d)

    async def sink(ctx):
        ctx.set(dut.o.ready, 1)
        for _ in range(2 + 16 * d):
            _, _, valid, payload, fe = await ctx.tick().sample(dut.o.valid, dut.o.payload,
                                                               dut.frame_err)
            assert not fe
            if valid:
                got.append(payload)

    run(dut, line, sink)
    assert got == [0x42]


def test_rx_overrun_keeps_the_pending_byte():
    d = 4
    dut = UARTRx(d)
    overruns = []

    async def line(ctx):
        await drive_line(ctx, dut.rx, line_bits(0x11, d) + line_bits(0x22, d) + [1] * 30 * d)

    async def sink(ctx):
        ctx.set(dut.o.ready, 0)
        for _ in range(25 * d):
            _, _, ov = await ctx.tick().sample(dut.overrun)
            if ov:
                overruns.append(1)
        assert ctx.get(dut.o.valid) and ctx.get(dut.o.payload) == 0x11
        ctx.set(dut.o.ready, 1)
        await ctx.tick()
        assert not ctx.get(dut.o.valid)

    run(dut, line, sink)
    assert overruns == [1]
