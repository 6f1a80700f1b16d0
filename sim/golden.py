"""Golden model of the accelerator's integer arithmetic (NumPy only).

This module *is* the bit-exact contract of ``../shared/ARITHMETIC.md`` §4 in executable form.
Every hardware block and the whole RTL engine are compared with it bit for bit; the float
model is compared with it within the quantization error.

Conventions: feature maps are CHW (``x[c, y, x]``), conv weights ``w[co, ci, ky, kx]``
(cross-correlation, as ``torch.nn.functional.conv2d``). Integer arrays are ``np.int64``
unless stated otherwise, so no intermediate ever wraps.

Contents
--------
* INQ 4-bit power-of-two weights (ARITHMETIC §4.1, §4.2): :func:`inq_n1`, :func:`inq_quantize`,
  :func:`code_to_int`, :func:`inq_decode`, :func:`pack_codes`, :func:`unpack_codes`.
* int8 features with a power-of-two scale (§4.3): :func:`feature_q`, :func:`quantize_features`,
  :func:`dequantize_features`.
* The shift-accumulate datapath (§4.4): :func:`sac`, :func:`conv_acc`, :func:`acc_bits`; exact
  integer contractions in float64 BLAS (:data:`F64_EXACT`, :func:`max_abs`,
  :func:`contraction_bound`, :func:`exact_dtype`, :func:`exact_matmul`, :func:`correlate`).
* Requantization (§4.5): :func:`requantize` with ReLU, PReLU/LeakyReLU (slope codes
  :func:`prelu_codes`, :data:`PRELU_FRAC`) and clipping (ReLU6); max-pool :func:`maxpool` (any
  window, stride and padding, :data:`POOL_NONE`, :func:`pool_out_size`) and :func:`maxpool2`.
* Output activations (tanh, sigmoid lookup table on the requantized int8 value, constants
  ``ACT_*``): :func:`activation_table`, :func:`activate`. A layer's output is
  ``maxpool(activate(requantize(acc, sh, relu, slope, clip), act), pool)``.
"""
import numpy as np

__all__ = [
    "DE", "inq_n1", "inq_quantize", "code_to_int", "inq_decode", "pack_codes", "unpack_codes",
    "feature_q", "quantize_features", "dequantize_features", "sac", "conv_acc", "acc_bits",
    "F64_EXACT", "max_abs", "contraction_bound", "exact_dtype", "exact_matmul", "correlate",
    "requantize", "maxpool2", "maxpool", "pool_out_size", "POOL_NONE", "POOL_2X2", "round_shift",
    "pad_or_crop", "PRELU_FRAC", "PRELU_BITS", "prelu_codes", "INT8_CLIP",
    "ACT_NONE", "ACT_TANH", "ACT_SIGMOID", "ACT_Q_IN", "ACT_Q_OUT", "activation_table", "activate",
]

#: Exponent spread n1 − n2 of the dense 4-bit code (ARITHMETIC §4.2): shifts 0..6.
DE = 6

#: Output activations of a layer (descriptor ``act`` field): none (ReLU is a separate flag),
#: tanh and sigmoid (a 256-entry lookup table on the requantized int8 value).
ACT_NONE, ACT_TANH, ACT_SIGMOID = 0, 1, 2
#: A tanh/sigmoid layer requantizes its pre-activation to int8 with this exponent (t · 2^−5,
#: range [−4, 3.97]) and the table gives int8 with exponent ``ACT_Q_OUT`` (y · 2^−7).
ACT_Q_IN, ACT_Q_OUT = 5, 7


def _floor_log2(a):
    """Exact ⌊log2 a⌋ for positive float64 ``a`` (via ``frexp``, no rounding)."""
    _, ex = np.frexp(np.asarray(a, dtype=np.float64))
    return ex.astype(np.int64) - 1


def _round_exp(a):
    """Exact ⌊log2(4a/3)⌋ for positive ``a``: the exponent ``a`` rounds to (ties up).

    With ``k = ⌊log2 a⌋`` the answer is ``k`` if ``a < 1.5·2^k`` else ``k + 1``
    (ARITHMETIC §4.1: decision thresholds at 1.5·2^k). 1.5·2^k is exact in float64.
    """
    a = np.asarray(a, dtype=np.float64)
    k = _floor_log2(a)
    return np.where(a < np.ldexp(1.5, k), k, k + 1)


