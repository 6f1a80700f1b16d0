"""The simulated PCIe device: a design with an AXI4 slave host port under Verilator, driven by
``harness_axi.cpp`` as the XDMA endpoint's AXI master would drive it on a board.

:class:`SimAxiDevice` runs the executable (built by :func:`nibble.sim.verilator.build_device`
with ``harness=HARNESS_AXI``) and offers the endpoints :class:`nibble.host.transport.XdmaTransport`
uses: ``user_read``/``user_write`` (the AXI-Lite user BAR, at the AXI address of the register
window), ``h2c``/``c2h`` (DMA writes and reads at the AXI byte address) and ``wait_irq``. Every
one becomes AXI4 INCR bursts of 32-bit beats on the design's ``s_axi`` port (a beat per cycle at
full rate), so the simulated cycles of a transfer are those of the port, not of a serial line —
except DMA inside the DDR window (:class:`nibble.sim.ddr.DdrParams`): a design with an AXI4
master port ``m_axi`` is built with a DDR model serving it (``sim/ddr_model.h``), and the host's
``h2c``/``c2h`` there go straight into that memory (DDR_WRITE/DDR_READ), taking no design cycles:
on a board the XDMA reaches the MIG through the interconnect at memory speed, without the
accelerator. :meth:`SimAxiDevice.ddr_stats` reads the model's counters.

The command and reply formats are specified once in ``harness_axi.cpp``; the constants below
mirror its enums and are checked against it by the tests.
"""
import errno
import os
import subprocess
import threading
from pathlib import Path

from .ddr import STAT_NAMES, DdrParams

__all__ = ["HARNESS_AXI", "DDR_MODEL", "SimAxiDevice", "AXI_OKAY", "AXI_SLVERR", "AXI_DECERR",
           "STATUS_NAMES", "DDR_STAT_COUNT", "beat_define"]

#: Source of the AXI harness.
HARNESS_AXI = Path(__file__).with_name("harness_axi.cpp")
#: The DDR model the harness includes (part of the build's cache key).
DDR_MODEL = Path(__file__).with_name("ddr_model.h")

OP_WRITE, OP_READ, OP_WAIT = 1, 2, 3
OP_DDR_WRITE, OP_DDR_READ, OP_DDR_STATS, OP_DDR_CLEAR = 4, 5, 6, 7
AXI_OKAY, AXI_SLVERR, AXI_DECERR = 0, 2, 3
TIMEOUT, BUSY, BAD_COMMAND = 0x10, 0x11, 0x20
#: u64 counters in a DDR_STATS reply (``kDdrStatCount``), named by :data:`nibble.sim.ddr.STAT_NAMES`.
DDR_STAT_COUNT = len(STAT_NAMES)
#: Reply status → meaning.
STATUS_NAMES = {AXI_OKAY: "OKAY", AXI_SLVERR: "SLVERR (unmapped address, or a memory while the engine runs)",
                AXI_DECERR: "DECERR (no slave at that address: outside the DDR window, or a device "
                            "without DDR)",
                TIMEOUT: "no AXI handshake within the harness's limit",
                BUSY: "still busy at the cycle limit", BAD_COMMAND: "malformed command"}
_REPLY = 13
#: Largest DDR_WRITE/DDR_READ sent as one command, bytes (the harness holds a write's payload
#: whole before copying it).
DDR_CHUNK = 1 << 24


def beat_define(data_width):
    """The harness's C preprocessor define for a design whose ``m_axi`` port has ``data_width``
    bits (32..512, a power of two): ``"NIBBLE_DDR_BEAT_BYTES=<data_width // 8>"``, for
    :func:`nibble.sim.verilator.build_device`'s ``defines``."""
    if not isinstance(data_width, int) or data_width not in (32, 64, 128, 256, 512):
        raise ValueError(f"DDR port data width must be 32, 64, 128, 256 or 512 bits, not {data_width!r}")
    return f"NIBBLE_DDR_BEAT_BYTES={data_width // 8}"


