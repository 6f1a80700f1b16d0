"""cocotb testbench: UART bridge + bus RAM (tests/busram.py ``DeviceTop``) on generated Verilog.

The testbench drives the ``uart_rx`` pin bit-serially and decodes ``uart_tx``; requests come from
nibble.host.link and expected responses from its BridgeModel. Parameters arrive in environment
variables set by tests/test_bridge_cocotb.py: NIBBLE_TB_DIVISOR, NIBBLE_TB_DEPTH,
NIBBLE_TB_HOLE (``lo,hi``), NIBBLE_TB_MAX_PAYLOAD, NIBBLE_TB_SEED.
"""
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge, with_timeout

from nibble.host.link import BridgeModel, Cmd, Status, decode_response
from nibble.host.link import encode_request as _encode_request
from nibble.hw.isa import TIMEOUT_BITS

D = int(os.environ["NIBBLE_TB_DIVISOR"])
DEPTH = int(os.environ["NIBBLE_TB_DEPTH"])
HOLE = tuple(int(x) for x in os.environ["NIBBLE_TB_HOLE"].split(","))
MAX_PAYLOAD = int(os.environ["NIBBLE_TB_MAX_PAYLOAD"])
SEED = int(os.environ["NIBBLE_TB_SEED"])
CLOCK_NS = 10
_SEQ = iter(range(1, 1 << 16))


def encode_request(cmd, addr=0, **kw):
    """A request with the next sequence number unless ``seq`` is given."""
    kw.setdefault("seq", next(_SEQ))
    return _encode_request(cmd, addr, **kw)


def mapped(word):
    return word < DEPTH and not HOLE[0] <= word < HOLE[1]


#: One model for the whole run: the RAM keeps its contents from test to test (reset clears
#: only the bridge), and so does the model's memory.
MODEL = BridgeModel(mapped, MAX_PAYLOAD)


class Uart:
    """Bit-serial driver for ``uart_rx`` and a decoder task for ``uart_tx``."""

    def __init__(self, dut):
        self.dut = dut
        self.received = bytearray()
        self.framing_errors = 0
        self._monitor = cocotb.start_soon(self._decode())

    async def send(self, data):
        for byte in data:
            for bit in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
                self.dut.uart_rx.value = bit
                await ClockCycles(self.dut.clk, D)

    async def _decode(self):
        tx = self.dut.uart_tx
        while True:
            await FallingEdge(tx)
            await ClockCycles(self.dut.clk, D // 2)
            if int(tx.value):
                continue                           # glitch
            byte = 0
            for i in range(8):
                await ClockCycles(self.dut.clk, D)
                byte |= int(tx.value) << i
            await ClockCycles(self.dut.clk, D)
            if int(tx.value):
                self.received.append(byte)
            else:
                self.framing_errors += 1

    async def receive(self, n):
        """Wait for ``n`` more bytes than taken so far (bounded by the response length)."""
        limit = (n + 2) * 10 * D + 64 * D + 4 * MAX_PAYLOAD
        for _ in range(limit):
            if len(self.received) >= n:
                break
            await RisingEdge(self.dut.clk)
        data = bytes(self.received[:n])
        del self.received[:n]
        return data

    async def wait_idle(self):
        for _ in range(100 * D):
            if int(self.dut.idle.value):
                return
            await RisingEdge(self.dut.clk)
        raise AssertionError("bridge not idle")


async def setup(dut):
    dut.uart_rx.value = 1
    dut.rst.value = 1
    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)
    MODEL.abandon()
    MODEL.last = None                          # the bridge forgets its last seq on reset
    return Uart(dut), MODEL


async def exchange(uart, model, frame):
    """Send one frame, check the response against the model; return the response."""
    expected = model.feed(frame)
    await uart.send(frame)
    got = await uart.receive(len(expected))
    assert got.hex() == expected.hex(), f"frame {frame.hex()}"
    await uart.wait_idle()
    return got


@cocotb.test()
async def ping_write_read(dut):
    uart, model = await setup(dut)
    assert decode_response(await exchange(uart, model, encode_request(Cmd.PING))).status == Status.OK
    data = bytes(range(40, 40 + MAX_PAYLOAD))
    await exchange(uart, model, encode_request(Cmd.WRITE, 0, payload=data))
    got = await exchange(uart, model, encode_request(Cmd.READ, 0, length=MAX_PAYLOAD))
    assert decode_response(got).payload == data
    assert uart.framing_errors == 0


@cocotb.test()
async def errors_change_nothing(dut):
    uart, model = await setup(dut)
    await exchange(uart, model, encode_request(Cmd.WRITE, 0, payload=b"\x01\x02\x03\x04" * 4))
    bad = bytearray(encode_request(Cmd.WRITE, 0, payload=bytes(16)))
    bad[-1] ^= 0x20
    got = await exchange(uart, model, bytes(bad))
    assert decode_response(got).status == Status.BAD_CRC
    lo = HOLE[0] - 1
    got = await exchange(uart, model, encode_request(Cmd.WRITE, 4 * lo, payload=bytes(8)))
    assert decode_response(got).status == Status.BAD_ADDRESS
    for frame in (encode_request(0x42, 0, length=4), encode_request(Cmd.READ, 2, length=4),
                  encode_request(Cmd.READ, 0, length=MAX_PAYLOAD + 4)):
        await exchange(uart, model, frame)
    got = await exchange(uart, model, encode_request(Cmd.READ, 0, length=16))
    assert decode_response(got).payload == b"\x01\x02\x03\x04" * 4


@cocotb.test()
async def repeated_write_runs_once(dut):
    uart, model = await setup(dut)
    first = encode_request(Cmd.WRITE, 0, payload=b"\x11" * 8, seq=900)
    await exchange(uart, model, first)
    await exchange(uart, model, encode_request(Cmd.WRITE, 0, payload=b"\x22" * 8, seq=900))
    got = await exchange(uart, model, encode_request(Cmd.READ, 0, length=8))
    assert decode_response(got).payload == b"\x11" * 8
    ping = decode_response(await exchange(uart, model, encode_request(Cmd.PING)))
    assert ping.payload[4:] == (decode_response(got).seq | 1 << 16).to_bytes(4, "little")


@cocotb.test()
async def abandoned_frame_and_garbage(dut):
    uart, model = await setup(dut)
    await uart.send(encode_request(Cmd.WRITE, 0, payload=b"\xff" * 8)[:7])
    await ClockCycles(dut.clk, (TIMEOUT_BITS + 8) * D)
    await uart.wait_idle()
    assert len(uart.received) == 0
    await exchange(uart, model, b"\x00\x5a\x33" + encode_request(Cmd.PING))
    await exchange(uart, model, encode_request(Cmd.READ, 0, length=8))


@cocotb.test()
async def random_traffic(dut):
    dut._log.info("seed %d", SEED)
    rng = random.Random(SEED)
    uart, model = await setup(dut)
    for _ in range(16):
        n = 4 * rng.randrange(1, MAX_PAYLOAD // 4 + 1)
        addr = 4 * rng.randrange(0, DEPTH + 1)
        if rng.random() < 0.5:
            frame = encode_request(Cmd.WRITE, addr, seq=rng.randrange(4),
                                   payload=bytes(rng.randrange(256) for _ in range(n)))
        else:
            frame = encode_request(Cmd.READ, addr, seq=rng.randrange(4), length=n)
        await with_timeout(exchange(uart, model, frame), 10_000_000, "ns")
    assert uart.framing_errors == 0
