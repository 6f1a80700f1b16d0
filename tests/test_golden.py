"""Golden model against ARITHMETIC.md's tables and a float oracle (ARITHMETIC §4)."""
import itertools

import numpy as np
import pytest

from nibble.sim import golden

SEED = 1234


def test_code_table_n1_minus2():
    """ARITHMETIC §4.6: the 4-bit code table of a layer with n1 = −2, n2 = −8."""
    vals = golden.inq_decode(np.arange(16), -8)
    assert vals[:8].tolist() == [0, 0.00390625, 0.0078125, 0.015625, 0.03125, 0.0625, 0.125, 0.25]
    assert vals[8:].tolist() == [0, -0.00390625, -0.0078125, -0.015625, -0.03125, -0.0625, -0.125, -0.25]


def test_inq_n1_and_rule_vs_brute_force():
    rng = np.random.default_rng(SEED)
    w = rng.normal(0, 0.05, (16, 8, 3, 3))
    n1 = golden.inq_n1(w)
    s = np.abs(w).max()
    assert 0.75 * 2.0 ** n1 <= s < 1.5 * 2.0 ** n1
    codes, n2 = golden.inq_quantize(w)
    assert n2 == n1 - 6 and not np.any(codes == 8)
    levels = np.array([0.0] + [2.0 ** e for e in range(n2, n1 + 1)])
    q = golden.inq_decode(codes, n2)
    # nearest level in the linear domain, ties to the larger level
    a = np.abs(w).ravel()[:, None]
    d = np.abs(a - levels[None, :])
    nearest = np.array([levels[np.flatnonzero(np.isclose(r, r.min(), rtol=0, atol=1e-18))[-1]] for r in d])
    assert np.array_equal(np.abs(q).ravel(), nearest)
    assert np.array_equal(np.sign(q), np.where(q != 0, np.sign(w), 0))


@pytest.mark.parametrize("w,expected", [
    (0.0, 0.0), (2 ** -9, 0.0), (2 ** -8 - 1e-12, 0.0), (2 ** -8, 2 ** -7), (0.0117, 2 ** -7),
    (1.5 * 2 ** -7, 2 ** -6), (1.5 * 2 ** -7 - 1e-12, 2 ** -7), (0.3749, 0.25), (0.375, 0.5), (0.7499, 0.5),
    (-0.375, -0.5), (-2 ** -8, -2 ** -7),
])
def test_inq_boundaries(w, expected):
    """Thresholds at 1.5·2^k between levels and at 2^(n2−1) for zero (n1 = −1, n2 = −7)."""
    codes, n2 = golden.inq_quantize(np.array([w]), n1=-1)
    assert n2 == -7
    assert golden.inq_decode(codes, n2)[0] == expected


def test_inq_all_zero_is_an_error():
    with pytest.raises(ValueError, match="non-zero"):
        golden.inq_n1(np.zeros(4))


def test_pack_unpack():
    rng = np.random.default_rng(SEED)
    c = rng.integers(0, 16, 37).astype(np.uint8)
    words = golden.pack_codes(c)
    assert len(words) == 10
    assert golden.pack_codes([1, 2, 3, 4])[0] == 0x4321      # first code in the lowest nibble
    assert np.array_equal(golden.unpack_codes(words, 37), c)


def test_feature_q_examples():
    fmax = [65.6757, 80.514, 56.3319, 88.8347, 39.7062, 28.2393, 42.5003, 41.5683]
    assert [golden.feature_q(f) for f in fmax] == [0, 0, 1, 0, 1, 2, 1, 1]
    assert [golden.feature_q(f) for f in (128.0, 64.0, 0.5, 127.9, 1000.0, 0.0)] == [0, 1, 8, 0, -3, 0]
    for f in (0.001, 3.3, 128.0, 1e6):
        q = golden.feature_q(f)
        assert 2.0 ** q * f <= 128 < 2.0 ** (q + 1) * f


