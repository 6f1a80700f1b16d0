"""Winograd golden model against the direct shift-accumulate conv (ARITHMETIC §2, §4.4)."""
import itertools

import numpy as np
import pytest

from nibble.sim import golden
from nibble.sim import winograd as wg

SEED = 20261122
VARIANTS = ["F2x2_3x3", "F2x2_2x2"]


def _check(v, codes, pad, name):
    """Winograd scaled accumulator == scale · direct accumulator, and the division is exact."""
    scale = wg.winograd_scale(name)
    got = wg.winograd_conv_acc(v, codes, pad, name)
    ref = golden.conv_acc(v, codes, 1, pad)
    assert got.dtype == np.int64 and got.shape == ref.shape
    assert np.all(got % scale == 0)
    assert np.array_equal(got // scale, ref)


def test_matrices_and_scale():
    """ARITHMETIC §2.2, §2.3: G₂ = 2G for F(2,3) (scale 4), F(2,2) unscaled."""
    f23, f22 = wg.variant("F2x2_3x3"), wg.variant("F2x2_2x2")
    assert (f23.m, f23.r, f23.alpha, f23.scale) == (2, 3, 4, 4)
    assert (f22.m, f22.r, f22.alpha, f22.scale) == (2, 2, 3, 1)
    assert f23.G.tolist() == [[2, 0, 0], [1, 1, 1], [1, -1, 1], [0, 0, 2]]
    assert wg.winograd_scale("F2x2_3x3") == 4 and wg.winograd_scale("F2x2_2x2") == 1


@pytest.mark.parametrize("name", VARIANTS)
def test_1d_identity(name):
    """Aᵀ[(G g) ⊙ (Bᵀ d)] = c · correlate(d, g) for every unit d and g (exact, ARITHMETIC §2.2)."""
    v = wg.variant(name)
    c = int(round(np.sqrt(v.scale)))
    for k, j in itertools.product(range(v.alpha), range(v.r)):
        d = np.eye(v.alpha, dtype=np.int64)[k]
        g = np.eye(v.r, dtype=np.int64)[j]
        y = v.AT @ ((v.G @ g) * (v.BT @ d))
        ref = np.array([d[i:i + v.r] @ g for i in range(v.m)])
        assert np.array_equal(y, c * ref), (k, j)


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("shape,pad", [
    ((3, 8, 8), (1, 1, 1, 1)),      # even output, "same" padding
    ((5, 7, 9), (0, 0, 0, 0)),      # odd output sizes: edge tiles are cropped
    ((7, 5, 6), (2, 0, 1, 3)),      # asymmetric padding
    ((9, 6, 5), (0, 1, 2, 0)),
    ((1, 3, 3), (0, 0, 0, 0)),      # a single tile (F(2,3): 1×1 output)
    ((12, 11, 4), (1, 2, 0, 1)),    # Cin not a multiple of 8
], ids=lambda p: "x".join(map(str, p)))
def test_random_vs_direct(name, shape, pad):
    rng = np.random.default_rng(SEED)
    r = wg.variant(name).r
    cin = shape[0]
    for _ in range(4):
        v = rng.integers(-128, 128, shape)
        v[rng.random(shape) < 0.15] = -128
        v[rng.random(shape) < 0.15] = 127
        codes = rng.integers(0, 16, (3, cin, r, r))
        _check(v, codes, pad, name)


@pytest.mark.parametrize("name", VARIANTS)
def test_extremes_in_every_tile_position(name):
    """−128 and 127 alone at each position (i, j) of every α×α tile, and whole-map extremes."""
    var = wg.variant(name)
    rng = np.random.default_rng(SEED + 1)
    cin, h, w = 3, 7, 8
    worst = np.full((2, cin, var.r, var.r), 0b1111)          # −64 everywhere: the largest product
    worst[1] = 0b0111                                        # +64
    mixed = rng.integers(0, 16, (4, cin, var.r, var.r))
    codes = np.concatenate([worst, mixed])
    maps = [np.full((cin, h, w), -128), np.full((cin, h, w), 127)]
    yy, xx = np.indices((h, w))
    maps.append(np.broadcast_to(np.where((yy + xx) % 2, 127, -128), (cin, h, w)))
    for i, j in itertools.product(range(var.alpha), range(var.alpha)):
        hit = ((yy % var.m) == i % var.m) & ((xx % var.m) == j % var.m) & (yy >= i) & (xx >= j)
        for ext in (-128, 127):
            maps.append(np.broadcast_to(np.where(hit, ext, 0), (cin, h, w)))
    for y, x, ext in itertools.product(range(h), range(w), (-128, 127)):   # one pixel, every place
        one = np.zeros((cin, h, w), np.int64)
        one[y % cin, y, x] = ext
        maps.append(one)
    for vmap, pad in itertools.product(maps, [(0, 0, 0, 0), (1, 1, 1, 1), (0, 1, 0, 1)]):
        _check(vmap, codes, pad, name)


@pytest.mark.parametrize("name", VARIANTS)
def test_worst_case_reaches_bound(name):
    """d = −128, g = −2^dE: ``Y' = scale · Cin · r² · 2^dE · 128`` (ARITHMETIC §2.5)."""
    var = wg.variant(name)
    cin = 5
    y = wg.winograd_conv_acc(np.full((cin, 6, 6), -128), np.full((1, cin, var.r, var.r), 0b1111),
                             (0, 0, 0, 0), name)
    assert int(y.max()) == int(y.min()) == var.scale * cin * var.r ** 2 * 64 * 128


def test_negative_padding_crops():
    rng = np.random.default_rng(SEED + 2)
    v = rng.integers(-128, 128, (4, 9, 10))
    codes = rng.integers(0, 16, (2, 4, 3, 3))
    got = wg.winograd_conv_acc(v, codes, (-1, 2, 1, -2), "F2x2_3x3")
    ref = golden.conv_acc(v[:, 1:, :-2], codes, 1, (0, 2, 1, 0))
    assert np.array_equal(got, 4 * ref)


def test_int_weights_equal_codes():
    rng = np.random.default_rng(SEED + 3)
    codes = rng.integers(0, 16, (3, 2, 3, 3))
    assert np.array_equal(wg.weight_transform(codes, "F2x2_3x3", codes=True),
                          wg.weight_transform(golden.code_to_int(codes), "F2x2_3x3"))


@pytest.mark.parametrize("name,v_lo,v_hi,u_max", [
    ("F2x2_3x3", -512, 510, 576),
    ("F2x2_2x2", -510, 510, 256),
])
def test_ranges_attained(name, v_lo, v_hi, u_max):
    """V and U reach exactly ARITHMETIC §2.5's extremes (dE = 6) with adversarial inputs."""
    var = wg.variant(name)
    a, r = var.alpha, var.r
    assert wg.v_range(name) == (v_lo, v_hi)
    assert wg.u_range(name) == (-u_max, u_max)
    assert wg.u_range(name, de=3) == (-(u_max >> 3), u_max >> 3)
    # Adversarial tiles: for each V position, d = extreme with the sign of its coefficient.
    v_seen = []
    for i, j in itertools.product(range(a), range(a)):
        coef = np.outer(var.BT[i], var.BT[j])
        for sign in (1, -1):
            d = np.where(sign * coef > 0, 127, -128)
            v_seen.append(wg.input_transform(d, name)[i, j])
    assert (min(v_seen), max(v_seen)) == (v_lo, v_hi)
    # Adversarial kernels over the 15 code values.
    u_seen = []
    for i, j in itertools.product(range(a), range(a)):
        coef = np.outer(var.G[i], var.G[j])
        for sign in (1, -1):
            g = np.where(sign * coef > 0, 64, -64)[None, None]
            u_seen.append(wg.weight_transform(g, name)[0, 0, i, j])
    assert (min(u_seen), max(u_seen)) == (-u_max, u_max)
    # No int8 tile or 4-bit kernel leaves the range (random sample with extremes).
    rng = np.random.default_rng(SEED + 4)
    d = rng.choice([-128, -127, -1, 0, 1, 126, 127], (2000, a, a))
    V = wg.input_transform(d, name)
    assert V.min() >= v_lo and V.max() <= v_hi
    U = wg.weight_transform(rng.integers(0, 16, (500, 1, r, r)), name, codes=True)
    assert U.min() >= -u_max and U.max() <= u_max
    # bits: both V ranges need 10 signed bits
    assert all(-(1 << 9) <= x < (1 << 9) for x in (v_lo, v_hi))


@pytest.mark.parametrize("name,per_tile,direct_per_tile", [("F2x2_3x3", 16, 36), ("F2x2_2x2", 9, 16)])
def test_multiply_counts(name, per_tile, direct_per_tile):
    """ARITHMETIC §2.1: 16 vs 36 multiplies per 2×2 tile for F(2,3), 9 vs 16 for F(2,2)."""
    assert wg.winograd_mults(name, 2, 2) == per_tile
    assert wg.direct_mults(name, 2, 2) == direct_per_tile
    # edge tiles count whole: a 3×5 output needs 2×3 tiles
    assert wg.winograd_mults(name, 3, 5) == 6 * per_tile
    # the products the golden model forms: Cout·Cin·tiles·α²
    var = wg.variant(name)
    tiles, (ho, wo) = wg.input_tiles(np.zeros((2, 9, 6), np.int64), name)
    assert tiles.shape[1] * tiles.shape[2] * var.alpha ** 2 == wg.winograd_mults(name, ho, wo)


def test_multiply_count_k3_16x16():
    """ARITHMETIC §1.5: K3 S1 P1 on a 16×16 input, 2304 direct against 1024 Winograd F(2,3)."""
    assert wg.direct_mults("F2x2_3x3", 16, 16) == 2304
    assert wg.winograd_mults("F2x2_3x3", 16, 16) == 1024


def test_errors():
    msg = "unknown Winograd variant 'F4x4_3x3'; expected one of 'F2x2_3x3', 'F2x2_2x2'"
    with pytest.raises(ValueError) as e:
        wg.winograd_scale("F4x4_3x3")
    assert str(e.value) == msg
    with pytest.raises(ValueError, match=r"F2x2_3x3 needs \(3, 3\) kernels"):
        wg.winograd_conv_acc(np.zeros((1, 4, 4)), np.zeros((1, 1, 2, 2), np.uint8))
    with pytest.raises(ValueError, match="does not match weights"):
        wg.winograd_conv_acc(np.zeros((2, 4, 4)), np.zeros((1, 1, 3, 3), np.uint8))
    with pytest.raises(ValueError, match="is empty"):
        wg.winograd_conv_acc(np.zeros((1, 2, 4)), np.zeros((1, 1, 3, 3), np.uint8))
    with pytest.raises(ValueError, match="input tiles are 4x4"):
        wg.input_transform(np.zeros((3, 3)), "F2x2_3x3")
