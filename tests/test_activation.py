"""Golden activation tables (tanh, sigmoid) and :func:`activate`, checked against the float functions.

The reference here is Python's ``math`` module (not NumPy, which the golden model uses), with the
tolerance the golden model states: every entry within ½ of ``clip(f(t/32) · 128, −128, 127)``.
The hardware lookup is compared with the golden model bit for bit in ``test_output_stage.py``.
"""
import math
import re

import numpy as np
import pytest

from nibble.sim import golden
from nibble.sim.golden import ACT_NONE, ACT_Q_IN, ACT_Q_OUT, ACT_SIGMOID, ACT_TANH

SEED = 4711
T = list(range(-128, 128))
FUNCS = {ACT_TANH: math.tanh, ACT_SIGMOID: lambda x: 1.0 / (1.0 + math.exp(-x))}


def _ref(act):
    """f(t · 2^−ACT_Q_IN) · 2^ACT_Q_OUT for every t, unrounded (float, from ``math``)."""
    return [FUNCS[act](t / 2 ** ACT_Q_IN) * 2 ** ACT_Q_OUT for t in T]


def test_exponents():
    assert (ACT_NONE, ACT_TANH, ACT_SIGMOID, ACT_Q_IN, ACT_Q_OUT) == (0, 1, 2, 5, 7)


@pytest.mark.parametrize("act", [ACT_NONE, ACT_TANH, ACT_SIGMOID])
def test_table_shape_and_monotonic(act):
    tab = golden.activation_table(act)
    assert tab.shape == (256,) and tab.dtype == np.int64
    assert tab.min() >= -128 and tab.max() <= 127
    assert np.all(np.diff(tab) >= 0)


def test_identity_table():
    assert golden.activation_table(ACT_NONE).tolist() == T


@pytest.mark.parametrize("act", [ACT_TANH, ACT_SIGMOID], ids=["tanh", "sigmoid"])
def test_table_within_half_lsb(act):
    """|y − clip(f · 128, −128, 127)| ≤ ½, and ≤ ½ of the unclipped value except where tanh
    saturates at 127 (t ≥ 100, tanh(t/32) · 128 ≥ 127.5)."""
    tab = golden.activation_table(act).tolist()
    for t, y, z in zip(T, tab, _ref(act)):
        assert abs(y - min(127.0, max(-128.0, z))) <= 0.5, (t, y, z)
        if abs(y - z) > 0.5:
            assert act == ACT_TANH and y == 127 and z >= 127.5 and t >= 100, (t, y, z)


@pytest.mark.parametrize("act", [ACT_TANH, ACT_SIGMOID], ids=["tanh", "sigmoid"])
def test_table_is_round_half_up(act):
    """Every entry is ⌊z + ½⌋ saturated, and no z is within 10^−3 of a tie (sigmoid(0) = 64 is exact),
    so the table does not depend on the last bits of the math library."""
    tab = golden.activation_table(act).tolist()
    for t, y, z in zip(T, tab, _ref(act)):
        assert y == min(127, max(-128, math.floor(z + 0.5))), (t, y, z)
        if not (act == ACT_SIGMOID and t == 0):
            assert abs(z - math.floor(z) - 0.5) > 1e-3, (t, z)


def test_tanh_odd_symmetry():
    """table(−t) = −table(t) wherever both are unsaturated; from t = 100 on, tanh(t/32) · 128 ≥ 127.5
    rounds to 128, saturated to 127, while the negative side gives −128 (t = −128 has no positive
    partner)."""
    tab = dict(zip(T, golden.activation_table(ACT_TANH).tolist()))
    assert tab[0] == 0 and tab[-128] == -128
    for t in range(1, 128):
        if t < 100:
            assert tab[-t] == -tab[t] and tab[-t] > -128, t
        else:
            assert (tab[t], tab[-t]) == (127, -128), t


def test_sigmoid_symmetry_and_range():
    """sigmoid(−x) = 1 − sigmoid(x): table(−t) = 128 − table(t); values in [2, 126]."""
    tab = dict(zip(T, golden.activation_table(ACT_SIGMOID).tolist()))
    assert tab[0] == 64
    for t in range(1, 128):
        assert tab[-t] == 128 - tab[t], t
    assert min(tab.values()) == 2 and max(tab.values()) == 126


def test_table_spot_values():
    """tanh(1)·128 = 97.48, sigmoid(1)·128 = 93.58, tanh(−4)·128 = −127.96, sigmoid(−4)·128 = 2.30."""
    tanh = golden.activation_table(ACT_TANH)
    sig = golden.activation_table(ACT_SIGMOID)
    assert (tanh[32 + 128], sig[32 + 128]) == (97, 94)
    assert (tanh[-32 + 128], sig[-32 + 128]) == (-97, 34)
    assert (tanh[0], sig[0], tanh[255], sig[255]) == (-128, 2, 127, 126)


@pytest.mark.parametrize("act", [ACT_NONE, ACT_TANH, ACT_SIGMOID])
def test_activate_is_table_lookup(act):
    rng = np.random.default_rng(SEED)
    v = rng.integers(-128, 128, (3, 5, 7))
    y = golden.activate(v, act)
    assert y.shape == v.shape and y.dtype == np.int64
    assert np.array_equal(y, golden.activation_table(act)[v + 128])
    assert np.array_equal(golden.activate(np.arange(-128, 128, dtype=np.int8), act),
                          golden.activation_table(act))
    assert golden.activate(np.int64(-128), act).shape == ()


@pytest.mark.parametrize("act", [ACT_TANH, ACT_SIGMOID], ids=["tanh", "sigmoid"])
def test_activate_commutes_with_maxpool(act):
    """The tables are monotonic, so pooling before or after the lookup gives the same map
    (the golden order, and the hardware's, is requantize → activate → maxpool2)."""
    rng = np.random.default_rng(SEED + act)
    v = rng.integers(-128, 128, (4, 6, 10))
    assert np.array_equal(golden.maxpool2(golden.activate(v, act)), golden.activate(golden.maxpool2(v), act))


@pytest.mark.parametrize("act", [3, -1, 7, "tanh", None, 1.0, True])
def test_activate_rejects_unknown_act(act):
    known = r"\(known: 0 \(none\), 1 \(tanh\), 2 \(sigmoid\)\)"
    with pytest.raises(ValueError, match=rf"unknown activation {re.escape(repr(act))} {known}"):
        golden.activate(np.zeros(4, np.int64), act)
    with pytest.raises(ValueError, match="unknown activation"):
        golden.activation_table(act)


@pytest.mark.parametrize("bad", [128, -129, 1000])
def test_activate_rejects_out_of_range(bad):
    v = np.array([[0, 5], [bad, -3]])
    with pytest.raises(ValueError, match=rf"int8 in \[-128, 127\], got {bad} \(1 value\(s\) out of range\)"):
        golden.activate(v, ACT_TANH)


def test_activate_rejects_non_integers():
    with pytest.raises(ValueError, match="activation input must be integers, not float64"):
        golden.activate(np.array([0.5, 1.0]), ACT_SIGMOID)
