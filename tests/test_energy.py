"""The event counts and the energy estimate of ``nibble.sim.perf.energy``: named layers whose
counts are worked out by hand from the schedule, the SRAM interpolation against its published
points, and the deconvolution forms' energy on the published DCGAN Deconv2 geometry."""
import numpy as np
import pytest

from nibble.host.compiler import layer_beats, plan_program
from nibble.host.ir import CompileError, ConvOp
from nibble.hw.config import EngineConfig
from nibble.sim.perf.energy import ENERGY_PJ, plan_energy, plan_events, program_energy, sram_pj

CFG = EngineConfig()          # m = vc = 16
SEED = 5


def _conv(ci, co, k, size, pad, winograd="direct", rng=None):
    rng = rng or np.random.default_rng(SEED)
    op = ConvOp(name="c", w=np.zeros((co, ci, k, k)), b=rng.normal(0, 0.1, co), stride=1, pad=(pad,) * 4,
                codes=rng.integers(0, 16, (co, ci, k, k)).astype(np.uint8), n2=-7, q_in=5, q_out=4)
    return plan_program([op], (ci, size, size), 5, CFG, winograd=winograd).layers[0]


def test_direct_3x3_counts_by_hand():
    """3×3 64→64 on 32×32, m = vc = 16: 4 output blocks × 1,024 pixels × 9 taps × 4 input blocks
    = 147,456 beats; 256 SAC lanes per beat; 16 filter words per beat; a feature word for every
    beat inside the map: (32·3 − 2)² = 94² per block pair; 4 × 16 × 9 × 4 weight words;
    1,024 × 4 output words; 17 + 64 parameter words."""
    L = _conv(64, 64, 3, 32, 1)
    ev = plan_events(L, CFG)
    assert ev["beats"] == 147_456 == layer_beats(L, CFG)
    assert ev["sac"] == 147_456 * 256 and ev["mult"] == 0
    assert ev["feature_reads"] == 94 * 94 * 16 and ev["filter_reads"] == 147_456 * 16
    assert ev["weight_reads"] == 4 * 16 * 9 * 4 and ev["feature_writes"] == 1024 * 4
    assert ev["param_reads"] == 17 + 64
    assert ev["sac"] >= L.macs()


def test_winograd_counts_by_hand():
    """The same layer in F(2×2,3×3): 256 tiles × 16 positions × 4 input blocks × 4 output blocks
    = 65,536 beats of 256 multiplications; the 4×4 input pixels of every tile inside the map:
    (16·4 − 2)² = 62² per block pair."""
    L = _conv(64, 64, 3, 32, 1, winograd="winograd")
    assert L.winograd
    ev = plan_events(L, CFG)
    assert ev["beats"] == 65_536 and ev["mult"] == 65_536 * 256 and ev["sac"] == 0
    assert ev["feature_reads"] == 62 * 62 * 16
    assert ev["weight_reads"] == 4 * 16 * 9 * 4


def test_winograd_tdc_phase_reads_the_support_of_its_positions():
    """A tile computing transformed rows 1–3 only (mask 0b1110) reads the input rows in the
    support of Bᵀ rows 1, 2, 3 of F(2×2,3×3) — {1, 2}, {1, 2}, {1, 3}: three of four. On an 8×8
    map with padding 1, tile row p reads rows 2p, 2p + 1, 2p + 2 of the map (offsets 1–3, minus the
    padding): 4·3 − 1 in bounds; the columns all four offsets: 4·4 − 2."""
    import dataclasses
    L = dataclasses.replace(_conv(16, 16, 3, 8, 1, winograd="winograd"), wmask=(0b1110, 0b1111))
    ev = plan_events(L, CFG)
    assert ev["feature_reads"] == (4 * 3 - 1) * (4 * 4 - 2)


def test_sram_interpolation_meets_the_published_points():
    assert sram_pj(8 << 10, 64) == pytest.approx(10) and sram_pj(32 << 10, 64) == pytest.approx(20)
    assert sram_pj(1 << 20, 64) == pytest.approx(100, rel=0.15)
    assert sram_pj(8 << 10, 128) == pytest.approx(20)


def test_energy_is_events_times_the_table():
    L = _conv(32, 16, 3, 8, 1)
    e, ev = plan_energy(L, CFG), plan_events(L, CFG)
    assert e["pe_array"] == pytest.approx(ev["sac"] * ENERGY_PJ["sac"])
    assert e["total"] == pytest.approx(sum(v for k, v in e.items() if k != "total"))
    assert ENERGY_PJ["sac"] < ENERGY_PJ["mult"]


