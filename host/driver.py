"""Driver: one `Device` API over the devices ``golden``, ``sim``, ``pcie`` and ``uart`` (DESIGN §6).

* ``golden`` — the functional NumPy device: runs a :class:`Program` with the golden model
  (``sim/golden.py``), reading the weights and biases back from the program's memory images.
* ``sim`` — the generated ``Accelerator`` RTL under Verilator. Its host link is ``pcie`` by
  default: the AXI4 slave port a board's XDMA endpoint drives, driven by the harness, reached
  through the same :class:`nibble.host.transport.XdmaTransport` a board uses; or ``uart``: the
  UART bridge's frames on its byte streams, through the same :class:`nibble.host.link.Link`.
* ``pcie`` — a board over PCIe with the XDMA driver (``/dev/xdma0_*``).
* ``uart`` — a board over a serial port (pyserial), the frame protocol of ``host/link.py``.

The register map (addresses, status bits, configuration) is read from the ``regmap.json`` that
``nibble gen`` writes with the hardware (and the simulated device's build writes next to it);
the driver never imports the gateware.

Every device is used the same way::

    dev = Device("sim")
    dev.load(program)
    y = dev.run(x)            # float outputs (N, ...) dequantized from the int8 results
    dev.cycles                # engine cycles per input of the last run (RTL devices)
"""
import os
import pathlib
import time

import numpy as np

from ..hw.config import EngineConfig
from ..sim import golden
from .program import Program, features_to_words

__all__ = ["Device", "DeviceError", "golden_forward", "golden_outputs", "host_tail", "default_cache_dir",
           "DEVICES"]

#: The devices :class:`Device` opens.
DEVICES = ("golden", "sim", "pcie", "uart")


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


def golden_plan(program: Program, i, L, mem):
    """Run plan ``L`` (the geometry of ``program.layers[i]`` or a view of it, e.g. a row band;
    weights, biases and slopes those of layer ``i``) on ``mem`` ((words, vc) int8 feature
    memory) as the engine does: read its input view, accumulate, residual, requantize, table,
    max-pool, write its output view. See :func:`golden_outputs`."""
    vc = program.config.vc
    x = read_view(mem, *L.read_area, *L.in_view, L.in_view[1] if L.grp else L.cb_in)[:L.cin]
    acc = _layer_acc(program, i, L, x)
    if L.res:                       # fused residual Add: the tensor laid out as the output
        r = read_view(mem, L.res_base, L.out_h, L.out_w, *L.out_view, L.cb_out)
        acc = acc + (r << L.res_sh_hw)
    y = golden.requantize(acc, program.layer_sh(i), L.relu, program.layer_slopes(i, padded=True), L.clip)
    if L.act:
        y = golden.activate(y, L.act)
    y = golden.maxpool(y, L.pool)
    write_view(mem, L.out_base, *L.out_view, y, vc)


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
    mem = np.zeros((program.feature_words, vc), dtype=np.int8)
    for spec, x in zip(program.inputs, v if isinstance(v, (list, tuple)) else [v]):
        row, pix, cb = spec.view(vc)
        full = np.zeros((cb * vc,) + tuple(spec.shape[1:]), dtype=np.int64)
        full[:spec.shape[0]] = spec.device_input(x)
        write_view(mem, spec.base, row, pix, full, vc)
    for i, L in enumerate(program.layers):
        golden_plan(program, i, L, mem)
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


def _input_bytes(spec, x, vc):
    """The device bytes of input ``x`` (C, H, W int8, the spec's ``user_shape``) for ``spec`` (a
    dense map; a folded input gathered first, ``TensorSpec.device_input``)."""
    row, pix, cb = spec.view(vc)
    if (row, pix) != (spec.shape[2] * cb, cb):
        raise DeviceError(f"input '{spec.name}' is not a dense map (row {row}, pixel {pix} words)")
    return features_to_words(spec.device_input(x), vc, cb)


