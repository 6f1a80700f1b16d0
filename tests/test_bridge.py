"""UARTBridge in amaranth.sim, driven bit-serially on its rx pin, against a bus RAM.

Frames come from nibble.host.link (each with its own sequence number unless a test repeats
one on purpose); expected responses and memory contents from its
BridgeModel. Every cycle the bus is checked: no access to an address with addr_err, never
w_en and r_en together.
"""
import random

import pytest
from amaranth import *
from amaranth.sim import Simulator

from busram import DeviceTop
from nibble.host.link import (BridgeModel, Cmd, Status, crc32, decode_response, encode_request,
                              encode_response)
from nibble.hw.bridge import UARTBridge
from nibble.hw.isa import CRC32, LINK_VERSION, RESPONSE_OVERHEAD, TIMEOUT_BITS

D = 4                   # cycles per bit: the smallest divisor, to keep the simulation short
DEPTH = 16              # RAM words
HOLE = (8, 10)          # unmapped words inside the RAM's range
MAX_PAYLOAD = 32
SEED = 4242


def line_bits(data):
    out = []
    for byte in data:
        bits = [0] + [(byte >> i) & 1 for i in range(8)] + [1]
        out += [b for b in bits for _ in range(D)]
    return out


class LineDecoder:
    """Decodes an 8N1 line sampled once per cycle (mid-bit)."""

    def __init__(self):
        self.out = bytearray()
        self.busy = False
        self.errors = 0

    def step(self, level):
        if not self.busy:
            if not level:
                self.busy, self.timer, self.bit, self.byte = True, D // 2, 0, 0
            return
        self.timer -= 1
        if self.timer:
            return
        self.timer = D
        if self.bit == 0 and level:
            self.busy = False
        elif 1 <= self.bit <= 8:
            self.byte |= level << (self.bit - 1)
        elif self.bit == 9:
            if level:
                self.out.append(self.byte)
            else:
                self.errors += 1
            self.busy = False
        self.bit += 1


def simulate(segments, *, init=(), max_payload=MAX_PAYLOAD, wait_response=True):
    """Send ``segments`` (``(bytes, idle cycles after)``) to a bridge + RAM.

    With ``wait_response``, each segment after the first is sent only once the bridge is idle
    again (like Link). Returns ``(tx bytes, RAM words, bus writes [(word, data)])``.
    """
    init = list(init) + [0] * (DEPTH - len(init))
    top = DeviceTop(D, DEPTH, hole=HOLE, max_payload=max_payload, init=init)
    bus = top.bridge.bus
    result = {}

    async def tb(ctx):
        dec = LineDecoder()
        writes = []

        async def step(level):
            ctx.set(top.uart_rx, level)
            _, _, w_en, r_en, addr_err, addr, w_data = await ctx.tick().sample(
                bus.w_en, bus.r_en, bus.addr_err, bus.addr, bus.w_data)
            assert not (w_en and r_en)
            assert not ((w_en or r_en) and addr_err), f"access to unmapped word {addr}"
            if w_en:
                writes.append((addr, w_data))
            dec.step(ctx.get(top.uart_tx))

        await ctx.tick().repeat(4)
        for data, gap in segments:
            for level in line_bits(data) + [1] * gap:
                await step(level)
            if wait_response:
                for _ in range(20000):
                    if ctx.get(top.idle) and not dec.busy:
                        break
                    await step(1)
                else:
                    raise AssertionError("bridge never became idle")
        for _ in range(20000):
            if ctx.get(top.idle) and not dec.busy:
                break
            await step(1)
        for _ in range(12 * D):                  # nothing more comes out
            await step(1)
            assert ctx.get(top.idle)
        assert dec.errors == 0 and not dec.busy
        result["tx"] = bytes(dec.out)
        result["mem"] = [ctx.get(top.ram.mem.data[i]) for i in range(DEPTH)]
        result["writes"] = writes

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return result["tx"], result["mem"], result["writes"]


