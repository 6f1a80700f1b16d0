"""Host transports: one interface to reach an accelerator's registers and memories (DESIGN §6).

A :class:`Transport` moves bytes to and from the device's byte address space (the regions of
``regmap.json``: CSRs, parameter, weight and feature memory) and waits for the end of a run:

* :class:`nibble.host.link.Link` — the UART frame protocol (a board's serial port, or the
  simulated device's byte streams); its ``wait`` returns at once and the driver polls ``status``.
* :class:`XdmaTransport` — PCIe through the Xilinx XDMA conventions: CSRs through the AXI-Lite
  user BAR (``/dev/xdma0_user``, one 32-bit ``pread``/``pwrite`` at the register's offset),
  memories by DMA (``/dev/xdma0_h2c_0`` ``pwrite`` and ``/dev/xdma0_c2h_0`` ``pread`` at the AXI
  byte address), the end of a run as user interrupt 0 (``/dev/xdma0_events_0``: a ``read``
  blocks until it fires). The endpoints are an object: :class:`XdmaCharDevices` on a board,
  :class:`nibble.sim.axi_device.SimAxiDevice` for the simulated device, whose harness drives the same
  AXI4 slave port the endpoint drives on a board — the transport code is the same.

Errors: :class:`TransportError` names the operation, the address and the cause (an AXI SLVERR
from the device — an unmapped address, or a memory while the engine runs —, a timeout, an I/O
error of the character device).
"""
import abc
import errno
import json
import os

__all__ = ["Transport", "TransportError", "XdmaTransport", "XdmaCharDevices", "load_regmap",
           "REGMAP_KEYS"]


class TransportError(Exception):
    """A transfer failed: names the operation, the byte address and the cause."""


class Transport(abc.ABC):
    """What the driver needs of a host link. Addresses are byte addresses of the device's
    regmap, lengths multiples of 4 bytes (every access is a 32-bit word).

    Subclasses implement :meth:`read`, :meth:`write` and may override :meth:`wait` and
    :meth:`close`. Counters ``bytes_read`` and ``bytes_written`` count payload bytes.
    """

    bytes_read = 0
    bytes_written = 0

    @abc.abstractmethod
    def read(self, addr, nbytes):
        """``nbytes`` bytes from byte address ``addr``."""

    @abc.abstractmethod
    def write(self, addr, data):
        """Write ``data`` at byte address ``addr``."""

    def read_u32(self, addr):
        """The 32-bit word at ``addr`` (little-endian)."""
        return int.from_bytes(self.read(addr, 4), "little")

    def write_u32(self, addr, value):
        """Write the 32-bit word ``value`` at ``addr``."""
        if not 0 <= value < 1 << 32:
            raise ValueError(f"value 0x{value:x} does not fit in 32 bits")
        self.write(addr, value.to_bytes(4, "little"))

    def wait(self, timeout_s=None):
        """Block until the device signals the end of a run (or ``timeout_s`` passes); may return
        early: the caller reads ``status`` afterwards. The default returns at once."""

    def close(self, kill=False):
        """Release the link (``kill``: at once, after an error or an interrupt)."""


def _check_aligned(what, addr, n):
    if addr % 4 or n % 4 or addr < 0 or n < 0:
        raise ValueError(f"{what}: address 0x{addr:x} and length {n} must be non-negative "
                         f"multiples of 4")


