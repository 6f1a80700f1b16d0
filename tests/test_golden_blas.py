"""The golden model's exact integer contractions in float64 BLAS (``golden.exact_dtype``,
``exact_matmul``, ``correlate``): bit for bit equal to a plain integer oracle in Python ints
(object arrays: no rounding, no wrapping), below the 2^53 bound (float64 path) and beyond it
(int64 path), for the shift-accumulate conv (ARITHMETIC §4.4), the Winograd conv (§2) and the
deconvolution forms (§1, §3), and the int64 scatter-add oracle of the deconvolution forms against a §1.1 loop.

Named edge cases: int8 extremes −128/127 against the largest power-of-two weights ±2^DE in every
kernel position, the §4.4 worst case, the bound on either side of 2^53, inputs and weights large
enough to need the int64 path, strides, paddings (asymmetric, negative = crop), zero insertion,
1×1 maps, odd sizes; then seeded random cases (the seed is in the test id).
"""
import numpy as np
import pytest

from nibble.sim import deconv as dc
from nibble.sim import golden
from nibble.sim import winograd as wg

SEED = 2024
#: The 4-bit codes of the largest weights, +2^DE and −2^DE (ARITHMETIC §4.2: E = 7).
CODE_MAX, CODE_MIN = 7, 15


def oracle_corr(xp, w, stride=1):
    """``y[o, a, b] = Σ_{c,i,j} xp[c, a·s+i, b·s+j] · w[o, c, i, j]`` in Python ints (ARITHMETIC §0)."""
    xp, w = np.asarray(xp).astype(object), np.asarray(w).astype(object)
    co, ci, kh, kw = w.shape
    ho, wo = (xp.shape[1] - kh) // stride + 1, (xp.shape[2] - kw) // stride + 1
    y = np.zeros((co, ho, wo), dtype=object)
    for i in range(kh):
        for j in range(kw):
            win = xp[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
            for o in range(co):
                for c in range(ci):
                    y[o] += w[o, c, i, j] * win[c]
    return y


def oracle_conv_acc(v, codes, stride=1, pad=(0, 0, 0, 0)):
    return oracle_corr(golden.pad_or_crop(np.asarray(v).astype(object), pad),
                       golden.code_to_int(codes), stride)


def oracle_deconv(x, Wt, S, P, OP=0):
    """ARITHMETIC §1.1 by definition, in Python ints: ``y[co, S·iy − P + ky, S·ix − P + kx] +=
    x[ci, iy, ix] · Wt[ci, co, ky, kx]`` inside ``[0, Ho) × [0, Wo)``."""
    x, Wt = np.asarray(x).astype(object), np.asarray(Wt).astype(object)
    _, h, w = x.shape
    _, co, K, _ = Wt.shape
    ho, wo = (h - 1) * S - 2 * P + K + OP, (w - 1) * S - 2 * P + K + OP
    y = np.zeros((co, ho, wo), dtype=object)
    for iy in range(h):
        for ix in range(w):
            for ky in range(K):
                for kx in range(K):
                    oy, ox = S * iy - P + ky, S * ix - P + kx
                    if 0 <= oy < ho and 0 <= ox < wo:
                        y[:, oy, ox] += x[:, iy, ix] @ Wt[:, :, ky, kx]
    return y


def same(got, want):
    """Bit for bit: int64 and equal to the Python-int oracle (which must fit int64)."""
    assert got.dtype == np.int64 and got.shape == want.shape
    assert all(-(1 << 63) <= int(x) < (1 << 63) for x in want.ravel())
    assert np.array_equal(got, want.astype(np.int64))


# ---------------------------------------------------------------------------------------------
# the bound


def test_f64_exact_is_where_float64_stops_holding_every_integer():
    assert golden.F64_EXACT == 2 ** 53
    assert int(np.float64(golden.F64_EXACT - 1)) == golden.F64_EXACT - 1
    assert int(np.float64(golden.F64_EXACT + 1)) != golden.F64_EXACT + 1


def test_max_abs_is_exact_at_the_int64_limits():
    assert golden.max_abs(np.array([-(1 << 63)])) == 1 << 63          # np.abs would wrap
    assert golden.max_abs(np.array([(1 << 63) - 1, -5])) == (1 << 63) - 1
    assert golden.max_abs(np.zeros((0, 3), np.int64)) == 0


@pytest.mark.parametrize("xmax,dtype", [(golden.F64_EXACT - 1, np.float64), (golden.F64_EXACT, np.int64)])
def test_bound_just_below_and_at_2_53(xmax, dtype):
    w = np.array([[1]])
    assert golden.contraction_bound(w, xmax) == xmax
    assert golden.exact_dtype(w, xmax) is dtype


def test_bound_is_the_largest_row_sum():
    """Row sums 3 and 64: the bound is 64·xmax; the crude ``max|w|·K·xmax`` (256·xmax) would be
    past 2^53 here, the exact bound is not."""
    w = np.array([[1, -1, 1, 0], [-64, 0, 0, 0]])
    xmax = (golden.F64_EXACT - 1) // 64
    assert golden.contraction_bound(w, xmax) == 64 * xmax < golden.F64_EXACT <= 256 * xmax
    assert golden.exact_dtype(w, xmax) is np.float64
    assert golden.exact_dtype(w, xmax + 1) is np.int64


def test_bound_of_weights_whose_int64_row_sums_would_wrap():
    w = np.full((2, 4), -(1 << 62), dtype=np.int64)
    assert golden.contraction_bound(w, 1) == 4 * (1 << 62)
    assert golden.exact_dtype(w, 1) is np.int64
    assert golden.exact_dtype(w, 0) is np.int64          # w itself is no float64 integer


def test_int8_and_4_bit_codes_are_always_below_the_bound():
    """ARITHMETIC §4.4: ``M = 128 · 2^DE · N``, far below 2^53 for any layer (N < 2^40)."""
    n = 512 * 7 * 7
    w = golden.code_to_int(np.full((1, n), CODE_MIN))
    assert golden.contraction_bound(w, 128) == 128 * (1 << golden.DE) * n
    assert golden.exact_dtype(w, 128) is np.float64


def test_exact_matmul_batched_and_beyond_the_bound():
    rng = np.random.default_rng(SEED)
    a, b = rng.integers(-576, 577, (16, 5, 7)), rng.integers(-512, 511, (16, 7, 9))
    want = np.einsum("pok,pkn->pon", a.astype(object), b.astype(object))
    same(golden.exact_matmul(a, b), want)
    big = b * (1 << 40) + 1                                       # bound ≥ 2^53: int64 path
    assert golden.exact_dtype(a, golden.max_abs(big)) is np.int64
    want = np.einsum("pok,pkn->pon", a.astype(object), big.astype(object))
    same(golden.exact_matmul(a, big), want)
    assert not np.array_equal((a.astype(float) @ big.astype(float)).astype(np.int64), want.astype(np.int64))


# ---------------------------------------------------------------------------------------------
# the 4-bit code table


def test_code_to_int_table():
    c = np.arange(16)
    assert golden.code_to_int(c).tolist() == [0, 1, 2, 4, 8, 16, 32, 64, 0, -1, -2, -4, -8, -16, -32, -64]
    assert np.array_equal(golden.code_to_int(c), golden.sac(1, c))
    assert golden.code_to_int(np.uint8(7)).shape == () and int(golden.code_to_int(7)) == 64
    assert golden.code_to_int(c.reshape(2, 8).astype(np.uint8)).shape == (2, 8)
    for bad in ([16], [-1], np.array([3, 200], np.uint8)):
        with pytest.raises(ValueError, match="0..15"):
            golden.code_to_int(bad)


# ---------------------------------------------------------------------------------------------
# conv_acc / correlate


def _one_hot_codes(co, ci, kh, kw, i, j, code):
    codes = np.zeros((co, ci, kh, kw), np.uint8)
    codes[:, :, i, j] = code
    return codes


@pytest.mark.parametrize("value", [-128, 127])
@pytest.mark.parametrize("code", [CODE_MAX, CODE_MIN])
def test_conv_int8_extremes_times_largest_weight_in_every_position(value, code):
    v = np.full((3, 5, 6), value)
    for i in range(3):
        for j in range(3):
            codes = _one_hot_codes(2, 3, 3, 3, i, j, code)
            for stride, pad in ((1, (1, 1, 1, 1)), (2, (0, 1, 2, 0))):
                same(golden.conv_acc(v, codes, stride, pad), oracle_conv_acc(v, codes, stride, pad))
    codes = np.full((2, 3, 3, 3), code, np.uint8)                       # every position at once
    acc = golden.conv_acc(v, codes, 1, (1, 1, 1, 1))
    same(acc, oracle_conv_acc(v, codes, 1, (1, 1, 1, 1)))
    assert acc[0, 2, 2] == value * golden.code_to_int(code) * 27


def test_conv_checkerboard_extremes_and_mixed_largest_weights():
    yy, xx = np.mgrid[:7, :9]
    v = np.stack([np.where((yy + xx + c) % 2, 127, -128) for c in range(4)])
    codes = np.where(np.arange(5 * 4 * 3 * 3).reshape(5, 4, 3, 3) % 3, CODE_MAX, CODE_MIN).astype(np.uint8)
    for stride in (1, 2, 3):
        same(golden.conv_acc(v, codes, stride, (1, 2, 0, 1)), oracle_conv_acc(v, codes, stride, (1, 2, 0, 1)))


def test_conv_worst_case_is_the_accumulator_bound():
    """ARITHMETIC §4.4: V = −128 and w = −2^DE on every tap give +M, ``acc_bits`` wide."""
    cin, k = 512, 3
    v = np.full((cin, 3, 3), -128)
    acc = golden.conv_acc(v, np.full((2, cin, k, k), CODE_MIN, np.uint8))
    m = 128 * (1 << golden.DE) * cin * k * k
    assert acc.shape == (2, 1, 1) and acc.dtype == np.int64 and np.all(acc == m)
    assert golden.acc_bits(cin * k * k) == m.bit_length() + 1


def test_conv_beyond_2_53_takes_the_int64_path_and_stays_exact():
    rng = np.random.default_rng(SEED)
    v = rng.integers(-(1 << 52), 1 << 52, (4, 6, 7))
    codes = rng.integers(0, 16, (3, 4, 3, 3)).astype(np.uint8)
    w = golden.code_to_int(codes).reshape(3, -1)
    assert golden.contraction_bound(w, golden.max_abs(v)) >= golden.F64_EXACT
    assert golden.exact_dtype(w, golden.max_abs(v)) is np.int64
    want = oracle_conv_acc(v, codes, 1, (1, 1, 1, 1))
    same(golden.conv_acc(v, codes, 1, (1, 1, 1, 1)), want)
    # float64 would round here: the fallback is needed
    vp = golden.pad_or_crop(v, (1, 1, 1, 1)).astype(float)
    naive = sum(np.tensordot(golden.code_to_int(codes)[:, :, i, j].astype(float), vp[:, i:i + 6, j:j + 7], 1)
                for i in range(3) for j in range(3))
    assert not np.array_equal(naive.astype(np.int64), want.astype(np.int64))


def test_correlate_large_weights_take_the_int64_path():
    rng = np.random.default_rng(SEED + 1)
    xp = rng.integers(-128, 128, (3, 6, 5))
    w = rng.integers(-(1 << 45), 1 << 45, (2, 3, 2, 2))
    assert golden.exact_dtype(w.reshape(2, -1), 128) is np.int64
    same(golden.correlate(xp, w, 1), oracle_corr(xp, w, 1))
    same(golden.correlate(xp, w >> 40, 2), oracle_corr(xp, w >> 40, 2))       # float64 path


def test_correlate_float_operands_stay_float():
    rng = np.random.default_rng(SEED + 2)
    xp, w = rng.standard_normal((2, 5, 5)), rng.standard_normal((3, 2, 3, 3))
    y = golden.correlate(xp, w)
    assert y.dtype == np.float64
    assert np.allclose(y, oracle_corr(xp, w).astype(float), rtol=0, atol=1e-12)


GEOMETRIES = [
    # (Cin, Cout, H, W, Kh, Kw, stride, pad)
    (1, 1, 1, 1, 1, 1, 1, (0, 0, 0, 0)),          # 1×1 map, 1×1 kernel
    (3, 2, 1, 1, 3, 3, 1, (1, 1, 1, 1)),          # 1×1 map, 3×3 kernel, same padding
    (5, 4, 1, 1, 1, 1, 2, (0, 0, 0, 0)),          # 1×1 map, stride 2
    (4, 3, 7, 5, 3, 3, 1, (1, 1, 1, 1)),          # odd sizes
    (4, 3, 7, 5, 3, 3, 2, (1, 1, 1, 1)),
    (4, 3, 9, 13, 3, 3, 3, (0, 2, 1, 0)),         # stride 3, asymmetric padding
    (3, 8, 15, 15, 7, 7, 2, (3, 3, 3, 3)),        # the 7×7 stride-2 stem
    (2, 3, 11, 9, 5, 5, 1, (2, 2, 2, 2)),
    (6, 5, 8, 8, 1, 1, 2, (0, 0, 0, 0)),          # 1×1 stride-2 shortcut
    (3, 2, 6, 7, 3, 1, 1, (1, 1, 0, 0)),          # non-square kernels
    (3, 2, 6, 7, 1, 3, 2, (0, 0, 1, 1)),
    (2, 2, 4, 4, 2, 2, 2, (0, 1, 0, 1)),
]


@pytest.mark.parametrize("ci,co,h,w,kh,kw,stride,pad", GEOMETRIES)
def test_conv_geometries(ci, co, h, w, kh, kw, stride, pad):
    rng = np.random.default_rng(SEED)
    v = rng.integers(-128, 128, (ci, h, w))
    codes = rng.integers(0, 16, (co, ci, kh, kw)).astype(np.uint8)
    same(golden.conv_acc(v, codes, stride, pad), oracle_conv_acc(v, codes, stride, pad))


@pytest.mark.parametrize("dil", [2, 3])
def test_conv_of_a_zero_inserted_input(dil):
    """The driver's NZP layers (ARITHMETIC §1.3): the conv reads the zero-inserted input."""
    rng = np.random.default_rng(SEED + dil)
    v = rng.integers(-128, 128, (3, 4, 5))
    up = np.zeros((3, 3 * dil + 1, 4 * dil + 1), np.int64)
    up[:, ::dil, ::dil] = v
    codes = rng.integers(0, 16, (4, 3, 3, 3)).astype(np.uint8)
    same(golden.conv_acc(up, codes, 1, (2, 2, 2, 2)), oracle_conv_acc(up, codes, 1, (2, 2, 2, 2)))


@pytest.mark.parametrize("seed", range(SEED, SEED + 16))
def test_conv_random(seed):
    rng = np.random.default_rng(seed)
    ci, co = int(rng.integers(1, 9)), int(rng.integers(1, 9))
    kh, kw, stride = int(rng.integers(1, 6)), int(rng.integers(1, 6)), int(rng.integers(1, 4))
    pad = tuple(int(p) for p in rng.integers(0, 3, 4))
    h, w = int(rng.integers(max(1, kh - pad[0] - pad[1]), 14)), int(rng.integers(max(1, kw - pad[2] - pad[3]), 14))
    v = rng.integers(-128, 128, (ci, h, w))
    codes = rng.integers(0, 16, (co, ci, kh, kw)).astype(np.uint8)
    same(golden.conv_acc(v, codes, stride, pad), oracle_conv_acc(v, codes, stride, pad))


# ---------------------------------------------------------------------------------------------
# Winograd


def oracle_winograd(v, codes, pad, name):
    return wg.winograd_scale(name) * oracle_conv_acc(v, codes, 1, pad)


@pytest.mark.parametrize("name", list(wg.VARIANTS))
@pytest.mark.parametrize("value", [-128, 127])
@pytest.mark.parametrize("code", [CODE_MAX, CODE_MIN])
def test_winograd_int8_extremes_times_largest_weight_in_every_position(name, value, code):
    r = wg.variant(name).r
    v = np.full((3, 5, 7), value)
    v[:, ::2, 1::3] = -1 - value                                     # the other extreme too
    for i in range(r):
        for j in range(r):
            codes = _one_hot_codes(2, 3, r, r, i, j, code)
            for pad in ((1, 1, 1, 1), (0, 1, 2, 0)):
                same(wg.winograd_conv_acc(v, codes, pad, name), oracle_winograd(v, codes, pad, name))
    codes = np.full((2, 3, r, r), code, np.uint8)
    same(wg.winograd_conv_acc(v, codes, (1, 1, 1, 1), name), oracle_winograd(v, codes, (1, 1, 1, 1), name))


@pytest.mark.parametrize("name", list(wg.VARIANTS))
def test_winograd_beyond_2_53_takes_the_int64_path_and_stays_exact(name):
    rng = np.random.default_rng(SEED)
    var = wg.variant(name)
    v = rng.integers(-(1 << 45), 1 << 45, (4, 7, 6))
    codes = rng.integers(0, 16, (3, 4, var.r, var.r)).astype(np.uint8)
    U = wg.weight_transform(codes, name, codes=True)
    V = wg.input_transform(wg.input_tiles(golden.pad_or_crop(v, (1, 1, 1, 1)), name)[0], name)
    Ub = U.reshape(3, 4, -1).transpose(2, 0, 1)
    assert golden.exact_dtype(Ub, golden.max_abs(V)) is np.int64
    same(wg.winograd_conv_acc(v, codes, (1, 1, 1, 1), name), oracle_winograd(v, codes, (1, 1, 1, 1), name))


@pytest.mark.parametrize("name", list(wg.VARIANTS))
@pytest.mark.parametrize("ci,co,h,w,pad", [
    (1, 1, 1, 1, (1, 1, 1, 1)), (2, 3, 1, 1, (2, 2, 2, 2)), (3, 2, 5, 7, (1, 1, 1, 1)),
    (4, 3, 9, 4, (0, 1, 1, 0)), (2, 2, 8, 8, (-1, 1, 1, -1)), (5, 4, 3, 3, (0, 0, 0, 0)),
])
def test_winograd_geometries(name, ci, co, h, w, pad):
    rng = np.random.default_rng(SEED)
    r = wg.variant(name).r
    v = rng.integers(-128, 128, (ci, h, w))
    codes = rng.integers(0, 16, (co, ci, r, r)).astype(np.uint8)
    assert h + pad[0] + pad[1] >= r and w + pad[2] + pad[3] >= r, "the case has an empty output"
    same(wg.winograd_conv_acc(v, codes, pad, name), oracle_winograd(v, codes, pad, name))


@pytest.mark.parametrize("seed", range(SEED, SEED + 8))
def test_winograd_random(seed):
    rng = np.random.default_rng(seed)
    name = list(wg.VARIANTS)[seed % len(wg.VARIANTS)]
    r = wg.variant(name).r
    ci, co = int(rng.integers(1, 9)), int(rng.integers(1, 9))
    pad = tuple(int(p) for p in rng.integers(-1, 3, 4))
    h, w = (int(rng.integers(r + 1, 14)) for _ in range(2))
    v = rng.integers(-128, 128, (ci, h, w))
    codes = rng.integers(0, 16, (co, ci, r, r)).astype(np.uint8)
    same(wg.winograd_conv_acc(v, codes, pad, name), oracle_winograd(v, codes, pad, name))


def test_transforms_and_channel_sum_against_python_ints():
    rng = np.random.default_rng(SEED + 3)
    for name, var in wg.VARIANTS.items():
        a = var.alpha
        g = rng.integers(-64, 65, (3, 2, var.r, var.r))
        G = var.G.astype(object)
        same(wg.weight_transform(g, name), np.einsum("ak,ockl,bl->ocab", G, g.astype(object), G))
        d = rng.integers(-128, 128, (2, 3, 4, a, a))
        BT = var.BT.astype(object)
        same(wg.input_transform(d, name), np.einsum("ak,...kl,bl->...ab", BT, d.astype(object), BT))
        M = rng.integers(-(1 << 40), 1 << 40, (3, 2, 2, a, a))
        AT = var.AT.astype(object)
        same(wg.output_transform(M, name), np.einsum("ak,...kl,bl->...ab", AT, M.astype(object), AT))
        U, V = rng.integers(-576, 577, (3, 2, a, a)), rng.integers(-512, 511, (2, 4, 5, a, a))
        for scale in (1, 1 << 44):                                  # float64 path, then int64 path
            want = np.einsum("ocab,ctsab->otsab", U.astype(object), (V * scale).astype(object))
            same(wg.channel_sum(U, V * scale), want)
        with pytest.raises(ValueError, match="do not match"):
            wg.channel_sum(U, V[..., :2])


# ---------------------------------------------------------------------------------------------
# deconvolution forms against the int64 scatter-add


DECONV = [(4, 2, 1, 0, 5, 6), (3, 2, 1, 1, 4, 3), (5, 2, 2, 1, 3, 4), (2, 2, 0, 0, 1, 1), (3, 1, 1, 0, 1, 1)]


@pytest.mark.parametrize("K,S,P,OP,h,w", DECONV)
def test_deconv_int8_extremes_times_largest_weights(K, S, P, OP, h, w):
    v = np.full((3, h, w), -128)
    v[:, ::2] = 127
    codes = np.where(np.arange(3 * 2 * K * K).reshape(3, 2, K, K) % 2, CODE_MAX, CODE_MIN).astype(np.uint8)
    want = oracle_deconv(v, golden.code_to_int(codes), S, P, OP)
    same(dc.deconv_scatter_acc(v, codes, S, P, OP), want)
    same(dc.nzp_conv_acc(v, codes, S, P, OP), want)
    for skip in (False, True):
        same(dc.tdc_conv_acc(v, codes, S, P, OP, skip), want)
    kc = -(-K // S)
    if kc in dc.TDC_WINOGRAD:
        same(dc.winograd_tdc_conv_acc(v, codes, S, P, OP), wg.winograd_scale(dc.TDC_WINOGRAD[kc]) * want)


@pytest.mark.parametrize("K,S,P,OP,h,w", DECONV)
def test_deconv_integer_forms_beyond_2_53(K, S, P, OP, h, w):
    rng = np.random.default_rng(SEED + K)
    x = rng.integers(-(1 << 50), 1 << 50, (2, h, w))
    Wt = rng.integers(-64, 65, (2, 3, K, K))
    assert golden.exact_dtype(Wt.transpose(1, 0, 2, 3).reshape(3, -1), golden.max_abs(x)) is np.int64
    want = oracle_deconv(x, Wt, S, P, OP)
    same(dc.deconv_scatter(x, Wt, S, P, OP), want)
    same(dc.nzp_conv(x, Wt, S, P, OP), want)
    same(dc.tdc_conv(x, Wt, S, P, OP, skip_zeros=True), want)
    same(dc.tdc_shuffle_conv(x, Wt, S, P, OP), want)


@pytest.mark.parametrize("seed", range(SEED, SEED + 6))
def test_deconv_random(seed):
    rng = np.random.default_rng(seed)
    K, S = int(rng.integers(2, 6)), int(rng.integers(1, 4))
    P, OP = int(rng.integers(0, K)), int(rng.integers(0, S))
    h, w = int(rng.integers(2, 7)), int(rng.integers(2, 7))
    assert (min(h, w) - 1) * S - 2 * P + K + OP >= 1, "the seed draws an empty output"
    v = rng.integers(-128, 128, (3, h, w))
    codes = rng.integers(0, 16, (3, 4, K, K)).astype(np.uint8)
    want = oracle_deconv(v, golden.code_to_int(codes), S, P, OP)
    same(dc.deconv_scatter_acc(v, codes, S, P, OP), want)
    same(dc.nzp_conv_acc(v, codes, S, P, OP), want)
    same(dc.tdc_conv_acc(v, codes, S, P, OP, skip_zeros=bool(seed % 2)), want)
    kc = -(-K // S)
    if kc in dc.TDC_WINOGRAD:
        same(dc.winograd_tdc_conv_acc(v, codes, S, P, OP), wg.winograd_scale(dc.TDC_WINOGRAD[kc]) * want)
