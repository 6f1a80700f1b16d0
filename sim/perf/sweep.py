"""Design-space sweeps: ``EngineConfig`` fields × networks × modes, evaluated with the model, on Dask.

A sweep point is one network compiled for one configuration with one convolution mode, one
deconvolution mode and one placement (:class:`SweepPoint`). :func:`evaluate` compiles it
(:func:`nibble.host.compiler.compile_model`; seeded N(0, 1) calibration images) and evaluates the
program with the performance model, not the RTL:

* ``cycles``: the compiler's cycle model of every descriptor
  (:func:`nibble.host.passes.lower.layer_cycles`; compute only: with maps in DDR the stalls on
  memory are not modelled — ``nibble bench`` measures them on the RTL);
* ``ideal_cycles``: dense multiply-accumulates (:func:`dense_macs`) / (``m·vc·vp``), and
  ``dense_utilization`` = ideal / cycles (above 1 where Winograd layers do fewer multiplications
  than the dense MACs: F(2×2,3×3) needs 16 instead of 36 per 2×2 outputs);
* ``images_per_s`` at ``clk_hz``, ``gops`` (2 operations per MAC);
* event counts and energy per image (:mod:`nibble.sim.perf.energy`), DDR bytes from the step list
  (:mod:`nibble.sim.perf.traffic`) priced at :data:`~nibble.sim.perf.energy.ENERGY_PJ`
  ``["dram_byte"]``;
* block RAM (RAMB36) from the memory sizes (:func:`nibble.gen.resources.memory_table`) and
  whether it fits each board's device; with ``resources`` also LUT, FF and DSP48E1 of the Yosys
  estimate (:func:`nibble.gen.resources.estimate`, minutes per new configuration, cached).

:func:`run_sweep` evaluates the points on a ``distributed`` cluster — a ``LocalCluster`` of
worker processes on this machine by default, or the scheduler at an address — with a tqdm
progress bar; :func:`write_table` writes the rows as CSV, :func:`plot_pareto` the Pareto fronts
(images/s against a resource, energy per image against images/s) as a PNG.
"""
import csv
import dataclasses
import io
import json
import logging

import numpy as np

__all__ = ["SweepPoint", "COLUMNS", "parse_axis", "config_grid", "skipped_combinations", "sweep_points", "dense_macs", "load_network",
           "evaluate", "run_sweep", "pareto_front", "write_table", "read_table", "plot_pareto", "PLACEMENTS"]

#: Where a point's feature maps live: ``chip`` (feature memory), ``ddr`` (every map in external
#: memory, row bands; weights streamed), ``auto`` (on chip when the program fits, else DDR).
PLACEMENTS = ("auto", "chip", "ddr")

#: Boards whose block RAM every row is checked against (board → device of
#: :data:`nibble.gen.resources.DEVICES`).
BOARD_DEVICES = {"vc707": "xc7vx485t", "kc705": "xc7k325t"}

#: Columns of a sweep row, in table order (units in the names; see the module docstring).
COLUMNS = ("network", "size", "macs", "m", "vc", "vp", "winograd_path", "filter_depth", "feature_depth", "weight_depth",
           "param_depth", "clk_mhz", "conv_mode", "deconv", "placement", "compiles", "reason", "descriptors",
           "winograd_layers", "peak_sac_per_cycle", "cycles", "ideal_cycles", "dense_utilization", "images_per_s",
           "gops", "beats", "sac", "mult", "dram_read_bytes", "dram_write_bytes", "energy_uj", "energy_dram_uj",
           "uj_per_image_on_chip", "bram36", "bram36_fits_vc707", "bram36_fits_kc705", "lut", "ff", "dsp48e1",
           "resource_device", "fits")


@dataclasses.dataclass(frozen=True)
class SweepPoint:
    """One point of a sweep: ``network`` (a :func:`load_network` spec), ``config`` (an
    ``EngineConfig`` as its ``to_dict``), ``conv_mode`` (``--winograd`` of ``nibble compile``),
    ``deconv``, ``placement`` (:data:`PLACEMENTS`), ``seed`` (weights of a zoo network and the
    calibration images), ``resources`` (also the Yosys estimate on ``board``)."""
    network: str
    config: tuple
    conv_mode: str = "auto"
    deconv: str = "auto"
    placement: str = "auto"
    seed: int = 0
    resources: bool = False
    board: str = "vc707"


