"""Host side of the host link: CRC-32, frames, the reference model, Link's retry rules, and
fault injection between Link and the model (≥ 20,000 transactions, zero wrong answers)."""
import random

import pytest

from faults import FaultyStream, Loopback
from nibble.host.link import (
    GROW_AFTER, MIN_FRAME_PAYLOAD, BridgeModel, Cmd, DeviceError, Link, LinkCRCError, LinkError,
    LinkTimeout, Response, Status, crc32, decode_request, decode_response, encode_request,
    encode_response,
)
from nibble.hw.isa import (CRC32, CRC_BYTES, CRC_HAMMING_DISTANCE, CRC_HD_MAX_BITS,
                           DEFAULT_MAX_PAYLOAD, LINK_VERSION, REQUEST_HEADER, REQUEST_OVERHEAD,
                           RESPONSE_OVERHEAD)

SEED = 20240611


def test_crc32_known_vectors():
    assert crc32(b"") == 0
    assert crc32(b"123456789") == 0xCBF43926            # CRC-32/ISO-HDLC check value
    assert CRC32["polynomial"] == 0x04C11DB7


def test_crc32_hamming_distance_for_the_longest_frame():
    """No error of 1, 2 or 3 bits in a frame of max_payload bytes is undetected: with
    r_d = x^d mod G, a 2-bit error x^a(1 + x^d) passes iff r_d = 1, a 3-bit error
    x^a(1 + x^i + x^j) iff r_i ^ r_j = 1 (x is invertible mod G)."""
    n_bits = 8 * (REQUEST_HEADER + DEFAULT_MAX_PAYLOAD + CRC_BYTES)
    assert n_bits <= CRC_HD_MAX_BITS and CRC_HAMMING_DISTANCE == 4
    g = 1 << 32 | CRC32["polynomial"]
    r, residues = 1, []
    for _ in range(n_bits):
        residues.append(r)
        r <<= 1
        if r >> 32:
            r ^= g
    assert 1 not in residues[1:]                          # weight 2
    index = {v: d for d, v in enumerate(residues) if d}
    assert len(index) == n_bits - 1                       # distinct: no weight-2 error either
    assert not any(index.get(v ^ 1, 0) not in (0, d) for d, v in enumerate(residues) if d)


def test_encode_request_layout():
    frame = encode_request(Cmd.WRITE, 0x12345678, seq=0xBEEF, payload=b"\x01\x02\x03\x04")
    assert frame[:10] == bytes([0xA5, 0x01, 0xEF, 0xBE, 0x78, 0x56, 0x34, 0x12, 0x04, 0x00])
    assert frame[10:14] == b"\x01\x02\x03\x04"
    assert frame[14:] == crc32(frame[1:14]).to_bytes(4, "little")
    assert len(frame) == REQUEST_OVERHEAD + 4
    read = encode_request(Cmd.READ, 0x100, seq=1, length=0x208)
    assert read[:10] == bytes([0xA5, 0x02, 0x01, 0x00, 0x00, 0x01, 0, 0, 0x08, 0x02])
    assert len(read) == REQUEST_OVERHEAD
    resp = encode_response(Status.BAD_ADDRESS, seq=0x0102)
    assert resp[:6] == bytes([0x5A, 3, 0x02, 0x01, 0, 0]) and len(resp) == RESPONSE_OVERHEAD


def test_encode_request_range_errors():
    with pytest.raises(ValueError, match="address"):
        encode_request(Cmd.READ, -4, length=4)
    with pytest.raises(ValueError, match="length"):
        encode_request(Cmd.READ, 0, length=65536)
    with pytest.raises(ValueError, match="command"):
        encode_request(256)
    with pytest.raises(ValueError, match="sequence number"):
        encode_request(Cmd.PING, seq=1 << 16)


def test_request_and_response_round_trip():
    print("seed", SEED)
    rng = random.Random(SEED)
    for _ in range(50):
        cmd = rng.choice([Cmd.WRITE, Cmd.READ, Cmd.PING, 0x42])
        addr, seq = rng.randrange(1 << 32), rng.randrange(1 << 16)
        if cmd == Cmd.WRITE:
            payload = bytes(rng.randrange(256) for _ in range(4 * rng.randrange(1, 9)))
            r = decode_request(encode_request(cmd, addr, seq=seq, payload=payload))
            assert (r.cmd, r.seq, r.addr, r.length, r.payload, r.crc_ok) == (cmd, seq, addr, len(payload), payload, True)
        else:
            length = rng.randrange(0, 100)
            r = decode_request(encode_request(cmd, addr, seq=seq, length=length))
            assert (r.cmd, r.seq, r.addr, r.length, r.payload, r.crc_ok) == (cmd, seq, addr, length, b"", True)
        status = rng.choice(list(Status))
        payload = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 20)))
        frame = encode_response(status, payload, seq=seq)
        assert decode_response(frame) == Response(status, payload, seq)
        bad = bytearray(frame)
        bad[rng.randrange(1, len(bad))] ^= 1 << rng.randrange(8)
        with pytest.raises(LinkError):
            decode_response(bytes(bad))
    assert decode_response(encode_response(9)).status == 9      # unknown codes pass through


