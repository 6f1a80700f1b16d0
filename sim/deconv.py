"""Golden model of the transposed convolution (NumPy only; ARITHMETIC §1, §3, §5).

PyTorch ``ConvTranspose2d`` semantics (groups 1, dilation 1): weights ``Wt[ci, co, Kh, Kw]``,
stride ``S``, padding ``P``, output padding ``OP < S``. ``S``, ``P`` and ``OP`` are an int or a
``(rows, columns)`` pair; the kernel size per axis is read from ``Wt``. Every formula is applied
separately along rows and along columns (ARITHMETIC §0).

Forms, all equal bit for bit on integer data:

* (a) direct scatter-add, the float oracle (§1.2): :func:`deconv_scatter`, :func:`deconv_scatter_acc`;
* (b) zero insertion "NZP" (§1.3): :func:`nzp_conv`, :func:`nzp_conv_acc`;
* (c) TDC phase-aligned (§1.4): :func:`tdc_plan`, :func:`tdc_phases`, :func:`tdc_subkernels`,
  :func:`tdc_blocks`, :func:`tdc_conv`, :func:`tdc_conv_acc` (zero-filled ``Kc×Kc`` sub-kernels or
  structural zeros dropped); (c') shuffle-and-crop: :func:`tdc_shuffle_conv`;
* Winograd on the TDC phases (§3): :func:`winograd_u_mask`, :func:`winograd_tdc_conv_acc`;
* output word addresses of the phase-aligned writes (§5): :func:`tdc_address`,
  :func:`tdc_phase_addresses`, :func:`tdc_write`;
* multiply counts per ``Cin·Cout`` pair (§1.5, §3): :func:`deconv_counts` and its parts.

The ``*_acc`` functions are the integer datapath: int8 features ``v`` and 4-bit INQ codes in the
``Wt`` layout ``codes[ci, co, Kh, Kw]`` (ARITHMETIC §4.2), run through
:func:`nibble.sim.golden.conv_acc` (the shift-accumulate conv), results ``np.int64`` in units of
``2^n2`` (per-tensor Q). The other functions take float or integer arrays: integer in, ``np.int64``
out (exact); anything else is computed in float64. The correlations (NZP, TDC) are float64 BLAS
products where :func:`nibble.sim.golden.exact_dtype` proves them exact; the scatter-add (a)
stays a plain int64 sum, the independent oracle of the other forms.
"""
import math
from typing import NamedTuple

import numpy as np

from . import winograd as wg
from .golden import code_to_int, conv_acc, correlate, pad_or_crop

__all__ = [
    "deconv_out_size", "pad_or_crop", "deconv_scatter", "deconv_scatter_acc", "nzp_conv",
    "nzp_conv_acc", "AxisPhase", "Phase", "tdc_plan", "tdc_phases", "tdc_subkernels", "tdc_blocks",
    "tdc_conv", "tdc_conv_acc", "tdc_shuffle_conv", "tdc_address", "tdc_phase_addresses", "tdc_write",
    "TDC_WINOGRAD", "winograd_u_mask", "winograd_tdc_conv_acc", "scatter_macs", "scatter_useful_macs",
    "nzp_macs", "tdc_dense_macs", "tdc_skip_macs", "tdc_shuffle_macs", "winograd_tdc_mults",
    "deconv_counts",
]

#: Winograd variant of :mod:`nibble.sim.winograd` used for ``Kc×Kc`` TDC sub-kernels (§3).
TDC_WINOGRAD = {2: "F2x2_2x2", 3: "F2x2_3x3"}


