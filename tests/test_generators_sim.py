"""Whole generator networks with transposed convolutions on the RTL (simulated accelerator).

* ``models/dcgan``: a PyTorch-DCGAN-style generator (ConvTranspose K4 S1 P0, then three K4 S2
  P1 layers, BatchNorm + ReLU, tanh head) with fixed seeded weights, exported to ONNX by
  ``scripts/make_dcgan.py``. Run whole on the RTL in each deconvolution form; the int8 images
  equal the golden model bit for bit, and the forms equal each other.
* ``models/sr``: an FSRCNN-style ×2 super-resolution network (a 9×9 stride-2 transposed
  convolution at the end) trained with INQ by ``scripts/train_sr.py`` on the photographs
  scikit-learn ships; a held-out crop is upscaled on the RTL, bit-identical to the golden model,
  and its output is within the int8 quantization noise of the float model's (PSNR of the RTL
  output against the float output above 34 dB; about 37–38 dB on every held-out crop).
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
SR = "models/sr/fsrcnn_x2.onnx"


@pytest.fixture(scope="module")
def sim():
    with Device("sim") as d:
        yield d


def test_dcgan_generator_on_rtl(sim):
    z = np.load("models/dcgan/z.npy")[:1]
    calib = np.load("models/dcgan/calib_z.npy")
    ref = np.load("models/dcgan/float_out.npy")[:1]
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
        assert sim.beats == [sum(layer_beats(L, EngineConfig()) for L in program.layers)]
        raws[mode] = sim.raw
        assert np.all(np.abs(y) <= 1) and snr_db(ref, y) > 6.0
    assert np.array_equal(raws["winograd"], raws["tdc"]) and np.array_equal(raws["tdc"], raws["nzp"])


def test_sr_crop_on_rtl(sim):
    from nibble.cli import _float_outputs, _psnr
    x = np.load("models/sr/test_lr.npy")[:1]          # a smooth crop: float 42.9 dB, RTL 37.0 dB
    hr = np.load("models/sr/test_hr.npy")[:1]
    program = compile_model(SR, np.load("models/sr/calib_x.npy"))
    assert program.output_shape == (1, 2 * x.shape[2], 2 * x.shape[3])
    deconv = [L for L in program.layers if L.phase]
    assert len(deconv) == 4 and {L.kh * L.kw for L in deconv} == {25, 20, 16}   # K9 S2: 5x5, 5x4, 4x5, 4x4
    sim.load(program)
    y = sim.run(x)
    with Device("golden") as g:
        g.load(program)
        g.run(x)
        assert np.array_equal(sim.raw, g.raw)
    f = _float_outputs(SR, program.input_name, x)
    p_rtl, p_float, p_q = _psnr(y, hr), _psnr(f, hr), _psnr(y, np.clip(f, 0, 1))
    print(f"SR crop: PSNR float {p_float:.2f} dB, RTL {p_rtl:.2f} dB; RTL against float {p_q:.2f} dB")
    assert p_q > 34.0 and p_rtl > 30.0


def test_sr_run_command_reports_psnr(tmp_path):
    """``nibble run … --reference HR --bicubic`` (golden device, fast): PSNR of float, golden and
    bicubic against the originals in its JSON line."""
    import json
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", "from nibble.cli import main; main()", "run", SR, "--inputs", "models/sr/test_lr.npy",
                          "--calib", "models/sr/calib_x.npy", "--reference", "models/sr/test_hr.npy", "--bicubic",
                          "--device", "golden", "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(r["psnr_db"]) == {"float", "golden", "bicubic"}
    metrics = json.load(open("models/sr/metrics.json"))
    assert r["psnr_db"]["bicubic"] == pytest.approx(metrics["psnr_db"]["bicubic"], abs=0.01)
    assert abs(r["psnr_db"]["golden"] - r["psnr_db"]["float"]) < 1.0
