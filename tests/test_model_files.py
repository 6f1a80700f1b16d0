"""Checks on the committed models in models/sr and models/dcgan (no torch needed).

models/sr is written by scripts/train_sr.py, models/dcgan by scripts/make_dcgan.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from nibble.sim.golden import DE, inq_decode, inq_n1, inq_quantize

MODELS = Path(__file__).resolve().parents[1] / "models"
SR_DIR = MODELS / "sr"
SR_ONNX = SR_DIR / "fsrcnn_x2.onnx"
DCGAN_DIR = MODELS / "dcgan"
DCGAN_ONNX = DCGAN_DIR / "dcgan_k4s2.onnx"

# test crop grid of train_sr.py: LR rows 21 + 32a, columns 32b of the 213x64 held-out LR strip
HOLDOUT_COL0 = 512
GRID_ROWS, GRID_COLS, GRID_ROW0 = 6, 2, 21


def _session(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _run(path: Path, in_name: str, out_name: str, x: np.ndarray) -> np.ndarray:
    """onnxruntime outputs for each row of ``x`` (the files have a static batch of 1)."""
    sess = _session(path)
    return np.concatenate([sess.run([out_name], {in_name: x[i : i + 1]})[0] for i in range(len(x))])


def _dims(value_info) -> list:
    return [d.dim_param if d.HasField("dim_param") else d.dim_value
            for d in value_info.type.tensor_type.shape.dim]


def _attrs(node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _psnr(pred: np.ndarray, ref: np.ndarray) -> float:
    """train_sr.py's PSNR: prediction clipped to [0,1], MSE pooled over all pixels, peak 1.0."""
    p = np.clip(pred.astype(np.float64), 0.0, 1.0)
    return float(10.0 * np.log10(1.0 / np.mean((p - ref.astype(np.float64)) ** 2)))