class XdmaTransport(Transport):
    """PCIe transport with the XDMA conventions (module docstring) over ``endpoints``.

    :param endpoints: an object with ``user_read(offset, n) -> bytes``, ``user_write(offset,
        data)``, ``h2c(addr, data)``, ``c2h(addr, n) -> bytes``, ``wait_irq(timeout_s)`` and
        ``close(kill=False)``; each raises ``OSError`` on failure, as the character devices do.
    :param user_window: ``(base, size)`` in bytes: the byte range reached through the user BAR
        (the regmap's CSR region); everything else is DMA.

    Throughput on a board is the endpoint's (Gen2 x8: some GB/s for DMA, about a microsecond per
    user-BAR access); in the simulated device every 32-bit beat takes one engine clock cycle.
    """

    def __init__(self, endpoints, user_window):
        self.ep = endpoints
        self.user_base, self.user_size = user_window
        self.bytes_read = self.bytes_written = 0

    def _user(self, addr, n):
        return self.user_base <= addr and addr + n <= self.user_base + self.user_size

    def _call(self, what, addr, fn, *args):
        try:
            return fn(*args)
        except OSError as e:
            cause = e.strerror or os.strerror(e.errno or errno.EIO)
            raise TransportError(f"{what} at 0x{addr:08x}: {cause}") from e

    def read(self, addr, nbytes):
        _check_aligned("read", addr, nbytes)
        if self._user(addr, nbytes):
            data = b"".join(self._call("register read", a, self.ep.user_read, a - self.user_base, 4)
                            for a in range(addr, addr + nbytes, 4))
        else:
            data = self._call(f"DMA read of {nbytes} bytes", addr, self.ep.c2h, addr, nbytes)
        if len(data) != nbytes:
            raise TransportError(f"read at 0x{addr:08x}: {len(data)} of {nbytes} bytes arrived")
        self.bytes_read += nbytes
        return bytes(data)

    def write(self, addr, data):
        data = bytes(data)
        _check_aligned("write", addr, len(data))
        if self._user(addr, len(data)):
            for off in range(0, len(data), 4):
                self._call("register write", addr + off, self.ep.user_write,
                           addr + off - self.user_base, data[off:off + 4])
        else:
            self._call(f"DMA write of {len(data)} bytes", addr, self.ep.h2c, addr, data)
        self.bytes_written += len(data)

    def wait(self, timeout_s=None):
        self.ep.wait_irq(timeout_s)

    def close(self, kill=False):
        self.ep.close(kill=kill)


class XdmaCharDevices:
    """The character devices of the Xilinx XDMA Linux driver (``dma_ip_drivers/XDMA``) for one
    card: ``<prefix>_user``, ``<prefix>_h2c_0``, ``<prefix>_c2h_0`` and ``<prefix>_events_0``.

    :param prefix: e.g. ``/dev/xdma0``.
    :raises TransportError: a device file that cannot be opened (driver not loaded, no
        permission), naming it.

    ``wait_irq`` reads the events file (it blocks until user interrupt 0; the driver returns the
    event count) when it exists, else returns at once (the caller polls ``status``); a timeout is
    not supported by the driver's blocking read and is ignored.
    """

    def __init__(self, prefix="/dev/xdma0"):
        self.prefix = prefix
        self._fds = {}
        try:
            for name, flags in (("user", os.O_RDWR), ("h2c_0", os.O_WRONLY), ("c2h_0", os.O_RDONLY)):
                self._fds[name] = os.open(f"{prefix}_{name}", flags)
        except OSError as e:
            self.close()
            raise TransportError(f"cannot open {e.filename}: {e.strerror} (is the XDMA driver "
                                 f"loaded and the card enumerated?)") from e
        try:
            self._fds["events_0"] = os.open(f"{prefix}_events_0", os.O_RDONLY)
        except OSError:
            pass

    def _pread(self, name, n, offset):
        data = os.pread(self._fds[name], n, offset)
        if len(data) != n:
            raise OSError(errno.EIO, f"{self.prefix}_{name}: {len(data)} of {n} bytes")
        return data

    def _pwrite(self, name, data, offset):
        done = os.pwrite(self._fds[name], data, offset)
        if done != len(data):
            raise OSError(errno.EIO, f"{self.prefix}_{name}: {done} of {len(data)} bytes written")

    def user_read(self, offset, n):
        return self._pread("user", n, offset)

    def user_write(self, offset, data):
        self._pwrite("user", data, offset)

    def h2c(self, addr, data):
        self._pwrite("h2c_0", data, addr)

    def c2h(self, addr, n):
        return self._pread("c2h_0", n, addr)

    def wait_irq(self, timeout_s=None):
        if "events_0" in self._fds:
            os.read(self._fds["events_0"], 4)

    def close(self, kill=False):
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


#: Keys a ``regmap.json`` must have for the driver.
REGMAP_KEYS = ("id", "regions", "csrs", "status_bits", "ctrl_bits", "config", "error_codes")


def load_regmap(path):
    """The register map written by ``nibble gen`` (or with a simulated device) as a dict.

    :raises ValueError: the file is not JSON or lacks one of :data:`REGMAP_KEYS` (naming the
        file and the key).
    """
    try:
        with open(path) as f:
            rm = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not a register map ({e})") from e
    missing = [k for k in REGMAP_KEYS if k not in rm]
    if missing:
        raise ValueError(f"{path}: not a register map (no {', '.join(missing)})")
    return rm
