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
from .program import Program, features_to_words

__all__ = ["Device", "DeviceError", "golden_forward", "golden_outputs", "host_tail", "default_cache_dir", "SIM_DIVISOR"]

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
    """The accumulators of plan ``i`` on input ``v`` (golden model of the engine's datapath), for
    all ``n_coblk·m`` output channels the engine computes (the padding channels have zero weights
    and biases)."""
    from ..sim.winograd import winograd_conv_acc
    codes = program.layer_codes(i)
    if L.dil > 1:                              # NZP: the zero-inserted input (ARITHMETIC §1.3)
        c, h, w = v.shape
        up = np.zeros((c, (h - 1) * L.dil + 1, (w - 1) * L.dil + 1), dtype=np.int64)
        up[:, ::L.dil, ::L.dil] = v
        v = up
    def conv(x, w):
        return winograd_conv_acc(x, w, L.pad, "F2x2_3x3") if L.winograd else golden.conv_acc(x, w, L.stride, L.pad)

    m, vc = program.config.m, program.config.vc
    if L.grp:          # grouped: output block b reads cb_in blocks from block (b // grp)·cb_in
        full_in = np.zeros((L.in_view[1] * vc,) + v.shape[1:], dtype=np.int64)
        full_in[:len(v)] = v
        parts = []
        for b in range(L.n_coblk(m)):
            off = (b // L.grp) * L.cb_in * vc
            parts.append(conv(full_in[off:off + L.cb_in * vc], codes[b * m:(b + 1) * m]))
        acc = np.concatenate(parts)[:L.cout]
    else:
        acc = conv(v, codes)
    bias = program.layer_bias(i, padded=True)
    full = np.zeros((len(bias),) + acc.shape[1:], dtype=np.int64)
    full[:L.cout] = acc
    return full + bias[:, None, None]


def host_tail(spec, y):
    """An output's host part: (N, C) for a flattened output, then the ``tail`` operators (gap: the
    mean over the rows and columns of the (C, H, W) map → (N, C); softmax over the channel axis:
    ``exp(y − max) / Σ exp(y − max)``, float64).

    :raises ValueError: an operator that is not one of ``nibble.host.program.HOST_OPS``.
    """
    y = y.reshape(len(y), -1) if spec.flatten else y
    for op in spec.tail:
        if op == "gap":
            y = y.reshape(len(y), spec.shape[0], -1).mean(axis=2)
        elif op == "softmax":
            e = np.exp(y - y.max(axis=1, keepdims=True))
            y = e / e.sum(axis=1, keepdims=True)
        else:
            raise ValueError(f"output '{spec.name}': unknown host operator '{op}'")
    return y


def read_view(mem, base, h, w, row, pix, cb):
    """The (cb·vc, h, w) int64 map at ``base`` (pixel (y, x) at word ``base + y·row + x·pix``) of a
    feature memory ``mem`` (words × vc int8)."""
    idx = base + np.arange(h)[:, None, None] * row + np.arange(w)[None, :, None] * pix + np.arange(cb)
    return mem[idx].reshape(h, w, -1).transpose(2, 0, 1).astype(np.int64)


def write_view(mem, base, row, pix, y, vc):
    """Store the (C, h, w) int8 map ``y`` (C a multiple of ``vc``) at ``base`` with the given pitches."""
    c, h, w = y.shape
    cb = c // vc
    idx = base + np.arange(h)[:, None, None] * row + np.arange(w)[None, :, None] * pix + np.arange(cb)
    mem[idx] = y.transpose(1, 2, 0).reshape(h, w, cb, vc)


def golden_forward(program: Program, v):
    """:func:`golden_outputs` of one input: the int64 (C, H, W) output of a single-output program,
    else the list of outputs."""
    outs = golden_outputs(program, v)
    return outs[0] if len(outs) == 1 else outs


def golden_outputs(program: Program, v):
    """Run one input through the program with the golden model, as the engine runs it: plan by plan
    on one feature memory (``feature_depth`` words of ``vc`` int8), each plan reading its input
    view and writing its output view (``nibble.hw.isa.DESCRIPTOR``).

    Per plan: ``acc = conv_acc(v, codes, stride, pad) + bias`` (ARITHMETIC §4.4) over the
    ``n_coblk·m`` channels the engine computes, plus ``r << res_sh`` for a fused residual Add, ``requantize(acc, sh_hw, relu, slopes, clip)``
    (§4.5), the tanh/sigmoid table if any, then ``maxpool(·, pool)``. A Winograd plan computes
    ``acc' = winograd_conv_acc(v, codes, pad) + 4·bias`` (= 4·acc, §2.3) and requantizes with
    ``sh + 2``, as the hardware does; an NZP plan reads the zero-inserted input (§1.3); the TDC
    phases write their interleaved views of one map (§1.4, §5).

    :param v: int (C, H, W) of the first input, or a list with one array per program input.
    :returns: list of int64 arrays (C, H, W), one per program output.
    """
    c = program.config
    vc = c.vc
    mem = np.zeros((c.feature_depth, vc), dtype=np.int8)
    for spec, x in zip(program.inputs, v if isinstance(v, (list, tuple)) else [v]):
        row, pix, cb = spec.view(vc)
        full = np.zeros((cb * vc,) + tuple(spec.shape[1:]), dtype=np.int64)
        full[:spec.shape[0]] = x
        write_view(mem, spec.base, row, pix, full, vc)
    for i, L in enumerate(program.layers):
        x = read_view(mem, L.in_base, L.in_h, L.in_w, *L.in_view, L.in_view[1] if L.grp else L.cb_in)[:L.cin]
        acc = _layer_acc(program, i, L, x)
        if L.res:                       # fused residual Add: the tensor laid out as the output
            r = read_view(mem, L.res_base, L.out_h, L.out_w, *L.out_view, L.cb_out)
            acc = acc + (r << L.res_sh_hw)
        y = golden.requantize(acc, L.sh_hw, L.relu, program.layer_slopes(i, padded=True), L.clip)
        if L.act:
            y = golden.activate(y, L.act)
        y = golden.maxpool(y, L.pool)
        write_view(mem, L.out_base, *L.out_view, y, vc)
    outs = []
    for spec in program.outputs:
        row, pix, cb = spec.view(vc)
        outs.append(read_view(mem, spec.base, spec.shape[1], spec.shape[2], row, pix, cb)[:spec.shape[0]])
    return outs


class _GoldenBackend:
    def __init__(self):
        self.program = None

    def load(self, program):
        self.program = program

    def execute(self, v):
        return golden_outputs(self.program, v), None, None

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
        bits, ctrl = self.rm["status_bits"], self.rm["ctrl_bits"]
        flag = lambda state, name: state["status"] >> bits[name] & 1
        state = self._wait_idle()             # a run left by an earlier, failed transfer
        if flag(state, "done") or flag(state, "error"):            # ... and not acknowledged
            self.link.write_u32(self._csr("ctrl"), ctrl["ack"])
        for spec, x in zip(p.inputs, v if isinstance(v, (list, tuple)) else [v]):
            row, pix, cb = spec.view(c.vc)
            if (row, pix) != (spec.shape[2] * cb, cb):
                raise DeviceError(f"input '{spec.name}' is not a dense map (row {row}, pixel {pix} words)")
            self.link.write(self._mem("feature", spec.base), features_to_words(x, c.vc, cb))
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
        outs = []
        for spec in p.outputs:
            row, pix, cb = spec.view(c.vc)
            raw = self.link.read(self._mem("feature", spec.base), spec.words(c.vc) * c.vc)
            mem = np.frombuffer(raw, np.int8).reshape(-1, c.vc)
            outs.append(read_view(mem, 0, spec.shape[1], spec.shape[2], row, pix, cb)[:spec.shape[0]])
        self.link.write_u32(self._csr("ctrl"), ctrl["ack"])
        return outs, state["cycles"], state["beats"]

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
        """Run int8 inputs (N, C, H, W) → int8 outputs (N, Cout, Ho, Wo); a program with several
        outputs gives a list with one such array per output (``Program.outputs`` order)."""
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
        per_output = [np.stack([o[k] for o in outs]) for k in range(len(self.program.outputs))]
        self.raw = per_output[0] if len(per_output) == 1 else per_output
        return self.raw

    def run(self, x):
        """Float inputs → float outputs: the dequantized int8 results ((N, Cout) for a Gemm head),
        then the output's host operators (``TensorSpec.tail``: softmax over the channels).

        :returns: one (N, …) float64 array for a single-output program, else a dict
            ``{output name: (N, …) array}`` in ``Program.outputs`` order.
        """
        raw = self.run_int(self.quantize(x))
        raw = [raw] if len(self.program.outputs) == 1 else raw
        res = {spec.name: host_tail(spec, golden.dequantize_features(r, spec.q))
               for spec, r in zip(self.program.outputs, raw)}
        return next(iter(res.values())) if len(res) == 1 else res

    def close(self, kill=False):
        """Release the device; a ``sim`` device's simulator process ends (at once with ``kill``,
        as after an interrupt or an error)."""
        self._be.close(kill=kill)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        self.close(kill=exc_type is not None)
