"""The simulated PCIe device: a design with an AXI4 slave host port under Verilator, driven by
``harness_axi.cpp`` as the XDMA endpoint's AXI master would drive it on a board.

:class:`SimAxiDevice` runs the executable (built by :func:`nibble.sim.verilator.build_device`
with ``harness=HARNESS_AXI``) and offers the endpoints :class:`nibble.host.transport.XdmaTransport`
uses: ``user_read``/``user_write`` (the AXI-Lite user BAR, at the AXI address of the register
window), ``h2c``/``c2h`` (DMA writes and reads at the AXI byte address) and ``wait_irq``. Every
one becomes AXI4 INCR bursts of 32-bit beats on the design's ``s_axi`` port (a beat per cycle at
full rate), so the simulated cycles of a transfer are those of the port, not of a serial line.

The command and reply formats are specified once in ``harness_axi.cpp``; the constants below
mirror its enums and are checked against it by the tests.
"""
import errno
import os
import subprocess
import threading
from pathlib import Path

__all__ = ["HARNESS_AXI", "SimAxiDevice", "AXI_OKAY", "AXI_SLVERR", "AXI_DECERR", "STATUS_NAMES"]

#: Source of the AXI harness.
HARNESS_AXI = Path(__file__).with_name("harness_axi.cpp")

OP_WRITE, OP_READ, OP_WAIT = 1, 2, 3
AXI_OKAY, AXI_SLVERR, AXI_DECERR = 0, 2, 3
TIMEOUT, BUSY, BAD_COMMAND = 0x10, 0x11, 0x20
#: Reply status → meaning.
STATUS_NAMES = {AXI_OKAY: "OKAY", AXI_SLVERR: "SLVERR (unmapped address, or a memory while the engine runs)",
                AXI_DECERR: "DECERR", TIMEOUT: "no AXI handshake within the harness's limit",
                BUSY: "still busy at the cycle limit", BAD_COMMAND: "malformed command"}
_REPLY = 13


class SimAxiDevice:
    """A running simulated PCIe device (see the module docstring).

    :param exe: executable built with the AXI harness.
    :param reset_cycles: cycles of reset at start.
    :param wait_cycles: cycle limit of one :meth:`wait_irq` (default 2³²: 21 s at 200 MHz, far
        above a run of any network that fits); the driver polls ``status`` afterwards.

    Attribute ``cycles``: simulated cycles (reset included) at the last reply.
    Errors: ``OSError`` (``EIO``, as a board's character devices report a failed transfer) for a
    reply that is not OKAY, naming the status and the byte offset in the transfer, or for a
    harness that exited (with its stderr).
    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, exe, *, reset_cycles=8, wait_cycles=1 << 32):
        self.wait_cycles = wait_cycles
        self.cycles = 0
        self._proc = subprocess.Popen([str(exe), "--reset-cycles", str(reset_cycles)],
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
        self._proc.poll()
        return OSError(errno.EIO, f"simulated device {cause} (exit status {self._proc.returncode}): "
                              + " | ".join(self._stderr[-5:]))

    def _command(self, op, a, b, payload=b"", reply_bytes=0):
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
        if status not in (AXI_OKAY, BUSY):
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

    def h2c(self, addr, data):
        self.write(addr, data)

    def c2h(self, addr, n):
        return self.read(addr, n)

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
