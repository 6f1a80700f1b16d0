"""Deconvolution golden model against ARITHMETIC.md §1, §3, §5 and the definition of §1.1."""
import itertools
from pathlib import Path

import numpy as np
import pytest

from nibble.sim import deconv as dc
from nibble.sim import golden
from nibble.sim import winograd as wg

SEED = 20261123
DCGAN_W3 = (Path(__file__).parents[1]
            / "../shared/data/split_deconv/raw_data/DCGAN/weight/Deconv3_weight.npy")


def _definition(x, Wt, S, P, OP):
    """ARITHMETIC §1.1 literally: y[co, oy, ox] = Σ over (iy, ky) with oy = S·iy − P + ky (and
    the same for columns) of x[ci, iy, ix] · Wt[ci, co, ky, kx]."""
    ci, h, w = x.shape
    K = Wt.shape[2]
    ho, wo = (h - 1) * S - 2 * P + K + OP, (w - 1) * S - 2 * P + K + OP
    y = np.zeros((Wt.shape[1], ho, wo))
    for oy, iy in itertools.product(range(ho), range(h)):
        ky = oy - S * iy + P
        if not 0 <= ky < K:
            continue
        for ox, ix in itertools.product(range(wo), range(w)):
            kx = ox - S * ix + P
            if 0 <= kx < K:
                y[:, oy, ox] += x[:, iy, ix] @ Wt[:, :, ky, kx]
    return y


# ----- §1.4 per-axis plan tables, H = 8 --------------------------------------------------------
# (φ, r, c, taps f[j] (None = structural zero), valid taps, pad_lo, pad_hi, n_out)
PLANS = {
    (4, 2, 1, 0): (16, [(0, 1, 0, (3, 1), 2, 1, 0, 8), (1, 0, 1, (2, 0), 2, 0, 1, 8)]),
    (5, 2, 2, 1): (16, [(0, 0, 1, (4, 2, 0), 3, 1, 1, 8), (1, 1, 1, (None, 3, 1), 2, 1, 1, 8)]),
    (3, 2, 1, 1): (16, [(0, 1, 0, (None, 1), 1, 1, 0, 8), (1, 0, 1, (2, 0), 2, 0, 1, 8)]),
    (3, 2, 1, 0): (15, [(0, 1, 0, (None, 1), 1, 1, 0, 8), (1, 0, 1, (2, 0), 2, 0, 0, 7)]),
    (3, 1, 1, 0): (8, [(0, 0, 1, (2, 1, 0), 3, 1, 1, 8)]),
    (2, 2, 0, 0): (16, [(0, 0, 0, (0,), 1, 0, 0, 8), (1, 1, 0, (1,), 1, 0, 0, 8)]),
    (9, 3, 3, 0): (24, [(0, 0, 1, (6, 3, 0), 3, 1, 1, 8), (1, 1, 1, (7, 4, 1), 3, 1, 1, 8),
                        (2, 2, 1, (8, 5, 2), 3, 1, 1, 8)]),
    (7, 2, 3, 1): (16, [(0, 1, 1, (None, 5, 3, 1), 3, 2, 1, 8), (1, 0, 2, (6, 4, 2, 0), 4, 1, 2, 8)]),
}


