"""Golden model of the integer Winograd convolution (NumPy only; ARITHMETIC §2).

Two variants, both exact in integer arithmetic (ARITHMETIC §2.3):

* ``"F2x2_3x3"`` — F(2×2, 3×3) with ``G₂ = 2G``: ``U' = 4U`` and the output is scaled by
  :func:`winograd_scale` = 4 (exact: every scaled output is a multiple of 4; requantize with
  ``sh + 2``, ARITHMETIC §4.5).
* ``"F2x2_2x2"`` — F(2×2, 2×2), integer without scaling (scale 1); the 2×2 TDC sub-kernels of §3.

The transforms (ARITHMETIC §2.1) ::

    U = G g Gᵀ          (α×α per (co, ci), offline)             weight_transform
    V = Bᵀ d B          (α×α per ci and input tile)             input_transform
    M = Σ_ci U ⊙ V      (α² multiplies per (co, ci) and tile)   channel_sum
    Y = Aᵀ M A          (m×m output tile per co)                 output_transform

Conventions as :mod:`nibble.sim.golden`: features CHW, weights ``(Cout, Cin, r, r)`` in
cross-correlation order, every integer array ``np.int64`` so that nothing wraps.

Bit growth (ARITHMETIC §2.5; attained extremes, int8 features, dense 4-bit code ``dE = 6``):

============  ====================  ====================  ========  ==================
variant       V = Bᵀ d B            U = G g Gᵀ            U·V       M over Cin
============  ====================  ====================  ========  ==================
F2x2_3x3 ×4   [−512, 510] (10 b)    [−576, 576] (11 b)    20 b      20 + ⌈log2 Cin⌉ b
F2x2_2x2 ×1   [−510, 510] (10 b)    [−256, 256] (10 b)    17 b      17 + ⌈log2 Cin⌉ b
============  ====================  ====================  ========  ==================

The scaled output ``Y' = scale · Y`` is bounded by ``scale · Cin · r² · 2^dE · 128``
(:func:`v_range`, :func:`u_range` compute the V and U columns for any ``dE``).

Every step is an exact integer matrix product (:func:`nibble.sim.golden.exact_matmul`: float64
BLAS where :func:`nibble.sim.golden.exact_dtype` proves it exact, int64 beyond): a 2-D transform
is the Kronecker matrix (``WinogradVariant.kBT``, ``kG``, ``kAT``) applied to the row-major
flattened tiles, and :func:`winograd_conv_acc` keeps the α² positions as the leading axis so that
``M`` is one ``(Cout × Cin) @ (Cin × tiles)`` product per position.
"""
import math

import numpy as np

from .golden import DE, code_to_int, exact_matmul, pad_or_crop

__all__ = [
    "VARIANTS", "WinogradVariant", "variant", "winograd_scale", "weight_transform",
    "input_transform", "output_transform", "input_tiles", "channel_sum", "winograd_conv_acc", "winograd_mults",
    "direct_mults", "v_range", "u_range",
]


class WinogradVariant:
    """Exact integer matrices of one F(m×m, r×r) variant (ARITHMETIC §2.2, §2.3).

    Attributes: ``name``; ``m`` output tile size; ``r`` kernel size; ``alpha = m + r − 1`` input
    tile size; ``BT`` (α×α), ``G`` (α×r, already scaled to integers), ``AT`` (m×α), all int64
    NumPy arrays; ``scale`` = the 2-D output scale ``c²`` (``Y' = scale · Y``).
    The 2-D transforms as matrices on row-major flattened tiles: ``kBT = BT ⊗ BT`` (α²×α²),
    ``kG = G ⊗ G`` (α²×r²), ``kAT = AT ⊗ AT`` (m²×α²), e.g. ``vec(Bᵀ d B) = kBT · vec(d)``.
    """

    def __init__(self, name, m, r, BT, G, AT, c):
        self.name, self.m, self.r, self.alpha = name, m, r, m + r - 1
        self.BT = np.array(BT, dtype=np.int64)
        self.G = np.array(G, dtype=np.int64)
        self.AT = np.array(AT, dtype=np.int64)
        self.scale = c * c
        self.kBT, self.kG, self.kAT = (np.kron(a, a) for a in (self.BT, self.G, self.AT))
        for arr in (self.BT, self.G, self.AT, self.kBT, self.kG, self.kAT):
            arr.setflags(write=False)

    def __repr__(self):
        return f"WinogradVariant({self.name!r})"