class _TransportBackend:
    """Drives an accelerator over a :class:`nibble.host.transport.Transport` using its register
    map (the ``regmap.json`` written with the hardware)."""

    def __init__(self, link, regmap, poll_s=0.0):
        self.link, self.rm, self.poll_s = link, regmap, poll_s
        self.program = None
        self.ddr = None                 # the DdrPlan of the program on a device with external memory
        self.mem_stats = None
        self._unsettled = False         # an inference failed part-way: the engine may still be running

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
        self.program = None
        if "ddr" in self.rm["regions"]:
            from .steps import plan_ddr
            try:
                plan = plan_ddr(program, self.rm)
            except ValueError as e:
                raise DeviceError(f"the program does not fit the device's external memory: {e}") from None
            for addr, raw in plan.image:
                self.link.write(addr, raw)
            self._run_steps(plan.load_list, plan.load_steps, "loading the program", plan, {})
            self.ddr = plan
        else:
            if program.stream_weights:
                raise DeviceError("the program streams its weights from external memory (compiled with "
                                  "stream_weights); this device has none (its regmap has no 'ddr' region)")
            self.link.write(self._mem("param", 0), program.params.astype("<u4").tobytes())
            self.link.write(self._mem("weight", 0), program.weights.astype("<u2").tobytes())
            self.ddr = None
        self.program = program

    def _start(self, kind):
        """Acknowledge a leftover run, start ``kind`` (a ``ctrl_bits`` name), wait for its end;
        return the run state. Raises DeviceError unless the start ran exactly once."""
        bits, ctrl = self.rm["status_bits"], self.rm["ctrl_bits"]
        flag = lambda state, name: state["status"] >> bits[name] & 1
        state = self._wait_idle()             # a run left by an earlier, failed transfer
        if flag(state, "done") or flag(state, "error"):            # ... and not acknowledged
            self.link.write_u32(self._csr("ctrl"), ctrl["ack"])
        runs = state["runs"]
        self.link.write_u32(self._csr("ctrl"), ctrl[kind])
        self.link.wait()
        state = self._wait_idle()
        ran = (state["runs"] - runs) & 0xFFFFFFFF
        if ran != 1 or flag(state, "refused"):
            raise DeviceError(f"the start write ran the engine {ran} times (status "
                              f"0x{state['status']:x}); the outputs are not used")
        return state

    def _run_steps(self, at, n_steps, what, plan, counters):
        """Run the step list at DDR byte address ``at`` (``n_steps`` steps, END included) and check
        it ended well; fill ``counters`` with the memory-system CSRs."""
        bits, ctrl = self.rm["status_bits"], self.rm["ctrl_bits"]
        self.link.write_u32(self._csr("step_base"), at)
        state = self._start("run_steps")
        stalls = [n for n in self.rm["csrs"] if n.startswith("stall_")]     # by cause, from the regmap
        for name in ("steps", "dma_rd_bytes", "dma_wr_bytes", "engine_cycles", *stalls):
            counters[name] = self.link.read_u32(self._csr(name))
        if state["status"] >> bits["error"] & 1:
            code, step = state["err_code"], counters["steps"]
            self.link.write_u32(self._csr("ctrl"), ctrl["ack"])
            names = {v: k for k, v in self.rm["error_codes"].items()}
            runs = [k for k in plan.runs if k < step] if plan is not None else []
            if names.get(code) not in ("step", "step_range", "ddr") and runs and self.program is not None:
                i = plan.runs[max(runs)] + state["layer"]
                raise DeviceError(f"engine error '{names.get(code, code)}' in layer {i} "
                                  f"('{self.program.layers[min(i, len(self.program.layers) - 1)].name}') "
                                  f"while {what}")
            raise DeviceError(f"error '{names.get(code, code)}' while {what}, at step {step}")
        if not state["status"] >> bits["done"] & 1 or counters["steps"] != n_steps:
            raise DeviceError(f"the step list of {what} ended after {counters['steps']} of {n_steps} steps "
                              f"(status 0x{state['status']:x})")
        return state

    #: CSRs read together (one frame) while waiting for a run.
    RUN_CSRS = ("status", "runs", "err_code", "layer", "cycles", "beats", "feature_reads")

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

    def _execute_ddr(self, v):
        """One inference on a device with external memory: inputs into DDR, the run list, outputs
        from DDR (:mod:`nibble.host.steps`)."""
        p, plan, c = self.program, self.ddr, self.program.config
        for spec, x, (addr, n) in zip(p.inputs, v if isinstance(v, (list, tuple)) else [v], plan.inputs):
            raw = _input_bytes(spec, x, c.vc)
            assert len(raw) == n
            self.link.write(addr, raw)
        counters = {}
        state = self._run_steps(plan.run_list, plan.run_steps, "running", plan, counters)
        outs = []
        for spec, (addr, n) in zip(p.outputs, plan.outputs):
            row, pix, cb = spec.view(c.vc)
            mem = np.frombuffer(self.link.read(addr, n), np.int8).reshape(-1, c.vc)
            outs.append(read_view(mem, 0, spec.shape[1], spec.shape[2], row, pix, cb)[:spec.shape[0]])
        self.link.write_u32(self._csr("ctrl"), self.rm["ctrl_bits"]["ack"])
        self.mem_stats = {"cycles": state["cycles"], "engine_cycles": counters["engine_cycles"],
                          "ddr_read_bytes": counters["dma_rd_bytes"], "ddr_write_bytes": counters["dma_wr_bytes"],
                          "stalls": {n[len("stall_"):]: v for n, v in counters.items() if n.startswith("stall_")}}
        self.feature_reads = state["feature_reads"]
        return outs, state["cycles"], state["beats"]

    def execute(self, v):
        """One inference: input, start, wait, outputs, acknowledge (7 transactions on the link:
        the CSRs are read together). The ``runs`` counter must advance by exactly one. After an
        inference that failed part-way (a link error, say), the next one first waits for the engine
        to be idle: the memories answer "bad address" while it runs. On a device with external
        memory: :meth:`_execute_ddr`."""
        if self.ddr is not None:
            return self._execute_ddr(v)
        if self._unsettled:             # the memories are reachable only once that run has ended
            self._wait_idle()
            self._unsettled = False
        try:
            return self._execute_on_chip(v)
        except BaseException:
            self._unsettled = True
            raise

    def _execute_on_chip(self, v):
        p = self.program
        c = p.config
        bits, ctrl = self.rm["status_bits"], self.rm["ctrl_bits"]
        flag = lambda state, name: state["status"] >> bits[name] & 1
        for spec, x in zip(p.inputs, v if isinstance(v, (list, tuple)) else [v]):
            self.link.write(self._mem("feature", spec.base), _input_bytes(spec, x, c.vc))
        self.link.write_u32(self._csr("desc_base"), p.desc_base)
        state = self._start("start")
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
        self.feature_reads = state["feature_reads"]
        return outs, state["cycles"], state["beats"]

    def descriptor_cycles(self):
        """Engine cycles of every descriptor the last run finished, in order (the ``desc_count``,
        ``desc_sel`` and ``desc_cycles`` CSRs: one read, then a write and a read per descriptor).

        :raises DeviceError: the device has no descriptor cycle log (an older regmap), or the run
            finished more descriptors than the log holds (naming both counts).
        """
        if "desc_count" not in self.rm["csrs"]:
            raise DeviceError("the device has no descriptor cycle log (its register map has no desc_count)")
        n, depth = self.link.read_u32(self._csr("desc_count")), self.rm["desc_log"]["depth"]
        if n > depth:
            raise DeviceError(f"the last run finished {n} descriptors; the device logs the cycles of the first "
                              f"{depth} only")
        out = []
        for i in range(n):
            self.link.write_u32(self._csr("desc_sel"), i)
            out.append(self.link.read_u32(self._csr("desc_cycles")))
        return out

    def close(self, kill=False):
        self.link.close(kill=kill)