class SimAxiDevice:
    """A running simulated PCIe device (see the module docstring).

    :param exe: executable built with the AXI harness.
    :param reset_cycles: cycles of reset at start.
    :param wait_cycles: cycle limit of one :meth:`wait_irq` (default 2³²: 21 s at 200 MHz, far
        above a run of any network that fits); the driver polls ``status`` afterwards.
    :param ddr: the DDR model's :class:`~nibble.sim.ddr.DdrParams` (default: DDR3-1600 behind a
        MIG, the module ``nibble.sim.ddr``'s constants), passed to the harness; ``h2c``/``c2h``
        inside its window go to the DDR memory. A device built without a DDR port ignores the
        parameters and answers DDR transfers DECERR. ``None``: no DDR arguments and no DDR
        routing (only for a device without the port: one with it refuses to start without them).

    Attributes: ``cycles``, simulated cycles (reset included) at the last reply; ``ddr``.
    Errors: ``OSError`` (``EIO``, as a board's character devices report a failed transfer) for a
    reply that is not OKAY, naming the status and the byte offset in the transfer, or for a
    harness that exited (with its stderr); ``OSError`` (``EINVAL``) for a DMA transfer that
    crosses an edge of the DDR window.
    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, exe, *, reset_cycles=8, wait_cycles=1 << 32, ddr=DdrParams()):
        if ddr is not None and not isinstance(ddr, DdrParams):
            raise TypeError(f"SimAxiDevice ddr must be a DdrParams or None, not {type(ddr).__name__}")
        self.wait_cycles = wait_cycles
        self.cycles = 0
        self.ddr = ddr
        args = [str(exe), "--reset-cycles", str(reset_cycles)] + (ddr.args() if ddr else [])
        self._proc = subprocess.Popen(args,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, bufsize=0)
        self._stderr = []
        self._thread = threading.Thread(target=self._pump_stderr, daemon=True)
        self._thread.start()

    def _pump_stderr(self):
        for raw in self._proc.stderr:
            self._stderr.append(raw.decode(errors="replace").rstrip("\n"))
            del self._stderr[:-50]

    def _exited(self, cause):
        # the harness's last words reach stderr before it exits: wait for the exit and for the
        # pump to read them, so that the message carries them (not an empty reason)
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        if self._proc.returncode is not None:
            self._thread.join(timeout=5)
        return OSError(errno.EIO, f"simulated device {cause} (exit status {self._proc.returncode}): "
                              + " | ".join(self._stderr[-5:]))

    def _command(self, op, a, b, payload=b"", reply_bytes=0, check=True):
        head = bytes([op]) + a.to_bytes(4, "little") + b.to_bytes(4, "little")
        try:
            view = memoryview(head + payload)
            while view:                     # an unbuffered pipe may take part of a large write
                view = view[self._proc.stdin.write(view):]
        except (BrokenPipeError, ValueError, OSError) as e:
            raise self._exited("is not running") from e
        want = _REPLY + reply_bytes
        buf = bytearray()
        fd = self._proc.stdout.fileno()
        while len(buf) < want:
            chunk = os.read(fd, want - len(buf))
            if not chunk:
                raise self._exited("exited")
            buf += chunk
        status = buf[0]
        offset = int.from_bytes(buf[1:5], "little")
        self.cycles = int.from_bytes(buf[5:13], "little")
        if check and status not in (AXI_OKAY, BUSY):
            raise OSError(errno.EIO, f"{STATUS_NAMES.get(status, f'status 0x{status:02x}')} at byte "
                                 f"{offset} of the transfer")
        return status, bytes(buf[_REPLY:])

    def write(self, addr, data):
        """AXI write of ``data`` (a multiple of 4 bytes) at byte address ``addr``."""
        self._command(OP_WRITE, addr, len(data), bytes(data))

    def read(self, addr, n):
        """AXI read of ``n`` bytes (a multiple of 4) at byte address ``addr``."""
        return self._command(OP_READ, addr, n, reply_bytes=n)[1]

    # The XDMA endpoints (nibble.host.transport.XdmaTransport): on a board the user BAR and the
    # DMA engines are separate paths into the same AXI interconnect; here both are the port.
    def user_read(self, offset, n):
        return self.read(offset, n)

    def user_write(self, offset, data):
        self.write(offset, data)

    def _in_ddr(self, what, addr, n):
        """Whether a DMA transfer goes to the DDR (inside its window); EINVAL if it straddles an
        edge of the window (on a board the interconnect would split it between two slaves)."""
        if self.ddr is None or not self.ddr.overlaps(addr, n):
            return False
        if not self.ddr.contains(addr, n):
            raise OSError(errno.EINVAL, f"{what} of {n} bytes at 0x{addr:08x} crosses an edge of the "
                                        f"DDR window 0x{self.ddr.base:08x}..0x{self.ddr.end:08x}")
        return True

    def h2c(self, addr, data):
        """DMA write: into the DDR memory inside its window (no design cycles), else AXI bursts
        on the ``s_axi`` port."""
        data = bytes(data)
        if self._in_ddr("DMA write", addr, len(data)):
            self.ddr_write(addr, data)
        else:
            self.write(addr, data)

    def c2h(self, addr, n):
        """DMA read: from the DDR memory inside its window (no design cycles), else the ``s_axi``
        port."""
        if self._in_ddr("DMA read", addr, n):
            return self.ddr_read(addr, n)
        return self.read(addr, n)

    def ddr_write(self, addr, data):
        """``data`` straight into the DDR memory at AXI byte address ``addr`` (any alignment; no
        design cycle elapses). ``OSError`` with DECERR outside the window or without DDR."""
        data = memoryview(bytes(data))
        for off in range(0, len(data), DDR_CHUNK):
            part = data[off:off + DDR_CHUNK]
            self._ddr_command(OP_DDR_WRITE, addr + off, len(part), bytes(part), 0, off)

    def ddr_read(self, addr, n):
        """``n`` bytes of the DDR memory from AXI byte address ``addr`` (no design cycles)."""
        parts = []
        for off in range(0, n, DDR_CHUNK):
            k = min(DDR_CHUNK, n - off)
            parts.append(self._ddr_command(OP_DDR_READ, addr + off, k, b"", k, off))
        return b"".join(parts)

    def _ddr_command(self, op, addr, n, payload=b"", reply_bytes=0, done=0):
        status, data = self._command(op, addr, n, payload, reply_bytes, check=False)
        if status != AXI_OKAY:
            where = f" at byte {done} of the transfer" if done else ""
            raise OSError(errno.EIO, STATUS_NAMES.get(status, f"status 0x{status:02x}") + where)
        return data

    def ddr_stats(self):
        """The DDR model's counters: ``{name: int}`` for :data:`nibble.sim.ddr.STAT_NAMES` (bytes,
        bursts, cycles; see there). ``OSError`` (DECERR) for a device without DDR."""
        raw = self._ddr_command(OP_DDR_STATS, 0, 0, reply_bytes=8 * DDR_STAT_COUNT)
        return {name: int.from_bytes(raw[8 * i:8 * i + 8], "little") for i, name in enumerate(STAT_NAMES)}

    def ddr_clear(self, addr=0, n=0):
        """Set the DDR counters to zero, and the memory bytes [addr, addr + n) too (``n`` = 0: the
        memory is untouched). ``OSError`` (DECERR) for a range outside the window or no DDR."""
        self._ddr_command(OP_DDR_CLEAR, addr, n)

    def wait_irq(self, timeout_s=None):
        """Run until the engine is idle (at most ``wait_cycles`` cycles; ``timeout_s`` is wall
        time and does not apply to a simulation). Returns whether it is idle."""
        limit = self.wait_cycles
        status, _ = self._command(OP_WAIT, limit & 0xFFFFFFFF, limit >> 32)
        return status == AXI_OKAY

    def close(self, kill=False, timeout=30.0):
        """End the harness (at once with ``kill``); idempotent. Returns its exit status."""
        if kill and self._proc.poll() is None:
            self._proc.kill()
        try:
            self._proc.stdin.close()
        except OSError:
            pass
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._thread.join(5)
        self._proc.stdout.close()
        self._proc.stderr.close()
        return self._proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        self.close(kill=exc_type is not None)