def inq_n1(w):
    """INQ ``n1 = ⌊log2(4s/3)⌋`` with ``s = max|w|`` (ARITHMETIC §4.1).

    :param w: float array (any shape), not all zero.
    :returns: int, the exponent of the largest level.
    :raises ValueError: if every weight is zero (no level set can be chosen).
    """
    s = float(np.max(np.abs(w))) if np.size(w) else 0.0
    if not s > 0.0 or not np.isfinite(s):
        raise ValueError(f"INQ needs a finite non-zero weight tensor (max|w| = {s})")
    return int(_round_exp(s))


def inq_quantize(w, n1=None):
    """Quantize float weights to the 4-bit INQ code ``[s | E2 E1 E0]`` (ARITHMETIC §4.1–4.2).

    Levels ``{0, ±2^n2 … ±2^n1}`` with ``n2 = n1 − 6``; nearest level in the linear domain, ties
    to the larger level; ``|w| < 2^(n2−1)`` → 0. Code: ``E = 0`` → 0, else weight
    ``(−1)^s · 2^(n2 + E − 1)``. The code 0b1000 is never produced.

    :param w: float array, any shape.
    :param n1: largest exponent; default :func:`inq_n1` of ``w``.
    :returns: ``(codes, n2)``: ``codes`` uint8 array of ``w``'s shape with values 0..15; ``n2`` int.
    """
    w = np.asarray(w, dtype=np.float64)
    if n1 is None:
        n1 = inq_n1(w)
    n2 = n1 - DE
    a = np.abs(w)
    nz = a >= np.ldexp(1.0, n2 - 1)
    e = np.clip(_round_exp(np.where(nz, a, 1.0)), n2, n1)
    E = np.where(nz, e - n2 + 1, 0).astype(np.uint8)
    s = ((w < 0) & nz).astype(np.uint8)
    return (s << 3 | E).astype(np.uint8), int(n2)


def _code_int(c):
    """``(−1)^s · 2^(E−1)`` (0 for ``E = 0``) of one 4-bit code ``c = [s | E2 E1 E0]``."""
    e = c & 7
    return 0 if e == 0 else (-1 if c & 8 else 1) << (e - 1)


#: :func:`code_to_int` of the codes 0..15, the lookup table it indexes.
_CODE_INT = np.array([_code_int(c) for c in range(16)], dtype=np.int64)
_CODE_INT.setflags(write=False)


def code_to_int(codes):
    """Integer weight of each 4-bit code, in units of ``2^n2``: ``(−1)^s · 2^(E−1)`` or 0.

    :param codes: integer array of 4-bit codes (0..15).
    :returns: int64 array of ``codes``' shape, values in {0, ±1, ±2, … ±64}.
    :raises ValueError: on a code outside 0..15.
    """
    codes = np.asarray(codes)
    if codes.dtype.kind not in "iu":
        codes = codes.astype(np.int64)
    if codes.size and (codes.min() < 0 or codes.max() > 15):
        raise ValueError("4-bit weight codes must be in 0..15")
    return _CODE_INT[codes.ravel()].reshape(codes.shape)


def inq_decode(codes, n2):
    """Float value of each code: ``code_to_int(codes) · 2^n2`` (float64, exact)."""
    return np.ldexp(code_to_int(codes).astype(np.float64), int(n2))


def pack_codes(codes):
    """Pack 4-bit codes four to a 16-bit word, first code in the lowest nibble (DESIGN §3).

    :param codes: 1-D array of codes 0..15; its length is padded with zero codes to a multiple of 4.
    :returns: uint16 array of ``⌈len/4⌉`` words.
    """
    c = np.asarray(codes, dtype=np.uint16).ravel()
    if np.any(c > 15):
        raise ValueError("4-bit weight codes must be in 0..15")
    c = np.concatenate([c, np.zeros((-len(c)) % 4, np.uint16)]).reshape(-1, 4)
    return (c[:, 0] | c[:, 1] << 4 | c[:, 2] << 8 | c[:, 3] << 12).astype(np.uint16)


