"""Driver: one `Device` API over the transports ``golden``, ``sim`` and ``uart`` (DESIGN §6).

* ``golden`` — the functional NumPy device: runs a :class:`Program` with the golden model
  (``sim/golden.py``), reading the weights and biases back from the program's memory images.
* ``sim`` — the generated ``Accelerator`` RTL under Verilator, reached through the host-link
  frame protocol on pipes: the same frames a board receives, moved a byte per cycle through the
  bridge's byte streams rather than as UART bits (``sim/verilator.py``, ``host/link.py``).
* ``uart`` — a real board over a serial port (pyserial), same protocol.

Every device is used the same way::

    dev = Device("sim")
    dev.load(program)
    y = dev.run(x)            # float outputs (N, ...) dequantized from the int8 results
    dev.cycles                # engine cycles per input of the last run (RTL devices)
"""
import dataclasses
import os
import pathlib
import time

import numpy as np

from ..hw.config import EngineConfig
from ..sim import golden
from .program import Program, features_to_words, words_to_features

__all__ = ["Device", "DeviceError", "golden_forward", "default_cache_dir", "SIM_DIVISOR"]

#: UART clock cycles per bit of the simulated device (the fastest the bridge accepts; used by
#: the bridge's inter-byte timeout).
SIM_DIVISOR = 4
#: The simulated device's host-link physical layer: the bridge's byte streams instead of the
#: UART pins — the same frames, a byte per cycle (:class:`nibble.hw.accelerator.Accelerator`).
SIM_PHY = "stream"


class DeviceError(Exception):
    """The device reported an error, or does not match the program."""


def default_cache_dir():
    """Where simulated devices are cached: ``$NIBBLE_CACHE_DIR`` or ``~/.cache/nibble``."""
    return pathlib.Path(os.environ.get("NIBBLE_CACHE_DIR", pathlib.Path.home() / ".cache" / "nibble"))


def _layer_acc(program, i, L, v):
    """The accumulators of plan ``i`` on input ``v`` (golden model of the engine's datapath)."""
    from ..sim.winograd import winograd_conv_acc
    codes = program.layer_codes(i)
    if L.dil > 1:                              # NZP: the zero-inserted input (ARITHMETIC §1.3)
        c, h, w = v.shape
        up = np.zeros((c, (h - 1) * L.dil + 1, (w - 1) * L.dil + 1), dtype=np.int64)
        up[:, ::L.dil, ::L.dil] = v
        v = up
    if L.winograd:
        acc = winograd_conv_acc(v, codes, L.pad, "F2x2_3x3")
    else:
        acc = golden.conv_acc(v, codes, L.stride, L.pad)
    return acc + program.layer_bias(i)[:, None, None]


def golden_forward(program: Program, v):
    """Run one int input (C, H, W) through the program with the golden model → int64 output.

    Plan by plan: ``acc = conv_acc(v, codes, stride, pad) + bias`` (ARITHMETIC §4.4),
    ``requantize(acc, sh, relu)`` (§4.5), the tanh/sigmoid table if any, then ``maxpool2`` if the
    layer pools. A Winograd plan computes ``acc' = winograd_conv_acc(v, codes, pad) + 4·bias``
    (= 4·acc, ARITHMETIC §2.3) and requantizes with ``sh + 2``, as the hardware does. An NZP plan
    reads the zero-inserted input (§1.3). The TDC phases of one transposed convolution read the
    same input and fill ``y[:, φy::S, φx::S]`` of one output map (§1.4, §5).
    """
    layers = program.layers
    i = 0
    while i < len(layers):
        L = layers[i]
        j = i + 1
        while j < len(layers) and L.group and layers[j].group == L.group:
            j += 1
        out = np.zeros((L.cout, L.full_h or L.out_h, L.full_w or L.out_w), dtype=np.int64)
        for n in range(i, j):
            P = layers[n]
            acc = _layer_acc(program, n, P, v)
            if P.pool == 2:
                acc = acc[:, :2 * P.out_h, :2 * P.out_w]
            y = golden.requantize(acc, P.sh_hw, P.relu)
            if P.act:
                y = golden.activate(y, P.act)
            if P.pool == 2:
                y = golden.maxpool2(y)
            if P.phase:
                py, px, S = P.phase
                out[:, py::S, px::S] = y
            else:
                out = y
        v = out
        i = j
    return v