def _pil_bicubic(img: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import Image          # Pillow: the "data" extra

    im = Image.fromarray(np.ascontiguousarray(img, dtype=np.float32))
    assert im.mode == "F"
    return np.asarray(im.resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# models/sr


@pytest.fixture(scope="module")
def sr_model() -> onnx.ModelProto:
    return onnx.load(str(SR_ONNX))


@pytest.fixture(scope="module")
def sr_metrics() -> dict:
    return json.loads((SR_DIR / "metrics.json").read_text())


@pytest.fixture(scope="module")
def sr_arrays() -> dict[str, np.ndarray]:
    return {n: np.load(SR_DIR / f"{n}.npy") for n in ("test_lr", "test_hr", "calib_x")}


def test_sr_onnx_checker(sr_model):
    onnx.checker.check_model(sr_model, full_check=True)
    assert any(o.domain in ("", "ai.onnx") and o.version == 17 for o in sr_model.opset_import)


def test_sr_io_shapes(sr_model):
    assert [i.name for i in sr_model.graph.input] == ["input"]
    assert [o.name for o in sr_model.graph.output] == ["output"]
    assert _dims(sr_model.graph.input[0]) == [1, 1, 32, 32]
    assert _dims(sr_model.graph.output[0]) == [1, 1, 64, 64]


def test_sr_nodes(sr_model):
    nodes = list(sr_model.graph.node)
    ops = [n.op_type for n in nodes]
    assert ops == ["Conv", "Relu"] * 6 + ["ConvTranspose"]
    convs = [n for n in nodes if n.op_type == "Conv"]
    inits = {t.name: numpy_helper.to_array(t) for t in sr_model.graph.initializer}
    shapes = [inits[n.input[1]].shape for n in convs]
    assert shapes == [(32, 1, 5, 5), (12, 32, 1, 1), (12, 12, 3, 3), (12, 12, 3, 3), (12, 12, 3, 3),
                      (32, 12, 1, 1)]
    for n, pad in zip(convs, (2, 0, 1, 1, 1, 0)):
        a = _attrs(n)
        assert a.get("strides", [1, 1]) == [1, 1] and a.get("pads", [0] * 4) == [pad] * 4
    d = nodes[-1]
    a = _attrs(d)
    assert inits[d.input[1]].shape == (32, 1, 9, 9)  # (Cin, Cout, K, K)
    assert a["kernel_shape"] == [9, 9] and a["strides"] == [2, 2]
    assert a["pads"] == [4, 4, 4, 4] and a["output_padding"] == [1, 1]
    assert a.get("group", 1) == 1 and a.get("dilations", [1, 1]) == [1, 1]


def test_sr_arrays(sr_arrays, sr_metrics):
    lr, hr, cx = sr_arrays["test_lr"], sr_arrays["test_hr"], sr_arrays["calib_x"]
    n = sr_metrics["test_count"]
    assert lr.shape == (n, 1, 32, 32) and lr.dtype == np.float32
    assert hr.shape == (n, 1, 64, 64) and hr.dtype == np.float32
    assert cx.shape == (64, 1, 32, 32) and cx.dtype == np.float32
    assert n == GRID_ROWS * GRID_COLS
    assert hr.min() >= 0.0 and hr.max() <= 1.0
    for x in (lr, cx):  # bicubic overshoot stays small
        assert -0.1 < x.min() and x.max() < 1.1
    for p in SR_DIR.iterdir():
        assert p.stat().st_size < 1_000_000, p


def test_sr_test_crops_are_held_out(sr_arrays):
    """test_hr are crops of the held-out strip china.jpg[:426, 512:]; test_lr its Pillow-bicubic LR."""
    from sklearn.datasets import load_sample_images

    data = load_sample_images()
    rgb = dict(zip((Path(f).name for f in data.filenames), data.images))["china.jpg"]
    rgb = np.asarray(rgb, dtype=np.float64)
    y = ((0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]) / 255.0)[:426].astype(np.float32)
    strip = y[:, HOLDOUT_COL0:]
    strip_lr = _pil_bicubic(strip, 213, 64)
    k = 0
    for a in range(GRID_ROWS):
        for b in range(GRID_COLS):
            i, j = GRID_ROW0 + 32 * a, 32 * b
            np.testing.assert_array_equal(sr_arrays["test_hr"][k, 0], strip[2 * i : 2 * i + 64, 2 * j : 2 * j + 64])
            np.testing.assert_array_equal(sr_arrays["test_lr"][k, 0], strip_lr[i : i + 32, j : j + 32])
            k += 1


def test_sr_psnr_matches_metrics(sr_arrays, sr_metrics):
    out = _run(SR_ONNX, "input", "output", sr_arrays["test_lr"])
    assert out.shape == sr_arrays["test_hr"].shape and out.dtype == np.float32
    p = _psnr(out, sr_arrays["test_hr"])
    m = sr_metrics["psnr_db"]
    assert abs(p - m["inq"]) < 0.01
    assert m["inq"] > m["bicubic"]
    assert m["float"] > m["bicubic"]


def test_sr_bicubic_psnr_recomputed(sr_arrays, sr_metrics):
    lr = sr_arrays["test_lr"]
    up = np.stack([_pil_bicubic(lr[i, 0], 64, 64)[None] for i in range(len(lr))])
    p = _psnr(up, sr_arrays["test_hr"])
    assert abs(p - sr_metrics["psnr_db"]["bicubic"]) < 0.01
    assert sr_metrics["psnr_db"]["inq"] > p


def test_sr_weights_on_inq_levels(sr_model, sr_metrics):
    """Every Conv/ConvTranspose weight w: w / 2^n2 ∈ {0, ±1, ±2, …, ±64}, n2 = inq_n1(w) − 6."""
    allowed = {0.0} | {s * 2.0**e for s in (1, -1) for e in range(DE + 1)}
    inits = {t.name: numpy_helper.to_array(t) for t in sr_model.graph.initializer}
    weights = [inits[n.input[1]] for n in sr_model.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    assert len(weights) == 7
    layers = sr_metrics["inq"]["layers"]
    assert len(layers) == len(weights)
    for w, rec in zip(weights, layers):
        assert w.dtype == np.float32
        w = w.astype(np.float64)
        n1 = inq_n1(w)
        n2 = n1 - DE
        assert (n1, n2) == (rec["n1"], rec["n2"]), rec["layer"]
        ratio = np.ldexp(w, -n2)
        assert set(np.unique(ratio).tolist()) <= allowed, rec["layer"]
        codes, n2q = inq_quantize(w, n1)
        assert n2q == n2
        np.testing.assert_array_equal(inq_decode(codes, n2), w)
        assert int(np.sum(w == 0)) == rec["zero_weights"]


# ---------------------------------------------------------------------------------------------
# models/dcgan


@pytest.fixture(scope="module")
def dcgan_model() -> onnx.ModelProto:
    return onnx.load(str(DCGAN_ONNX))


@pytest.fixture(scope="module")
def dcgan_metrics() -> dict:
    return json.loads((DCGAN_DIR / "metrics.json").read_text())


@pytest.fixture(scope="module")
def dcgan_arrays() -> dict[str, np.ndarray]:
    return {n: np.load(DCGAN_DIR / f"{n}.npy") for n in ("z", "calib_z", "float_out")}


def test_dcgan_onnx_checker(dcgan_model):
    onnx.checker.check_model(dcgan_model, full_check=True)
    assert any(o.domain in ("", "ai.onnx") and o.version == 17 for o in dcgan_model.opset_import)


def test_dcgan_io_shapes(dcgan_model):
    assert [i.name for i in dcgan_model.graph.input] == ["z"]
    assert [o.name for o in dcgan_model.graph.output] == ["image"]
    assert _dims(dcgan_model.graph.input[0]) == [1, 32, 1, 1]
    assert _dims(dcgan_model.graph.output[0]) == [1, 3, 32, 32]


def test_dcgan_nodes(dcgan_model):
    nodes = list(dcgan_model.graph.node)
    ops = [n.op_type for n in nodes]
    assert ops == ["ConvTranspose", "BatchNormalization", "Relu"] * 3 + ["ConvTranspose", "Tanh"]
    inits = {t.name: numpy_helper.to_array(t) for t in dcgan_model.graph.initializer}
    deconvs = [n for n in nodes if n.op_type == "ConvTranspose"]
    shapes = [(32, 64, 4, 4), (64, 32, 4, 4), (32, 16, 4, 4), (16, 3, 4, 4)]  # (Cin, Cout, K, K)
    for i, (n, shape) in enumerate(zip(deconvs, shapes)):
        a = _attrs(n)
        assert len([x for x in n.input if x]) == 2, "no bias"
        assert inits[n.input[1]].shape == shape
        assert a["kernel_shape"] == [4, 4]
        stride, pad = (1, 0) if i == 0 else (2, 1)
        assert a["strides"] == [stride, stride]
        assert a.get("pads", [0] * 4) == [pad] * 4
        assert a.get("output_padding", [0, 0]) == [0, 0]
        assert a.get("group", 1) == 1 and a.get("dilations", [1, 1]) == [1, 1]
    for n in nodes:
        if n.op_type == "BatchNormalization":
            assert abs(_attrs(n)["epsilon"] - 1e-5) < 1e-9


def test_dcgan_arrays(dcgan_arrays, dcgan_metrics):
    z, cz, out = dcgan_arrays["z"], dcgan_arrays["calib_z"], dcgan_arrays["float_out"]
    assert z.shape == (8, 32, 1, 1) and z.dtype == np.float32
    assert cz.shape == (64, 32, 1, 1) and cz.dtype == np.float32
    assert out.shape == (8, 3, 32, 32) and out.dtype == np.float32
    assert np.abs(z).max() <= 4.0 and np.abs(cz).max() <= 4.0
    assert not np.array_equal(z, cz[:8])
    assert dcgan_metrics["z_shape"] == list(z.shape)
    assert dcgan_metrics["calib_z_shape"] == list(cz.shape)
    assert dcgan_metrics["float_out_shape"] == list(out.shape)
    assert dcgan_metrics["output_range"] == [float(out.min()), float(out.max())]
    assert -1.0 < out.min() < out.max() < 1.0
    for p in DCGAN_DIR.iterdir():
        assert p.stat().st_size < 1_000_000, p


def test_dcgan_onnxruntime_reproduces_float_out(dcgan_arrays):
    out = _run(DCGAN_ONNX, "z", "image", dcgan_arrays["z"])
    np.testing.assert_allclose(out, dcgan_arrays["float_out"], rtol=0, atol=1e-5)
