"""Whole generator networks with transposed convolutions on the RTL (simulated accelerator).

* ``models/dcgan``: a PyTorch-DCGAN-style generator (ConvTranspose K4 S1 P0, then three K4 S2
  P1 layers, BatchNorm + ReLU, tanh head) with fixed seeded weights, exported to ONNX by
  ``scripts/make_dcgan.py``. Run whole on the RTL in each deconvolution form; the int8 images
  equal the golden model bit for bit, and the forms equal each other.
"""
import numpy as np
import pytest

from nibble.host.compiler import compile_model, layer_beats
from nibble.host.driver import Device
from nibble.host.split_deconv import snr_db
from nibble.hw.config import EngineConfig
from nibble.sim import golden

pytestmark = pytest.mark.slow
DCGAN = "models/dcgan/dcgan_k4s2.onnx"


@pytest.fixture(scope="module")
def sim():
    with Device("sim") as d:
        yield d


def test_dcgan_generator_on_rtl(sim):
    z = np.load("models/dcgan/z.npy")[:2]
    calib = np.load("models/dcgan/calib_z.npy")
    ref = np.load("models/dcgan/float_out.npy")[:2]
    raws = {}
    for mode in ("winograd", "tdc", "nzp"):
        program = compile_model(DCGAN, calib, deconv=mode)
        assert program.output_shape == (3, 32, 32) and program.output_q == golden.ACT_Q_OUT
        # K4 S1 P0 on 1x1 is one phase; each K4 S2 P1 layer is four
        assert len(program.layers) == (4 if mode == "nzp" else 13)
        if mode == "winograd":
            assert sum(L.winograd for L in program.layers) == 12       # 2x2 sub-kernels: 9 of 16 positions
        sim.load(program)
        y = sim.run(z)
        with Device("golden") as g:
            g.load(program)
            g.run(z)
            assert np.array_equal(sim.raw, g.raw)
        assert sim.beats == [sum(layer_beats(L, EngineConfig()) for L in program.layers)] * 2
        raws[mode] = sim.raw
        assert np.all(np.abs(y) <= 1) and snr_db(ref, y) > 6.0
    assert np.array_equal(raws["winograd"], raws["tdc"]) and np.array_equal(raws["tdc"], raws["nzp"])
