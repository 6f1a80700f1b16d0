"""Host compiler: ONNX → graph IR → passes → :class:`Program` (DESIGN §1, §6).

``compile_model(model, calib, config)`` runs: validation (ONNX shape inference, checker and ONNX
Runtime, :func:`~nibble.host.frontend.onnx.validate_model`) → the front end
(:func:`~nibble.host.frontend.onnx.import_graph`: one node per operator, constants folded) → the
structural passes (``host/passes/``: :func:`fold_pad`, :func:`fold_bn`, :func:`fuse_epilogue`,
:func:`flatten_gemm`, :func:`host_tail`) → :func:`split_gap` and :func:`fold_taps` (the first
layer's taps folded into channels) → the memory checks of every layer against the
:class:`EngineConfig` (:func:`check_fits`, before calibration) → :func:`inq` → int8
:func:`calibrate` → feature-memory :func:`allocate` by liveness → :func:`lower` (integer plans,
biases, shifts, accumulator check, Winograd/TDC choice, device images).
Everything that is malformed, not supported or does not fit the engine is a
:class:`CompileError` naming the node, layer or tensor; no other exception and no silently wrong
program.
"""
import os

import numpy as np

from ..hw.config import EngineConfig
from .frontend.onnx import import_graph, load_onnx, validate_model
from .ir import CompileError
from .passes import STRUCTURAL, allocate, calibrate, check_fits, fold_taps, inq, lower, split_gap
from .passes.calibrate import graph_inputs
from .passes.inq import EXPONENTS
from .passes.lower import (DECONV_MODES, WINOGRAD_MODES, layer_beats, layer_cycles, parse_modes, plan_program,
                           winograd_work)

__all__ = ["compile_model", "compile_graph", "build_graph", "plan_program", "check_fits", "CompileError",
           "parse_modes", "layer_cycles", "layer_beats", "winograd_work", "WINOGRAD_MODES", "DECONV_MODES"]


def build_graph(model):
    """The graph of layers of a validated ONNX model: the front end, then the structural passes
    (:data:`nibble.host.passes.STRUCTURAL`), each checked (``Graph.validate``).

    :raises CompileError: naming the node, as the front end and the passes do.
    """
    g = import_graph(model)
    for p in STRUCTURAL:
        g = p(g).validate()
    if not g.compute_nodes():
        raise CompileError("the model has no Conv, ConvTranspose or Gemm layer")
    return g


def compile_graph(model, calib, config: EngineConfig = EngineConfig(), winograd="auto", deconv="auto",
                  stream_weights=False, tile_features=False, exponents="layer", fold_input=True):
    """:func:`compile_model`, also returning the final graph (for listings such as ``nibble
    compile``'s): ``(graph, program)``."""
    if not isinstance(config, EngineConfig):
        raise CompileError(f"config must be an EngineConfig, not {type(config).__name__}")
    parse_modes(winograd)
    if deconv not in DECONV_MODES:
        raise CompileError(f"deconvolution mode '{deconv}' is not one of {', '.join(DECONV_MODES)}")
    if exponents not in EXPONENTS:
        raise CompileError(f"weight exponents '{exponents}' are not one of {', '.join(EXPONENTS)}")
    if isinstance(model, (str, bytes, os.PathLike)):
        model = load_onnx(model)
    else:
        model = validate_model(model)
    g = split_gap(build_graph(model), config).validate()
    data = graph_inputs(g, calib)
    if tile_features:
        fits = lambda gr: check_fits(gr, feature_space_config(gr, config), deconv, stream_weights=True)
    else:
        fits = lambda gr: check_fits(gr, config, deconv, stream_weights=stream_weights)
    if fold_input:
        g = folded(g, config, fits, winograd)     # the graph still takes the model's input (run_graph folds it)
    if tile_features:
        return g, _tiled(g, data, config, winograd, deconv, exponents)
    fits(g)
    g = inq(g, exponents)
    g = calibrate(g, data)
    g = allocate(g, config)
    return g, lower(g, config, winograd=winograd, deconv=deconv, stream_weights=stream_weights)


def folded(g, config, fits, winograd="auto"):
    """``g`` with its first layers' taps folded into channels (:func:`fold_taps`, with the
    compile's convolution modes ``winograd``) if the folded graph passes ``fits`` (a function
    that raises :class:`CompileError`: the memory checks the program will be compiled under),
    else ``g`` (a folded map can be larger than the input: then the model compiles as it would
    without the fold)."""
    f = fold_taps(g, config, winograd).validate()
    if all(not t.fold for t in f.tensors.values()):
        return g
    try:
        fits(f)
    except CompileError:
        return g
    return f


#: Feature words of the space a program with its maps in external memory is allocated in (the
#: largest a descriptor's 24-bit addresses reach); the program keeps only what it uses.
FEATURE_SPACE = (1 << 24) - 1