def _typed(field, text):
    """``text`` as a value of ``EngineConfig`` field ``field`` (int or bool)."""
    if field.type in (bool, "bool"):
        low = text.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"--set {field.name}: '{text}' is not a boolean (true/false)")
    try:
        return int(text, 0)
    except ValueError:
        raise ValueError(f"--set {field.name}: '{text}' is not an integer") from None


def parse_axis(text):
    """``"FIELD=V1,V2,…"`` → ``(field, [values])`` typed by the ``EngineConfig`` field.

    :raises ValueError: no ``=``, an unknown field (naming the known ones), an empty or ill-typed
        value.
    """
    from ...hw.config import EngineConfig
    if "=" not in text:
        raise ValueError(f"--set '{text}': expected FIELD=V1,V2,…")
    name, values = (s.strip() for s in text.split("=", 1))
    fields = {f.name: f for f in dataclasses.fields(EngineConfig)}
    if name not in fields:
        raise ValueError(f"--set '{text}': '{name}' is not an EngineConfig field ({', '.join(fields)})")
    vals = [_typed(fields[name], v) for v in values.split(",") if v.strip()]
    if not vals:
        raise ValueError(f"--set '{text}': no values")
    return name, vals


def config_grid(base, axes, skip_invalid=False):
    """Every combination of ``axes`` (``{field: [values]}``, in order) applied to the
    ``EngineConfig`` ``base``: a list of configurations (the last axis varies fastest).

    :param skip_invalid: leave out the combinations that are not valid configurations (e.g.
        ``m`` not a multiple of ``vc``) instead of raising; :func:`skipped_combinations` lists
        them with the reason.
    :raises ValueError: a combination that is not a valid configuration (the ``EngineConfig``
        check's message, with the combination); no valid combination at all.
    """
    out, bad = _grid(base, axes)
    if bad and not skip_invalid:
        change, why = bad[0]
        raise ValueError(f"{change}: {why}")
    if not out:
        raise ValueError(f"no valid configuration in the grid ({bad[0][0]}: {bad[0][1]})")
    return out


def skipped_combinations(base, axes):
    """The ``(combination, reason)`` pairs of ``axes`` that are not valid configurations."""
    return _grid(base, axes)[1]


def _grid(base, axes):
    import itertools
    names = list(axes)
    out, bad = [], []
    for combo in itertools.product(*(axes[n] for n in names)):
        change = dict(zip(names, combo))
        try:
            out.append(dataclasses.replace(base, **change))
        except ValueError as e:
            bad.append((change, str(e)))
    return out, bad


def sweep_points(networks, configs, conv_modes=("auto",), deconvs=("auto",), placements=("auto",), seed=0,
                 resources=False, board="vc707"):
    """The :class:`SweepPoint` of every network × configuration × convolution mode ×
    deconvolution mode × placement."""
    import itertools
    for p in placements:
        if p not in PLACEMENTS:
            raise ValueError(f"placement '{p}' is not one of {', '.join(PLACEMENTS)}")
    if board not in BOARD_DEVICES:
        raise ValueError(f"board '{board}' is not one of {', '.join(BOARD_DEVICES)}")
    return [SweepPoint(net, tuple(sorted(cfg.to_dict().items())), cm, dc, pl, seed, resources, board)
            for net, cfg, cm, dc, pl in itertools.product(networks, configs, conv_modes, deconvs, placements)]


def _shapes(model):
    import onnx
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None
                                for d in vi.type.tensor_type.shape.dim)
    for t in inferred.graph.initializer:
        shapes[t.name] = tuple(t.dims)
    return inferred, shapes