def unpack_codes(words, n):
    """Inverse of :func:`pack_codes`: the first ``n`` codes of ``words`` (uint8 array)."""
    w = np.asarray(words, dtype=np.uint16).ravel()
    if n > 4 * len(w):
        raise ValueError(f"{n} codes asked from {len(w)} words")
    c = np.stack([(w >> s) & 15 for s in (0, 4, 8, 12)], axis=1).ravel()
    return c[:n].astype(np.uint8)


def feature_q(fmax):
    """Feature exponent ``Q = ⌊log2(128 / fmax)⌋``: the largest Q with ``2^Q·fmax ≤ 128`` (§4.3).

    :param fmax: max |f| over calibration data (float ≥ 0). ``fmax = 0`` gives Q = 0.
    :returns: int (may be negative).
    """
    fmax = float(fmax)
    if not np.isfinite(fmax) or fmax < 0:
        raise ValueError(f"feature range must be finite and non-negative, got {fmax}")
    if fmax == 0.0:
        return 0
    m, ex = np.frexp(fmax)          # fmax = m·2^ex, m in [0.5, 1)
    return int(8 - ex) if m == 0.5 else int(7 - ex)


def quantize_features(f, q, mode="half_up"):
    """``V = clip(round(2^Q · f), −128, 127)`` as int64 (ARITHMETIC §4.3).

    :param mode: ``'half_up'`` (default, ties → +∞) or ``'rne'`` (ties to even).
    """
    y = np.ldexp(np.asarray(f, dtype=np.float64), int(q))
    if mode == "half_up":
        r = np.floor(y + 0.5)
    elif mode == "rne":
        r = np.rint(y)
    else:
        raise ValueError(f"unknown rounding mode {mode!r}")
    return np.clip(r, -128, 127).astype(np.int64)


def dequantize_features(v, q):
    """``f = V · 2^(−Q)`` (float64, exact)."""
    return np.ldexp(np.asarray(v, dtype=np.float64), -int(q))


def pad_or_crop(x, pad):
    """Zero-pad the last two axes of ``x[C, H, W]`` by ``(top, bottom, left, right)``; negative = crop.

    Index ``i`` of the result is index ``i − top`` of the input (zero outside), so a crop larger
    than one side and a pad of the other side compose as plain index shifts.
    """
    t, b, l, r = (int(p) for p in pad)
    c, h, w = x.shape
    ho, wo = h + t + b, w + l + r
    if ho < 0 or wo < 0:
        raise ValueError(f"padding {pad} crops more than the {h}x{w} input")
    out = np.zeros((c, ho, wo), dtype=x.dtype)
    y0, y1, x0, x1 = max(0, t), min(ho, h + t), max(0, l), min(wo, w + l)
    if y1 > y0 and x1 > x0:
        out[:, y0:y1, x0:x1] = x[:, y0 - t:y1 - t, x0 - l:x1 - l]
    return out


def sac(x, code):
    """One shift-accumulate lane: int8 ``x`` × 4-bit ``code`` → ``±(x << (E−1))`` or 0 (DESIGN §4).

    Element-wise over arrays; int64 result in [−8192, 8128].
    """
    x = np.asarray(x, dtype=np.int64)
    code = np.asarray(code, dtype=np.int64)
    E = code & 7
    p = np.where(E > 0, np.left_shift(x, np.maximum(E - 1, 0)), 0)
    return np.where(code & 8, -p, p)


#: float64 has a 53-bit significand: every integer of magnitude ≤ 2^53 is a float64, so the sum or
#: product of two such integers is exact (IEEE 754 rounds correctly) whenever the exact result's
#: magnitude is at most this too.
F64_EXACT = 1 << 53


def max_abs(a):
    """``max |a|`` of an integer array as a Python int (0 if empty), exact: no int64 ``abs``
    overflow at −2^63."""
    a = np.asarray(a)
    if a.size == 0:
        return 0
    return max(int(a.max()), -int(a.min()))