#: The supported variants by name (ARITHMETIC §2.2, §2.3).
VARIANTS = {
    # F(2×2,3×3), interpolation points 0, 1, −1, ∞; G₂ = 2G, per-dimension scale 2.
    "F2x2_3x3": WinogradVariant(
        "F2x2_3x3", m=2, r=3,
        BT=[[1, 0, -1, 0],
            [0, 1, 1, 0],
            [0, -1, 1, 0],
            [0, 1, 0, -1]],
        G=[[2, 0, 0],
           [1, 1, 1],
           [1, -1, 1],
           [0, 0, 2]],
        AT=[[1, 1, 1, 0],
            [0, 1, -1, -1]],
        c=2),
    # F(2×2,2×2), points 0, 1, ∞; integer as it stands.
    "F2x2_2x2": WinogradVariant(
        "F2x2_2x2", m=2, r=2,
        BT=[[1, -1, 0],
            [0, 1, 0],
            [0, -1, 1]],
        G=[[1, 0],
           [1, 1],
           [0, 1]],
        AT=[[1, 1, 0],
            [0, 1, 1]],
        c=1),
}


def variant(name):
    """The :class:`WinogradVariant` called ``name``.

    :raises ValueError: ``unknown Winograd variant 'X'; expected one of 'F2x2_3x3', 'F2x2_2x2'``.
    """
    if isinstance(name, WinogradVariant):
        return name
    try:
        return VARIANTS[name]
    except (KeyError, TypeError):
        known = ", ".join(repr(k) for k in VARIANTS)
        raise ValueError(f"unknown Winograd variant {name!r}; expected one of {known}") from None


def winograd_scale(name):
    """2-D output scale of a variant: 4 for ``"F2x2_3x3"`` (``G₂ = 2G``), 1 for ``"F2x2_2x2"``."""
    return variant(name).scale


def weight_transform(w, name, *, codes=False):
    """Transformed weights ``U = G g Gᵀ`` (ARITHMETIC §2.1, §2.3), exact.

    :param w: ``(Cout, Cin, r, r)`` integer weights in units of ``2^n2`` (values of
        :func:`nibble.sim.golden.code_to_int`), or 4-bit codes when ``codes=True``.
    :param name: variant name.
    :param codes: ``w`` holds 4-bit INQ codes (ARITHMETIC §4.2) to decode first.
    :returns: int64 ``(Cout, Cin, α, α)``. For ``|g| ≤ 2^dE`` each entry lies in
        :func:`u_range` (``[−576, 576]`` for F2x2_3x3 and ``[−256, 256]`` for F2x2_2x2 with dE = 6).
    :raises ValueError: if the kernel is not ``r×r``.
    """
    v = variant(name)
    return _tile_transform(v.kG, _kernels(w, v, codes), v.alpha)


def input_transform(d, name):
    """Transformed input tiles ``V = Bᵀ d B`` over the last two axes (ARITHMETIC §2.1).

    :param d: integer array ``(..., α, α)`` (int8 values for the §2.5 ranges).
    :returns: int64 ``(..., α, α)``; for int8 ``d`` each entry lies in :func:`v_range`
        (``[−512, 510]`` for F2x2_3x3, ``[−510, 510]`` for F2x2_2x2): +2 bits.
    """
    v = variant(name)
    d = np.asarray(d, dtype=np.int64)
    if d.shape[-2:] != (v.alpha, v.alpha):
        raise ValueError(f"{v.name} input tiles are {v.alpha}x{v.alpha}, got shape {d.shape}")
    return _tile_transform(v.kBT, d, v.alpha)


def output_transform(M, name):
    """Output tiles ``Y = Aᵀ M A`` over the last two axes (ARITHMETIC §2.1).

    :param M: integer array ``(..., α, α)``.
    :returns: int64 ``(..., m, m)``; still scaled by :func:`winograd_scale` when ``M`` is built
        from scaled ``U``. Growth over ``M`` at most ``(max_row Σ|Aᵀ[row]|)²``: ×9 (4 bits) for
        F2x2_3x3, ×4 (2 bits) for F2x2_2x2.
    """
    v = variant(name)
    M = np.asarray(M, dtype=np.int64)
    if M.shape[-2:] != (v.alpha, v.alpha):
        raise ValueError(f"{v.name} accumulator tiles are {v.alpha}x{v.alpha}, got shape {M.shape}")
    return _tile_transform(v.kAT, M, v.m)