def test_deconvolution_forms_energy_order():
    """K5 S2 P2 OP1 (DCGAN Deconv2's geometry, fewer channels): zero insertion costs the most
    energy, TDC several times less (the inserted zeros are not multiplied), Winograd-TDC less
    again."""
    rng = np.random.default_rng(SEED)
    op = ConvOp(name="up", w=np.zeros((32, 32, 5, 5)), b=rng.normal(0, 0.1, 32), stride=2, pad=(2,) * 4,
                kind="ConvTranspose", codes=rng.integers(0, 16, (32, 32, 5, 5)).astype(np.uint8), n2=-7,
                q_in=5, q_out=4)
    op.output_padding = (1, 1)
    e = {mode: program_energy(plan_program([op], (32, 16, 16), 5, CFG, deconv=mode))["total"]
         for mode in ("nzp", "tdc", "winograd")}
    assert e["nzp"] > e["tdc"] > e["winograd"]
    assert 2 < e["nzp"] / e["tdc"] < 5
    assert program_energy(plan_program([op], (32, 16, 16), 5, CFG), dram_bytes=1000)["dram"] == \
        pytest.approx(1000 * ENERGY_PJ["dram_byte"])


def _loop_nest_reads(L, m):
    """Feature reads by walking the direct-mode loop nest beat by beat (pool window, taps)."""
    pkh, pkw, psy, psx, ppt, _, ppl, _ = L.pool
    _, in_h, in_w = L.read_area
    n = 0
    for py in range(L.out_h):
        for px in range(L.out_w):
            for dy in range(pkh):
                for dx in range(pkw):
                    oy, ox = py * psy + dy - ppt, px * psx + dx - ppl
                    if not (0 <= oy < L.conv_h and 0 <= ox < L.conv_w):
                        continue
                    for ky in range(L.kh):
                        for kx in range(L.kw):
                            vy, vx = oy * L.stride + ky - L.pad[0], ox * L.stride + kx - L.pad[2]
                            if vy < 0 or vx < 0 or vy % L.dil or vx % L.dil:
                                continue
                            n += vy // L.dil < in_h and vx // L.dil < in_w
    return n * L.cb_in * L.n_coblk(m)


def test_feature_reads_equal_the_loop_nest():
    """Seeded direct layers (strides, paddings, max-pool windows with padding, NZP zero insertion,
    TDC phases with crops): the separable count equals the beat-by-beat walk."""
    rng = np.random.default_rng(SEED)
    plans = []
    for _ in range(12):
        k, s, p = int(rng.integers(1, 6)), int(rng.integers(1, 4)), int(rng.integers(0, 3))
        size = int(rng.integers(k, 12))
        op = ConvOp(name="c", w=np.zeros((4, 20, k, k)), b=np.zeros(4), stride=s, pad=(p, p, p, p),
                    pool=(3, 3, 2, 2, 1, 1, 1, 1) if rng.integers(0, 2) and size >= 4 else (1, 1, 1, 1, 0, 0, 0, 0),
                    codes=rng.integers(0, 16, (4, 20, k, k)).astype(np.uint8), n2=-7, q_in=5, q_out=4)
        try:
            plans += plan_program([op], (20, size, size), 5, CFG, winograd="direct").layers
        except CompileError:          # a pool window larger than the conv output
            continue
    for K, S, P, mode in ((4, 2, 1, "nzp"), (2, 2, 1, "tdc"), (5, 3, 4, "tdc")):
        op = ConvOp(name="up", w=np.zeros((20, 4, K, K)), b=np.zeros(4), stride=S, pad=(P,) * 4, kind="ConvTranspose",
                    codes=rng.integers(0, 16, (20, 4, K, K)).astype(np.uint8), n2=-7, q_in=5, q_out=4)
        op.output_padding = (0, 0)
        plans += plan_program([op], (20, 6, 7), 5, CFG, deconv=mode).layers
    assert len(plans) > 12 and any(L.dil > 1 for L in plans) and any(any(L.crop) for L in plans)
    assert any(L.pools for L in plans)
    for L in plans:
        assert plan_events(L, CFG)["feature_reads"] == _loop_nest_reads(L, CFG.m), L
