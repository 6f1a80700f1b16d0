"""Host side of the UART bridge: CRC, frame encoding/decoding, the reference model, Link retries."""
import random

import pytest

from nibble.host.link import (
    BridgeModel, Cmd, DeviceError, Link, LinkCRCError, LinkError, LinkTimeout, Response, Status,
    crc8, decode_request, decode_response, encode_request, encode_response,
)

SEED = 20240611


def test_crc8_known_vectors():
    assert crc8(b"") == 0x00
    assert crc8(b"123456789") == 0xF4          # CRC-8/SMBUS check value
    assert crc8(b"\x00") == 0x00
    assert crc8(b"\x01") == 0x07
    assert crc8(b"\x80") == 0x89
    assert crc8(b"\xff") == 0xF3


def test_crc8_bitwise_reference():
    """Table-driven CRC equals the bit-serial definition on random data."""
    print("seed", SEED)
    rng = random.Random(SEED)

    def bitwise(data):
        crc = 0
        for byte in data:
            for i in range(7, -1, -1):
                fb = (crc >> 7 ^ byte >> i) & 1
                crc = (crc << 1) & 0xFF
                if fb:
                    crc ^= 0x07
        return crc

    for n in range(40):
        data = bytes(rng.randrange(256) for _ in range(n))
        assert crc8(data) == bitwise(data)
    # Appending the CRC gives a zero remainder.
    data = bytes(rng.randrange(256) for _ in range(33))
    assert crc8(data + bytes([crc8(data)])) == 0


def test_encode_request_layout():
    frame = encode_request(Cmd.WRITE, 0x12345678, payload=b"\x01\x02\x03\x04")
    assert frame[:8] == bytes([0xA5, 0x01, 0x78, 0x56, 0x34, 0x12, 0x04, 0x00])
    assert frame[8:12] == b"\x01\x02\x03\x04"
    assert frame[12] == crc8(frame[1:12])
    assert len(frame) == 13
    read = encode_request(Cmd.READ, 0x100, length=0x208)
    assert read == bytes([0xA5, 0x02, 0x00, 0x01, 0, 0, 0x08, 0x02, crc8(read[1:8])])
    assert encode_request(Cmd.PING) == bytes([0xA5, 3, 0, 0, 0, 0, 0, 0, crc8(bytes([3, 0, 0, 0, 0, 0, 0]))])


def test_encode_request_range_errors():
    with pytest.raises(ValueError, match=r"address must be an integer in 0\.\.0xFFFFFFFF, not -4"):
        encode_request(Cmd.READ, -4, length=4)
    with pytest.raises(ValueError, match=r"length must be an integer in 0\.\.65535, not 65536"):
        encode_request(Cmd.READ, 0, length=65536)
    with pytest.raises(ValueError, match=r"command must be an integer in 0\.\.255, not 256"):
        encode_request(256)


def test_request_round_trip():
    print("seed", SEED)
    rng = random.Random(SEED)
    for _ in range(50):
        cmd = rng.choice([Cmd.WRITE, Cmd.READ, Cmd.PING, 0x7E])
        addr = rng.randrange(1 << 32)
        if cmd == Cmd.WRITE:
            payload = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 64)))
            frame = encode_request(cmd, addr, payload=payload)
            length = len(payload)
        else:
            payload, length = b"", rng.randrange(1 << 16)
            frame = encode_request(cmd, addr, length=length)
        assert decode_request(frame) == (cmd, addr, length, payload, True)
        bad = bytearray(frame)
        bad[-1] ^= 1 << rng.randrange(8)
        assert decode_request(bytes(bad))[4] is False


def test_response_round_trip_and_errors():
    print("seed", SEED)
    rng = random.Random(SEED)
    for status in Status:
        payload = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40)))
        frame = encode_response(status, payload)
        assert frame[0] == 0x5A and frame[2:4] == len(payload).to_bytes(2, "little")
        assert decode_response(frame) == Response(status, payload)
    frame = bytearray(encode_response(Status.OK, b"abcd"))
    frame[5] ^= 0x10
    with pytest.raises(LinkCRCError, match=r"bad CRC in response: got 0x[0-9a-f]{2}, computed"):
        decode_response(bytes(frame))
    with pytest.raises(LinkError, match="not a response frame"):
        decode_response(b"\xa5\x00\x00\x00\x00")
    with pytest.raises(LinkError, match="response frame of 6 bytes, header says 5"):
        decode_response(encode_response(Status.OK) + b"\x00")
    assert decode_response(encode_response(9)).status == 9      # unknown codes pass through


def _mapped(w):
    return w < 64 and not 40 <= w < 44