def dense_macs(model):
    """Multiply-accumulates of one inference of an ONNX model, as a dense computation: Conv
    ``N·Cout·Ho·Wo · Cin/group·kh·kw``, ConvTranspose ``N·Cin·H·W · Cout/group·kh·kw`` (every
    input pixel times every tap: the zero-padded positions of NZP are not counted), Gemm
    ``M·N·K``, MatMul ``∏(output)·K`` (shapes from ONNX shape inference).

    :raises ValueError: naming a node whose shapes shape inference leaves unknown.
    """
    from onnx import helper
    inferred, shapes = _shapes(model)
    total = 0
    for node in inferred.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            continue
        x, w, y = (shapes.get(node.input[0]), shapes.get(node.input[1]), shapes.get(node.output[0]))
        if not x or not w or not y or None in x + w + y:
            raise ValueError(f"node '{node.name or node.output[0]}' ({node.op_type}): shapes unknown")
        prod = lambda s: int(np.prod(s, dtype=np.int64))
        if node.op_type == "Conv":
            total += prod(y) * prod(w[1:])
        elif node.op_type == "ConvTranspose":
            total += prod(x) * prod(w[1:])          # w: (Cin, Cout/group, kh, kw)
        elif node.op_type == "Gemm":
            a = {at.name: helper.get_attribute_value(at) for at in node.attribute}
            total += prod(y) * int(w[1] if a.get("transB", 0) else w[0])
        else:
            total += prod(y) * int(x[-1])
    return total


def load_network(spec, seed=0):
    """``(name, size, onnx.ModelProto)`` of a network spec: ``zoo:NAME`` or ``zoo:NAME@SIZE`` (a
    published architecture of the checkout's ``scripts/zoo.py`` with weights of ``seed``), or the
    path of an ``.onnx`` file.

    :raises ValueError: an unknown zoo name or a size that is not an integer.
    :raises FileNotFoundError: no such file, or no ``scripts/zoo.py`` beside the package.
    """
    import pathlib
    if spec.startswith("zoo:"):
        from ...host.bench import load_zoo
        zoo = load_zoo()
        name, _, size = spec[4:].partition("@")
        if name not in zoo.NETWORKS:
            raise ValueError(f"network '{spec}': no zoo network '{name}' ({', '.join(zoo.NETWORKS)})")
        kwargs = {"seed": seed}
        if size:
            try:
                kwargs["size"] = int(size)
            except ValueError:
                raise ValueError(f"network '{spec}': size '{size}' is not an integer") from None
        model = zoo.NETWORKS[name](**kwargs)
    else:
        from ...host.frontend.onnx import load_onnx
        path = pathlib.Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"network '{spec}': no such file (a path to an .onnx file, or zoo:NAME[@SIZE])")
        model = load_onnx(str(path))
        name = path.stem
    dims = model.graph.input[0].type.tensor_type.shape.dim
    size = dims[2].dim_value if len(dims) == 4 else 0
    return name, size, model


def _compile(model, point, cfg):
    """``(program, placement)`` of ``point``, or ``(None, reason)``."""
    from ...host.compiler import CompileError, compile_model
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    calib = np.random.default_rng(point.seed).normal(0, 1, (2, *dims[1:]))
    tries = {"auto": ("chip", "ddr"), "chip": ("chip",), "ddr": ("ddr",)}[point.placement]
    reasons = []
    for where in tries:
        try:
            return compile_model(model, calib, cfg, winograd=point.conv_mode, deconv=point.deconv,
                                 tile_features=where == "ddr"), where
        except CompileError as e:
            reasons.append(f"{where}: {e}")
    return None, "; ".join(reasons)


