"""Pass ``calibrate``: per-tensor int8 feature exponents from calibration data (ARITHMETIC §4.3).

The float graph is run with the INQ-decoded weights (the weights the engine uses) on the
calibration inputs; each tensor's ``Q = ⌊log2(128/max|f|)⌋`` (``nibble.sim.golden.feature_q``)
over the calibration set: every graph input, and every layer's output (after bias, residual,
activation, clip and pool; a layer with a residual Add gets the Add's exponent, its output being
the Add's). A Concat's branches all get the exponent of the concatenated map (they are its
parts, ``nibble.host.passes.place_concat``). A layer with a tanh/sigmoid ``act`` instead gets ``q_act = ACT_Q_IN`` (its
pre-activation is requantized with that exponent before the table) and ``q_out = ACT_Q_OUT``
(the table's output).
"""
import dataclasses

import numpy as np

from ...sim.golden import ACT_NONE, ACT_Q_IN, ACT_Q_OUT, feature_q
from ..graph import Graph, chw, run_graph
from ..ir import CompileError, run_float

__all__ = ["calibrate", "calibration_data", "CALIB_CHUNK_ELEMENTS", "CALIB_IMAGE_ELEMENTS"]

#: Float64 elements the calibration's working arrays may take per batch chunk (the batch is
#: split so that the im2col columns of the largest layer stay below this: 128 MiB).
CALIB_CHUNK_ELEMENTS = 1 << 24
#: Per-image limit of the calibration's working arrays (512 MiB of float64; ``tensordot`` may copy
#: them once more): a layer needing more is a CompileError rather than a MemoryError.
CALIB_IMAGE_ELEMENTS = 1 << 26
_F32_MAX = float(np.finfo(np.float32).max)


def calibration_data(calib, input_shape, what="calibration data"):
    """The calibration inputs as a float64 (N, C, H, W) array, checked.

    :param input_shape: (C, H, W); for (F, 1, 1) an (N, F) array is accepted.
    :param what: how messages name the data.
    :raises CompileError: ("calibration data …") if it is not a numeric array, is empty, has the
        wrong shape or is not finite.
    """
    try:
        x = np.asarray(calib)
    except Exception as e:
        raise CompileError(f"{what} cannot be read as an array ({type(e).__name__})") from None
    if x.dtype.kind not in "biuf":
        raise CompileError(f"{what} has data type {x.dtype}, not a real number type")
    x = x.astype(np.float64)
    if x.ndim == 2 and tuple(input_shape[1:]) == (1, 1):
        x = x.reshape(len(x), -1, 1, 1)
    if x.ndim != 4 or x.shape[1:] != tuple(input_shape):
        raise CompileError(f"{what} has shape {x.shape[1:]}, the model expects {tuple(input_shape)}")
    if len(x) == 0:
        raise CompileError(f"{what} is empty (no inputs)")
    if not np.all(np.isfinite(x)):
        raise CompileError(f"{what} is not finite ({int(np.isnan(x).sum())} NaN, "
                           f"{int(np.isinf(x).sum())} infinite values)")
    if np.abs(x).max() > _F32_MAX:
        raise CompileError(f"{what} is out of the float32 range (max |x| = {np.abs(x).max():g})")
    return x


def graph_inputs(graph, calib):
    """``{input name: float64 (N, C, H, W)}`` from the calibration data of a graph: one array for a
    one-input graph, else a dict by input name or a list in input order, checked
    (:func:`calibration_data`) and of one batch size.

    :raises CompileError: as :func:`calibration_data`, naming the input for several inputs; a
        missing input or different batch sizes.
    """
    names = graph.inputs
    shape = lambda n: tuple(graph.tensors[n].fold[:3]) or chw(graph.tensors[n].shape)   # the model's
    if len(names) == 1 and not isinstance(calib, dict):
        return {names[0]: calibration_data(calib, shape(names[0]))}
    if isinstance(calib, dict):
        missing = [n for n in names if n not in calib]
        if missing:
            raise CompileError(f"calibration data for input(s) {', '.join(missing)} is missing")
        items = [calib[n] for n in names]
    elif isinstance(calib, (list, tuple)) and len(calib) == len(names):
        items = list(calib)
    else:
        raise CompileError(f"the model has {len(names)} inputs ({', '.join(names)}): give the calibration data "
                           "as a dict by input name or a list in that order")
    data = {n: calibration_data(v, shape(n), f"calibration data for input '{n}'")
            for n, v in zip(names, items)}
    sizes = {len(v) for v in data.values()}
    if len(sizes) > 1:
        raise CompileError(f"the calibration data of the inputs have different batch sizes {sorted(sizes)}")
    return data


def _work_elements(op, shape):
    """Float64 elements :func:`nibble.host.ir.op_float` needs for one image in layer ``op`` on a
    (C, H, W) input."""
    c, h, w = shape
    kh, kw = op.w.shape[2:]
    t, b, l, r = op.pad
    co, ho, wo = op.out_shape(shape)
    if op.kind == "ConvTranspose":
        sy, sx = op.strides
        canvas = max((h - 1) * sy + kh, t + ho) * max((w - 1) * sx + kw, l + wo)
        return op.cout * (canvas + h * w)
    _, conv_h, conv_w = op.conv_shape(shape)
    pkh, pkw, _, _, pt, pb, pl, pr = op.pool
    pooled = co * (conv_h + pt + pb + pkh) * (conv_w + pl + pr + pkw) if op.pools else 0
    return c * kh * kw * max(conv_h, 0) * max(conv_w, 0) + c * (h + t + b) * (w + l + r) + co * conv_h * conv_w \
        + pooled