def contraction_bound(w, xmax):
    """Bound on every partial sum of the contraction of ``w`` over its last axis with values of
    magnitude ≤ ``xmax``: ``xmax · max_row Σ_k |w[…, row, k]|`` (Python int, exact).

    For ``y[…, row, n] = Σ_k w[…, row, k] · x[…, k, n]`` with ``|x| ≤ xmax``, each product is
    ``|w·x| ≤ |w|·xmax``, so the sum of *any* subset of a row's products, in any order, has
    magnitude ≤ this bound.

    :param w: integer array ``(…, rows, K)``.
    :param xmax: int ≥ 0, a bound on the other operand's magnitudes (:func:`max_abs`).
    """
    w = np.asarray(w)
    if w.size == 0:
        return 0
    wmax, k = max_abs(w), w.shape[-1]
    if wmax * k >= 1 << 63:                       # the int64 row sums could wrap: a cruder bound
        return wmax * k * int(xmax)
    return int(np.abs(w).sum(axis=-1).max()) * int(xmax)


def exact_dtype(w, xmax):
    """``np.float64`` if a contraction of ``w`` (:func:`contraction_bound`) with values of
    magnitude ≤ ``xmax`` is exact in float64, else ``np.int64``.

    float64 is chosen when both operands convert exactly (``max|w|`` and ``xmax`` below
    :data:`F64_EXACT`) and the bound is below :data:`F64_EXACT`. Then every product and every
    partial sum, in whatever order and blocking a BLAS ``dgemm`` adds them (with or without fused
    multiply-adds), is an integer of magnitude < 2^53: no operation rounds, and the float64 result
    converted with ``astype(np.int64)`` equals the int64 result bit for bit. This holds for any
    BLAS that forms each output as a sum of the products ``w·x`` (OpenBLAS, MKL, Accelerate; not a
    Strassen-type algorithm). The int64 path is the fallback beyond the bound (exact, or wrapping
    modulo 2^64 exactly as an int64 sum does where that overflows).

    For the conv datapath the bound is the accumulator bound of ARITHMETIC §4.4,
    ``M = 128 · 2^dE · N`` for int8 features and 4-bit codes (:func:`acc_bits`), far below 2^53.
    The cheaper ``max|w| · K · xmax`` (≥ the bound) is tried first, the row sums only if it fails.

    :param w: integer array ``(…, rows, K)``. :param xmax: int ≥ 0.
    :returns: ``np.float64`` or ``np.int64``.
    """
    wmax, xmax = max_abs(w), int(xmax)
    if wmax >= F64_EXACT or xmax >= F64_EXACT:
        return np.int64
    if wmax * (np.shape(w)[-1] if np.ndim(w) else 1) * xmax < F64_EXACT:
        return np.float64
    return np.float64 if contraction_bound(w, xmax) < F64_EXACT else np.int64


def exact_matmul(a, b):
    """Exact integer matrix product ``a @ b`` (``np.matmul`` semantics, batch axes broadcast).

    Computed in float64 BLAS when :func:`exact_dtype` of ``a`` and ``max|b|`` proves it exact, else
    in int64; the result is the int64 product bit for bit either way.

    :param a: integer array ``(…, M, K)``. :param b: integer array ``(…, K, N)``.
    :returns: int64 array ``(…, M, N)``.
    """
    dt = exact_dtype(a, max_abs(b))
    y = np.ascontiguousarray(a, dtype=dt) @ np.ascontiguousarray(b, dtype=dt)
    return y.astype(np.int64, copy=False)


