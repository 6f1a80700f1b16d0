"""Compiler passes over the IR (``list[ConvOp] → list[ConvOp]``), each testable alone.

* :func:`fold_bn` — BatchNormalization folded into the conv weights and bias (before INQ).
* :func:`inq` — post-training INQ: every weight to the 4-bit power-of-two code (ARITHMETIC §4.1).
* :func:`calibrate` — per-tensor feature exponents Q from a calibration set (ARITHMETIC §4.3);
  fixed exponents around a tanh/sigmoid table (``ACT_Q_IN``, ``ACT_Q_OUT``).
"""
import dataclasses

import numpy as np

from ..sim.golden import ACT_NONE, ACT_Q_IN, ACT_Q_OUT, feature_q, inq_quantize
from .ir import CompileError, run_float

__all__ = ["fold_bn", "inq", "calibrate", "calibration_data"]


def fold_bn(ops):
    """``w' = w · γ/σ`` per output channel, ``b' = (b − μ)·γ/σ + β`` (σ = √(var + ε)).

    The output channel is axis 0 of a Conv/Gemm weight ``(Cout, Cin, Kh, Kw)`` and axis 1 of a
    ConvTranspose weight ``(Cin, Cout, Kh, Kw)``.

    :raises CompileError: naming the layer and its BatchNormalization node if the folded weights
        or bias are not finite (float64 overflow).
    """
    out = []
    for op in ops:
        if op.bn is None:
            out.append(op)
            continue
        scale, shift = op.bn
        per_co = scale[None, :, None, None] if op.kind == "ConvTranspose" else scale[:, None, None, None]
        with np.errstate(all="ignore"):
            w, b = op.w * per_co, op.b * scale + shift
        if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
            bn = op.names[1] if len(op.names) > 1 else "BatchNormalization"      # [layer, bn, ...]
            raise CompileError(f"layer '{op.name}' ({op.kind}): folding BatchNormalization '{bn}' into it gives "
                               "weights or biases that are not finite")
        out.append(dataclasses.replace(op, w=w, b=b, bn=None))
    return out


def inq(ops):
    """Quantize every layer's weights to INQ codes with one ``n2`` per layer (ARITHMETIC §4.1–4.2).

    ``codes`` (uint8, 0..15) keep the layout of ``w``: ``(Cin, Cout, Kh, Kw)`` for a ConvTranspose.

    :raises CompileError: for a layer whose weights are all zero or not finite.
    """
    out = []
    for op in ops:
        if not np.all(np.isfinite(op.w)):
            raise CompileError(f"layer '{op.name}': weights are not finite")
        try:
            codes, n2 = inq_quantize(op.w)
        except ValueError as e:
            raise CompileError(f"layer '{op.name}': {e}") from None
        out.append(dataclasses.replace(op, codes=codes, n2=n2))
    return out


#: Float64 elements the calibration's working arrays may take per batch chunk (the batch is
#: split so that the im2col columns of the largest layer stay below this: 128 MiB).
CALIB_CHUNK_ELEMENTS = 1 << 24
#: Per-image limit of the calibration's working arrays (512 MiB of float64; ``tensordot`` may copy
#: them once more): a layer needing more is a CompileError rather than a MemoryError.
CALIB_IMAGE_ELEMENTS = 1 << 26
_F32_MAX = float(np.finfo(np.float32).max)


def calibration_data(calib, input_shape):
    """The calibration inputs as a float64 (N, C, H, W) array, checked.

    :raises CompileError: ("calibration data …") if it is not a numeric array, is empty, has the
        wrong shape or is not finite.
    """
    try:
        x = np.asarray(calib)
    except Exception as e:
        raise CompileError(f"calibration data cannot be read as an array ({type(e).__name__})") from None
    if x.dtype.kind not in "biuf":
        raise CompileError(f"calibration data has data type {x.dtype}, not a real number type")
    x = x.astype(np.float64)
    if x.ndim == 2 and tuple(input_shape[1:]) == (1, 1):
        x = x.reshape(len(x), -1, 1, 1)
    if x.ndim != 4 or x.shape[1:] != tuple(input_shape):
        raise CompileError(f"calibration data has shape {x.shape[1:]}, the model expects {tuple(input_shape)}")
    if len(x) == 0:
        raise CompileError("calibration data is empty (no inputs)")
    if not np.all(np.isfinite(x)):
        raise CompileError(f"calibration data is not finite ({int(np.isnan(x).sum())} NaN, "
                           f"{int(np.isinf(x).sum())} infinite values)")
    if np.abs(x).max() > _F32_MAX:
        raise CompileError(f"calibration data is out of the float32 range (max |x| = {np.abs(x).max():g})")
    return x