def _mapped(w):
    return w < 64 and not 40 <= w < 44


def test_model_statuses_and_repeats():
    model = BridgeModel(_mapped, max_payload=64)
    seq = iter(range(100))

    def status(cmd, addr=0, **kw):
        kw.setdefault("seq", next(seq))
        return decode_response(model.feed(encode_request(cmd, addr, **kw))).status

    assert status(Cmd.PING) == Status.OK
    assert status(Cmd.PING, length=4) == Status.BAD_LENGTH
    assert status(0x55, 0, length=4) == Status.UNKNOWN_COMMAND
    assert status(Cmd.READ, 2, length=4) == Status.BAD_ADDRESS
    assert status(Cmd.READ, 0, length=0) == Status.BAD_LENGTH
    assert status(Cmd.READ, 0, length=6) == Status.BAD_LENGTH
    assert status(Cmd.READ, 0, length=68) == Status.BAD_LENGTH
    assert status(Cmd.READ, 2, length=6) == Status.BAD_LENGTH   # length first
    assert status(Cmd.READ, 39 * 4, length=8) == Status.BAD_ADDRESS
    assert status(Cmd.WRITE, 38 * 4, payload=bytes(12)) == Status.BAD_ADDRESS
    assert model.memory == {}                        # refused writes write nothing
    bad = bytearray(encode_request(Cmd.WRITE, 0, seq=50, payload=b"\x01\x02\x03\x04"))
    bad[-1] ^= 0xFF
    assert decode_response(model.feed(bytes(bad))).status == Status.BAD_CRC
    assert model.memory == {}
    assert status(Cmd.WRITE, 8, payload=b"\x01\x02\x03\x04", seq=60) == Status.OK
    assert status(Cmd.WRITE, 8, payload=b"\x09\x09\x09\x09", seq=60) == Status.OK   # repeated
    assert model.memory == {2: 0x04030201}
    assert status(Cmd.WRITE, 38 * 4, payload=bytes(12), seq=61) == Status.BAD_ADDRESS
    assert status(Cmd.WRITE, 8, payload=bytes(4), seq=61) == Status.BAD_ADDRESS      # replayed
    resp = decode_response(model.feed(encode_request(Cmd.READ, 4, seq=62, length=8)))
    assert resp == Response(Status.OK, bytes(4) + b"\x01\x02\x03\x04", 62)
    ping = decode_response(model.feed(encode_request(Cmd.PING, seq=63)))
    assert ping.payload == (LINK_VERSION | 64 << 16).to_bytes(4, "little") + (62 | 1 << 16).to_bytes(4, "little")
    # Garbage before a frame is skipped; an abandoned partial frame is dropped.
    assert decode_response(model.feed(b"\x00\x13\x5a" + encode_request(Cmd.READ, 4, seq=64, length=4))).seq == 64
    assert model.feed(encode_request(Cmd.PING)[:5]) == b""
    model.abandon()
    assert decode_response(model.feed(encode_request(Cmd.PING, seq=65))).status == Status.OK