def test_quantize_features_rounding_and_saturation():
    v = golden.quantize_features(np.array([0.5, -0.5, 1.5, 127.5, 128.0, -128.0, -129.0, 2.49]), 0)
    assert v.tolist() == [1, 0, 2, 127, 127, -128, -128, 2]
    assert golden.quantize_features(np.array([0.5, 1.5, 2.5]), 0, "rne").tolist() == [0, 2, 2]


def test_requantize_example():
    """ARITHMETIC §4.5: acc = −7…7, sh = 2, half-up."""
    assert golden.requantize(np.arange(-7, 8), 2).tolist() == [-2, -1, -1, -1, -1, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    assert golden.requantize(np.array([-5, 3]), 2, relu=True).tolist() == [0, 1]
    assert golden.requantize(np.array([3, -3, 100]), -2).tolist() == [12, -12, 127]


@pytest.mark.parametrize("cin,k,de,bits", [(1, 3, 6, 18), (64, 3, 6, 24), (256, 3, 6, 26), (512, 3, 6, 27),
                                         (256, 3, 3, 23), (128, 4, 6, 26), (512, 4, 6, 28)])
def test_acc_bits_table(cin, k, de, bits):
    """ARITHMETIC §4.6 accumulator table; the worst case fits and overflows one bit narrower."""
    assert golden.acc_bits(cin * k * k, de) == bits
    worst = 128 * 2 ** de * cin * k * k
    assert worst < 2 ** (bits - 1) and worst >= 2 ** (bits - 2)


def _naive_float_conv(x, w, stride, pad):
    t, b, l, r = pad
    xp = np.pad(x, ((0, 0), (t, b), (l, r)))
    co, ci, kh, kw = w.shape
    ho, wo = (xp.shape[1] - kh) // stride + 1, (xp.shape[2] - kw) // stride + 1
    y = np.zeros((co, ho, wo))
    for o, a, bb in itertools.product(range(co), range(ho), range(wo)):
        y[o, a, bb] = np.sum(xp[:, a * stride:a * stride + kh, bb * stride:bb * stride + kw] * w[o])
    return y


@pytest.mark.parametrize("case", range(6))
def test_conv_acc_equals_float_oracle(case):
    """acc · 2^(n2 − Q) equals the float64 conv of the dequantized values exactly (ARITHMETIC §4.6)."""
    rng = np.random.default_rng(SEED + case)
    ci, co, k = int(rng.integers(1, 9)), int(rng.integers(1, 6)), int(rng.integers(1, 5))
    h, w = int(rng.integers(k, 10)), int(rng.integers(k, 10))
    stride = int(rng.integers(1, 3))
    pad = tuple(int(p) for p in rng.integers(0, k, 4))
    wf = rng.normal(0, 0.05, (co, ci, k, k))
    codes, n2 = golden.inq_quantize(wf)
    f = rng.normal(0, 20, (ci, h, w))
    q = golden.feature_q(np.abs(f).max())
    v = golden.quantize_features(f, q)
    if case == 0:
        v[:] = -128
        codes[:] = 0b1111
    acc = golden.conv_acc(v, codes, stride, pad)
    ref = _naive_float_conv(golden.dequantize_features(v, q), golden.inq_decode(codes, n2), stride, pad)
    assert np.array_equal(np.ldexp(acc.astype(np.float64), n2 - q), ref)
    assert np.abs(acc).max() < 2 ** (golden.acc_bits(ci * k * k) - 1)


def test_sac_is_shift():
    x = np.arange(-128, 128)
    for code in range(16):
        assert np.array_equal(golden.sac(x, code), x * golden.code_to_int(code))


def test_maxpool_floor():
    v = np.arange(2 * 5 * 3).reshape(2, 5, 3)
    p = golden.maxpool2(v)
    assert p.shape == (2, 2, 1) and p[0, 0, 0] == v[0, 1, 1] and p[1, 1, 0] == v[1, 3, 1]