def evaluate(point):
    """One row of the sweep table for ``point`` (:data:`COLUMNS`; see the module docstring).
    A point that does not compile has ``compiles`` False and the compiler's reasons; the
    performance columns are then empty (``None``).

    :raises ValueError, FileNotFoundError: the network spec (:func:`load_network`).
    """
    from ...gen.resources import DEVICES, FitError, SynthError, estimate, memory_table
    from ...host.passes.lower import layer_beats, layer_cycles
    from ...hw.config import EngineConfig
    from .energy import ENERGY_PJ, program_energy, program_events
    from .traffic import program_traffic
    cfg = EngineConfig.from_dict(dict(point.config))
    name, size, model = load_network(point.network, point.seed)
    row = dict.fromkeys(COLUMNS)
    macs = dense_macs(model)
    row.update(network=name, size=size, macs=macs, m=cfg.m, vc=cfg.vc, vp=cfg.vp, winograd_path=cfg.winograd,
               filter_depth=cfg.filter_depth, feature_depth=cfg.feature_depth, weight_depth=cfg.weight_depth,
               param_depth=cfg.param_depth, clk_mhz=cfg.clk_hz / 1e6, conv_mode=point.conv_mode,
               deconv=point.deconv, peak_sac_per_cycle=cfg.peak_ops_per_cycle)
    bram = sum(r["BRAM36"] for r in memory_table(cfg, "pcie"))
    row["bram36"] = bram
    for board, dev in BOARD_DEVICES.items():
        row[f"bram36_fits_{board}"] = bram <= DEVICES[dev]["BRAM36"]
    if point.resources:
        row["resource_device"] = dev = BOARD_DEVICES[point.board]
        try:
            est = estimate(cfg, dev, host="pcie", jobs=1)
            row.update(lut=est["total"]["LUT"], ff=est["total"]["FF"], dsp48e1=est["total"]["DSP48E1"],
                       fits=est["fits"])
        except (FitError, SynthError) as e:
            row.update(fits=False, reason=str(e))
    program, where = _compile(model, point, cfg)
    if program is None:
        row.update(compiles=False, placement=point.placement,
                   reason="; ".join(r for r in (row["reason"], where) if r))
        return row
    cycles = sum(layer_cycles(L, cfg) for L in program.layers)
    ev = program_events(program)
    traffic = program_traffic(program)
    dram = traffic["read_bytes"] + traffic["write_bytes"]
    energy = program_energy(program, dram)
    ideal = macs / cfg.peak_ops_per_cycle
    row.update(compiles=True, placement=where, descriptors=len(program.layers),
               winograd_layers=sum(bool(L.winograd) for L in program.layers), cycles=cycles,
               ideal_cycles=ideal, dense_utilization=ideal / cycles, images_per_s=cfg.clk_hz / cycles,
               gops=2 * macs * cfg.clk_hz / cycles / 1e9, beats=sum(layer_beats(L, cfg) for L in program.layers),
               sac=ev["sac"], mult=ev["mult"], dram_read_bytes=traffic["read_bytes"],
               dram_write_bytes=traffic["write_bytes"], energy_uj=energy["total"] / 1e6,
               energy_dram_uj=dram * ENERGY_PJ["dram_byte"] / 1e6,
               uj_per_image_on_chip=(energy["total"] - energy["dram"]) / 1e6)
    return row


def run_sweep(points, *, scheduler=None, workers=2, progress=True):
    """Evaluate ``points`` (:func:`evaluate`) on a Dask ``distributed`` cluster: the scheduler at
    ``scheduler`` (``"tcp://host:8786"``), or a ``LocalCluster`` of ``workers`` processes (one
    thread each) on this machine, closed afterwards. A tqdm bar on stderr follows the points as
    they finish (``progress``).

    :returns: the rows in the order of ``points``.
    :raises: what :func:`evaluate` raises for a point (the first), after the others are cancelled.
    """
    from distributed import Client, LocalCluster, as_completed
    from tqdm import tqdm
    cluster = None
    if scheduler is None:
        cluster = LocalCluster(n_workers=max(1, workers), threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR)
    try:
        with Client(cluster if cluster is not None else scheduler) as client:
            futures = client.map(evaluate, points, pure=False)
            index = {f.key: i for i, f in enumerate(futures)}
            rows = [None] * len(points)
            with tqdm(total=len(points), desc="sweep", unit="point", disable=not progress) as bar:
                for fut in as_completed(futures):
                    try:
                        rows[index[fut.key]] = fut.result()
                    except BaseException:
                        client.cancel(futures)
                        raise
                    bar.update(1)
            return rows
    finally:
        if cluster is not None:
            cluster.close()