def feature_space_config(g, config):
    """The configuration a graph with its maps in external memory is allocated and lowered for:
    a feature space that holds every tensor at once (so the allocation by liveness always fits),
    weight and parameter memories of 2²⁴ words (both are streamed by parts, checked by
    :func:`finish_tiled`).

    :raises CompileError: if the tensors need more than a descriptor's 24-bit addresses reach.
    """
    import dataclasses
    from .graph import chw
    from .passes.allocate import tensor_cb
    total = sum(int(np.prod(chw(t.shape)[1:])) * tensor_cb(g, name, config) for name, t in g.tensors.items()
                if len(t.shape) >= 1)
    if total > FEATURE_SPACE:
        raise CompileError(f"the feature maps need {total} words together, more than the {FEATURE_SPACE} a "
                           "descriptor addresses")
    bw = config.beat_words                  # feature memory is that many banks
    return dataclasses.replace(config, feature_depth=-(-max(total, config.feature_depth) // bw) * bw, weight_depth=1 << 24,
                               param_depth=1 << 24)


def finish_tiled(p, config):
    """A program lowered for :func:`feature_space_config`, made the program of ``config`` with its
    maps in DDR: every plan checked to split into parts and row bands
    (:func:`nibble.host.steps.tiling`), ``feature_space`` set to
    the words used, validated.

    :raises CompileError: naming a layer that cannot be banded or split.
    """
    from .steps import tiling
    for L in p.layers:
        try:
            tiling(L, config)
        except ValueError as e:
            raise CompileError(f"layer '{L.name}': {e}") from None
    used = max([t.base + t.words(config.vc) for t in p.inputs + p.outputs]
               + [L.map_base + L.full_h * L.full_w * (L.dst_pix or L.cb_out) for L in p.layers]
               + [L.in_base + (L.in_h - 1) * L.in_view[0] + (L.in_w - 1) * L.in_view[1] + L.cb_in for L in p.layers])
    p.config, p.feature_space = config, int(used)
    p.validate()
    return p


def _tiled(g, data, config, winograd, deconv, exponents="layer"):
    """Compile with every feature map in external memory (:func:`feature_space_config`, the
    weights streamed, :func:`finish_tiled`)."""
    space = feature_space_config(g, config)
    check_fits(g, space, deconv, stream_weights=True)
    g = inq(g, exponents)
    g = calibrate(g, data)
    g = allocate(g, space)
    return finish_tiled(lower(g, space, winograd=winograd, deconv=deconv, stream_weights=True), config)


def compile_model(model, calib, config: EngineConfig = EngineConfig(), winograd="auto", deconv="auto",
                  stream_weights=False, tile_features=False, exponents="layer", fold_input=True):
    """Compile an ONNX model for an accelerator configuration.

    :param model: path to an ``.onnx`` file or an ``onnx.ModelProto``.
    :param calib: float calibration inputs (N, C, H, W) (or (N, F) for a vector input); for a
        model with several inputs a dict by input name or a list in input order.
    :param config: the :class:`EngineConfig` the program is for.
    :param winograd: convolution mode per layer (see :func:`parse_modes`): ``"auto"``,
        ``"direct"``, ``"winograd"``, ``"name=mode,…,default"`` or a dict ``{name: mode}`` (key
        ``"*"`` for the default).
    :param deconv: transposed convolutions: ``"auto"``, ``"tdc"``, ``"nzp"``, ``"winograd"``
        (see :func:`nibble.host.passes.lower.lower`).
    :param stream_weights: keep the weights in external memory and stream them descriptor by
        descriptor into the two halves of the weight memory (a device with DDR: ``sim`` or
        ``pcie``); the total may then exceed the weight memory, each descriptor's must fit half.
    :param tile_features: keep every feature map in external memory and run each layer in row
        bands that fit the feature memory (:mod:`nibble.host.steps`); implies ``stream_weights``.
        A layer of which one band of rows cannot fit, or a transposed convolution, is a
        :class:`CompileError` naming it.
    :param exponents: weight exponents (:data:`~nibble.host.passes.inq.EXPONENTS`): ``"layer"``
        (one ``n2`` per layer), ``"auto"`` (per output channel where the weights' SNR gains at least
        :data:`~nibble.host.passes.inq.AUTO_GAIN_DB`; ``nibble compile`` lists the layers and both
        SNRs), ``"channel"`` (per output channel in every layer without a fused residual Add).
    :param fold_input: fold a first layer's kernel taps into channels on the host where that
        saves beats (:func:`~nibble.host.passes.fold_taps.fold_taps`, im2col: a 3×3 layer on 3
        channels takes 2 beats a pixel instead of 9); the program's input keeps the model's
        shape (``TensorSpec.fold``). Default True.
    :returns: :class:`Program` with one input and one output spec per graph input and output
        (host tail ops such as a final Softmax declared in the output's ``tail``).
    :raises CompileError: malformed or invalid model (ONNX checker, shape inference or ONNX Runtime
        refuse it), unsupported operator/attribute/shape, attribute of the wrong type, non-finite
        or out-of-range weights, biases, slopes or BatchNormalization parameters (naming the node
        and attribute or initializer); an operator the engine cannot run where it stands (a
        second activation, a Softmax before the end, a branch into an epilogue …, naming the
        node); calibration data that is not a finite numeric array of the input's shape; a layer
        that does not fit the caches or memories (checked before calibration, naming the layer or
        tensor and by how much), an accumulator that could overflow, a bias that does not fit 32
        bits, a layer named for Winograd that cannot run as Winograd (with the reason); a config
        that is not an EngineConfig, an unknown mode.
    """
    return compile_graph(model, calib, config, winograd, deconv, stream_weights, tile_features, exponents,
                         fold_input)[1]