def correlate(xp, w, stride=1):
    """Cross-correlation of an already padded map: ``y[o, a, b] = Σ_{c,i,j} xp[c, a·s+i, b·s+j] ·
    w[o, c, i, j]`` (ARITHMETIC §0), im2col and one matrix product.

    Integer ``xp`` and ``w``: the int64 result of the exact integer sum (ARITHMETIC §4.4), computed
    in float64 BLAS when :func:`exact_dtype` proves it exact (bound
    ``max|xp| · max_o Σ_{c,i,j} |w[o, c, i, j]|`` < 2^53; with int8 features and 4-bit codes at
    most ``128 · 2^DE · Cin·Kh·Kw``, the §4.4 accumulator bound ``M``, < 2^53 for every
    ``Cin·Kh·Kw`` < 2^40) and in int64 otherwise; both give the same bits. Anything else is
    computed in float64.

    :param xp: array (Cin, Hp, Wp). :param w: array (Cout, Cin, Kh, Kw). :param stride: int ≥ 1.
    :returns: (Cout, Ho, Wo), ``Ho = (Hp − Kh) // stride + 1``: int64 for integer operands, else float64.
    :raises ValueError: on a channel mismatch or an empty output.
    """
    xp, w = np.asarray(xp), np.asarray(w)
    co, ci, kh, kw = w.shape
    if xp.ndim != 3 or xp.shape[0] != ci:
        raise ValueError(f"input {xp.shape} does not match weights {w.shape}")
    hp, wp = xp.shape[1:]
    ho, wo = (hp - kh) // stride + 1, (wp - kw) // stride + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"conv of a {(hp, wp)} input with a {kh}x{kw} kernel is empty")
    integer = xp.dtype.kind in "iub" and w.dtype.kind in "iub"
    wm = w.reshape(co, ci * kh * kw)
    dt = exact_dtype(wm, max_abs(xp)) if integer else np.float64
    xp = xp.astype(dt, copy=False)
    cols = np.empty((ci, kh, kw, ho, wo), dtype=dt)
    for i in range(kh):
        for j in range(kw):
            cols[:, i, j] = xp[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
    y = (wm.astype(dt, copy=False) @ cols.reshape(ci * kh * kw, ho * wo)).reshape(co, ho, wo)
    return y.astype(np.int64, copy=False) if integer else y


def conv_acc(v, codes, stride=1, pad=(0, 0, 0, 0)):
    """Integer accumulator of the shift-accumulate conv (ARITHMETIC §4.4, per-tensor Q).

    ``acc[o, a, b] = Σ_{c,i,j} sac(vp[c, a·s+i, b·s+j], codes[o, c, i, j])`` where ``vp`` is ``v``
    zero-padded by ``pad = (top, bottom, left, right)`` (negative entries crop, :func:`pad_or_crop`:
    a negative bottom or right padding is an output that does not reach the last rows or columns). The products are the SAC lane's shifts
    (exact powers of two), so the sum equals an integer correlation with :func:`code_to_int`
    (:func:`correlate`: float64 BLAS below the 2^53 bound, which int8 features always meet, and
    int64 beyond it; the same bits either way).

    :param v: int array (Cin, H, W), values in [−128, 127]; larger int64 values are accepted and
        take the int64 path where they exceed the bound.
    :param codes: 4-bit codes (Cout, Cin, Kh, Kw).
    :returns: int64 array (Cout, Ho, Wo), ``Ho = (H + top + bottom − Kh) // s + 1``.
    :raises ValueError: on a channel mismatch or an empty output.
    """
    v = np.asarray(v, dtype=np.int64)
    wi = code_to_int(codes)
    if v.ndim != 3 or v.shape[0] != wi.shape[1]:
        raise ValueError(f"input {v.shape} does not match weights {wi.shape}")
    vp = pad_or_crop(v, pad)
    if (vp.shape[1] - wi.shape[2]) // stride + 1 < 1 or (vp.shape[2] - wi.shape[3]) // stride + 1 < 1:
        raise ValueError(f"conv of a {v.shape[1:]} input with a {wi.shape[2]}x{wi.shape[3]} kernel is empty")
    return correlate(vp, wi, stride)


#: PReLU / LeakyReLU slopes are signed ``PRELU_BITS``-bit codes ``A`` meaning ``A · 2^−PRELU_FRAC``
#: (ARITHMETIC §4.5, PReLU): slopes in [−8, 8) in steps of 1/4096.
PRELU_FRAC = 12
PRELU_BITS = 16

#: The saturation bounds of an unclipped layer (int8).
INT8_CLIP = (-128, 127)

#: Max-pool windows ``(kh, kw, sy, sx, top, bottom, left, right)``: no pooling, and 2×2 stride 2.
POOL_NONE = (1, 1, 1, 1, 0, 0, 0, 0)
POOL_2X2 = (2, 2, 2, 2, 0, 0, 0, 0)


def acc_bits(n_taps, de=DE, bias_max=0):
    """Accumulator width that can never overflow (ARITHMETIC §4.4): ``bitlen(M) + 1``.

    ``M = 128 · 2^de · N + |bias|max`` for ``N = Cin·Kh·Kw`` taps per output (per-tensor Q).

    :returns: int, bits of a signed two's complement accumulator.
    """
    m = 128 * (1 << de) * int(n_taps) + abs(int(bias_max))
    return m.bit_length() + 1


def round_shift(acc, sh):
    """``round(acc · 2^(−sh))`` with round-half-up for ``sh > 0``, exact left shift for ``sh ≤ 0``.

    ``sh``: an int, or an int array broadcast against ``acc`` (per-channel shifts, ARITHMETIC §4.5).
    """
    acc = np.asarray(acc, dtype=np.int64)
    if np.ndim(sh) == 0:
        sh = int(sh)
        if sh > 0:
            return (acc + (1 << (sh - 1))) >> sh
        return acc << (-sh)
    sh = np.asarray(sh, dtype=np.int64)
    pos, neg = np.maximum(sh, 0), np.maximum(-sh, 0)
    half = np.where(sh > 0, np.left_shift(np.int64(1), np.maximum(sh - 1, 0)), 0)
    return np.where(sh > 0, (acc + half) >> pos, acc << neg)


def prelu_codes(slopes):
    """PReLU slope codes: ``A = ⌊slope · 2^PRELU_FRAC + ½⌋`` (round half up), int64.

    :param slopes: float array (any shape), finite.
    :returns: int64 array of the same shape, each in the signed ``PRELU_BITS``-bit range.
    :raises ValueError: a slope that is not finite or whose code does not fit ``PRELU_BITS`` bits
        (|slope| ≥ 8), naming the first one.
    """
    s = np.asarray(slopes, dtype=np.float64)
    if not np.all(np.isfinite(s)):
        raise ValueError("PReLU slopes must be finite")
    a = np.floor(np.ldexp(s, PRELU_FRAC) + 0.5)
    lo, hi = -(1 << (PRELU_BITS - 1)), (1 << (PRELU_BITS - 1)) - 1
    bad = (a < lo) | (a > hi)
    if np.any(bad):
        raise ValueError(f"PReLU slope {float(s[bad].ravel()[0]):g} is outside the {PRELU_BITS}-bit code range "
                         f"[{lo / (1 << PRELU_FRAC):g}, {hi / (1 << PRELU_FRAC):g}]")
    return a.astype(np.int64)


def requantize(acc, sh, relu=False, slope=None, clip=INT8_CLIP):
    """Requantize an accumulator to int8 (ARITHMETIC §4.5), round half up, saturate.

    ``V = min(hi, max(lo, round_shift(t, sh)))`` with ``t = max(acc, 0)`` if ``relu``, else
    ``acc``. With PReLU slope codes ``slope`` (one per channel, axis 0): ``t = acc · A_c`` where
    ``acc < 0`` and ``acc · 2^PRELU_FRAC`` elsewhere, and ``sh`` is the effective shift (the
    layer's shift ``+ PRELU_FRAC``), so each value is rounded once. For ``acc ≥ 0`` this equals the
    plain ``round_shift(acc, sh − PRELU_FRAC)``. ``clip = (lo, hi)``: the saturation bounds (int8;
    ``(−128, 127)``, or e.g. ``(0, 96)`` for a ReLU6 at Q = 4).

    :param acc: int array (already including the bias), channels on axis 0 if ``slope`` is given.
    :param sh: shift (int; ≤ 0 means an exact left shift), or one shift per channel (int (C,),
        channels on axis 0: per-channel weight exponents, ``sh[co]``).
    :param slope: None, or int codes (C,) (:func:`prelu_codes`).
    :param clip: ``(lo, hi)`` ints, −128 ≤ lo ≤ hi ≤ 127.
    :returns: int64 array in [lo, hi].
    :raises ValueError: for a ``clip`` outside int8 or with lo > hi.
    """
    lo, hi = (int(v) for v in clip)
    if not -128 <= lo <= hi <= 127:
        raise ValueError(f"clip bounds {clip} are not -128 <= lo <= hi <= 127")
    acc = np.asarray(acc, dtype=np.int64)
    if relu:
        acc = np.maximum(acc, 0)
    if slope is not None:
        a = np.asarray(slope, dtype=np.int64).reshape((-1,) + (1,) * (acc.ndim - 1))
        acc = np.where(acc < 0, acc * a, acc << PRELU_FRAC)
    if np.ndim(sh):
        sh = np.asarray(sh, dtype=np.int64).reshape((-1,) + (1,) * (acc.ndim - 1))
    return np.clip(round_shift(acc, sh), lo, hi)


def pool_out_size(h, w, pool):
    """Output size ``(ho, wo)`` of max-pool window ``pool`` = ``(kh, kw, sy, sx, top, bottom, left,
    right)`` on an ``h × w`` map: ``(h + top + bottom − kh) // sy + 1`` (and the same for columns).
    ONNX ``ceil_mode`` is expressed by a larger bottom/right padding (descriptor fields
    ``pool_*``, ``nibble.hw.isa.DESCRIPTOR``).

    :returns: two ints (pixels; < 1 if the window does not fit, the caller reports it).
    """
    kh, kw, sy, sx, t, b, l, r = (int(v) for v in pool)
    return (h + t + b - kh) // sy + 1, (w + l + r - kw) // sx + 1


def maxpool(v, pool=POOL_NONE):
    """Max-pool of a CHW int map with window ``pool`` (:func:`pool_out_size`), ONNX MaxPool
    semantics: padded positions are ignored (never win the max). Applied last in a layer's
    epilogue, to the activated int8 values (ARITHMETIC §4.5 order; the engine's output stage).

    :param v: int array (C, H, W).
    :param pool: ``(kh, kw, sy, sx, top, bottom, left, right)`` ints; :data:`POOL_NONE` copies.
    :returns: int64 array (C, ho, wo) (``pool_out_size``); a copy of ``v`` for ``POOL_NONE``.
    :raises ValueError: if a size or stride is < 1, a padding is negative or not smaller than its
        window, the output is empty, or a window holds no position of the map.
    """
    v = np.asarray(v)
    kh, kw, sy, sx, t, b, l, r = (int(x) for x in pool)
    c, h, w = v.shape
    ho, wo = pool_out_size(h, w, pool)
    if min(kh, kw, sy, sx) < 1 or min(t, b, l, r) < 0:
        raise ValueError(f"max-pool window {pool} has a size or stride < 1 or a negative padding")
    if ho < 1 or wo < 1:
        raise ValueError(f"max-pool {pool} of a {h}x{w} map is empty")
    if max(t, b) >= kh or max(l, r) >= kw:
        raise ValueError(f"max-pool {pool}: a padding is not smaller than the window")
    if (tuple(pool) == POOL_NONE):
        return v.copy()
    lo = np.iinfo(np.int64).min
    pad = np.full((c, h + t + b + kh, w + l + r + kw), lo, dtype=np.int64)
    pad[:, t:t + h, l:l + w] = v
    out = np.full((c, ho, wo), lo, dtype=np.int64)
    for dy in range(kh):
        for dx in range(kw):
            out = np.maximum(out, pad[:, dy:dy + sy * (ho - 1) + 1:sy, dx:dx + sx * (wo - 1) + 1:sx])
    if np.any(out == lo):
        raise ValueError(f"max-pool {pool} of a {h}x{w} map has a window without a map position")
    return out


def maxpool2(v):
    """2×2 max-pool, stride 2, floor mode (an odd last row/column is dropped), CHW."""
    v = np.asarray(v)
    c, h, w = v.shape
    h2, w2 = h // 2, w // 2
    if h2 < 1 or w2 < 1:
        raise ValueError(f"2x2 max-pool of a {h}x{w} map is empty")
    v = v[:, :2 * h2, :2 * w2].reshape(c, h2, 2, w2, 2)
    return v.max(axis=(2, 4))


_ACT_NAMES = {ACT_NONE: "none", ACT_TANH: "tanh", ACT_SIGMOID: "sigmoid"}


def _check_act(act):
    is_int = isinstance(act, (int, np.integer)) and not isinstance(act, (bool, np.bool_))
    if not is_int or int(act) not in _ACT_NAMES:
        known = ", ".join(f"{k} ({n})" for k, n in _ACT_NAMES.items())
        raise ValueError(f"unknown activation {act!r} (known: {known})")
    return int(act)


def activation_table(act):
    """The 256-entry int8 lookup table of an output activation, indexed by ``t + 128``.

    The input ``t`` in [−128, 127] is the requantized pre-activation (:func:`requantize`), which
    for a tanh/sigmoid layer the compiler scales to mean ``t · 2^−ACT_Q_IN`` (``ACT_Q_IN`` = 5:
    [−4, 3.97] in steps of 1/32). The output ``y`` means ``y · 2^−ACT_Q_OUT`` (``ACT_Q_OUT`` = 7)::

        table[t + 128] = sat8(round_half_up(f(t · 2^−5) · 2^7)),   round_half_up(z) = ⌊z + ½⌋

    with ``f = tanh`` (:data:`ACT_TANH`) or the logistic ``f(x) = 1 / (1 + exp(−x))``
    (:data:`ACT_SIGMOID`), evaluated in float64 (``numpy.tanh``, ``numpy.exp``). No entry is a tie
    or near one (every ``f · 2^7`` is more than 10^−3 away from a half-integer; sigmoid(0) · 2^7
    = 64 is exact), so the table does not depend on the last bits of the math library.
    :data:`ACT_NONE` gives the identity ``table[t + 128] = t``.

    Every entry is within ½ of ``clip(f(t · 2^−5) · 2^7, −128, 127)``: tanh saturates to 127 for
    ``t ≥ 100`` (tanh ≥ 127.5/128 there) and reaches −128 at ``t ≤ −100``; sigmoid stays in
    [2, 126]. Both tables are monotonic non-decreasing. The hardware ROM
    (:class:`nibble.hw.output.OutputStage`) is generated from this function.

    :param act: :data:`ACT_NONE`, :data:`ACT_TANH` or :data:`ACT_SIGMOID`.
    :returns: int64 array of shape (256,), values in [−128, 127].
    :raises ValueError: on any other ``act``.
    """
    act = _check_act(act)
    t = np.arange(-128, 128, dtype=np.int64)
    if act == ACT_NONE:
        return t
    x = np.ldexp(t.astype(np.float64), -ACT_Q_IN)
    f = np.tanh(x) if act == ACT_TANH else 1.0 / (1.0 + np.exp(-x))
    return np.clip(np.floor(np.ldexp(f, ACT_Q_OUT) + 0.5), -128, 127).astype(np.int64)


def activate(v, act):
    """Apply an output activation to int8 values: ``activation_table(act)[v + 128]``.

    Applied after :func:`requantize` and before :func:`maxpool2` (the hardware order; since the
    tables are monotonic, pooling first would give the same result).

    :param v: int array (any shape), values in [−128, 127].
    :param act: :data:`ACT_NONE`, :data:`ACT_TANH` or :data:`ACT_SIGMOID`.
    :returns: int64 array of ``v``'s shape.
    :raises ValueError: on an unknown ``act`` or a value of ``v`` outside [−128, 127].
    """
    table = activation_table(act)
    v = np.asarray(v)
    if v.dtype.kind not in "iub":
        raise ValueError(f"activation input must be integers, not {v.dtype}")
    v = v.astype(np.int64)
    bad = (v < -128) | (v > 127)
    if np.any(bad):
        raise ValueError(f"activation input must be int8 in [-128, 127], got {int(v[bad].ravel()[0])}"
                         f" ({int(np.count_nonzero(bad))} value(s) out of range)")
    return table[v + 128]