def pareto_front(rows, x, y, minimize_x=True, maximize_y=True):
    """Indices of the rows (with ``compiles`` and both values set) that no other row dominates:
    none has an ``x`` at least as good and a ``y`` at least as good, one of them strictly."""
    pts = [(i, r[x], r[y]) for i, r in enumerate(rows) if r.get("compiles") and r.get(x) is not None
           and r.get(y) is not None]
    sx = 1 if minimize_x else -1
    sy = -1 if maximize_y else 1
    front = []
    for i, a, b in pts:
        dominated = any(sx * c <= sx * a and sy * d <= sy * b and (sx * c < sx * a or sy * d < sy * b)
                        for _, c, d in pts)
        if not dominated:
            front.append(i)
    return front


def write_table(rows, path):
    """Write ``rows`` (dicts of :data:`COLUMNS`) to ``path``: ``.csv`` (empty cells for
    ``None``) or ``.json`` (a list of objects).

    :raises ValueError: another extension.
    """
    import pathlib
    path = pathlib.Path(path)
    if path.suffix == ".json":
        path.write_text(json.dumps(rows, indent=1) + "\n")
        return
    if path.suffix != ".csv":
        raise ValueError(f"sweep table '{path}': write .csv or .json")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="raise", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r.get(k) is None else r[k] for k in COLUMNS})
    path.write_text(buf.getvalue())


def read_table(path):
    """The rows of a table :func:`write_table` wrote (``.csv``: integers, floats, booleans and
    empty cells (``None``) read back as such; ``.json``)."""
    import pathlib
    path = pathlib.Path(path)
    if path.suffix == ".json":
        return json.loads(path.read_text())

    def value(v):
        if v == "":
            return None
        if v in ("True", "False"):
            return v == "True"
        for kind in (int, float):
            try:
                return kind(v)
            except ValueError:
                pass
        return v
    with path.open(newline="") as f:
        return [{k: value(v) for k, v in r.items()} for r in csv.DictReader(f)]


def plot_pareto(rows, path, x=None):
    """Draw the sweep's Pareto plots as one PNG at ``path`` (matplotlib, Agg): left, images/s
    against ``x`` — ``"lut"`` when the rows have the resource estimate, else
    ``"peak_sac_per_cycle"`` — right, energy per image against images/s; one colour per
    network, the Pareto front of each network joined by a line, points that do not compile left
    out.

    :raises ValueError: no row compiles.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ok = [r for r in rows if r.get("compiles")]
    if not ok:
        raise ValueError("no sweep point compiles: nothing to plot")
    if x is None:
        x = "lut" if all(r.get("lut") is not None for r in ok) else "peak_sac_per_cycle"
    labels = {"lut": "LUT (Yosys estimate)", "peak_sac_per_cycle": "PE lanes (m·vc·vp, SAC/cycle)",
              "bram36": "RAMB36", "dsp48e1": "DSP48E1"}
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4.2))
    nets = sorted({r["network"] for r in ok})
    for k, net in enumerate(nets):
        sub = [r for r in ok if r["network"] == net]
        color = f"C{k % 10}"
        for ax, (px, py, minx, maxy) in ((ax0, (x, "images_per_s", True, True)),
                                        (ax1, ("images_per_s", "energy_uj", False, False))):
            ax.scatter([r[px] for r in sub], [r[py] for r in sub], color=color, s=18, alpha=0.6,
                       label=net if ax is ax0 else None)
            front = sorted((sub[i] for i in pareto_front(sub, px, py, minx, maxy)), key=lambda r: r[px])
            ax.plot([r[px] for r in front], [r[py] for r in front], color=color, lw=1.2)
    clk = sorted({r["clk_mhz"] for r in ok})
    from matplotlib.ticker import NullFormatter, ScalarFormatter
    ax0.set_xscale("log", base=2)
    ax0.xaxis.set_major_formatter(ScalarFormatter())
    ax0.xaxis.set_minor_formatter(NullFormatter())
    ax0.set_xlabel(labels.get(x, x))
    ax0.set_ylabel(f"images/s at {', '.join(f'{c:g}' for c in clk)} MHz (cycle model)")
    ax0.set_yscale("log")
    ax0.legend(fontsize=8)
    ax0.set_title("throughput against cost (front: fewest resources, most images/s)", fontsize=9)
    ax1.set_xlabel("images/s (cycle model)")
    ax1.set_ylabel("energy per image, µJ (45 nm estimate)")
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    ax1.set_title("energy against throughput (front: most images/s, least energy)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