@pytest.mark.parametrize("layer", PLANS, ids=lambda k: "K{}S{}P{}OP{}".format(*k))
def test_axis_plan_tables(layer):
    K, S, P, OP = layer
    ho, rows = PLANS[layer]
    assert dc.deconv_out_size(8, K, S, P, OP) == ho
    plan = dc.tdc_plan(K, S, P, OP, 8)
    got = [(a.phi, a.r, a.c, a.taps, a.n, a.pad_lo, a.pad_hi, a.n_out) for a in plan]
    assert got == [(phi, r, c, taps, n, lo, hi, no) for phi, r, c, taps, n, lo, hi, no in rows]
    # §1.4 identities: Σ n(r) = K, #{n = Kc − 1} = S·Kc − K, zeros only in the leading tap
    kc = -(-K // S)
    assert sum(a.n for a in plan) == K and sum(a.n == kc - 1 for a in plan) == S * kc - K
    assert all(a.taps[:kc - a.n] == (None,) * (kc - a.n) and None not in a.taps[kc - a.n:] for a in plan)


# ----- §1.4 2-D phase tables -------------------------------------------------------------------
Z = None
PHASES_2D = {
    (4, 2, 1, 0): [
        ((0, 0), (1, 1), (1, 0, 1, 0), [[(3, 3), (3, 1)], [(1, 3), (1, 1)]]),
        ((0, 1), (1, 0), (1, 0, 0, 1), [[(3, 2), (3, 0)], [(1, 2), (1, 0)]]),
        ((1, 0), (0, 1), (0, 1, 1, 0), [[(2, 3), (2, 1)], [(0, 3), (0, 1)]]),
        ((1, 1), (0, 0), (0, 1, 0, 1), [[(2, 2), (2, 0)], [(0, 2), (0, 0)]]),
    ],
    (5, 2, 2, 1): [
        ((0, 0), (0, 0), (1, 1, 1, 1), [[(4, 4), (4, 2), (4, 0)], [(2, 4), (2, 2), (2, 0)],
                                        [(0, 4), (0, 2), (0, 0)]]),
        ((0, 1), (0, 1), (1, 1, 1, 1), [[Z, (4, 3), (4, 1)], [Z, (2, 3), (2, 1)], [Z, (0, 3), (0, 1)]]),
        ((1, 0), (1, 0), (1, 1, 1, 1), [[Z, Z, Z], [(3, 4), (3, 2), (3, 0)], [(1, 4), (1, 2), (1, 0)]]),
        ((1, 1), (1, 1), (1, 1, 1, 1), [[Z, Z, Z], [Z, (3, 3), (3, 1)], [Z, (1, 3), (1, 1)]]),
    ],
    (3, 2, 1, 1): [
        ((0, 0), (1, 1), (1, 0, 1, 0), [[Z, Z], [Z, (1, 1)]]),
        ((0, 1), (1, 0), (1, 0, 0, 1), [[Z, Z], [(1, 2), (1, 0)]]),
        ((1, 0), (0, 1), (0, 1, 1, 0), [[Z, (2, 1)], [Z, (0, 1)]]),
        ((1, 1), (0, 0), (0, 1, 0, 1), [[(2, 2), (2, 0)], [(0, 2), (0, 0)]]),
    ],
}


@pytest.mark.parametrize("layer", PHASES_2D, ids=lambda k: "K{}S{}P{}OP{}".format(*k))
def test_2d_phase_tables(layer):
    K, S, P, OP = layer
    phases = dc.tdc_phases(K, S, P, OP, (8, 8))
    got = [(ph.phi, ph.r, ph.pad, [list(row) for row in ph.taps]) for ph in phases]
    assert got == PHASES_2D[layer]
    assert all(ph.n_out == (8, 8) for ph in phases)
    # the sub-kernels hold exactly those taps (structural zeros: 0 and masked out)
    rng = np.random.default_rng(SEED)
    Wt = rng.normal(size=(2, 3, K, K))
    sub = dc.tdc_subkernels(Wt, S)
    assert sorted(sub) == [(ry, rx) for ry in range(S) for rx in range(S)]
    for ph in phases:
        f, mask = sub[ph.r]
        assert f.shape == (3, 2, -(-K // S), -(-K // S))
        for jy, jx in np.ndindex(mask.shape):
            tap = ph.taps[jy][jx]
            assert mask[jy, jx] == (tap is not None)
            want = np.zeros((3, 2)) if tap is None else Wt[:, :, tap[0], tap[1]].T
            assert np.array_equal(f[:, :, jy, jx], want)


# ----- §1.6 cases ------------------------------------------------------------------------------
# (K, S, P, OP, (Cout, Ho, Wo)) of the §1.6 table; H, W follow from §1.1.
CASES = [
    (4, 2, 1, 0, (4, 16, 16)), (4, 2, 1, 0, (3, 10, 14)), (5, 2, 2, 1, (4, 16, 16)),
    (5, 2, 2, 1, (2, 12, 18)), (3, 2, 1, 1, (4, 16, 16)), (3, 2, 1, 0, (3, 13, 9)),
    (3, 1, 1, 0, (4, 8, 8)), (3, 1, 0, 0, (2, 8, 9)), (2, 2, 0, 0, (4, 16, 16)),
    (2, 2, 0, 1, (2, 11, 13)), (9, 3, 3, 0, (4, 18, 18)), (9, 3, 0, 2, (2, 23, 20)),
    (9, 3, 4, 1, (2, 14, 14)), (7, 2, 3, 1, (3, 12, 12)), (4, 4, 0, 0, (2, 16, 16)),
    (6, 3, 1, 2, (2, 15, 18)),
]
CASE_IDS = ["K{}S{}P{}OP{}-{}x{}".format(K, S, P, OP, *out[1:]) for K, S, P, OP, out in CASES]


def _case_input_size(K, S, P, OP, out):
    hw = []
    for o in out[1:]:
        num = o - K + 2 * P - OP
        assert num % S == 0
        hw.append(num // S + 1)
    return tuple(hw)


def _random_layers(n, seed):
    """§1.6's sweep: K 1..9, S 1..4, P 0..K, OP 0..S−1, H, W 1..9, Cin, Cout 1..4 (non-empty)."""
    rng = np.random.default_rng(seed)
    layers = []
    while len(layers) < n:
        K, S = int(rng.integers(1, 10)), int(rng.integers(1, 5))
        P, OP = int(rng.integers(0, K + 1)), int(rng.integers(0, S))
        h, w, cin, cout = (int(a) for a in rng.integers(1, 10, 2).tolist() + rng.integers(1, 5, 2).tolist())
        if (min(h, w) - 1) * S - 2 * P + K + OP >= 1:          # Ho, Wo >= 1
            layers.append((K, S, P, OP, h, w, cin, cout))
    return layers


RANDOM = _random_layers(100, SEED)


def _int_operands(rng, cin, cout, h, w, K):
    v = rng.integers(-128, 128, (cin, h, w))
    v[rng.random(v.shape) < 0.1] = -128
    codes = rng.integers(0, 16, (cin, cout, K, K))
    return v, codes


def _check_int_forms(v, codes, S, P, OP):
    ref = dc.deconv_scatter_acc(v, codes, S, P, OP)
    assert ref.dtype == np.int64
    for y in (dc.nzp_conv_acc(v, codes, S, P, OP), dc.tdc_conv_acc(v, codes, S, P, OP),
              dc.tdc_conv_acc(v, codes, S, P, OP, skip_zeros=True)):
        assert y.dtype == np.int64 and np.array_equal(y, ref)
    kc = -(-codes.shape[2] // (S if isinstance(S, int) else S[0]))
    if kc in dc.TDC_WINOGRAD:
        scale = wg.winograd_scale(dc.TDC_WINOGRAD[kc])
        for skip in (True, False):
            y = dc.winograd_tdc_conv_acc(v, codes, S, P, OP, skip_zeros=skip)
            assert y.dtype == np.int64 and np.all(y % scale == 0) and np.array_equal(y // scale, ref)
    return ref


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_cases_int_bit_exact(case):
    K, S, P, OP, out = case
    h, w = _case_input_size(*case)
    rng = np.random.default_rng(SEED + K * 100 + S * 10 + P)
    v, codes = _int_operands(rng, 3, out[0], h, w, K)
    ref = _check_int_forms(v, codes, S, P, OP)
    assert ref.shape == out
    # the integer scatter is the float scatter of the decoded weights, exactly
    assert np.array_equal(dc.deconv_scatter(v.astype(float), golden.code_to_int(codes).astype(float),
                                            S, P, OP), ref)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_cases_float_vs_definition(case):
    K, S, P, OP, out = case
    h, w = _case_input_size(*case)
    rng = np.random.default_rng(SEED + 1)
    x, Wt = rng.normal(size=(3, h, w)), rng.normal(size=(3, out[0], K, K))
    ref = _definition(x, Wt, S, P, OP)
    y = dc.deconv_scatter(x, Wt, S, P, OP)
    assert y.dtype == np.float64 and y.shape == out and np.abs(y - ref).max() < 1e-12
    for form in (dc.nzp_conv(x, Wt, S, P, OP), dc.tdc_conv(x, Wt, S, P, OP),
                 dc.tdc_conv(x, Wt, S, P, OP, skip_zeros=True), dc.tdc_shuffle_conv(x, Wt, S, P, OP)):
        assert form.shape == out and np.abs(form - ref).max() < 1e-12


def test_random_int_bit_exact():
    rng = np.random.default_rng(SEED + 2)
    wino = 0
    for K, S, P, OP, h, w, cin, cout in RANDOM:
        v, codes = _int_operands(rng, cin, cout, h, w, K)
        ref = _check_int_forms(v, codes, S, P, OP)
        assert ref.shape == (cout, dc.deconv_out_size(h, K, S, P, OP), dc.deconv_out_size(w, K, S, P, OP))
        wino += -(-K // S) in dc.TDC_WINOGRAD
    assert wino >= 25


def test_random_winograd_int_bit_exact():
    """Random layers whose sub-kernels are 2×2 or 3×3, so every one runs through Winograd."""
    rng = np.random.default_rng(SEED + 3)
    layers = [lay for lay in _random_layers(400, SEED + 4) if -(-lay[0] // lay[1]) in dc.TDC_WINOGRAD][:60]
    assert len(layers) == 60
    for K, S, P, OP, h, w, cin, cout in layers:
        _check_int_forms(*_int_operands(rng, cin, cout, h, w, K), S, P, OP)


def test_random_float_vs_definition():
    rng = np.random.default_rng(SEED + 5)
    for K, S, P, OP, h, w, cin, cout in RANDOM[:40]:
        x, Wt = rng.normal(size=(cin, h, w)), rng.normal(size=(cin, cout, K, K))
        ref = _definition(x, Wt, S, P, OP)
        for y in (dc.deconv_scatter(x, Wt, S, P, OP), dc.nzp_conv(x, Wt, S, P, OP),
                  dc.tdc_conv(x, Wt, S, P, OP), dc.tdc_shuffle_conv(x, Wt, S, P, OP)):
            assert y.shape == ref.shape and np.abs(y - ref).max() < 1e-12


def test_per_axis_parameters():
    """Non-square kernel, stride, padding and output padding: every formula is per axis (§0)."""
    rng = np.random.default_rng(SEED + 6)
    for K, S, P, OP in [((4, 5), (2, 2), (1, 2), (0, 1)), ((3, 5), (1, 2), (1, 2), (0, 1)),
                        ((5, 4), (3, 2), (2, 1), (2, 0)), ((2, 7), (2, 3), (0, 4), (1, 2))]:
        x, Wt = rng.normal(size=(2, 5, 6)), rng.normal(size=(2, 3) + K)
        ref = _definition_axes(x, Wt, S, P, OP)
        for y in (dc.deconv_scatter(x, Wt, S, P, OP), dc.nzp_conv(x, Wt, S, P, OP),
                  dc.tdc_conv(x, Wt, S, P, OP), dc.tdc_conv(x, Wt, S, P, OP, skip_zeros=True),
                  dc.tdc_shuffle_conv(x, Wt, S, P, OP)):
            assert y.shape == ref.shape and np.abs(y - ref).max() < 1e-12
        v, codes = rng.integers(-128, 128, (2, 5, 6)), rng.integers(0, 16, (2, 3) + K)
        r = dc.deconv_scatter_acc(v, codes, S, P, OP)
        assert np.array_equal(dc.nzp_conv_acc(v, codes, S, P, OP), r)
        assert np.array_equal(dc.tdc_conv_acc(v, codes, S, P, OP, skip_zeros=True), r)


def _definition_axes(x, Wt, S, P, OP):
    """§1.1 with per-axis parameters, by the 1-D definition along each axis."""
    ci, h, w = x.shape
    (sy, sx), (py, px), (oy_, ox_) = S, P, OP
    ky_, kx_ = Wt.shape[2:]
    ho, wo = (h - 1) * sy - 2 * py + ky_ + oy_, (w - 1) * sx - 2 * px + kx_ + ox_
    y = np.zeros((Wt.shape[1], ho, wo))
    for oy, iy, ox, ix in itertools.product(range(ho), range(h), range(wo), range(w)):
        ky, kx = oy - sy * iy + py, ox - sx * ix + px
        if 0 <= ky < ky_ and 0 <= kx < kx_:
            y[:, oy, ox] += x[:, iy, ix] @ Wt[:, :, ky, kx]
    return y


# ----- §1.5 and §3 counts ------------------------------------------------------------------------
# layer: (Ho, Kc, scatter, useful, NZP, TDC dense, TDC skip, shuffle dense,
#         Wino F(2,Kc) skip, dense, F(4,Kc) skip, dense)   — H = W = 16, Cin = Cout = 1
COUNTS = {
    (4, 2, 1, 0): (32, 2, 4096, 3844, 16384, 4096, 4096, 4624, 2304, 2304, 1600, 1600),
    (5, 2, 2, 1): (32, 3, 6400, 5929, 25600, 9216, 6400, 10404, 3136, 4096, 1936, 2304),
    (3, 2, 1, 1): (32, 2, 2304, 2209, 9216, 4096, 2304, 4624, 1600, 2304, 1296, 1600),
    (3, 1, 1, 0): (16, 3, 2304, 2116, 2304, 2304, 2304, 2601, 1024, 1024, 576, 576),
    (2, 2, 0, 0): (32, 1, 1024, 1024, 4096, 1024, 1024, 1024, None, None, None, None),
    (9, 3, 3, 0): (48, 3, 20736, 19044, 186624, 20736, 20736, 23409, 9216, 9216, 5184, 5184),
    (7, 2, 3, 1): (32, 4, 12544, 11236, 50176, 16384, 12544, 20736, 5184, 6400, 2704, 3136),
}
KEYS = ["scatter", "scatter_useful", "nzp", "tdc_dense", "tdc_skip", "tdc_shuffle",
        "wino2_skip", "wino2_dense", "wino4_skip", "wino4_dense"]


@pytest.mark.parametrize("layer", COUNTS, ids=lambda k: "K{}S{}P{}OP{}".format(*k))
def test_count_table_16x16(layer):
    K, S, P, OP = layer
    ho, kc, *counts = COUNTS[layer]
    assert dc.deconv_out_size(16, K, S, P, OP) == ho and -(-K // S) == kc
    got = dc.deconv_counts(K, S, P, OP, (16, 16))
    assert {k: got[k] for k, c in zip(KEYS, counts) if c is not None} == \
        {k: c for k, c in zip(KEYS, counts) if c is not None}
    # ratios of §1.5 when Ho = S·H
    assert got["nzp"] == S * S * got["tdc_skip"] == S * S * 16 * 16 * K * K
    assert got["tdc_dense"] * K * K == got["tdc_skip"] * S * S * kc * kc


@pytest.mark.parametrize("layer", [k for k in COUNTS if COUNTS[k][1] in dc.TDC_WINOGRAD],
                         ids=lambda k: "K{}S{}P{}OP{}".format(*k))
def test_count_table_counted(layer):
    """The multiplies the implementations form equal the §1.5 table (Kc ≤ 3), per Cin·Cout pair."""
    K, S, P, OP = layer
    _, kc, _, _, _, dense, skip, _, w_skip, w_dense, _, _ = COUNTS[layer]
    cin, cout = 2, 3
    rng = np.random.default_rng(SEED + 7)
    v, codes = _int_operands(rng, cin, cout, 16, 16, K)
    blocks = list(dc.tdc_blocks(v, golden.code_to_int(codes), S, P, OP))
    assert sum(np.prod(ph.n_out) * kc * kc for ph, _ in blocks) == dense
    assert sum(np.prod(ph.n_out) * ph.y.n * ph.x.n for ph, _ in blocks) == skip
    ref = dc.deconv_scatter_acc(v, codes, S, P, OP)
    scale = wg.winograd_scale(dc.TDC_WINOGRAD[kc])
    for skip_zeros, want in ((True, w_skip), (False, w_dense)):
        y, mults = dc.winograd_tdc_conv_acc(v, codes, S, P, OP, skip_zeros=skip_zeros, count=True)
        assert mults == want and np.array_equal(y, scale * ref)


@pytest.mark.parametrize("K,S,per_output", [
    (4, 2, 2.25), (5, 2, 3.0625), (3, 2, 1.5625), (9, 3, 4), (7, 2, 5.0625), (3, 1, 4),
])
def test_winograd_per_output(K, S, per_output):
    """§3: ((K + S(m−1)) / (S·m))² multiplies per output with m = 2, whole tiles, Ho = S·H."""
    P = next(p for p in range(K + 1) for op in range(S) if K + op - 2 * p == S)
    OP = S + 2 * P - K
    assert dc.winograd_tdc_mults(K, S, P, OP, (16, 16)) / (S * 16) ** 2 == per_output
    assert per_output == ((K + S) / (2 * S)) ** 2


def test_u_masks():
    """§3: the 1-D transformed-weight support of F(2, Kc) per kernel phase."""
    support = {
        (4, 2): {0: [1, 1, 1], 1: [1, 1, 1]},
        (5, 2): {0: [1, 1, 1, 1], 1: [0, 1, 1, 1]},
        (3, 2): {0: [1, 1, 1], 1: [0, 1, 1]},
        (9, 3): {0: [1, 1, 1, 1], 1: [1, 1, 1, 1], 2: [1, 1, 1, 1]},
    }
    for (K, S), want in support.items():
        kc = -(-K // S)
        name = dc.TDC_WINOGRAD[kc]
        for r, mask in want.items():
            taps = [r + S * (kc - 1 - j) < K for j in range(kc)]
            assert dc.winograd_u_mask(name, taps).astype(int).tolist() == mask
    # K5 S2: the four phases use 16, 12, 12, 9 of the 4×4 positions; K3 S2: 9, 6, 6, 4 of 3×3
    for K, S, P, OP, want in [(5, 2, 2, 1, [16, 12, 12, 9]), (3, 2, 1, 1, [9, 6, 6, 4])]:
        name = dc.TDC_WINOGRAD[-(-K // S)]
        by_r = {ph.r: int(np.outer(*(dc.winograd_u_mask(name, [t is not None for t in a.taps])
                                     for a in (ph.y, ph.x))).sum())
                for ph in dc.tdc_phases(K, S, P, OP, (8, 8))}
        assert [by_r[r] for r in sorted(by_r)] == want


def test_skipped_transformed_weights_are_zero():
    """§3: an unmasked U is 0 at every masked position, for every code of the real taps."""
    rng = np.random.default_rng(SEED + 8)
    for K, S in [(5, 2), (3, 2), (7, 3), (5, 4), (6, 4)]:
        kc = -(-K // S)
        name = dc.TDC_WINOGRAD[kc]
        codes = rng.integers(1, 16, (4, 3, K, K))
        for (ry, rx), (f, mask) in dc.tdc_subkernels(codes, S).items():
            U = wg.weight_transform(f, name, codes=True)
            um = np.outer(dc.winograd_u_mask(name, mask.any(axis=1)),
                          dc.winograd_u_mask(name, mask.any(axis=0)))
            assert not np.any(U[:, :, ~um])
            assert np.all(U[:, :, um].any(axis=(0, 1)))      # the kept positions are not all zero


# ----- §5 output addresses ------------------------------------------------------------------------
@pytest.mark.parametrize("K,S,P,OP,h,w", [
    (4, 2, 1, 0, 5, 6), (5, 2, 2, 1, 4, 4), (3, 2, 1, 1, 5, 3), (9, 3, 3, 0, 3, 4), (3, 2, 1, 0, 4, 5),
    (6, 3, 1, 2, 4, 5), (2, 4, 0, 3, 3, 2),
])
@pytest.mark.parametrize("layout", ["CHW", "HWC"])
def test_addresses_write_every_output_once(K, S, P, OP, h, w, layout):
    rng = np.random.default_rng(SEED + 9)
    cout = 3
    v, codes = _int_operands(rng, 2, cout, h, w, K)
    x, Wt = v, golden.code_to_int(codes)
    out_hw = (dc.deconv_out_size(h, K, S, P, OP), dc.deconv_out_size(w, K, S, P, OP))
    buf, writes = dc.tdc_write(dc.tdc_blocks(x, Wt, S, P, OP), S, out_hw, cout, layout)
    assert np.all(writes == 1)
    ref = dc.deconv_scatter(x, Wt, S, P, OP)
    flat = ref.ravel() if layout == "CHW" else ref.transpose(1, 2, 0).ravel()
    assert np.array_equal(buf, flat)
    # address steps of §5 inside one phase
    ph = dc.tdc_phases(K, S, P, OP, (h, w))[0]
    a = dc.tdc_phase_addresses(ph, S, out_hw, cout, layout, base=100)
    step_b, step_a = (S, S * out_hw[1]) if layout == "CHW" else (S * cout, S * out_hw[1] * cout)
    if a.shape[2] > 1:
        assert np.all(np.diff(a, axis=2) == step_b)
    if a.shape[1] > 1:
        assert np.all(np.diff(a, axis=1) == step_a)
    assert a.min() == 100 + (ph.phi[0] * out_hw[1] + ph.phi[1]) * (1 if layout == "CHW" else cout)


def test_address_formulas():
    assert dc.tdc_address(2, 3, 4, (1, 0), 2, (16, 16), 5, "CHW", base=7) == 7 + (2 * 16 + 7) * 16 + 8
    assert dc.tdc_address(2, 3, 4, (1, 0), 2, (16, 16), 5, "HWC", base=7) == 7 + (7 * 16 + 8) * 5 + 2
    with pytest.raises(ValueError, match="unknown layout"):
        dc.tdc_address(0, 0, 0, (0, 0), 2, (4, 4), 1, "WHC")


# ----- the real DCGAN layer --------------------------------------------------------------------------
def test_dcgan_deconv3_layer():
    """Split-deconvolution DCGAN Deconv3 (K5 S2, out = 2·in): weights [Cout, Cin, kh, kw] → Wt."""
    w = np.load(DCGAN_W3)
    assert w.shape == (3, 64, 5, 5) and w.dtype == np.float64
    Wt = w.transpose(1, 0, 2, 3)
    x = np.random.default_rng(SEED + 10).random((64, 16, 16))
    ref = dc.deconv_scatter(x, Wt, 2, 2, 1)
    assert ref.shape == (3, 32, 32)
    y = dc.tdc_conv(x, Wt, 2, 2, 1)
    assert np.abs(y - ref).max() < 1e-9
    assert np.abs(dc.tdc_conv(x, Wt, 2, 2, 1, skip_zeros=True) - ref).max() < 1e-9
    # "reproduced by split-deconvolution with an input zero-pad of 1 on every side"
    assert all(ph.pad == (1, 1, 1, 1) for ph in dc.tdc_phases(5, 2, 2, 1, (16, 16)))
    # the weights are multiples of 2^-7: on int8-valued inputs the float result is exact
    wi = np.rint(Wt * 128).astype(np.int64)
    assert np.array_equal(wi / 128.0, Wt)
    v = np.random.default_rng(SEED + 11).integers(0, 128, (64, 16, 16))
    exact = dc.deconv_scatter(v, wi, 2, 2, 1)
    assert np.array_equal(dc.tdc_conv(v, wi, 2, 2, 1), exact)
    assert np.array_equal(dc.tdc_conv(v.astype(float), Wt, 2, 2, 1) * 128, exact.astype(float))


# ----- errors and edge cases ------------------------------------------------------------------------
def test_errors():
    with pytest.raises(ValueError, match="P >= 0"):
        dc.deconv_out_size(4, 3, 2, -1, 0)
    assert dc.deconv_out_size(4, 3, 2, 1, 2) == 9 and dc.deconv_out_size(4, 3, 2, 1, -1) == 6   # any OP
    with pytest.raises(ValueError, match="is empty"):
        dc.deconv_out_size(1, 1, 1, 1, 0)
    with pytest.raises(ValueError, match="does not match"):
        dc.deconv_scatter(np.zeros((2, 3, 3)), np.zeros((3, 1, 3, 3)), 2, 1)
    with pytest.raises(ValueError, match="no Winograd variant for 4x4"):
        dc.winograd_tdc_conv_acc(np.zeros((1, 3, 3), np.int64), np.zeros((1, 1, 7, 7), np.uint8), 2, 3, 1)
    with pytest.raises(ValueError, match="F2x2_2x2 needs 2x2 sub-kernels"):
        dc.winograd_tdc_conv_acc(np.zeros((1, 3, 3), np.int64), np.zeros((1, 1, 5, 5), np.uint8), 2, 2, 1,
                                 name="F2x2_2x2")


def test_pad_or_crop():
    x = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    assert np.array_equal(dc.pad_or_crop(x, (-1, 2, 1, -2)), np.pad(x[:, 1:, :2], ((0, 0), (0, 2), (1, 0))))
    assert dc.pad_or_crop(x, (-3, 1, 0, 0)).tolist() == np.zeros((2, 1, 4), int).tolist()
    with pytest.raises(ValueError, match="crops more"):
        dc.pad_or_crop(x, (-2, -2, 0, 0))


def test_output_smaller_than_stride():
    """Phases without outputs (Ho < S) and kernel phases without taps (K < S)."""
    rng = np.random.default_rng(SEED + 12)
    for K, S, P, OP, h in [(1, 3, 0, 0, 1), (2, 4, 0, 3, 1), (3, 4, 1, 0, 2), (1, 2, 1, 1, 2)]:
        v, codes = _int_operands(rng, 2, 2, h, h, K)
        _check_int_forms(v, codes, S, P, OP)
        ph = dc.tdc_phases(K, S, P, OP, (h, h))
        assert sum(p.n_out[0] for p in ph[::S]) == dc.deconv_out_size(h, K, S, P, OP)