def _user_window(rm):
    """(base, bytes) of the register window a PCIe board reaches through its user BAR: the CSRs."""
    r = rm["regions"]["csr"]
    return r["base"], 4 * r["words"]


class Device:
    """An accelerator to run programs on.

    :param transport: ``"golden"``, ``"sim"``, ``"pcie"`` or ``"uart"`` (module docstring).
    :param config: hardware configuration of a ``sim`` device (default :class:`EngineConfig`).
    :param link: host link of a ``sim`` device: ``"pcie"`` (default) or ``"uart"``.
    :param regmap: path of the ``regmap.json`` of a ``pcie`` or ``uart`` board (written by
        ``nibble gen`` next to the bitstream's build files); a ``sim`` device has its own.
    :param xdma: device-file prefix of a ``pcie`` board (default ``/dev/xdma0``).
    :param port, baud: serial port and bit rate of a ``uart`` device.
    :param cache_dir: where ``sim`` executables are cached.
    :param timeout_s: seconds a ``uart`` device may take to answer one frame (each frame is
        retried, see :class:`nibble.host.link.Link`). A ``sim`` device has no wall-clock timeout:
        it times out on simulated cycles, so a loaded machine slows it down but does not fail it.
    :param progress: show a progress bar in :meth:`run`.

    Attributes after :meth:`run`: ``cycles``, ``beats`` and ``feature_reads`` (feature-memory
    words the engine read: the ``feature_reads`` CSR; lists, one per input; ``None`` for
    ``golden``), ``raw`` (int8 outputs), ``memory`` (per input, on a device with external memory:
    ``{"cycles", "engine_cycles", "ddr_read_bytes", "ddr_write_bytes", "stalls"}`` of its run —
    cycles include the DMA of the input and outputs, ``cycles − engine_cycles`` are the cycles the
    engine waited for memory, ``stalls`` splits them by cause: ``{"feature_load", "weight_load",
    "param_load", "store", "steps"}`` (the ``stall_*`` CSRs); ``None`` otherwise).

    On a device with external memory (``sim`` over PCIe, a ``pcie`` board) the program and the
    maps go through DDR and the device runs step lists (:mod:`nibble.host.steps`); a program
    compiled with ``stream_weights`` needs such a device.
    :raises DeviceError: the device does not match the program, its engine reports an error, or
        the start was not executed exactly once (the ``runs`` counter is checked on every run).
    :raises nibble.host.link.LinkError: the UART link failed after its retries (naming the
        operation). :raises nibble.host.transport.TransportError: a PCIe transfer failed (naming
        it and the address).
    :raises ValueError: inputs of the wrong shape, an unknown transport or link, a board device
        without its ``regmap.json``.
    """

    def __init__(self, transport="golden", *, config=None, link="pcie", regmap=None, xdma="/dev/xdma0",
                 port=None, baud=1_000_000, cache_dir=None, progress=False, timeout_s=2.0):
        from .transport import XdmaTransport, ddr_window, load_regmap
        self.transport = transport
        self.progress = progress
        self.cycles, self.beats, self.raw, self.memory, self.feature_reads = [], [], None, [], []
        if transport == "golden":
            self._be = _GoldenBackend()
        elif transport == "sim":
            from ..gen.simdev import SIM_DIVISOR, build_sim_device
            build = build_sim_device(config or EngineConfig(), cache_dir or default_cache_dir(), link)
            rm = load_regmap(build.regmap)
            if link == "pcie":
                from ..sim.axi_device import SimAxiDevice
                from ..sim.ddr import DdrParams
                t = XdmaTransport(SimAxiDevice(build.exe, ddr=DdrParams.from_regmap(rm)), _user_window(rm),
                                  ddr_window(rm))
            else:
                from ..sim.verilator import SimDevice
                from .link import Link
                sim = SimDevice(build.exe, divisor=SIM_DIVISOR)
                t = Link(sim, timeout_s=None)
            self._be = _TransportBackend(t, rm)
        elif transport in ("pcie", "uart"):
            if regmap is None:
                raise ValueError(f"the {transport} device needs the board's regmap.json (written by "
                                 f"'nibble gen' next to its build files)")
            rm = load_regmap(regmap)
            if transport == "pcie":
                from .transport import XdmaCharDevices
                t = XdmaTransport(XdmaCharDevices(xdma), _user_window(rm), ddr_window(rm))
                self._be = _TransportBackend(t, rm, poll_s=0.0001)
            else:
                from .link import open_uart
                if port is None:
                    raise ValueError("the uart transport needs a serial port (e.g. /dev/ttyUSB1)")
                self._be = _TransportBackend(open_uart(port, baud, timeout_s=timeout_s), rm, poll_s=0.001)
        else:
            raise ValueError(f"unknown transport '{transport}' ({', '.join(DEVICES)})")
        self.program = None

    @property
    def link(self):
        """The :class:`nibble.host.transport.Transport` of an RTL device (``None`` for
        ``golden``): a :class:`nibble.host.link.Link` (counters ``retried``, ``stale``,
        ``frames``; its ``stream``) or an :class:`nibble.host.transport.XdmaTransport`
        (``bytes_read``, ``bytes_written``; its endpoints ``ep``)."""
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
        outs, self.cycles, self.beats, self.memory, self.feature_reads = [], [], [], [], []
        it = range(len(v))
        if self.progress:
            from tqdm import tqdm
            it = tqdm(it, desc=f"{self.transport} device", unit="img")
        for n in it:
            y, cyc, bt = self._be.execute(v[n])
            self.memory.append(getattr(self._be, "mem_stats", None))
            self.feature_reads.append(getattr(self._be, "feature_reads", None))
            outs.append(y)
            self.cycles.append(cyc)
            self.beats.append(bt)
        per_output = [np.stack([o[k] for o in outs]) for k in range(len(self.program.outputs))]
        self.raw = per_output[0] if len(per_output) == 1 else per_output
        return self.raw

    def descriptor_cycles(self):
        """Engine cycles of every descriptor the device finished in its last inference (the last
        input of the last :meth:`run`), in execution order: the program's plans, or on a device
        with external memory the descriptors of its RUN steps (one per row band and part,
        ``DdrPlan.runs`` names each one's plan). Their sum is the engine's busy cycles; each is
        what :func:`nibble.host.passes.lower.layer_cycles` models for its plan.

        :raises DeviceError: the ``golden`` device (it has no cycles), no run yet, or more
            descriptors than the device's log holds.
        """
        if not hasattr(self._be, "descriptor_cycles"):
            raise DeviceError(f"the {self.transport} device has no cycle counters")
        if not self.cycles:
            raise DeviceError("no run yet: descriptor cycles are those of the last inference")
        return self._be.descriptor_cycles()

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