def _kernels(w, v, codes):
    """The integer kernels ``g`` (Cout, Cin, r, r) of variant ``v``: ``w`` itself, or its 4-bit
    codes decoded (:func:`nibble.sim.golden.code_to_int`).

    :raises ValueError: if the kernel is not ``r×r``.
    """
    g = code_to_int(w) if codes else np.asarray(w, dtype=np.int64)
    if g.ndim != 4 or g.shape[2:] != (v.r, v.r):
        raise ValueError(f"{v.name} needs ({v.r}, {v.r}) kernels, got weights of shape {g.shape}")
    return g


def _positions(k, x):
    """``k · vec(tile)`` of every tile on the last two axes of ``x``, positions leading:
    ``(k.shape[0], tiles)`` int64 (exact)."""
    n = x.shape[-1] * x.shape[-2]
    return exact_matmul(k, x.reshape(-1, n).T)


def _tile_transform(k, x, n):
    """``k · vec(tile)`` for every tile on the last two axes of ``x``, as ``(…, n, n)`` tiles."""
    return _positions(k, x).T.reshape(x.shape[:-2] + (n, n))


def input_tiles(vp, name):
    """Overlapping ``α×α`` input tiles of an already padded input (ARITHMETIC §2.1).

    Tiles start every ``m`` pixels and overlap by ``r − 1``. The input is zero-extended at the
    bottom and right to ``⌈Ho/m⌉·m + r − 1`` rows and columns, ``Ho = Hp − r + 1``.

    :param vp: integer array ``(Cin, Hp, Wp)``, ``Hp, Wp ≥ r``.
    :returns: ``(tiles, (Ho, Wo))``: int64 ``(Cin, ⌈Ho/m⌉, ⌈Wo/m⌉, α, α)`` and the output size.
    """
    v = variant(name)
    vp = np.asarray(vp, dtype=np.int64)
    cin, hp, wp = vp.shape
    ho, wo = hp - v.r + 1, wp - v.r + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"conv of a {(hp, wp)} padded input with a {v.r}x{v.r} kernel is empty")
    th, tw = -(-ho // v.m), -(-wo // v.m)
    ext = np.pad(vp, ((0, 0), (0, th * v.m + v.r - 1 - hp), (0, tw * v.m + v.r - 1 - wp)))
    win = np.lib.stride_tricks.sliding_window_view(ext, (v.alpha, v.alpha), axis=(1, 2))
    return np.ascontiguousarray(win[:, ::v.m, ::v.m]), (ho, wo)


def channel_sum(U, V):
    """Element-wise products summed over the input channels: ``M[o, t…, p…] = Σ_c U[o, c, p…] ·
    V[c, t…, p…]`` (ARITHMETIC §2.1, ``M = Σ_ci U ⊙ V``), exact.

    One matrix product ``(Cout × Cin) @ (Cin × tiles)`` per position ``p``. It is computed in
    float64 BLAS when :func:`nibble.sim.golden.exact_dtype` proves every partial sum an integer
    below 2^53 (bound ``max|V| · max_{p,o} Σ_c |U[o, c, p]|``; with the §2.5 ranges, int8 features
    and ``dE = 6`` at most ``512 · 576 · Cin`` for F2x2_3x3, so always for ``Cin < 2^34``), in
    int64 otherwise; the result is the int64 sum bit for bit.

    :param U: integer ``(Cout, Cin, p…)`` (transformed weights, :func:`weight_transform`, or a
        selection of their positions). :param V: integer ``(Cin, t…, p…)`` with the same trailing
        position axes (transformed tiles, :func:`input_transform`).
    :returns: int64 ``(Cout, t…, p…)``.
    :raises ValueError: if the channels or positions of ``U`` and ``V`` differ.
    """
    U, V = np.asarray(U), np.asarray(V)
    co, ci, *pos = U.shape
    nt = V.ndim - 1 - len(pos)
    if nt < 0 or V.shape[0] != ci or list(V.shape[1 + nt:]) != pos:
        raise ValueError(f"transformed weights {U.shape} do not match transformed tiles {V.shape}")
    tiles = V.shape[1:1 + nt]
    npos, ntile = math.prod(pos), math.prod(tiles)
    Ub = U.reshape(co, ci, npos).transpose(2, 0, 1)                 # (p, Cout, Cin)
    Vb = V.reshape(ci, ntile, npos).transpose(2, 0, 1)              # (p, Cin, tiles)
    return exact_matmul(Ub, Vb).transpose(1, 2, 0).reshape((co,) + tiles + tuple(pos))


def winograd_conv_acc(v, codes, pad=(0, 0, 0, 0), name="F2x2_3x3"):
    """Scaled integer accumulator of a stride-1 conv through Winograd (ARITHMETIC §2.1, §2.3).

    Pads first (``pad = (top, bottom, left, right)``, negative entries crop), tiles with stride
    ``m`` (overlap ``r − 1``), zero-extends bottom/right to whole tiles, computes
    ``Y' = Aᵀ (Σ_ci U' ⊙ V) A`` per tile and crops the surplus outputs.
    ``winograd_conv_acc(v, codes, pad, name) == winograd_scale(name) ·
    golden.conv_acc(v, codes, 1, pad)`` exactly.

    The four steps are exact integer matrix products with the α² tile positions leading
    (``kG``, ``kBT``, one ``(Cout × Cin) @ (Cin × tiles)`` product per position, ``kAT``;
    :func:`nibble.sim.golden.exact_matmul`): float64 BLAS wherever the 2^53 bound holds, which it
    always does for int8 features (``M`` below ``512 · 576 · Cin``, :func:`channel_sum`), int64
    beyond it, so the result is the int64 one bit for bit.

    :param v: int array ``(Cin, H, W)``, values in [−128, 127].
    :param codes: 4-bit codes ``(Cout, Cin, r, r)``.
    :param name: variant name.
    :returns: int64 ``(Cout, Ho, Wo)``, ``Ho = H + top + bottom − r + 1``; every entry a multiple
        of :func:`winograd_scale`. Bound ``scale · Cin · r² · 2^dE · 128`` (ARITHMETIC §2.5).
    :raises ValueError: on a channel mismatch, a kernel that is not ``r×r`` or an empty output.
    """
    var = variant(name)
    v = np.asarray(v, dtype=np.int64)
    g = _kernels(codes, var, True)
    co, ci = g.shape[:2]
    if v.ndim != 3 or v.shape[0] != ci:
        raise ValueError(f"input {v.shape} does not match weights {np.shape(codes)}")
    tiles, (ho, wo) = input_tiles(pad_or_crop(v, pad), var)
    th, tw = tiles.shape[1:3]
    a2, m = var.alpha ** 2, var.m
    # position-major: U (α², Cout, Cin), V (α², Cin, tiles), M (α², Cout, tiles), Y (m², Cout, tiles)
    U = _positions(var.kG, g).reshape(a2, co, ci)
    V = _positions(var.kBT, tiles).reshape(a2, ci, th * tw)
    M = exact_matmul(U, V)                               # α² products per (co, ci, tile)
    Y = exact_matmul(var.kAT, M.reshape(a2, co * th * tw))
    Y = Y.reshape(m, m, co, th, tw).transpose(2, 3, 0, 4, 1).reshape(co, th * m, tw * m)
    return Y[:, :ho, :wo]


def winograd_mults(name, ho, wo):
    """Multiplies of a Winograd conv per (Cin, Cout) pair: ``α² · ⌈Ho/m⌉ · ⌈Wo/m⌉`` (ARITHMETIC §2.1).

    16 per 2×2 output tile for F2x2_3x3, 9 for F2x2_2x2; edge tiles count whole.
    """
    v = variant(name)
    return v.alpha ** 2 * math.ceil(ho / v.m) * math.ceil(wo / v.m)


def direct_mults(name, ho, wo):
    """Multiplies of the direct conv with the variant's kernel per (Cin, Cout) pair: ``r² · Ho · Wo``.

    36 per 2×2 output tile for 3×3 kernels, 16 for 2×2 kernels (ARITHMETIC §2.1 table).
    """
    v = variant(name)
    return v.r ** 2 * ho * wo


def _linear_range(coef, lo, hi):
    """``(min, max)`` of ``Σ coef·x`` with every ``x`` independent in ``[lo, hi]``."""
    coef = np.asarray(coef, dtype=np.int64)
    top = np.where(coef > 0, coef * hi, coef * lo).sum(axis=(-2, -1))
    bot = np.where(coef > 0, coef * lo, coef * hi).sum(axis=(-2, -1))
    return int(bot.min()), int(top.max())


def v_range(name, lo=-128, hi=127):
    """Attained range ``(min, max)`` of ``V = Bᵀ d B`` for ``d`` in ``[lo, hi]`` (ARITHMETIC §2.5)."""
    v = variant(name)
    return _linear_range(np.einsum("ak,bl->abkl", v.BT, v.BT), lo, hi)


def u_range(name, de=DE):
    """Attained range ``(min, max)`` of ``U = G g Gᵀ`` for ``|g| ≤ 2^de`` (ARITHMETIC §2.5)."""
    v = variant(name)
    return _linear_range(np.einsum("ak,bl->abkl", v.G, v.G), -(1 << de), 1 << de)
