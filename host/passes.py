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

__all__ = ["fold_bn", "inq", "calibrate"]


def fold_bn(ops):
    """``w' = w · γ/σ`` per output channel, ``b' = (b − μ)·γ/σ + β`` (σ = √(var + ε)).

    The output channel is axis 0 of a Conv/Gemm weight ``(Cout, Cin, Kh, Kw)`` and axis 1 of a
    ConvTranspose weight ``(Cin, Cout, Kh, Kw)``.
    """
    out = []
    for op in ops:
        if op.bn is None:
            out.append(op)
            continue
        scale, shift = op.bn
        per_co = scale[None, :, None, None] if op.kind == "ConvTranspose" else scale[:, None, None, None]
        out.append(dataclasses.replace(op, w=op.w * per_co, b=op.b * scale + shift, bn=None))
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


def calibrate(ops, calib, input_shape):
    """Choose the input exponent and every layer's output exponent from ``calib`` (N, C, H, W).

    The float model is run with the INQ-decoded weights; each tensor's ``Q = ⌊log2(128/max|f|)⌋``
    (the layer's output after bias, activation and pool). A layer with a tanh/sigmoid ``act``
    instead gets ``q_act = ACT_Q_IN`` (its pre-activation is requantized with that exponent before
    the table) and ``q_out = ACT_Q_OUT`` (the table's output); other layers get ``q_act = None``.
    :returns: ``(ops with q_in/q_out/q_act set, q_input)``.
    :raises CompileError: if the calibration data has the wrong shape or is not finite.
    """
    x = np.asarray(calib, dtype=np.float64)
    if x.ndim == 2 and input_shape[1:] == (1, 1):
        x = x.reshape(len(x), -1, 1, 1)
    if x.ndim != 4 or x.shape[1:] != tuple(input_shape):
        raise CompileError(f"calibration data has shape {x.shape[1:]}, the model expects {tuple(input_shape)}")
    if not np.all(np.isfinite(x)):
        raise CompileError("calibration data is not finite")
    q = feature_q(np.abs(x).max())
    outs = run_float(ops, x, weights="inq")
    res = []
    for op, y in zip(ops, outs):
        if op.act != ACT_NONE:
            qo, qa = ACT_Q_OUT, ACT_Q_IN
        else:
            qo, qa = feature_q(np.abs(y).max()), None
        res.append(dataclasses.replace(op, q_in=q, q_out=qo, q_act=qa))
        q = qo
    return res, feature_q(np.abs(x).max())
