"""The published DCGAN layers (split-deconvolution data, ``../shared/data/split_deconv``) on the RTL.

Deconv2 (16×16×128 → 32×32×64, ReLU) and Deconv3 (32×32×64 → 64×64×3, tanh), K5 S2 P2 OP1,
compiled from ONNX with the real weights and run on the simulated accelerator: the int8 outputs
equal the golden model's bit for bit, and the dequantized outputs are compared with the float
reference (float weights, float activations) by their SNR. The SNR is bounded by the 4-bit INQ
weights (int8-valued published weights on 7 power-of-two magnitudes), not by the datapath: the
float layer with the INQ weights gives nearly the same SNR.
"""
import numpy as np
import pytest

from nibble.host import split_deconv as sd
from nibble.host.compiler import compile_model
from nibble.host.driver import Device
from nibble.host.ir import run_float
from nibble.host.onnx_import import import_onnx
from nibble.host.passes import fold_bn, inq
from nibble.sim import golden

pytestmark = pytest.mark.slow


def test_published_weights_read():
    wt, b = sd.layer_weights("Deconv2")
    assert wt.shape == (128, 64, 5, 5) and b.shape == (64,)
    assert np.array_equal(wt * 128, np.round(wt * 128))        # int8 / 128 as published
    with pytest.raises(ValueError, match="unknown published layer 'Deconv1'"):
        sd.layer_weights("Deconv1")


@pytest.mark.parametrize("name,mode,snr_min", [("Deconv2", "winograd", 14.0), ("Deconv3", "tdc", 12.0)])
def test_layer_on_rtl(name, mode, snr_min):
    model = sd.layer_model(name)
    x = sd.layer_inputs(name, 1, 5)
    calib = sd.layer_inputs(name, 16, 6)
    program = compile_model(model, calib, deconv=mode)
    assert len(program.layers) == 4 and all(L.phase[2:] == (2, 2) for L in program.layers)
    with Device("sim") as dev:
        dev.load(program)
        y = dev.run(x)
        raw = dev.raw
    with Device("golden") as g:
        g.load(program)
        g.run(x)
        assert np.array_equal(raw, g.raw)
    ref = sd.float_reference(name, x)
    snr = sd.snr_db(ref, y)
    # the weight quantization alone (float activations, INQ weights) sets the level
    ops, *_ = import_onnx(model)
    q = inq(fold_bn(ops))
    y_inq = run_float(q, x.astype(np.float64), weights="inq")[-1]
    snr_inq = sd.snr_db(ref, y_inq)
    print(f"{name} ({mode}): SNR {snr:.2f} dB against the float layer; INQ weights alone {snr_inq:.2f} dB")
    assert snr > snr_min and abs(snr - snr_inq) < 1.5
    if name == "Deconv3":
        assert program.output_q == golden.ACT_Q_OUT and np.all(np.abs(y) <= 1)