def test_model_statuses():
    model = BridgeModel(_mapped, max_payload=64)

    def status(frame):
        return decode_response(model.feed(frame)).status

    assert status(encode_request(Cmd.PING)) == Status.OK
    assert status(encode_request(Cmd.PING, length=4)) == Status.BAD_LENGTH
    assert status(encode_request(0x55, 0, length=4)) == Status.UNKNOWN_COMMAND
    assert status(encode_request(Cmd.READ, 2, length=4)) == Status.BAD_ADDRESS
    assert status(encode_request(Cmd.READ, 0, length=0)) == Status.BAD_LENGTH
    assert status(encode_request(Cmd.READ, 0, length=6)) == Status.BAD_LENGTH
    assert status(encode_request(Cmd.READ, 0, length=68)) == Status.BAD_LENGTH
    assert status(encode_request(Cmd.READ, 2, length=6)) == Status.BAD_LENGTH   # length first
    assert status(encode_request(Cmd.READ, 39 * 4, length=8)) == Status.BAD_ADDRESS
    assert status(encode_request(Cmd.WRITE, 38 * 4, payload=bytes(12))) == Status.BAD_ADDRESS
    assert model.memory == {}                        # refused writes write nothing
    bad = bytearray(encode_request(Cmd.WRITE, 0, payload=b"\x01\x02\x03\x04"))
    bad[-1] ^= 0xFF
    assert status(bytes(bad)) == Status.BAD_CRC
    assert model.memory == {}
    assert status(encode_request(Cmd.WRITE, 8, payload=b"\x01\x02\x03\x04")) == Status.OK
    assert model.memory == {2: 0x04030201}
    resp = decode_response(model.feed(encode_request(Cmd.READ, 4, length=8)))
    assert resp == Response(Status.OK, bytes(4) + b"\x01\x02\x03\x04")
    # Garbage before a frame is skipped; an abandoned partial frame is dropped.
    assert model.feed(b"\x00\x13\x5a" + encode_request(Cmd.PING)) == encode_response(Status.OK)
    assert model.feed(encode_request(Cmd.PING)[:5]) == b""
    model.abandon()
    assert model.feed(encode_request(Cmd.PING)) == encode_response(Status.OK)


class FakeStream:
    """A device in a pipe: requests go to a BridgeModel; responses can be damaged or lost."""

    def __init__(self, model, corrupt=(), drop=(), corrupt_request=()):
        self.model = model
        self.rx = bytearray()
        self.corrupt = set(corrupt)            # response numbers whose payload gets a bit flip
        self.drop = set(drop)                  # response numbers that are lost
        self.corrupt_request = set(corrupt_request)
        self.n = 0
        self.writes = 0
        self.flushes = 0

    def write(self, data):
        data = bytearray(data)
        if self.n in self.corrupt_request:
            data[3] ^= 0x40
        resp = bytearray(self.model.feed(bytes(data)))
        if self.n in self.corrupt:
            resp[len(resp) // 2] ^= 0x08
        if self.n not in self.drop:
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
    link = Link(stream, max_payload=64)
    data = bytes(rng.randrange(256) for _ in range(200))
    link.write(0x40, data)
    assert stream.writes == 4                          # 64 + 64 + 64 + 8 bytes
    assert link.read(0x40, 200) == data
    link.write_u32(0x1000, 0xDEADBEEF)
    assert link.read_u32(0x1000) == 0xDEADBEEF
    assert model.memory[0x400] == 0xDEADBEEF
    link.ping()
    assert link.read(0, 0) == b""


def test_link_retries_corrupted_response():
    model = BridgeModel(lambda w: w < 1024, max_payload=64)
    stream = FakeStream(model, corrupt={1})
    link = Link(stream, max_payload=64, retries=3)
    link.write(0, b"\x11\x22\x33\x44\x55\x66\x77\x88")
    assert link.read(0, 8) == b"\x11\x22\x33\x44\x55\x66\x77\x88"   # 2nd response corrupted
    assert link.retried == 1 and stream.writes == 3 and stream.flushes == 1


def test_link_retries_lost_response_and_bad_request_crc():
    model = BridgeModel(lambda w: w < 1024, max_payload=64)
    stream = FakeStream(model, drop={0}, corrupt_request={1})
    link = Link(stream, max_payload=64, retries=3)
    link.write_u32(8, 0x01020304)                # lost response, then BAD_CRC, then OK
    assert link.retried == 2 and model.memory == {2: 0x01020304}


def test_link_error_after_retries():
    model = BridgeModel(lambda w: w < 1024, max_payload=64)
    stream = FakeStream(model, corrupt=set(range(10)))
    link = Link(stream, max_payload=64, retries=2)
    with pytest.raises(LinkError, match=r"read of 16 bytes at 0x00000100 failed after 3 attempts: "
                                        r"bad CRC in response: .* to read of 16 bytes at 0x00000100"):
        link.read(0x100, 16)
    stream = FakeStream(model, drop=set(range(10)))
    link = Link(stream, max_payload=64, retries=1, timeout_s=0.5)
    with pytest.raises(LinkError, match=r"write of 4 bytes at 0x00000020 failed after 2 attempts: "
                                        r"timeout waiting for the response to write of 4 bytes at "
                                        r"0x00000020 \(got 0 of 1 bytes after 0.5 s\)") as info:
        link.write_u32(0x20, 5)
    assert isinstance(info.value.__cause__, LinkTimeout)


def test_link_device_error_not_retried():
    model = BridgeModel(lambda w: w < 16, max_payload=64)
    stream = FakeStream(model)
    link = Link(stream, max_payload=64)
    with pytest.raises(DeviceError, match=r"device answered BAD_ADDRESS \(3\) to read of 8 bytes "
                                          r"at 0x0000003c") as info:
        link.read(0x3C, 8)
    assert info.value.status == Status.BAD_ADDRESS and stream.writes == 1


def test_link_argument_errors():
    link = Link(FakeStream(BridgeModel(lambda w: True)), max_payload=64)
    with pytest.raises(ValueError, match="address 0x00000002 is not 4-byte aligned"):
        link.read(2, 4)
    with pytest.raises(ValueError, match="length 6 is not a multiple of 4"):
        link.write(0, bytes(6))
    with pytest.raises(ValueError, match=r"max_payload must be a multiple of 4 in 4\.\.65532, not 1000\.5"):
        Link(None, max_payload=1000.5)


def test_link_sets_stream_timeout():
    class WithTimeout(FakeStream):
        timeout = None

    stream = WithTimeout(BridgeModel(lambda w: True))
    Link(stream, timeout_s=0.25)
    assert stream.timeout == 0.25