def model_run(frames, init=(), abandon_after=(), max_payload=MAX_PAYLOAD):
    """Expected responses and RAM words from the reference model."""
    init = list(init) + [0] * (DEPTH - len(init))
    model = BridgeModel(lambda w: w < DEPTH and not HOLE[0] <= w < HOLE[1], max_payload,
                        memory=dict(enumerate(init)))
    out = b""
    for i, frame in enumerate(frames):
        out += model.feed(frame)
        if i in abandon_after:
            model.abandon()
    return out, [model.memory.get(i, 0) for i in range(DEPTH)]


def check(frames, *, init=(), gaps=None, abandon_after=(), max_payload=MAX_PAYLOAD):
    gaps = gaps or [0] * len(frames)
    tx, mem, writes = simulate(list(zip(frames, gaps)), init=init, max_payload=max_payload)
    exp_tx, exp_mem = model_run(frames, init, abandon_after, max_payload)
    assert tx.hex() == exp_tx.hex()
    assert mem == exp_mem
    return tx, writes



_SEQ = iter(range(1, 1 << 16))


def req(cmd, addr=0, **kw):
    """A request with the next sequence number (``seq=`` to choose one)."""
    kw.setdefault("seq", next(_SEQ))
    return encode_request(cmd, addr, **kw)


def responses(tx):
    """Split the bytes sent by the bridge into decoded responses."""
    out = []
    while tx:
        n = RESPONSE_OVERHEAD + int.from_bytes(tx[4:6], "little")
        out.append(decode_response(tx[:n]))
        tx = tx[n:]
    return out


def test_crc_parameters_equal_zlib():
    """The gateware's CRC (amaranth.lib.crc with isa.CRC32) is the host's zlib.crc32."""
    from amaranth.lib.crc import Algorithm
    params = Algorithm(**CRC32)(data_width=8)
    print("seed", SEED)
    rng = random.Random(SEED)
    assert params.compute(b"123456789") == crc32(b"123456789") == 0xCBF43926
    for n in (0, 1, 2, 7, 64, 300):
        data = bytes(rng.randrange(256) for _ in range(n))
        assert params.compute(data) == crc32(data)


@pytest.mark.parametrize("value", [0, 3, 6, 65536, 1024.0, True])
def test_max_payload_validation(value):
    with pytest.raises(ValueError, match=rf"^max_payload must be a multiple of 4 in 4\.\.65532, "
                                         rf"not {value!r}$"):
        UARTBridge(4, max_payload=value)


def test_write_then_read_back():
    data = bytes(range(0x10, 0x20))
    w = req(Cmd.WRITE, 4, payload=data)
    tx, writes = check([w, req(Cmd.READ, 0, length=24), req(Cmd.READ, 12, length=4)])
    first = responses(tx)[0]
    assert first.status == Status.OK and first.seq == int.from_bytes(w[2:4], "little")
    assert writes == [(1 + k, int.from_bytes(data[4 * k:4 * k + 4], "little")) for k in range(4)]


def test_ping_reports_version_and_last_seq():
    frames = [req(Cmd.PING, seq=9), req(Cmd.WRITE, 0, payload=bytes(4), seq=0x1234),
              req(Cmd.PING, 0x40, seq=10), req(Cmd.PING, seq=11, length=4)]
    tx, writes = check(frames)
    r = responses(tx)
    words = [int.from_bytes(r[0].payload[i:i + 4], "little") for i in (0, 4)]
    assert words == [LINK_VERSION | MAX_PAYLOAD << 16, 0]          # nothing executed yet
    assert int.from_bytes(r[2].payload[4:8], "little") == 0x1234 | 1 << 16
    assert [x.seq for x in r] == [9, 0x1234, 10, 11]
    assert r[3].status == Status.BAD_LENGTH and len(writes) == 1