def _work_elements(op, shape):
    """Float64 elements ``run_float`` needs for one image in layer ``op`` on a (C, H, W) input."""
    c, h, w = shape
    kh, kw = op.w.shape[2:]
    t, b, l, r = op.pad
    co, ho, wo = op.out_shape(shape)
    if op.kind == "ConvTranspose":
        S = op.stride
        canvas = max((h - 1) * S + kh, t + ho * op.pool) * max((w - 1) * S + kw, l + wo * op.pool)
        return op.cout * (canvas + h * w)
    conv_h, conv_w = (h + t + b - kh) // op.stride + 1, (w + l + r - kw) // op.stride + 1
    return c * kh * kw * max(conv_h, 0) * max(conv_w, 0) + c * (h + t + b) * (w + l + r) + co * conv_h * conv_w


def calibrate(ops, calib, input_shape):
    """Choose the input exponent and every layer's output exponent from ``calib`` (N, C, H, W).

    The float model is run with the INQ-decoded weights (in batch chunks that keep the working
    arrays under ``CALIB_CHUNK_ELEMENTS``); each tensor's ``Q = ⌊log2(128/max|f|)⌋``
    (the layer's output after bias, activation and pool). A layer with a tanh/sigmoid ``act``
    instead gets ``q_act = ACT_Q_IN`` (its pre-activation is requantized with that exponent before
    the table) and ``q_out = ACT_Q_OUT`` (the table's output); other layers get ``q_act = None``.
    :returns: ``(ops with q_in/q_out/q_act set, q_input)``.
    :raises CompileError: if the calibration data is not a numeric array, is empty, has the wrong
        shape or is not finite (:func:`calibration_data`); naming the layer, if one image needs
        more than ``CALIB_IMAGE_ELEMENTS`` working elements or a layer's calibration outputs are
        not finite or exceed the float32 range.
    """
    x = calibration_data(calib, input_shape)
    per_image, shape = 1, tuple(input_shape)
    for op in ops:
        need = _work_elements(op, shape)
        if need > CALIB_IMAGE_ELEMENTS:
            raise CompileError(f"layer '{op.name}' ({op.kind}): calibrating it needs {need * 8 / 2**20:.0f} MiB "
                               f"per input, more than the {CALIB_IMAGE_ELEMENTS * 8 / 2**20:.0f} MiB allowed")
        per_image = max(per_image, need)
        shape = op.out_shape(shape)
    chunk = max(1, CALIB_CHUNK_ELEMENTS // per_image)
    fmax = np.zeros(len(ops))
    with np.errstate(all="ignore"):
        for i in range(0, len(x), chunk):
            for k, y in enumerate(run_float(ops, x[i:i + chunk], weights="inq")):
                fmax[k] = np.maximum(fmax[k], np.abs(y).max(initial=0.0))   # NaN propagates
    for op, f in zip(ops, fmax):
        if not np.isfinite(f) or f > _F32_MAX:
            raise CompileError(f"layer '{op.name}' ({op.kind}): its outputs on the calibration data are "
                               f"{'not finite' if not np.isfinite(f) else f'out of the float32 range ({f:g})'}")
    q = feature_q(np.abs(x).max())
    res = []
    for op, f in zip(ops, fmax):
        if op.act != ACT_NONE:
            qo, qa = ACT_Q_OUT, ACT_Q_IN
        else:
            qo, qa = feature_q(f), None
        res.append(dataclasses.replace(op, q_in=q, q_out=qo, q_act=qa))
        q = qo
    return res, feature_q(np.abs(x).max())
