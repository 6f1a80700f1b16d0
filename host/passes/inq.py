"""Pass ``inq``: post-training INQ, every layer's weights to 4-bit power-of-two codes (ARITHMETIC
§4.1–4.2), with one weight exponent ``n2`` per layer or, where it pays, one per output channel.

Per-channel exponents (``exponents="auto"`` or ``"channel"``): output channel ``co`` gets its own
level set ``{0, ±2^n2c … ±2^n1c}``, ``n1c = inq_n1`` of that channel's weights, so a channel
whose weights are much smaller than the layer's largest (BatchNorm folding gives such spreads)
keeps its 7 non-zero levels instead of rounding to the few lowest or to zero. The codes are
relative to the channel's exponent; ``ConvOp.n2`` is the smallest and ``ConvOp.dn2[co] = n2c −
n2`` (at most :data:`~nibble.hw.isa.DSH_MAX`: a channel further above the smallest is quantized
at ``n2 + DSH_MAX``); the engine requantizes channel ``co`` with ``sh − dn2[co]`` (descriptor
``ch_sh``, ARITHMETIC §4.5). Not for a layer with a fused residual Add (its residual enters the
accumulator with one shift per layer). ``"auto"`` takes it where the weights' SNR against the
float weights (the mean over output channels, :func:`weight_snr_db`) gains at least
:data:`AUTO_GAIN_DB`; every layer records both SNRs (``ConvOp.wsnr``).
"""
import dataclasses

import numpy as np

from ...hw.isa import DSH_MAX
from ...sim.golden import DE, inq_decode, inq_n1, inq_quantize
from ..graph import Graph
from ..ir import CompileError

__all__ = ["inq", "inq_op", "EXPONENTS", "AUTO_GAIN_DB", "SNR_CAP_DB", "weight_snr_db"]

#: Weight exponent modes: one per layer; per output channel where the SNR gains ≥ AUTO_GAIN_DB;
#: per output channel in every layer that allows it.
EXPONENTS = ("layer", "auto", "channel")
#: ``exponents="auto"``: the weight SNR gain (dB, :func:`weight_snr_db`) that makes a layer use
#: per-channel exponents.
AUTO_GAIN_DB = 1.0
#: A channel's weight SNR when its quantization is exact (or it is all zero).
SNR_CAP_DB = 100.0


def weight_snr_db(w, q, axis=0):
    """The mean over output channels (``axis``) of ``10·log10(Σw_c² / Σ(w_c − q_c)²)`` in dB, each
    channel's capped at :data:`SNR_CAP_DB` (an exact or all-zero channel): a small channel's
    error counts as much as a large one's, as it does after the next requantization."""
    w = np.moveaxis(np.asarray(w, np.float64), axis, 0).reshape(np.shape(w)[axis], -1)
    q = np.moveaxis(np.asarray(q, np.float64), axis, 0).reshape(w.shape)
    err = np.sum((w - q) ** 2, axis=1)
    sig = np.sum(w ** 2, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        db = np.where(err > 0, 10.0 * np.log10(sig / np.where(err > 0, err, 1.0)), SNR_CAP_DB)
    return float(np.mean(np.minimum(np.where(sig > 0, db, SNR_CAP_DB), SNR_CAP_DB)))


def _per_channel(w, axis):
    """``(codes, n2, dn2, decoded)`` of per-output-channel INQ along ``axis``."""
    wc = np.moveaxis(np.asarray(w, np.float64), axis, 0)
    peak = np.abs(wc.reshape(len(wc), -1)).max(axis=1)
    n1_layer = inq_n1(wc)
    n1c = np.array([inq_n1(c) if p > 0 else n1_layer for c, p in zip(wc, peak)], np.int64)
    n1c = np.maximum(n1c, n1c.max() - DSH_MAX)            # offsets 0 … DSH_MAX
    codes = np.empty(wc.shape, np.uint8)
    dec = np.empty(wc.shape, np.float64)
    for co in range(len(wc)):
        codes[co], n2c = inq_quantize(wc[co], int(n1c[co]))
        dec[co] = inq_decode(codes[co], n2c)
    n2 = int(n1c.min()) - DE
    return (np.moveaxis(codes, 0, axis).copy(), n2, (n1c - n1c.min()).astype(np.int64),
            np.moveaxis(dec, 0, axis))


def inq_op(op, exponents="layer"):
    """``op`` with ``codes`` (uint8 0..15, the layout of ``w``: ``(Cin, Cout, Kh, Kw)`` for a
    ConvTranspose), ``n2``, ``dn2`` (per-channel offsets or ``None``) and ``wsnr`` set.

    :param exponents: :data:`EXPONENTS`.
    :raises CompileError: naming the layer if its weights are all zero or not finite.
    """
    if exponents not in EXPONENTS:
        raise CompileError(f"weight exponents '{exponents}' are not one of {', '.join(EXPONENTS)}")
    if not np.all(np.isfinite(op.w)):
        raise CompileError(f"layer '{op.name}': weights are not finite")
    try:
        codes, n2 = inq_quantize(op.w)
    except ValueError as e:
        raise CompileError(f"layer '{op.name}': {e}") from None
    axis = 1 if op.kind == "ConvTranspose" else 0
    snr_layer = weight_snr_db(op.w, inq_decode(codes, n2), axis)
    if op.w.shape[axis] == 1 or op.res:
        return dataclasses.replace(op, codes=codes, n2=n2, dn2=None, wsnr=(snr_layer, snr_layer))
    ccodes, cn2, dn2, dec = _per_channel(op.w, axis)
    snr_ch = weight_snr_db(op.w, dec, axis)
    if exponents == "channel" or (exponents == "auto" and snr_ch - snr_layer >= AUTO_GAIN_DB):
        if np.any(dn2):
            return dataclasses.replace(op, codes=ccodes, n2=cn2, dn2=dn2, wsnr=(snr_layer, snr_ch))
    return dataclasses.replace(op, codes=codes, n2=n2, dn2=None, wsnr=(snr_layer, snr_ch))


def inq(x, exponents="layer"):
    """Quantize the weights of every layer: of every compute node of a
    :class:`~nibble.host.graph.Graph` (returns a new graph), or of a list of
    :class:`~nibble.host.ir.ConvOp` (returns a new list).

    :param exponents: :data:`EXPONENTS` (module docstring).
    :raises CompileError: for a layer whose weights are all zero or not finite (:func:`inq_op`).
    """
    if isinstance(x, Graph):
        g = x.copy()
        for n in g.compute_nodes():
            n.conv = inq_op(n.conv, exponents)
        return g
    return [inq_op(op, exponents) for op in x]