class FakeStream:
    """A device in a pipe: requests go to a BridgeModel; responses can be damaged, lost or
    delivered late (after the second next request). Frame numbers count every write."""

    def __init__(self, model, corrupt=(), drop=(), corrupt_request=(), late=()):
        self.model = model
        self.rx = bytearray()
        self.corrupt = set(corrupt)            # response numbers whose payload gets a bit flip
        self.drop = set(drop)                  # response numbers that are lost
        self.corrupt_request = set(corrupt_request)
        self.late = set(late)                  # responses held back for two more writes
        self.held = {}
        self.n = 0
        self.writes = 0
        self.flushes = 0

    def write(self, data):
        data = bytearray(data)
        if self.n in self.corrupt_request:
            data[3] ^= 0x40
        self.rx += self.held.pop(self.n, b"")
        resp = bytearray(self.model.feed(bytes(data)))
        if self.n in self.corrupt:
            resp[len(resp) // 2] ^= 0x08
        if self.n in self.late:
            self.held[self.n + 2] = bytes(resp)
        elif self.n not in self.drop:
            self.rx += resp
        self.n += 1
        self.writes += 1
        return len(data)

    def read(self, n):
        data = bytes(self.rx[:n])
        del self.rx[:n]
        return data

    def reset_input_buffer(self):
        self.flushes += 1
        self.rx.clear()


def test_link_write_read_chunked():
    print("seed", SEED)
    rng = random.Random(SEED)
    model = BridgeModel(lambda w: w < 2048, max_payload=64)
    stream = FakeStream(model)
    link = Link(stream)
    data = bytes(rng.randrange(256) for _ in range(200))
    link.write(0x40, data)
    assert link.max_payload == 64                      # learned from PING
    assert stream.writes == 1 + 4                      # ping, then 64 + 64 + 64 + 8 bytes
    assert link.read(0x40, 200) == data
    link.write_u32(0x1000, 0xDEADBEEF)
    assert link.read_u32(0x1000) == 0xDEADBEEF
    assert model.memory[0x400] == 0xDEADBEEF
    link.ping()
    assert link.read(0, 0) == b""


def test_link_retries_corrupted_response():
    model = BridgeModel(lambda w: w < 1024, max_payload=64)
    stream = FakeStream(model, corrupt={2})
    link = Link(stream, retries=3)
    link.write(0, b"\x11\x22\x33\x44\x55\x66\x77\x88")
    assert link.read(0, 8) == b"\x11\x22\x33\x44\x55\x66\x77\x88"   # 1st read response corrupted
    assert link.retried == 1 and stream.writes == 4 and stream.flushes == 1


def test_link_retries_lost_response_and_bad_request_crc():
    model = BridgeModel(lambda w: w < 1024, max_payload=64)
    stream = FakeStream(model, drop={1}, corrupt_request={2})
    link = Link(stream, retries=3)
    link.write_u32(8, 0x01020304)                # lost response, then BAD_CRC, then OK
    assert link.retried == 2 and model.memory == {2: 0x01020304}


def test_lost_start_reply_executes_once():
    """The reply to a write with a side effect is lost: the retry is answered from the
    device's memory of the last seq and the side effect happens exactly once."""
    starts = []
    model = BridgeModel(lambda w: w < 16, max_payload=64,
                        on_write=lambda w, v: starts.append(v) if w == 1 else None)
    stream = FakeStream(model, drop={1})
    link = Link(stream)
    link.write_u32(4, 1)
    assert starts == [1] and link.retried == 1 and model.executed == 1


def test_late_reply_is_discarded_not_delivered():
    """A reply arriving after the host gave up on its request is never taken as the reply to
    the next one (a status read must not get a write's empty OK)."""
    model = BridgeModel(lambda w: w < 16, max_payload=64, memory={3: 0x1234})
    stream = FakeStream(model, late={1}, drop={2})
    link = Link(stream, retries=1)
    with pytest.raises(LinkError, match="write of 4 bytes at 0x00000000 failed after 2 attempts"):
        link.write_u32(0, 7)                          # reply late, the retry's reply lost
    assert link.read_u32(12) == 0x1234               # the late reply is discarded on the way
    assert link.stale == 1 and model.memory[0] == 7 and model.executed == 2


def test_new_link_continues_after_the_device_seq():
    """A new host (new Link) learns the device's last seq with PING: its first write is not
    taken for a repetition of the previous host's last write."""
    starts = []
    model = BridgeModel(lambda w: w < 16, max_payload=64,
                        on_write=lambda w, v: starts.append(v) if w == 1 else None)
    Link(FakeStream(model)).write_u32(4, 1)
    Link(FakeStream(model)).write_u32(4, 1)
    assert starts == [1, 1]


def test_link_error_after_retries():
    model = BridgeModel(lambda w: w < 1024, max_payload=64)
    stream = FakeStream(model, corrupt=set(range(1, 10)))
    link = Link(stream, retries=2)
    with pytest.raises(LinkError, match=r"read of 16 bytes at 0x00000100 failed after 3 attempts: "
                                        r"bad CRC in response: .* to read of 16 bytes at 0x00000100"):
        link.read(0x100, 16)
    stream = FakeStream(model, drop=set(range(1, 10)))
    link = Link(stream, retries=1, timeout_s=0.5)
    with pytest.raises(LinkError, match=r"write of 4 bytes at 0x00000020 failed after 2 attempts: "
                                        r"timeout waiting for the response to write of 4 bytes at "
                                        r"0x00000020 \(got 0 of 1 bytes after 0.5 s\)") as info:
        link.write_u32(0x20, 5)
    assert isinstance(info.value.__cause__, LinkTimeout)


def test_link_device_error_not_retried():
    model = BridgeModel(lambda w: w < 16, max_payload=64)
    stream = FakeStream(model)
    link = Link(stream)
    with pytest.raises(DeviceError, match=r"device answered BAD_ADDRESS \(3\) to read of 8 bytes "
                                          r"at 0x0000003c") as info:
        link.read(0x3C, 8)
    assert info.value.status == Status.BAD_ADDRESS and stream.writes == 2


def test_link_argument_and_version_errors():
    link = Link(FakeStream(BridgeModel(lambda w: True)))
    with pytest.raises(ValueError, match="address 0x00000002 is not 4-byte aligned"):
        link.read(2, 4)
    with pytest.raises(ValueError, match="length 6 is not a multiple of 4"):
        link.write(0, bytes(6))
    with pytest.raises(ValueError, match=r"max_payload must be a multiple of 4 in 4\.\.65532, not 1000\.5"):
        Link(None, max_payload=1000.5)
    with pytest.raises(LinkError, match="max_payload 128 is above the device's 64"):
        Link(FakeStream(BridgeModel(lambda w: True, max_payload=64)), max_payload=128).ping()

    class OldDevice(BridgeModel):
        def execute(self, frame):
            r = decode_request(frame)
            return encode_response(Status.OK, (1).to_bytes(4, "little") + bytes(4), seq=r.seq)

    with pytest.raises(LinkError, match="the device speaks link protocol version 1, this host version 2"):
        Link(FakeStream(OldDevice(lambda w: True))).ping()


def test_link_stream_timeout():
    class WithTimeout(FakeStream):
        timeout = None

    stream = WithTimeout(BridgeModel(lambda w: True))
    Link(stream, timeout_s=0.25)
    assert stream.timeout == 0.25
    stream = WithTimeout(BridgeModel(lambda w: True))
    Link(stream, timeout_s=None)                      # the simulated device's own timeout
    assert stream.timeout is None


def test_frames_shrink_on_noise_and_grow_back():
    model = BridgeModel(lambda w: w < 4096, max_payload=256)
    stream = FakeStream(model, drop={2})
    link = Link(stream)
    link.write(0, bytes(1024))
    assert link.frame_payload == 128 and link.retried == 1
    for _ in range(GROW_AFTER):
        link.read_u32(0)
    assert link.frame_payload == 256 and MIN_FRAME_PAYLOAD <= 128


RATES = (1e-4, 1e-3, 5e-3, 1e-2, 2e-2)


@pytest.mark.parametrize("rate", RATES)
def test_fault_injection_against_the_model(rate):
    """4,000 random transactions per rate through a FaultyStream (bit flips, drops, duplicates,
    truncations, late replies, both directions): every transaction either returns the right
    data / makes its write exactly once, or raises a LinkError naming its operation."""
    seed = SEED + int(rate * 1e6)
    print("seed", seed, "rate", rate)
    rng = random.Random(seed)
    depth = 512
    starts = []
    model = BridgeModel(lambda w: w < depth, max_payload=256,
                        on_write=lambda w, v: starts.append(v) if w == 0 else None)
    stream = FaultyStream(Loopback(model), rate, seed)
    link = Link(stream, retries=8)
    shadow = {}                                   # words whose device value the host knows
    stats = {"ok": 0, "failed": 0, "wrong": 0}
    for _ in range(4000):
        op = rng.random()
        try:
            if op < 0.15:                                         # a write with a side effect
                before = len(starts)
                link.write_u32(0, 1)
                assert len(starts) == before + 1, "start executed twice or never"
            elif op < 0.55:
                w = rng.randrange(1, depth - 64)
                n = rng.randrange(1, 65)
                data = bytes(rng.randrange(256) for _ in range(4 * n))
                for k in range(n):
                    shadow.pop(w + k, None)
                link.write(4 * w, data)
                for k in range(n):
                    shadow[w + k] = data[4 * k:4 * k + 4]
            else:
                w = rng.randrange(1, depth - 64)
                n = rng.randrange(1, 65)
                got = link.read(4 * w, 4 * n)
                for k in range(n):
                    if w + k in shadow and got[4 * k:4 * k + 4] != shadow[w + k]:
                        stats["wrong"] += 1
            stats["ok"] += 1
        except LinkError as e:
            assert " at 0x" in str(e) or str(e).startswith("ping"), e
            stats["failed"] += 1
    print(stats, stream.counts, "retried", link.retried, "stale", link.stale)
    assert stats["wrong"] == 0
    assert stats["ok"] >= 2000                       # the link still works at every rate
