"""The simulated device: bridge + bus RAM built with Verilator and the C++ harness, driven by the
host's own Link over SimDevice pipes. Expected values come from the host-side BridgeModel."""
import os
import random

import pytest
from amaranth.back import verilog

from busram import DeviceTop
from nibble.host.link import (BridgeModel, Cmd, DeviceError, Link, Status, decode_response,
                              encode_request)
from nibble.hw.isa import PING_WORDS, RESPONSE_OVERHEAD
from nibble.sim.verilator import SimDevice, build_device

pytestmark = pytest.mark.slow

DIVISOR = 4
DEPTH = 512                 # words: 2 KiB of RAM
HOLE = (300, 302)
SEED = 8086


def mapped(word):
    return word < DEPTH and not HOLE[0] <= word < HOLE[1]


@pytest.fixture(scope="module")
def device(tmp_path_factory):
    cache = tmp_path_factory.mktemp("simcache")
    text = verilog.convert(DeviceTop(DIVISOR, DEPTH, hole=HOLE), name="top")
    exe = build_device(text, cache)
    return text, cache, exe


def test_link_over_sim_device(device):
    print("seed", SEED)
    rng = random.Random(SEED)
    _, _, exe = device
    model = BridgeModel(mapped, 1024)
    with SimDevice(exe, DIVISOR) as dev:
        link = Link(dev, timeout_s=None)
        link.ping()
        assert link.max_payload == 1024
        data = bytes(rng.randrange(256) for _ in range(4 * 300))          # 2 frames
        link.write(0, data)
        model.feed(encode_request(Cmd.WRITE, 0, seq=1, payload=data[:1024]))
        model.feed(encode_request(Cmd.WRITE, 1024, seq=2, payload=data[1024:]))
        assert link.read(0, len(data)) == data
        tail = bytes(rng.randrange(256) for _ in range(4 * (DEPTH - HOLE[1])))
        link.write(4 * HOLE[1], tail)                                        # 1 frame of 840 B
        model.feed(encode_request(Cmd.WRITE, 4 * HOLE[1], seq=3, payload=tail))
        link.write_u32(4 * 7, 0xCAFEF00D)
        model.feed(encode_request(Cmd.WRITE, 4 * 7, seq=4, payload=(0xCAFEF00D).to_bytes(4, "little")))
        assert link.read_u32(4 * 7) == 0xCAFEF00D
        whole = link.read(0, 4 * HOLE[0]) + link.read(4 * HOLE[1], 4 * (DEPTH - HOLE[1]))
        expected = b"".join(model.memory.get(w, 0).to_bytes(4, "little")
                            for w in range(DEPTH) if mapped(w))
        assert whole == expected

        with pytest.raises(DeviceError, match=r"device answered BAD_ADDRESS \(3\) to write of 8 "
                                              r"bytes at 0x000004ac"):
            link.write(4 * (HOLE[0] - 1), bytes(8))
        assert link.read(4 * (HOLE[0] - 1), 4) == data[4 * (HOLE[0] - 1):4 * HOLE[0]]

        # A frame with a bad CRC, sent raw: status 1 and nothing written.
        bad = bytearray(encode_request(Cmd.WRITE, 0, payload=bytes(64)))
        bad[-1] ^= 0x55
        dev.write(bytes(bad))
        assert decode_response(dev.read(RESPONSE_OVERHEAD)).status == Status.BAD_CRC
        # Nothing more can come: the read returns at once, on the device's idleness, not on
        # a wall-clock timeout.
        assert dev.read(1) == b""
        assert link.read(0, 64) == expected[:64]
        assert dev.in_waiting == 0
    assert dev.cycles is not None and dev.cycles > 10 * DIVISOR * (len(data) * 2 + len(tail))
    assert dev.stderr_lines == []


def test_sim_device_garbage_and_partial_frame(device):
    _, _, exe = device
    with SimDevice(exe, DIVISOR) as dev:
        dev.write(b"\x00\xff\x5a" + encode_request(Cmd.PING))
        assert decode_response(dev.read(RESPONSE_OVERHEAD + 4 * PING_WORDS)).status == Status.OK
        idle_at = dev.wait_idle()
        dev.write(encode_request(Cmd.WRITE, 0, payload=bytes(8))[:6])
        # The bridge abandons the frame after 64 bit times without a byte, then goes idle.
        abandoned_at = dev.wait_idle()
        assert abandoned_at - idle_at >= (6 * 10 + 64) * DIVISOR
        assert dev.read(4) == b""                     # abandoned: no answer, and no waiting
        link = Link(dev, timeout_s=None)
        link.ping()
        assert link.read(0, 8) == bytes(8)            # the abandoned write did nothing
        assert dev.in_waiting == 0 and link.retried == 0
    assert dev.stderr_lines == []


def test_build_is_cached(device):
    text, cache, exe = device
    stat = os.stat(exe)
    assert build_device(text, cache) == exe
    assert os.stat(exe).st_mtime_ns == stat.st_mtime_ns and os.stat(exe).st_ino == stat.st_ino
    assert [p.name for p in cache.iterdir()] == [exe.parent.name]       # no leftovers
    assert build_device(text, cache, top="top") == exe


def test_strip_zero_initializers():
    """Blocks that write only zero words go; a block with one non-zero word, and every other
    statement, stay."""
    from nibble.sim.verilator import strip_zero_initializers
    zero = "  initial begin\n    mem[0] = 32'd0;\n    mem[1] = 32'd0;\n  end\n"
    wide = "  initial begin\n    \\u.buf [0] = 128'h00000000000000000000000000000000;\n  end\n"
    table = "  initial begin\n    lut[0] = 8'h00;\n    lut[1] = 8'h7f;\n  end\n"
    keep = "  reg [31:0] mem [3:0];\n  assign y = x;\n"
    text = keep + zero + table + wide + keep
    assert strip_zero_initializers(text) == keep + table + keep


def test_zero_initialized_memory_reads_zero(device):
    """The design's memories, their all-zero initial values stripped, read zero before any write
    (the harness starts every variable at zero)."""
    text, _, exe = device
    assert "initial begin" in text
    with SimDevice(exe, DIVISOR) as dev:
        link = Link(dev, timeout_s=None)
        assert link.read(0, 64) == bytes(64)