def _check_work(op, shape):
    need = _work_elements(op, shape)
    if need > CALIB_IMAGE_ELEMENTS:
        raise CompileError(f"layer '{op.name}' ({op.kind}): calibrating it needs {need * 8 / 2**20:.0f} MiB "
                           f"per input, more than the {CALIB_IMAGE_ELEMENTS * 8 / 2**20:.0f} MiB allowed")
    return need


def _check_range(op, f):
    if not np.isfinite(f) or f > _F32_MAX:
        raise CompileError(f"layer '{op.name}' ({op.kind}): its outputs on the calibration data are "
                           f"{'not finite' if not np.isfinite(f) else f'out of the float32 range ({f:g})'}")


def _exponents(op, f):
    """``(q_out, q_act)`` of a layer whose outputs reach ``max|f|`` = ``f``."""
    return (ACT_Q_OUT, ACT_Q_IN) if op.act != ACT_NONE else (feature_q(f), None)


def _calibrate_graph(graph, calib):
    g = graph.copy()
    data = graph_inputs(g, calib)
    for n in g.nodes:
        if n.conv is None and n.op != "Concat":
            raise CompileError(f"{n.where}: calibration needs a graph of layers only (fuse or fold it first)")
    work = max(_check_work(n.conv, chw(g.tensors[n.inputs[0]].shape)) for n in g.nodes if n.conv is not None)
    live = sum(int(np.prod(chw(t.shape))) for t in g.tensors.values())
    chunk = max(1, CALIB_CHUNK_ELEMENTS // (work + live))
    fmax = {t: 0.0 for t in g.tensors}

    def visit(name, y):
        fmax[name] = np.maximum(fmax[name], np.abs(y).max(initial=0.0))     # NaN propagates

    n_img = len(next(iter(data.values())))
    with np.errstate(all="ignore"):
        for i in range(0, n_img, chunk):
            run_graph(g, {k: v[i:i + chunk] for k, v in data.items()}, weights="inq", keep=(), visit=visit)
    for n in g.nodes:
        if n.conv is not None:
            _check_range(n.conv, fmax[n.outputs[0]])
    for name in g.inputs:
        g.tensors[name].q = feature_q(fmax[name])
    for n in g.nodes:
        if n.op == "Concat":            # one exponent for the concatenated map and all its branches
            q = feature_q(fmax[n.outputs[0]])
            g.tensors[n.outputs[0]].q = q
            for t in n.inputs:
                p = g.producer(t)
                if p.conv.act != ACT_NONE:
                    raise CompileError(f"{p.layer}: a tanh/sigmoid layer cannot be a branch of {n.where} (its "
                                       "output exponent is the table's)")
                p.conv = dataclasses.replace(p.conv, q_out=q)
                g.tensors[t].q = q
            continue
        qo, qa = _exponents(n.conv, fmax[n.outputs[0]])
        n.conv = dataclasses.replace(n.conv, q_in=g.tensors[n.inputs[0]].q, q_out=qo, q_act=qa)
        g.tensors[n.outputs[0]].q = qo
    return g


def calibrate(x, calib, input_shape=None):
    """Choose the feature exponents from the calibration inputs.

    :param x: a :class:`~nibble.host.graph.Graph` of compute nodes (the structural passes have
        run; INQ codes set): returns a new graph with every tensor's ``q`` and every layer's
        ``q_in``, ``q_out``, ``q_act`` set. ``calib``: float (N, C, H, W) (or (N, F)) for a
        one-input graph, else a dict by input name or a list in input order.
        Or a chain (list of :class:`~nibble.host.ir.ConvOp`) with ``input_shape`` (C, H, W):
        returns ``(ops with q_in/q_out/q_act set, q_input)``.
    The float model runs with the INQ-decoded weights, in batch chunks that keep the working
    arrays under :data:`CALIB_CHUNK_ELEMENTS`.

    :raises CompileError: if the calibration data is not a numeric array, is empty, has the wrong
        shape or is not finite (:func:`calibration_data`); naming the layer, if one image needs
        more than :data:`CALIB_IMAGE_ELEMENTS` working elements or a layer's calibration outputs
        are not finite or exceed the float32 range.
    """
    if isinstance(x, Graph):
        return _calibrate_graph(x, calib)
    ops = x
    data = calibration_data(calib, input_shape)
    per_image, shape = 1, tuple(input_shape)
    for op in ops:
        per_image = max(per_image, _check_work(op, shape))
        shape = op.out_shape(shape)
    chunk = max(1, CALIB_CHUNK_ELEMENTS // per_image)
    fmax = np.zeros(len(ops))
    with np.errstate(all="ignore"):
        for i in range(0, len(data), chunk):
            for k, y in enumerate(run_float(ops, data[i:i + chunk], weights="inq")):
                fmax[k] = np.maximum(fmax[k], np.abs(y).max(initial=0.0))   # NaN propagates
    for op, f in zip(ops, fmax):
        _check_range(op, f)
    q = feature_q(np.abs(data).max())
    res = []
    for op, f in zip(ops, fmax):
        qo, qa = _exponents(op, f)
        res.append(dataclasses.replace(op, q_in=q, q_out=qo, q_act=qa))
        q = qo
    return res, feature_q(np.abs(data).max())
