"""The event counts and the energy estimate of ``nibble.sim.perf.energy``: named layers whose
counts are worked out by hand from the schedule, the SRAM interpolation against its published
points, and the deconvolution forms' energy on the published DCGAN Deconv2 geometry."""
import numpy as np
import pytest

from nibble.host.compiler import layer_beats, plan_program
from nibble.host.ir import ConvOp
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
    = 147,456 beats; 256 SAC lanes per beat; one feature word and 16 filter words per beat;
    4 × 16 × 9 × 4 weight words; 1,024 × 4 output words; 17 + 64 parameter words."""
    L = _conv(64, 64, 3, 32, 1)
    ev = plan_events(L, CFG)
    assert ev["beats"] == 147_456 == layer_beats(L, CFG)
    assert ev["sac"] == 147_456 * 256 and ev["mult"] == 0
    assert ev["feature_reads"] == 147_456 and ev["filter_reads"] == 147_456 * 16
    assert ev["weight_reads"] == 4 * 16 * 9 * 4 and ev["feature_writes"] == 1024 * 4
    assert ev["param_reads"] == 17 + 64
    assert ev["sac"] >= L.macs()


def test_winograd_counts_by_hand():
    """The same layer in F(2×2,3×3): 256 tiles × 16 positions × 4 input blocks × 4 output blocks
    = 65,536 beats of 256 multiplications; 16 input pixels per tile read."""
    L = _conv(64, 64, 3, 32, 1, winograd="winograd")
    assert L.winograd
    ev = plan_events(L, CFG)
    assert ev["beats"] == 65_536 and ev["mult"] == 65_536 * 256 and ev["sac"] == 0
    assert ev["feature_reads"] == 4 * 256 * 16 * 4
    assert ev["weight_reads"] == 4 * 16 * 9 * 4


def test_winograd_tdc_phase_reads_the_support_of_its_positions():
    """A TDC phase computing transformed rows 1–3 (mask 0b1110) reads the input rows in the
    support of Bᵀ rows 1, 2, 3 of F(2×2,3×3) — {1, 2}, {1, 2}, {1, 3}: three of four."""
    import dataclasses
    L = dataclasses.replace(_conv(16, 16, 3, 8, 1, winograd="winograd"), wmask=(0b1110, 0b1111))
    ev = plan_events(L, CFG)
    tiles = 16
    assert ev["feature_reads"] == tiles * 3 * 4 * 1


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
    energy, TDC about S² = 4× less (the inserted zeros are neither read nor multiplied),
    Winograd-TDC less again."""
    rng = np.random.default_rng(SEED)
    op = ConvOp(name="up", w=np.zeros((32, 32, 5, 5)), b=rng.normal(0, 0.1, 32), stride=2, pad=(2,) * 4,
                kind="ConvTranspose", codes=rng.integers(0, 16, (32, 32, 5, 5)).astype(np.uint8), n2=-7,
                q_in=5, q_out=4)
    op.output_padding = (1, 1)
    e = {mode: program_energy(plan_program([op], (32, 16, 16), 5, CFG, deconv=mode))["total"]
         for mode in ("nzp", "tdc", "winograd")}
    assert e["nzp"] > e["tdc"] > e["winograd"]
    assert 3 < e["nzp"] / e["tdc"] < 5
    assert program_energy(plan_program([op], (32, 16, 16), 5, CFG), dram_bytes=1000)["dram"] == \
        pytest.approx(1000 * ENERGY_PJ["dram_byte"])
