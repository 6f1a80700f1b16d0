"""Resize (nearest, integer factor) → a ConvTranspose of ones, lowered to phase copies.

The float graph equals ONNX Runtime; the golden device's output of ``conv → Resize`` is exactly
the upsampled output of ``conv`` alone (the copies are exact); the RTL equals the golden model;
every Resize that does not replicate pixels is refused naming the node.
"""
import numpy as np
import pytest
from onnx import helper

from nibble.hw.config import EngineConfig
from nibble.host.compiler import compile_model
from nibble.host.driver import Device, golden_forward
from nibble.host.ir import CompileError
from nibble.sim.golden import quantize_features
from new_ops_models import check, node
from onnx_models import conv, ints, model

SEED = 31


def _resize_model(scale=2, mode="nearest", ctm="asymmetric", nearest="floor", sizes=None, shape=(2, 6, 6),
                  tail=True, axes=None):
    rng = np.random.default_rng(SEED)
    c1, i1 = conv(rng, "c1", "x", "a", shape[0], 8, pads=[1, 1, 1, 1])
    nodes = [c1, node("Relu", ["a"], "r", "relu1")]
    inits = dict(i1)
    raw = []
    if sizes is not None:
        raw.append(ints("sizes", sizes))
        ins = ["r", "", "", "sizes"]
    else:
        sc = [1.0, 1.0, *(scale if isinstance(scale, (tuple, list)) else (scale, scale))]
        inits["scales"] = np.asarray(sc, np.float32)
        ins = ["r", "", "scales"]
    extra = {"axes": axes} if axes else {}
    nodes.append(helper.make_node("Resize", ins, ["u" if tail else "y"], name="up", mode=mode,
                                  coordinate_transformation_mode=ctm, nearest_mode=nearest, **extra))
    if tail:
        c2, i2 = conv(rng, "c2", "u", "y", 8, 4, pads=[1, 1, 1, 1])
        nodes.append(c2)
        inits.update(i2)
    inputs = {"x": ("N", *shape)}
    return model(nodes, inits, inputs=inputs, raw=raw, opset=18 if axes else 17)


@pytest.mark.parametrize("kw", [
    {},                                                        # PyTorch's nn.Upsample(scale_factor=2)
    {"ctm": "half_pixel", "nearest": "round_prefer_floor"},    # the ONNX defaults
    {"ctm": "asymmetric", "nearest": "floor", "sizes": [12, 12], "axes": [2, 3]},
    {"scale": 3, "shape": (2, 5, 4)},
    {"ctm": "align_corners", "nearest": "round_prefer_floor"},   # replicates at 6 → 12 (checked per shape)
], ids=["torch", "onnx_defaults", "sizes", "x3_odd", "align_corners_6to12"])
def test_resize_matches_ort(kw):
    shape = kw.get("shape", (2, 6, 6))
    g, p = check(_resize_model(**kw), shape)
    deconv = [n for n in g.nodes if n.op == "ConvTranspose"]
    assert len(deconv) == 1 and deconv[0].name == "up"


def test_upsampled_output_is_exact():
    """conv → Resize ×2 on the golden device = np.repeat of conv alone, bit for bit."""
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((6, 2, 6, 6))
    up = compile_model(_resize_model(tail=False), x)
    rng = np.random.default_rng(SEED)
    c1, i1 = conv(rng, "c1", "x", "a", 2, 8, pads=[1, 1, 1, 1])
    plain = compile_model(model([c1, node("Relu", ["a"], "y", "relu1")], i1), x)
    assert up.outputs[0].q == plain.outputs[0].q
    assert up.input_q == plain.input_q
    for xi in quantize_features(x, plain.input_q):
        a = golden_forward(plain, xi)
        assert np.array_equal(golden_forward(up, xi), np.repeat(np.repeat(a, 2, 1), 2, 2))


@pytest.mark.parametrize("kw, match", [
    ({"mode": "linear"}, "mode 'linear' is not supported"),
    ({"ctm": "half_pixel", "nearest": "ceil"}, "half_pixel.*ceil.*does not replicate"),
    ({"ctm": "asymmetric", "nearest": "round_prefer_ceil"}, "round_prefer_ceil.*does not replicate"),
    ({"scale": (2, 3)}, "only the same integer factor"),
    ({"scale": 1.5}, "only the same integer factor|does not replicate"),
    ({"sizes": [1, 8, 12, 12]}, "changes the batch size"),
], ids=["linear", "half_pixel_ceil", "prefer_ceil", "unequal", "fractional", "batch_sizes"])
def test_resize_refused(kw, match):
    rng = np.random.default_rng(SEED)
    with pytest.raises(CompileError, match=rf"'up'.*({match})"):
        compile_model(_resize_model(**kw), rng.standard_normal((2, 2, 6, 6)))


@pytest.mark.slow
def test_resize_on_rtl():
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((2, 2, 6, 6))
    p = compile_model(_resize_model(), x)
    with Device("sim") as d:
        d.load(p)
        y = d.run_int(d.quantize(x))
    for i, xi in enumerate(d.quantize(x)):
        assert np.array_equal(y[i], golden_forward(p, xi))