def test_bad_crc_write_is_not_executed():
    init = [0x1000 + i for i in range(DEPTH)]
    frame = bytearray(req(Cmd.WRITE, 0, payload=bytes(range(8))))
    frame[-1] ^= 0x01
    payload_hit = bytearray(req(Cmd.WRITE, 8, payload=bytes(range(8))))
    payload_hit[12] ^= 0x80                      # corrupted payload byte
    tx, writes = check([bytes(frame), bytes(payload_hit)], init=init)
    assert [x.status for x in responses(tx)] == [Status.BAD_CRC] * 2
    assert writes == []


def test_two_bit_flips_127_apart_are_detected():
    """The pattern that always passed CRC-8 (x^127 = 1 mod 0x107) fails CRC-32."""
    frame = bytearray(req(Cmd.WRITE, 0, payload=bytes(range(24))))
    for bit in (40, 40 + 127):
        frame[bit // 8] ^= 1 << bit % 8
    tx, writes = check([bytes(frame)])
    assert responses(tx)[0].status == Status.BAD_CRC and writes == []


def test_repeated_write_is_answered_not_executed():
    """A WRITE with the seq of the last executed WRITE gets the stored status and writes
    nothing; READs are executed again; a new seq executes."""
    frames = [
        req(Cmd.WRITE, 0, payload=b"\x01\x00\x00\x00", seq=5),
        req(Cmd.WRITE, 0, payload=b"\x01\x00\x00\x00", seq=5),      # the retry: not executed
        req(Cmd.WRITE, 4, payload=b"\x02\x00\x00\x00", seq=5),      # same seq: not executed
        req(Cmd.WRITE, 4 * HOLE[0], payload=bytes(4), seq=6),       # BAD_ADDRESS ...
        req(Cmd.WRITE, 4 * HOLE[0], payload=bytes(4), seq=6),       # ... replayed
        req(Cmd.READ, 0, length=4, seq=7),
        req(Cmd.READ, 0, length=4, seq=7),                          # reads run again
        req(Cmd.WRITE, 0, payload=b"\x03\x00\x00\x00", seq=7),      # last was a READ: runs
        req(Cmd.WRITE, 0, payload=b"\x04\x00\x00\x00", seq=5),      # a new number: runs
    ]
    tx, writes = check(frames)
    st = [x.status for x in responses(tx)]
    assert st == [Status.OK] * 3 + [Status.BAD_ADDRESS] * 2 + [Status.OK] * 4
    assert writes == [(0, 1), (0, 3), (0, 4)]


def test_unknown_command():
    tx, writes = check([req(0x00, 0, length=4), req(0x7F, 0, length=0)])
    assert [x.status for x in responses(tx)] == [Status.UNKNOWN_COMMAND] * 2 and writes == []


def test_unaligned_address():
    tx, writes = check([req(Cmd.WRITE, 2, payload=bytes(4)), req(Cmd.READ, 5, length=8)])
    assert [x.status for x in responses(tx)] == [Status.BAD_ADDRESS] * 2 and writes == []


def test_bad_length():
    frames = [
        req(Cmd.READ, 0, length=0),
        req(Cmd.READ, 0, length=6),
        req(Cmd.READ, 0, length=MAX_PAYLOAD + 4),
        req(Cmd.WRITE, 0, payload=bytes(range(6))),             # payload consumed
        req(Cmd.WRITE, 0, payload=bytes(MAX_PAYLOAD + 4)),      # ... not stored
        req(Cmd.PING, length=4),
        req(Cmd.WRITE, 0, payload=b"\x01\x02\x03\x04"),          # still in step
    ]
    tx, writes = check(frames)
    assert [x.status for x in responses(tx)] == [Status.BAD_LENGTH] * 6 + [Status.OK]
    assert writes == [(0, 0x04030201)]


def test_unmapped_address_writes_nothing():
    init = [0xA0 + i for i in range(DEPTH)]
    frames = [
        req(Cmd.WRITE, 6 * 4, payload=bytes(range(16))),         # words 6..9: 8, 9 hole
        req(Cmd.WRITE, (DEPTH - 1) * 4, payload=bytes(8)),        # runs off the end
        req(Cmd.READ, 9 * 4, length=4),
        req(Cmd.READ, 0xFFFFFFFC, length=8),                     # wraps to word 0
        req(Cmd.READ, 10 * 4, length=4),                         # just past the hole
    ]
    tx, writes = check(frames, init=init)
    r = responses(tx)
    assert [x.status for x in r] == [Status.BAD_ADDRESS] * 4 + [Status.OK]
    assert r[-1].payload == (0xAA).to_bytes(4, "little") and writes == []


def test_garbage_before_frame():
    garbage = bytes([0x00, 0xFF, 0x5A, 0x13, 0x01])
    tx, _ = check([garbage + req(Cmd.PING),
                   garbage + req(Cmd.WRITE, 0, payload=b"\xaa\xbb\xcc\xdd"),
                   req(Cmd.READ, 0, length=4)])
    assert responses(tx)[-1].payload == b"\xaa\xbb\xcc\xdd"


def test_abandoned_partial_frame_then_good_frame():
    """A frame that stops for longer than 64 bit times is dropped; a slow but continuous frame
    (gaps under the timeout) is still accepted."""
    partial = req(Cmd.WRITE, 0, payload=b"\x01\x02\x03\x04")[:11]
    long_gap = (TIMEOUT_BITS + 4) * D
    ping = req(Cmd.PING, seq=3)
    tx, _, writes = simulate([(partial, long_gap), (ping, 0)], wait_response=False)
    assert [(x.status, x.seq) for x in responses(tx)] == [(Status.OK, 3)] and writes == []

    frame = req(Cmd.WRITE, 4, payload=b"\x05\x06\x07\x08")
    segments = [(frame[i:i + 1], (TIMEOUT_BITS - 12) * D) for i in range(len(frame))]
    tx, _, writes = simulate(segments, wait_response=False)
    assert [x.status for x in responses(tx)] == [Status.OK] and writes == [(1, 0x08070605)]


def test_back_to_back_frames_at_line_rate():
    """Three requests sent without a pause: the receive FIFO holds the next request's bytes
    while a response is being sent."""
    frames = [req(Cmd.WRITE, 0, payload=bytes(range(12))), req(Cmd.READ, 4, length=4),
              req(Cmd.PING)]
    tx, _, _ = simulate([(b"".join(frames), 0)])
    assert tx == model_run(frames)[0]


def test_random_frames():
    print("seed", SEED)
    rng = random.Random(SEED)
    init = [rng.randrange(1 << 32) for _ in range(DEPTH)]
    frames = []
    for _ in range(30):
        n = 4 * rng.randrange(1, MAX_PAYLOAD // 4 + 1)
        addr = 4 * rng.randrange(0, DEPTH + 2)
        seq = rng.randrange(4)                   # repeats on purpose
        if rng.random() < 0.5:
            frame = encode_request(Cmd.WRITE, addr, seq=seq,
                                   payload=bytes(rng.randrange(256) for _ in range(n)))
        else:
            frame = encode_request(Cmd.READ, addr, seq=seq, length=n)
        if rng.random() < 0.1:
            frame = frame[:-1] + bytes([frame[-1] ^ 0x40])
        frames.append(frame)
    frames.append(req(Cmd.READ, 0, length=4 * HOLE[0]))
    frames.append(req(Cmd.READ, 4 * HOLE[1], length=4 * (DEPTH - HOLE[1])))
    tx, _ = check(frames, init=init)
    print(tx.hex())


def _repeat_pair():
    w = encode_request(Cmd.WRITE, 0, payload=bytes(12), seq=77)
    return w + w


@pytest.mark.parametrize("frame,cmd,n,ok,err_at,skip", [
    (req(Cmd.PING), Cmd.PING, 0, True, None, 0),
    (req(Cmd.WRITE, 0, payload=bytes(12)), Cmd.WRITE, 3, True, None, 0),
    (req(Cmd.READ, 4, length=8), Cmd.READ, 2, True, None, 0),
    (req(Cmd.READ, 2, length=8), Cmd.READ, 2, False, None, 0),
    (req(Cmd.WRITE, 4 * (HOLE[0] - 2), payload=bytes(16)), Cmd.WRITE, 4, False, 2, 0),
    (req(0x99, 0), 0x99, 0, True, None, 0),
    (_repeat_pair(), Cmd.WRITE, 3, False, None, 1),
], ids=["ping", "write", "read", "read_unaligned", "write_unmapped", "unknown", "repeated_write"])
def test_response_latency(frame, cmd, n, ok, err_at, skip):
    """Pin to pin: last CRC byte start bit on rx → response start bit on tx (after ``skip``
    earlier responses)."""
    top = DeviceTop(D, DEPTH, hole=HOLE, max_payload=MAX_PAYLOAD)
    result = {}

    async def tb(ctx):
        await ctx.tick().repeat(4)
        wave = line_bits(frame)
        crc_start = len(wave) - 10 * D
        dec = LineDecoder()
        for cycle, level in enumerate(wave + [1] * 4000):
            ctx.set(top.uart_rx, level)
            tx = ctx.get(top.uart_tx)
            if cycle >= crc_start and not tx and not dec.busy:
                result["latency"] = cycle - crc_start
                return
            dec.step(tx)
            await ctx.tick()

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert result["latency"] == top.bridge.response_latency(cmd, n, ok, addr_err_at=err_at)


def test_stream_phy_matches_the_model():
    """``phy="stream"`` (the simulated device): the same frames through byte streams, throttled
    on both sides, give the model's responses and bus writes."""
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    from busram import BusRAM

    class StreamTop(wiring.Component):
        def __init__(self):
            self.bridge = UARTBridge(D, max_payload=MAX_PAYLOAD, phy="stream")
            self.ram = BusRAM(DEPTH, hole=HOLE)
            super().__init__({"i": In(self.bridge.i.signature.flip()),
                              "o": Out(self.bridge.o.signature), "idle": Out(1)})

        def elaborate(self, platform):
            m = Module()
            m.submodules.bridge, m.submodules.ram = self.bridge, self.ram
            wiring.connect(m, self.bridge.bus, self.ram.bus)
            wiring.connect(m, wiring.flipped(self.i), self.bridge.i)
            wiring.connect(m, self.bridge.o, wiring.flipped(self.o))
            m.d.comb += self.idle.eq(self.bridge.idle)
            return m

    rng = random.Random(SEED)
    frames = [req(Cmd.WRITE, 8, payload=bytes(range(20))), req(Cmd.READ, 4, length=24),
              req(Cmd.WRITE, 8, payload=bytes(4), seq=1000), req(Cmd.WRITE, 8, payload=bytes(8), seq=1000),
              req(Cmd.PING), req(Cmd.READ, 8, length=8)]
    expected, _ = model_run(frames)
    top = StreamTop()
    got = bytearray()

    async def tb(ctx):
        data = b"".join(frames)
        k = 0
        for _ in range(20000):
            ctx.set(top.i.valid, k < len(data) and rng.random() < 0.7)
            ctx.set(top.i.payload, data[k] if k < len(data) else 0)
            ctx.set(top.o.ready, rng.random() < 0.6)
            i_ok, o_ok, byte = ctx.get(top.i.valid) and ctx.get(top.i.ready), \
                ctx.get(top.o.valid) and ctx.get(top.o.ready), ctx.get(top.o.payload)
            await ctx.tick()
            k += i_ok
            if o_ok:
                got.append(byte)
            if k == len(data) and len(got) == len(expected) and ctx.get(top.idle):
                break

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert got.hex() == expected.hex()