class _GoldenBackend:
    def __init__(self):
        self.program = None

    def load(self, program):
        self.program = program

    def execute(self, v):
        return golden_forward(self.program, v), None, None

    def close(self, kill=False):
        pass


class _LinkBackend:
    """Drives an accelerator over a :class:`nibble.host.link.Link` using the generated register map."""

    def __init__(self, link, regmap, closer=None, poll_s=0.0):
        self.link, self.rm, self._closer, self.poll_s = link, regmap, closer, poll_s
        self.program = None

    def _csr(self, name):
        return self.rm["regions"]["csr"]["base"] + self.rm["csrs"][name]["offset"]

    def _mem(self, region, word):
        r = self.rm["regions"][region]
        return r["base"] + 4 * r["slices"] * word

    def load(self, program):
        if self.link.read_u32(self._csr("id")) != self.rm["id"]:
            raise DeviceError("the device does not answer with the Nibble identification register")
        for f in ("m", "vc", "acc_width", "filter_depth", "feature_depth", "weight_depth", "param_depth"):
            have = self.link.read_u32(self._csr(f"cfg_{f}"))
            want = getattr(program.config, f)
            if have != want:
                raise DeviceError(f"the program is for {f} = {want}, the device has {have}")
        self.link.write(self._mem("param", 0), program.params.astype("<u4").tobytes())
        self.link.write(self._mem("weight", 0), program.weights.astype("<u2").tobytes())
        self.program = program

    #: CSRs read together (one frame) while waiting for a run.
    RUN_CSRS = ("status", "runs", "err_code", "layer", "cycles", "beats")

    def _run_state(self):
        """The :data:`RUN_CSRS` in one read of the span of CSRs that holds them → dict."""
        offs = {n: self.rm["csrs"][n]["offset"] for n in self.RUN_CSRS}
        lo, hi = min(offs.values()), max(offs.values())
        raw = self.link.read(self.rm["regions"]["csr"]["base"] + lo, hi - lo + 4)
        return {n: int.from_bytes(raw[o - lo:o - lo + 4], "little") for n, o in offs.items()}

    def _wait_idle(self):
        """Poll until the engine is not busy; return :meth:`_run_state` then."""
        busy = 1 << self.rm["status_bits"]["busy"]
        while True:
            state = self._run_state()
            if not state["status"] & busy:
                return state
            if self.poll_s:
                time.sleep(self.poll_s)

    def execute(self, v):
        """One inference: input, start, wait, outputs, acknowledge (7 transactions on the link:
        the CSRs are read together). The ``runs`` counter must advance by exactly one."""
        p = self.program
        c = p.config
        L0, Ln = p.layers[0], p.layers[-1]
        co, ho, wo = p.output_shape
        bits, ctrl = self.rm["status_bits"], self.rm["ctrl_bits"]
        flag = lambda state, name: state["status"] >> bits[name] & 1
        state = self._wait_idle()             # a run left by an earlier, failed transfer
        if flag(state, "done") or flag(state, "error"):            # ... and not acknowledged
            self.link.write_u32(self._csr("ctrl"), ctrl["ack"])
        self.link.write(self._mem("feature", L0.in_base), features_to_words(v, c.vc, L0.cb_in))
        self.link.write_u32(self._csr("desc_base"), p.desc_base)
        runs = state["runs"]
        self.link.write_u32(self._csr("ctrl"), ctrl["start"])
        state = self._wait_idle()
        ran = (state["runs"] - runs) & 0xFFFFFFFF
        if ran != 1 or flag(state, "refused"):
            raise DeviceError(f"the start write ran the engine {ran} times (status "
                              f"0x{state['status']:x}); the outputs are not used")
        if flag(state, "error"):
            code, layer = state["err_code"], state["layer"]
            self.link.write_u32(self._csr("ctrl"), ctrl["ack"])
            names = {v: k for k, v in self.rm["error_codes"].items()}
            raise DeviceError(f"engine error '{names.get(code, code)}' in layer {layer} "
                              f"('{p.layers[min(layer, len(p.layers) - 1)].name}')")
        if not flag(state, "done"):
            raise DeviceError(f"engine stopped without done (status 0x{state['status']:x})")
        nbytes = ho * wo * Ln.cb_out * c.vc
        raw = self.link.read(self._mem("feature", p.output_base), nbytes)
        self.link.write_u32(self._csr("ctrl"), ctrl["ack"])
        return words_to_features(raw, co, ho, wo, c.vc, Ln.cb_out), state["cycles"], state["beats"]

    def close(self, kill=False):
        if self._closer:
            self._closer(kill=kill)


