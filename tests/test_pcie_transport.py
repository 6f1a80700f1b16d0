"""The PCIe transport: :class:`XdmaTransport` over the XDMA character devices (regular files
stand in for them: ``pread``/``pwrite`` at the AXI address is the driver's contract) and over the
simulated device's AXI4 port; the harness's command constants against the Python side."""
import os
import re

import numpy as np
import pytest

from nibble.host.transport import (REGMAP_KEYS, TransportError, XdmaCharDevices, XdmaTransport,
                                   load_regmap)
from nibble.sim import axi_device


def _fake_xdma(tmp_path, size=1 << 16):
    """Files named like the driver's: user (the register window) and one DMA memory that h2c
    writes and c2h reads (the same AXI address space, as on a card)."""
    (tmp_path / "xdma0_user").write_bytes(bytes(4096))
    (tmp_path / "xdma0_h2c_0").write_bytes(bytes(size))
    os.symlink(tmp_path / "xdma0_h2c_0", tmp_path / "xdma0_c2h_0")
    return str(tmp_path / "xdma0")


def test_char_devices_route_registers_and_dma(tmp_path):
    prefix = _fake_xdma(tmp_path)
    t = XdmaTransport(XdmaCharDevices(prefix), user_window=(0, 4096))
    t.write_u32(0x44, 0xDEADBEEF)                      # a register: the user BAR at its offset
    assert (tmp_path / "xdma0_user").read_bytes()[0x44:0x48] == (0xDEADBEEF).to_bytes(4, "little")
    data = np.random.default_rng(3).integers(0, 256, 1000, dtype=np.uint8).tobytes()
    t.write(0x2000, data)                              # outside the window: DMA at the address
    assert (tmp_path / "xdma0_h2c_0").read_bytes()[0x2000:0x2000 + 1000] == data
    assert t.read(0x2000, 1000) == data and t.read_u32(0x44) == 0xDEADBEEF
    assert t.bytes_written == 1004 and t.bytes_read == 1004
    with pytest.raises(TransportError, match=r"DMA read of 8 bytes at 0x00010000: .*0 of 8 bytes"):
        t.read(0x10000, 8)                             # past the end of the memory
    with pytest.raises(ValueError, match="multiples of 4"):
        t.write(0x2001, b"1234")
    t.close()


def test_char_devices_missing_driver(tmp_path):
    with pytest.raises(TransportError, match=r"cannot open .*xdma7_user.*XDMA driver"):
        XdmaCharDevices(str(tmp_path / "xdma7"))


def test_regmap_file_errors(tmp_path):
    bad = tmp_path / "r.json"
    bad.write_text("{")
    with pytest.raises(ValueError, match="not a register map"):
        load_regmap(bad)
    bad.write_text('{"id": 1}')
    with pytest.raises(ValueError, match="no regions"):
        load_regmap(bad)
    assert "csrs" in REGMAP_KEYS


def test_harness_constants_match():
    """The command and status codes are written in the harness and mirrored in Python."""
    text = axi_device.HARNESS_AXI.read_text()
    consts = dict((k, int(v, 0)) for k, v in re.findall(r"\b(k[A-Z]\w*) = (0x[0-9a-fA-F]+|\d+)", text))
    assert (consts["kOpWrite"], consts["kOpRead"], consts["kOpWait"]) == (
        axi_device.OP_WRITE, axi_device.OP_READ, axi_device.OP_WAIT)
    assert (consts["kOkay"], consts["kTimeout"], consts["kBusy"], consts["kBadCommand"]) == (
        axi_device.AXI_OKAY, axi_device.TIMEOUT, axi_device.BUSY, axi_device.BAD_COMMAND)


def test_char_devices_ddr_window_in_chunks(tmp_path):
    """Inside the DDR window (from the regmap's ``regions["ddr"]``) transfers go by DMA in
    chunks at their addresses; one across the window's edge is refused, naming the window."""
    from nibble.host.transport import ddr_window
    prefix = _fake_xdma(tmp_path)
    rm = {"regions": {"csr": {"base": 0, "words": 16}, "ddr": {"base": 0x4000, "bytes": 0x8000, "beat_bits": 128}}}
    t = XdmaTransport(XdmaCharDevices(prefix), (0, 64), ddr_window(rm), dma_chunk=4096)
    data = np.random.default_rng(4).integers(0, 256, 10_000, dtype=np.uint8).tobytes()
    t.write(0x4100, data)
    assert (tmp_path / "xdma0_h2c_0").read_bytes()[0x4100:0x4100 + 10_000] == data
    assert t.read(0x4100, 10_000) == data
    with pytest.raises(TransportError, match=r"DDR write of 8 bytes at 0x0000bffc: crosses an edge of the "
                                             r"DDR window 0x00004000\.\.0x0000c000"):
        t.write(0xBFFC, bytes(8))
    with pytest.raises(TransportError, match="keeps none"):
        t.ddr_stats()
    with pytest.raises(ValueError, match="dma_chunk"):
        XdmaTransport(object(), (0, 64), dma_chunk=6)
    t.close()
