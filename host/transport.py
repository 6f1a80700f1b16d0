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
  AXI4 slave port the endpoint drives on a board — the transport code is the same. The
  accelerator's DDR (``regions["ddr"]`` of the regmap: ``base``, ``bytes``, ``beat_bits``) is
  reached by the same DMA at its AXI addresses (on a board the XDMA's master reaches the MIG
  through the interconnect), in chunks of at most :data:`DMA_CHUNK` bytes.

Errors: :class:`TransportError` names the operation, the address and the cause (an AXI SLVERR
from the device — an unmapped address, or a memory while the engine runs —, a timeout, an I/O
error of the character device).
"""
import abc
import errno
import json
import os

__all__ = ["Transport", "TransportError", "XdmaTransport", "XdmaCharDevices", "load_regmap",
           "REGMAP_KEYS", "DMA_CHUNK", "ddr_window"]

#: Largest DMA transfer into or out of the DDR issued as one ``h2c``/``c2h`` call, bytes (4 MiB:
#: a few hundred microseconds of PCIe Gen2 x8 DMA, so the per-call cost of the driver is small
#: beside it, and the buffers a call needs stay small).
DMA_CHUNK = 1 << 22


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


def ddr_window(regmap):
    """``(base, bytes)`` of the DDR in a register map (``regions["ddr"]``), or ``None`` when the
    accelerator has none. Raises ``ValueError`` for a ``ddr`` region without ``base``/``bytes``."""
    r = regmap.get("regions", {}).get("ddr")
    if r is None:
        return None
    try:
        return int(r["base"]), int(r["bytes"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"regmap region 'ddr' needs integer 'base' and 'bytes', not {r!r}") from e


class XdmaTransport(Transport):
    """PCIe transport with the XDMA conventions (module docstring) over ``endpoints``.

    :param endpoints: an object with ``user_read(offset, n) -> bytes``, ``user_write(offset,
        data)``, ``h2c(addr, data)``, ``c2h(addr, n) -> bytes``, ``wait_irq(timeout_s)`` and
        ``close(kill=False)``; each raises ``OSError`` on failure, as the character devices do.
        Optionally ``ddr_stats() -> dict`` (the simulated device's DDR counters).
    :param user_window: ``(base, size)`` in bytes: the byte range reached through the user BAR
        (the regmap's CSR region); everything else is DMA.
    :param ddr_window: ``(base, size)`` in bytes of the DDR (:func:`ddr_window` of the regmap), or
        ``None`` (no DDR). A transfer inside it goes by DMA in chunks of at most ``dma_chunk``
        bytes; one that is partly inside is refused (``TransportError`` naming the window).
    :param dma_chunk: bytes per DMA call into the DDR (default :data:`DMA_CHUNK`; a positive
        multiple of 4).

    Throughput on a board is the endpoint's (Gen2 x8: some GB/s for DMA, about a microsecond per
    user-BAR access); in the simulated device every 32-bit beat takes one engine clock cycle,
    and DMA into the DDR none (the harness copies it into the DDR model's memory).
    """

    def __init__(self, endpoints, user_window, ddr_window=None, *, dma_chunk=DMA_CHUNK):
        self.ep = endpoints
        self.user_base, self.user_size = user_window
        self.ddr_window = None if ddr_window is None else (int(ddr_window[0]), int(ddr_window[1]))
        if not isinstance(dma_chunk, int) or dma_chunk <= 0 or dma_chunk % 4:
            raise ValueError(f"XdmaTransport dma_chunk must be a positive multiple of 4 bytes, not {dma_chunk!r}")
        self.dma_chunk = dma_chunk
        self.bytes_read = self.bytes_written = 0

    def _user(self, addr, n):
        return self.user_base <= addr and addr + n <= self.user_base + self.user_size

    def _ddr(self, what, addr, n):
        """Whether [addr, addr + n) is in the DDR window; refuses a transfer across its edge."""
        if self.ddr_window is None or n == 0:
            return False
        base, size = self.ddr_window
        if addr + n <= base or addr >= base + size:
            return False
        if addr < base or addr + n > base + size:
            raise TransportError(f"{what} of {n} bytes at 0x{addr:08x}: crosses an edge of the DDR "
                                 f"window 0x{base:08x}..0x{base + size:08x}")
        return True

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
        elif self._ddr("DDR read", addr, nbytes):
            parts = []
            for off in range(0, nbytes, self.dma_chunk):
                k = min(self.dma_chunk, nbytes - off)
                part = self._call(f"DMA read of {k} bytes (byte {off} of {nbytes} from DDR)", addr + off,
                                  self.ep.c2h, addr + off, k)
                if len(part) != k:
                    raise TransportError(f"DMA read at 0x{addr + off:08x}: {len(part)} of {k} bytes arrived")
                parts.append(part)
            data = b"".join(parts)
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
        elif self._ddr("DDR write", addr, len(data)):
            view = memoryview(data)
            for off in range(0, len(data), self.dma_chunk):
                part = view[off:off + self.dma_chunk]
                self._call(f"DMA write of {len(part)} bytes (byte {off} of {len(data)} into DDR)",
                           addr + off, self.ep.h2c, addr + off, bytes(part))
        else:
            self._call(f"DMA write of {len(data)} bytes", addr, self.ep.h2c, addr, data)
        self.bytes_written += len(data)

    def ddr_stats(self):
        """The DDR's counters (``{name: int}``, :data:`nibble.sim.ddr.STAT_NAMES`) where the
        endpoints keep them (the simulated device); ``TransportError`` where they do not (a
        board: the MIG counts nothing the host can read)."""
        stats = getattr(self.ep, "ddr_stats", None)
        if stats is None:
            raise TransportError(f"DDR statistics: {type(self.ep).__name__} keeps none (only the "
                                 f"simulated device counts its DDR traffic)")
        return self._call("DDR statistics", 0, stats)

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