def _pair(v, what):
    """``(rows, columns)`` from an int or a pair of ints."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{what} must be an int or a (rows, columns) pair, got {v!r}")
        return int(v[0]), int(v[1])
    return int(v), int(v)


def _check_axis(K, S, P, OP):
    """``K ≥ 1``, ``S ≥ 1``, ``P ≥ 0``. ``OP`` is any integer: with asymmetric pads it is
    ``output_padding + begin − end`` (:meth:`nibble.host.ir.ConvOp.deconv_geometry`), negative when
    the end pad crops more than the output padding adds, ``≥ S`` when the begin pad is the larger
    (rows beyond the scatter canvas are zero, §1.2)."""
    if K < 1 or S < 1 or P < 0:
        raise ValueError(f"deconvolution needs K >= 1, S >= 1, P >= 0 (K={K}, S={S}, P={P})")


def deconv_out_size(H, K, S, P, OP=0):
    """Output size along one axis: ``Ho = (H − 1)·S − 2P + K + OP`` (ARITHMETIC §1.1).

    :raises ValueError: on a negative ``P``, ``H < 1`` or ``Ho < 1``.
    """
    H, K, S, P, OP = (int(a) for a in (H, K, S, P, OP))
    _check_axis(K, S, P, OP)
    if H < 1:
        raise ValueError(f"input size must be >= 1, got {H}")
    ho = (H - 1) * S - 2 * P + K + OP
    if ho < 1:
        raise ValueError(f"deconvolution K={K} S={S} P={P} OP={OP} of size {H} is empty (Ho={ho})")
    return ho


def _num(a):
    """Integer arrays → int64, anything else → float64."""
    a = np.asarray(a)
    return a.astype(np.int64 if np.issubdtype(a.dtype, np.integer) else np.float64)


def _geometry(x, Wt, S, P, OP):
    """Validated ``(x, Wt, (Ky, Kx), (Sy, Sx), (Py, Px), (OPy, OPx), (Ho, Wo))``."""
    x, Wt = np.asarray(x), np.asarray(Wt)
    if x.ndim != 3 or Wt.ndim != 4 or Wt.shape[0] != x.shape[0]:
        raise ValueError(f"input {x.shape} does not match deconvolution weights {Wt.shape} "
                         "(expected x[Cin, H, W], Wt[Cin, Cout, Kh, Kw])")
    K, S, P, OP = Wt.shape[2:], _pair(S, "stride"), _pair(P, "padding"), _pair(OP, "output_padding")
    out = tuple(deconv_out_size(x.shape[1 + i], K[i], S[i], P[i], OP[i]) for i in range(2))
    return x, Wt, tuple(K), S, P, OP, out


def _corr(xp, f):
    """Stride-1 correlation of an already padded ``xp[Cin, Hp, Wp]`` with ``f[Cout, Cin, kh, kw]``
    (:func:`golden.correlate`: exact int64 on integers, float64 otherwise)."""
    return correlate(xp, f, 1)


def _acc_conv(vp, fcodes):
    """The shift-accumulate conv (:func:`golden.conv_acc`) of an already padded input."""
    return conv_acc(vp, fcodes, 1, (0, 0, 0, 0))


# ---------------------------------------------------------------------------------------------
# (a) scatter-add, §1.2


def deconv_scatter(x, Wt, S, P, OP=0):
    """Direct scatter-add (ARITHMETIC §1.2), the float oracle.

    Input pixel ``(iy, ix)`` adds ``x[ci, iy, ix] · Wt[ci, co, ky, kx]`` to canvas pixel
    ``(S·iy + ky, S·ix + kx)`` of an uncropped canvas; the result is the canvas rows
    ``[P, P + Ho)`` and columns ``[P, P + Wo)`` (zero rows beyond the canvas when ``OP > P``).

    :param x: ``(Cin, H, W)``. :param Wt: ``(Cin, Cout, Kh, Kw)`` (``ConvTranspose2d.weight``).
    :returns: ``(Cout, Ho, Wo)``: int64 if ``x`` and ``Wt`` are integer (exact), else float64.
    """
    x, Wt, (ky_, kx_), (sy, sx), (py, px), _, (ho, wo) = _geometry(x, Wt, S, P, OP)
    x, Wt = _num(x), _num(Wt)
    _, h, w = x.shape
    canvas = np.zeros((Wt.shape[1], max((h - 1) * sy + ky_, py + ho), max((w - 1) * sx + kx_, px + wo)),
                      dtype=np.result_type(x, Wt))
    for ky in range(ky_):
        for kx in range(kx_):
            canvas[:, ky:ky + sy * (h - 1) + 1:sy, kx:kx + sx * (w - 1) + 1:sx] += \
                np.tensordot(Wt[:, :, ky, kx], x, axes=([0], [0]))
    return canvas[:, py:py + ho, px:px + wo]


def deconv_scatter_acc(v, codes, S, P, OP=0):
    """Integer scatter-add of int8 ``v`` and 4-bit codes ``codes[ci, co, Kh, Kw]`` (int64, exact)."""
    return deconv_scatter(np.asarray(v, dtype=np.int64), code_to_int(codes), S, P, OP)


# ---------------------------------------------------------------------------------------------
# (b) zero insertion, §1.3


def _nzp_operands(x, Wt, S, P, OP):
    """Zero-inserted, padded (negative = cropped) input and the swapped, rotated kernel (§1.3)."""
    x, Wt, (ky, kx), (sy, sx), (py, px), (opy, opx), _ = _geometry(x, Wt, S, P, OP)
    ci, h, w = x.shape
    up = np.zeros((ci, (h - 1) * sy + 1, (w - 1) * sx + 1), dtype=x.dtype)
    up[:, ::sy, ::sx] = x
    xp = pad_or_crop(up, (ky - 1 - py, ky - 1 - py + opy, kx - 1 - px, kx - 1 - px + opx))
    return xp, Wt.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]


def nzp_conv(x, Wt, S, P, OP=0):
    """Zero insertion + padding ``K−1−P`` / ``K−1−P+OP`` (negative = crop) + stride-1 correlation
    with ``Wc[co, ci, ky, kx] = Wt[ci, co, K−1−ky, K−1−kx]`` (ARITHMETIC §1.3).

    :returns: ``(Cout, Ho, Wo)``, equal to :func:`deconv_scatter`.
    """
    xp, wc = _nzp_operands(_num(x), _num(Wt), S, P, OP)
    return _corr(xp, wc)


def nzp_conv_acc(v, codes, S, P, OP=0):
    """Integer NZP through the shift-accumulate conv :func:`golden.conv_acc` (int64)."""
    xp, wc = _nzp_operands(np.asarray(v, dtype=np.int64), np.asarray(codes), S, P, OP)
    return _acc_conv(xp, wc)


# ---------------------------------------------------------------------------------------------
# (c) TDC, §1.4


class AxisPhase(NamedTuple):
    """One row of a §1.4 per-axis plan table.

    ``phi`` output phase; ``r = (φ + P) mod S`` kernel phase; ``c = ⌊(φ + P)/S⌋`` input offset;
    ``n = ⌈(K − r)/S⌉`` valid taps; ``taps`` the flipped taps ``f[j]`` as kernel indices
    (``None`` = structural zero), ``j = 0 … Kc−1``; ``pad_lo = Kc − 1 − c``;
    ``pad_hi = n_out + c − H``; ``n_out = ⌈(Ho − φ)/S⌉`` output rows of the phase.
    """
    phi: int
    r: int
    c: int
    n: int
    taps: tuple
    pad_lo: int
    pad_hi: int
    n_out: int


class Phase(NamedTuple):
    """One 2-D phase-aligned sub-convolution (§1.4): the outer product of two :class:`AxisPhase`.

    ``phi = (φy, φx)``, ``r = (ry, rx)``, ``pad = (top, bottom, left, right)``,
    ``n_out = (rows, columns)``, ``taps[jy][jx] = (ky, kx)`` of ``Wt`` or ``None`` (structural
    zero); the block is written to ``y[:, φy::Sy, φx::Sx]``.
    """
    phi: tuple
    r: tuple
    pad: tuple
    n_out: tuple
    taps: tuple
    y: AxisPhase
    x: AxisPhase


def tdc_plan(K, S, P, OP, H):
    """Per-axis phase-aligned TDC plan (ARITHMETIC §1.4): one :class:`AxisPhase` per output phase.

    ``Kc = ⌈K/S⌉``, ``f_r[j] = W[r + S·(Kc−1−j)]`` if that index is ``< K``, else a structural zero.
    """
    ho = deconv_out_size(H, K, S, P, OP)
    kc = -(-K // S)
    plan = []
    for phi in range(S):
        r, c = (phi + P) % S, (phi + P) // S
        n_out = -(-(ho - phi) // S)
        taps = tuple(k if k < K else None for k in (r + S * (kc - 1 - j) for j in range(kc)))
        plan.append(AxisPhase(phi, r, c, -(-(K - r) // S), taps, kc - 1 - c, n_out + c - H, n_out))
    return plan


def tdc_phases(K, S, P, OP, hw):
    """The ``Sy·Sx`` 2-D phases (:class:`Phase`) of a layer on an input of size ``hw = (H, W)``.

    ``K``, ``S``, ``P``, ``OP`` are ints or ``(rows, columns)`` pairs. Phases are listed row-major
    in ``(φy, φx)``, including phases with no output (``n_out`` 0, when ``Ho < S``).
    """
    K, S, P, OP, hw = (_pair(a, n) for a, n in ((K, "kernel"), (S, "stride"), (P, "padding"),
                                                (OP, "output_padding"), (hw, "input size")))
    py, px = (tdc_plan(K[i], S[i], P[i], OP[i], hw[i]) for i in range(2))
    return [Phase((a.phi, b.phi), (a.r, b.r), (a.pad_lo, a.pad_hi, b.pad_lo, b.pad_hi), (a.n_out, b.n_out),
                  tuple(tuple(None if ty is None or tx is None else (ty, tx) for tx in b.taps)
                        for ty in a.taps), a, b)
            for a in py for b in px]


def tdc_subkernels(Wt, S):
    """Zero-filled, flipped sub-kernels of every kernel phase (ARITHMETIC §1.4).

    ``f[co, ci, jy, jx] = Wt[ci, co, ry + Sy(Kcy−1−jy), rx + Sx(Kcx−1−jx)]``, 0 where an index
    is ``≥ K``. On 4-bit codes the fill is code 0 (weight 0).

    :param Wt: ``(Cin, Cout, Kh, Kw)`` weights or codes. :param S: stride (int or pair).
    :returns: ``{(ry, rx): (f, mask)}``: ``f`` of shape ``(Cout, Cin, Kcy, Kcx)`` and the bool
        ``(Kcy, Kcx)`` mask of real taps (False = structural zero: the leading taps only).
    """
    Wt = np.asarray(Wt)
    (ky_, kx_), (sy, sx) = Wt.shape[2:], _pair(S, "stride")
    kcy, kcx = -(-ky_ // sy), -(-kx_ // sx)
    padded = np.zeros(Wt.shape[:2] + (sy * kcy, sx * kcx), dtype=Wt.dtype)
    padded[:, :, :ky_, :kx_] = Wt
    out = {}
    for ry in range(sy):
        for rx in range(sx):
            iy = ry + sy * (kcy - 1 - np.arange(kcy))
            ix = rx + sx * (kcx - 1 - np.arange(kcx))
            f = padded[:, :, iy][:, :, :, ix].transpose(1, 0, 2, 3)
            out[(ry, rx)] = (np.ascontiguousarray(f), np.outer(iy < ky_, ix < kx_))
    return out


def _phase_operands(x, sub, ph, skip_zeros):
    """Padded input and kernel of one phase; with ``skip_zeros`` the structural zero taps are
    dropped (the last ``n(r)`` taps, ``pad_lo − (Kc − n(r))``, §1.4)."""
    f, _ = sub[ph.r]
    t, b, l, r = ph.pad
    if skip_zeros:
        dy, dx = f.shape[2] - ph.y.n, f.shape[3] - ph.x.n
        f = f[:, :, dy:, dx:]
        t, l = t - dy, l - dx
    return pad_or_crop(x, (t, b, l, r)), f


def _tdc_blocks(x, Wt, S, P, OP, skip_zeros, conv):
    x, Wt, K, S, P, OP, _ = _geometry(x, Wt, S, P, OP)
    sub = tdc_subkernels(Wt, S)
    for ph in tdc_phases(K, S, P, OP, x.shape[1:]):
        if 0 in ph.n_out:
            continue
        xp, f = _phase_operands(x, sub, ph, skip_zeros)
        if 0 in f.shape[2:]:                    # a kernel phase without taps (K < S)
            dt = np.int64 if conv is _acc_conv else np.result_type(x, Wt)
            yield ph, np.zeros((Wt.shape[1],) + ph.n_out, dtype=dt)
        else:
            yield ph, conv(xp, f)


def tdc_blocks(x, Wt, S, P, OP=0, skip_zeros=False):
    """Yield ``(phase, block)`` for every phase with outputs: ``block[co, a, b] = y[co, S·a + φy,
    S·b + φx]``, a stride-1 conv of the un-expanded input (ARITHMETIC §1.4)."""
    yield from _tdc_blocks(_num(x), _num(Wt), S, P, OP, skip_zeros, _corr)


def _assemble(blocks, cout, out, S, dtype):
    sy, sx = _pair(S, "stride")
    y = np.zeros((cout,) + out, dtype=dtype)
    for ph, blk in blocks:
        y[:, ph.phi[0]::sy, ph.phi[1]::sx] = blk
    return y


def tdc_conv(x, Wt, S, P, OP=0, skip_zeros=False):
    """Phase-aligned TDC (ARITHMETIC §1.4): phase ``(φy, φx)`` written to ``y[:, φy::S, φx::S]``.

    :param skip_zeros: drop the structural zero taps instead of multiplying by them.
    :returns: ``(Cout, Ho, Wo)``, equal to :func:`deconv_scatter`.
    """
    x, Wt, *_, out = _geometry(_num(x), _num(Wt), S, P, OP)
    return _assemble(tdc_blocks(x, Wt, S, P, OP, skip_zeros), Wt.shape[1], out, S, np.result_type(x, Wt))


def tdc_conv_acc(v, codes, S, P, OP=0, skip_zeros=False):
    """Integer phase-aligned TDC: every phase through the shift-accumulate conv (int64).

    ``tdc_conv_acc(v, codes, …) == deconv_scatter_acc(v, codes, …)`` bit for bit.
    """
    v, codes, *_, out = _geometry(np.asarray(v, dtype=np.int64), np.asarray(codes), S, P, OP)
    blocks = _tdc_blocks(v, codes, S, P, OP, skip_zeros, _acc_conv)
    return _assemble(blocks, codes.shape[1], out, S, np.int64)


def tdc_shuffle_conv(x, Wt, S, P, OP=0):
    """Shuffle-and-crop TDC (ARITHMETIC §1.4 (c')): per kernel phase the full sub-output
    ``F_r`` (pad ``(Kc−1, Hq−H)``, ``Hq = ⌈(Ho+P)/S⌉``), depth-to-space, crop ``[P, P+Ho)``."""
    x, Wt, (ky, kx), (sy, sx), (py, px), _, (ho, wo) = _geometry(_num(x), _num(Wt), S, P, OP)
    _, h, w = x.shape
    kcy, kcx = -(-ky // sy), -(-kx // sx)
    hq, wq = -(-(ho + py) // sy), -(-(wo + px) // sx)
    full = np.zeros((Wt.shape[1], sy * hq, sx * wq), dtype=np.result_type(x, Wt))
    xp = pad_or_crop(x, (kcy - 1, hq - h, kcx - 1, wq - w))
    for (ry, rx), (f, _) in tdc_subkernels(Wt, (sy, sx)).items():
        full[:, ry::sy, rx::sx] = _corr(xp, f)
    return full[:, py:py + ho, px:px + wo]


# ---------------------------------------------------------------------------------------------
# §5 output addresses


def tdc_address(co, a, b, phi, S, out_hw, cout, layout="CHW", base=0):
    """Word address of output ``(co, S·a + φy, S·b + φx)`` of phase ``phi`` (ARITHMETIC §5).

    ``CHW: base + (co·Ho + S·a + φy)·Wo + S·b + φx``;
    ``HWC: base + ((S·a + φy)·Wo + S·b + φx)·Cout + co``. Broadcasts over array arguments.
    """
    (sy, sx), (ho, wo) = _pair(S, "stride"), out_hw
    oy = sy * np.asarray(a, dtype=np.int64) + phi[0]
    ox = sx * np.asarray(b, dtype=np.int64) + phi[1]
    co = np.asarray(co, dtype=np.int64)
    if layout == "CHW":
        return base + (co * ho + oy) * wo + ox
    if layout == "HWC":
        return base + (oy * wo + ox) * cout + co
    raise ValueError(f"unknown layout {layout!r}; expected 'CHW' or 'HWC'")


def tdc_phase_addresses(phase, S, out_hw, cout, layout="CHW", base=0):
    """Addresses ``(Cout, n_out_y, n_out_x)`` of a whole :class:`Phase` block (ARITHMETIC §5)."""
    co, a, b = np.ix_(np.arange(cout), np.arange(phase.n_out[0]), np.arange(phase.n_out[1]))
    return tdc_address(co, a, b, phase.phi, S, out_hw, cout, layout, base)


def tdc_write(blocks, S, out_hw, cout, layout="CHW"):
    """Write ``(phase, block)`` pairs (:func:`tdc_blocks`) into a flat buffer through
    :func:`tdc_address`.

    :returns: ``(buffer, writes)``: the ``Cout·Ho·Wo`` words and the number of writes per word.
    """
    n = cout * out_hw[0] * out_hw[1]
    buf, writes = None, np.zeros(n, dtype=np.int64)
    for ph, blk in blocks:
        if buf is None:
            buf = np.zeros(n, dtype=blk.dtype)
        addr = tdc_phase_addresses(ph, S, out_hw, cout, layout)
        buf[addr] = blk
        np.add.at(writes, addr.ravel(), 1)
    return buf, writes


# ---------------------------------------------------------------------------------------------
# Winograd deconvolution, §3


def winograd_u_mask(name, taps_mask):
    """1-D support of the transformed weights ``G f`` (ARITHMETIC §3).

    Row ``a`` of ``G f`` is structurally zero iff every nonzero ``G[a, j]`` falls on a structural
    zero tap. With the standard point sets that is row 0 only, when ``n(r) = Kc − 1``.

    :param taps_mask: bool ``(r,)``, True = real tap. :returns: bool ``(α,)``, True = multiply.
    """
    G = wg.variant(name).G
    return np.any((G != 0) & np.asarray(taps_mask, dtype=bool)[None, :], axis=1)


def winograd_tdc_conv_acc(v, codes, S, P, OP=0, name=None, *, skip_zeros=True, count=False):
    """Scaled integer Winograd deconvolution: F(2×2, Kc×Kc) on every TDC phase (ARITHMETIC §3).

    Each phase is a stride-1 Winograd conv of the un-expanded input with the phase's padding
    (negative = crop) and its zero-filled sub-kernel. With ``skip_zeros`` only the positions of
    ``outer(u_mask(ry), u_mask(rx))`` are multiplied; the skipped transformed weights are checked
    to be zero.

    :param name: variant (default :data:`TDC_WINOGRAD`\\ ``[Kc]``: F2x2_2x2 for Kc = 2, F2x2_3x3
        for Kc = 3). :param count: also return the multiplies formed, per ``Cin·Cout`` pair.
    :returns: int64 ``(Cout, Ho, Wo)`` equal to ``winograd_scale(name) · deconv_scatter_acc(…)``
        (and the multiply count when ``count``).
    :raises ValueError: if no variant fits the sub-kernel size.
    :raises ArithmeticError: if a skipped transformed weight is not zero.
    """
    v, codes, K, S, P, OP, out = _geometry(np.asarray(v, dtype=np.int64), np.asarray(codes), S, P, OP)
    kc = (-(-K[0] // S[0]), -(-K[1] // S[1]))
    if name is None:
        if kc[0] != kc[1] or kc[0] not in TDC_WINOGRAD:
            raise ValueError(f"no Winograd variant for {kc[0]}x{kc[1]} TDC sub-kernels; "
                             f"supported: {', '.join(f'{k}x{k}' for k in TDC_WINOGRAD)}")
        name = TDC_WINOGRAD[kc[0]]
    var = wg.variant(name)
    if kc != (var.r, var.r):
        raise ValueError(f"{var.name} needs {var.r}x{var.r} sub-kernels, the layer has {kc[0]}x{kc[1]}")
    sub = tdc_subkernels(codes, S)
    cout = codes.shape[1]
    y = np.zeros((cout,) + out, dtype=np.int64)
    mults = 0
    for ph in tdc_phases(K, S, P, OP, v.shape[1:]):
        if 0 in ph.n_out:
            continue
        f, _ = sub[ph.r]
        U = wg.weight_transform(f, var, codes=True)                    # (Cout, Cin, α, α)
        umask = np.outer(*(winograd_u_mask(var, [t is not None for t in a.taps]) for a in (ph.y, ph.x)))
        if np.any(U[:, :, ~umask]):
            raise ArithmeticError(f"phase {ph.phi}: a structurally zero transformed weight is nonzero")
        if not skip_zeros:
            umask = np.ones_like(umask)
        tiles, (ho, wo) = wg.input_tiles(pad_or_crop(v, ph.pad), var)
        V = wg.input_transform(tiles, var)                             # (Cin, th, tw, α, α)
        ia, ib = np.nonzero(umask)
        mults += V.shape[1] * V.shape[2] * len(ia)
        M = np.zeros((cout,) + V.shape[1:], dtype=np.int64)
        M[..., ia, ib] = wg.channel_sum(U[:, :, ia, ib], V[..., ia, ib])
        Y = wg.output_transform(M, var)                                # (Cout, th, tw, m, m)
        th, tw = Y.shape[1:3]
        Y = Y.transpose(0, 1, 3, 2, 4).reshape(cout, th * var.m, tw * var.m)[:, :ho, :wo]
        y[:, ph.phi[0]::S[0], ph.phi[1]::S[1]] = Y
    return (y, mults) if count else y


# ---------------------------------------------------------------------------------------------
# multiply counts per Cin·Cout pair, §1.5 and §3


def _axes(K, S, P, OP, hw):
    K, S, P, OP, hw = (_pair(a, n) for a, n in ((K, "kernel"), (S, "stride"), (P, "padding"),
                                                (OP, "output_padding"), (hw, "input size")))
    return [(K[i], S[i], P[i], OP[i], hw[i]) for i in range(2)]


def _prod_axes(fn, K, S, P, OP, hw):
    return math.prod(fn(*ax) for ax in _axes(K, S, P, OP, hw))


def scatter_macs(K, S, P, OP, hw):
    """(a) scatter, all products: ``H·W·K²``."""
    def axis(k, s, p, op, h):
        deconv_out_size(h, k, s, p, op)             # validates the layer
        return h * k
    return _prod_axes(axis, K, S, P, OP, hw)


def scatter_useful_macs(K, S, P, OP, hw):
    """(a) scatter, only products landing inside the output (not in the cropped border)."""
    def axis(k, s, p, op, h):
        ho = deconv_out_size(h, k, s, p, op)
        return sum(1 for t in range(k) for i in range(h) if 0 <= s * i - p + t < ho)
    return _prod_axes(axis, K, S, P, OP, hw)


def nzp_macs(K, S, P, OP, hw):
    """(b) NZP, including products with inserted zeros and padding: ``Ho·Wo·K²``."""
    return _prod_axes(lambda k, s, p, op, h: deconv_out_size(h, k, s, p, op) * k, K, S, P, OP, hw)


def tdc_dense_macs(K, S, P, OP, hw):
    """(c) TDC with zero-filled ``Kc×Kc`` sub-kernels: ``Ho·Wo·Kc²``."""
    return _prod_axes(lambda k, s, p, op, h: deconv_out_size(h, k, s, p, op) * -(-k // s), K, S, P, OP, hw)


def tdc_skip_macs(K, S, P, OP, hw):
    """(c) TDC, structural zeros skipped: ``Σ_φy n_out·n(r) · Σ_φx n_out·n(r)``."""
    return _prod_axes(lambda k, s, p, op, h: sum(a.n_out * a.n for a in tdc_plan(k, s, p, op, h)),
                      K, S, P, OP, hw)


def tdc_shuffle_macs(K, S, P, OP, hw):
    """(c') shuffle-and-crop, zero-filled: ``S²·Hq·Wq·Kc²``, ``Hq = ⌈(Ho + P)/S⌉``."""
    def axis(k, s, p, op, h):
        return s * -(-(deconv_out_size(h, k, s, p, op) + p) // s) * -(-k // s)
    return _prod_axes(axis, K, S, P, OP, hw)


def winograd_tdc_mults(K, S, P, OP, hw, m=2, skip_zeros=True):
    """Winograd F(m, Kc) on the TDC phases (§3), per ``Cin·Cout`` pair:
    ``Σ_φy u(ry)·⌈n_out/m⌉ · Σ_φx u(rx)·⌈n_out/m⌉`` with ``α = m + Kc − 1`` and ``u(r) = α − 1`` if
    ``n(r) = Kc − 1`` and zeros are skipped, else ``α`` (point sets with the point 0, whose ``G`` row
    is ``(1, 0, …, 0)``). Edge tiles count whole."""
    def axis(k, s, p, op, h):
        alpha = m + -(-k // s) - 1
        return sum((alpha - (skip_zeros and a.taps[0] is None)) * -(-a.n_out // m)
                   for a in tdc_plan(k, s, p, op, h))
    return _prod_axes(axis, K, S, P, OP, hw)


def deconv_counts(K, S, P, OP, hw):
    """One row of the §1.5 table: multiplies per ``Cin·Cout`` pair for every form.

    Keys: ``scatter``, ``scatter_useful``, ``nzp``, ``tdc_dense``, ``tdc_skip``, ``tdc_shuffle``,
    ``wino2_skip``, ``wino2_dense``, ``wino4_skip``, ``wino4_dense`` (F(m, Kc) with m = 2, 4).
    """
    args = (K, S, P, OP, hw)
    return {
        "scatter": scatter_macs(*args), "scatter_useful": scatter_useful_macs(*args),
        "nzp": nzp_macs(*args), "tdc_dense": tdc_dense_macs(*args), "tdc_skip": tdc_skip_macs(*args),
        "tdc_shuffle": tdc_shuffle_macs(*args),
        **{f"wino{m}_{kind}": winograd_tdc_mults(*args, m=m, skip_zeros=kind == "skip")
           for m in (2, 4) for kind in ("skip", "dense")},
    }