def sim_config(config: EngineConfig):
    """The configuration of the simulated device: ``config`` with a fast simulated UART."""
    return dataclasses.replace(config, baud=config.clk_hz // SIM_DIVISOR)


def _source_key(config: EngineConfig):
    """Hash of what the simulated device's Verilog is generated from: the gateware sources
    (``hw/*.py``), the configuration and the Amaranth version."""
    import hashlib
    import json
    from importlib.metadata import version

    h = hashlib.sha256()
    hw_dir = pathlib.Path(__file__).resolve().parent.parent / "hw"
    parts = [json.dumps(sim_config(config).to_dict(), sort_keys=True), version("amaranth"), SIM_PHY]
    parts += [f.name + "\0" + f.read_text() for f in sorted(hw_dir.glob("*.py"))]
    for part in parts:
        data = part.encode()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def build_sim_device(config: EngineConfig, cache_dir=None):
    """Generate the Verilog of an ``Accelerator`` for ``config`` and build (or reuse) its simulator.

    A built device is found again without elaborating the design: ``cache_dir/index/<key>``
    names the executable built for the hash of the gateware sources, the configuration and
    the Amaranth version (the executable's own cache key, over the Verilog, the harness, the
    Verilator version and flags, is checked by :func:`nibble.sim.verilator.build_device`).

    :returns: path of the simulator executable.
    """
    from ..sim.verilator import build_device, build_key_current
    cache = pathlib.Path(cache_dir or default_cache_dir())
    index = cache / "index" / _source_key(config)[:32]
    if index.is_file():
        exe = cache / index.read_text().strip()
        if exe.is_file() and build_key_current(exe):
            return exe
    from amaranth.back import verilog
    from ..hw.accelerator import Accelerator
    text = verilog.convert(Accelerator(sim_config(config), phy=SIM_PHY), name="top")
    exe = build_device(text, cache, defines=("NIBBLE_BYTE_PHY",))
    index.parent.mkdir(parents=True, exist_ok=True)
    tmp = index.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(str(exe.relative_to(cache)) + "\n")
    os.replace(tmp, index)
    return exe


class Device:
    """An accelerator to run programs on.

    :param transport: ``"golden"``, ``"sim"`` or ``"uart"``.
    :param config: hardware configuration of a ``sim`` device (default :class:`EngineConfig`).
    :param port, baud: serial port and bit rate of a ``uart`` device.
    :param cache_dir: where ``sim`` executables are cached.
    :param timeout_s: seconds a ``uart`` device may take to answer one frame (each frame is
        retried, see :class:`nibble.host.link.Link`). A ``sim`` device has no wall-clock timeout:
        it times out on simulated cycles (:class:`nibble.sim.verilator.SimDevice`), so a loaded
        machine slows it down but does not fail it.
    :param progress: show a progress bar in :meth:`run`.

    Attributes after :meth:`run`: ``cycles`` and ``beats`` (lists, one per input; ``None`` for
    ``golden``), ``raw`` (int8 outputs).
    :raises DeviceError: the device does not match the program, its engine reports an error, or
        the start was not executed exactly once (the ``runs`` counter is checked on every run).
    :raises nibble.host.link.LinkError: the link failed after its retries (naming the operation).
    :raises ValueError: inputs of the wrong shape, an unknown transport.
    """

    def __init__(self, transport="golden", *, config=None, port=None, baud=1_000_000, cache_dir=None,
                 progress=False, timeout_s=2.0):
        self.transport = transport
        self.progress = progress
        self.cycles, self.beats, self.raw = [], [], None
        if transport == "golden":
            self._be = _GoldenBackend()
        elif transport == "sim":
            from ..hw.accelerator import regmap
            from ..sim.verilator import SimDevice
            from .link import Link
            cfg = config or EngineConfig()
            exe = build_sim_device(cfg, cache_dir)
            self._sim = SimDevice(exe, divisor=SIM_DIVISOR)
            try:
                self._be = _LinkBackend(Link(self._sim, timeout_s=None), regmap(sim_config(cfg)),
                                        closer=self._sim.close)
            except BaseException:           # an interrupt here: the simulator must not outlive us
                self._sim.close(kill=True)
                raise
        elif transport == "uart":
            from ..hw.accelerator import regmap
            from .link import open_uart
            if port is None:
                raise ValueError("the uart transport needs a serial port (e.g. /dev/ttyUSB1)")
            cfg = config or EngineConfig()
            link = open_uart(port, baud, timeout_s=timeout_s)
            self._be = _LinkBackend(link, regmap(cfg), closer=lambda kill=False: link.close(), poll_s=0.001)
        else:
            raise ValueError(f"unknown transport '{transport}' (golden, sim, uart)")
        self.program = None

    @property
    def link(self):
        """The :class:`nibble.host.link.Link` of a ``sim`` or ``uart`` device (``None`` for
        ``golden``): its counters (``retried``, ``stale``, ``frames``) and its ``stream``."""
        return getattr(self._be, "link", None)

    def load(self, program: Program):
        """Write the program's descriptors, biases and weights to the device."""
        self._be.load(program)
        self.program = program

    def quantize(self, x):
        """Float inputs (N, C, H, W) → int8 (N, C, H, W) with the program's input exponent."""
        p = self.program
        x = np.asarray(x, dtype=np.float64)
        shape = tuple(p.input_shape)
        if x.ndim == 2 and shape[1:] == (1, 1):
            x = x.reshape(len(x), -1, 1, 1)
        if x.ndim == 3 and x.shape == shape:
            x = x[None]
        if x.ndim != 4 or x.shape[1:] != shape:
            raise ValueError(f"input shape {tuple(x.shape[1:]) if x.ndim >= 2 else x.shape} does not match "
                             f"the model's input {shape} (batch dimension first)")
        if not np.all(np.isfinite(x)):
            raise ValueError("inputs contain NaN or infinity")
        return golden.quantize_features(x, p.input_q)

    def run_int(self, v):
        """Run int8 inputs (N, C, H, W) → int8 outputs (N, Cout, Ho, Wo)."""
        if self.program is None:
            raise DeviceError("no program loaded")
        outs, self.cycles, self.beats = [], [], []
        it = range(len(v))
        if self.progress:
            from tqdm import tqdm
            it = tqdm(it, desc=f"{self.transport} device", unit="img")
        for n in it:
            y, cyc, bt = self._be.execute(v[n])
            outs.append(y)
            self.cycles.append(cyc)
            self.beats.append(bt)
        self.raw = np.stack(outs)
        return self.raw

    def run(self, x):
        """Float inputs → float outputs (dequantized int8 results; (N, Cout) for a Gemm head)."""
        y = golden.dequantize_features(self.run_int(self.quantize(x)), self.program.output_q)
        return y.reshape(len(y), -1) if self.program.flatten_output else y

    def close(self, kill=False):
        """Release the device; a ``sim`` device's simulator process ends (at once with ``kill``,
        as after an interrupt or an error)."""
        self._be.close(kill=kill)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        self.close(kill=exc_type is not None)
