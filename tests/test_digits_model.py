"""Checks on the committed demo model in models/digits (no torch needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper
from sklearn.datasets import load_digits

from nibble.sim.golden import inq_decode, inq_n1, inq_quantize

MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "digits"
ONNX_PATH = MODEL_DIR / "digits_cnn.onnx"


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    return onnx.load(str(ONNX_PATH))


@pytest.fixture(scope="module")
def metrics() -> dict:
    return json.loads((MODEL_DIR / "metrics.json").read_text())


@pytest.fixture(scope="module")
def arrays() -> dict[str, np.ndarray]:
    return {n: np.load(MODEL_DIR / f"{n}.npy") for n in ("test_x", "test_y", "calib_x")}


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    d = load_digits()
    x = (d.images.astype(np.float32) / np.float32(16.0)).reshape(-1, 1, 8, 8)
    return x, d.target.astype(np.int64)


def _session() -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(ONNX_PATH), so, providers=["CPUExecutionProvider"])


def _dims(value_info) -> list:
    return [d.dim_param if d.HasField("dim_param") else d.dim_value
            for d in value_info.type.tensor_type.shape.dim]


def _dataset_indices(x: np.ndarray, all_x: np.ndarray) -> np.ndarray:
    """Index in load_digits() of each row of x; every row must match exactly one image."""
    flat_all = all_x.reshape(len(all_x), -1)
    lookup = {row.tobytes(): i for i, row in enumerate(flat_all)}
    assert len(lookup) == len(flat_all), "load_digits images are expected to be unique"
    idx = [lookup.get(row.tobytes(), -1) for row in x.reshape(len(x), -1)]
    assert -1 not in idx, "an image does not come from load_digits()"
    return np.asarray(idx)


def test_onnx_checker(model):
    onnx.checker.check_model(model, full_check=True)
    assert any(o.domain in ("", "ai.onnx") and o.version == 17 for o in model.opset_import)


def test_node_op_types(model):
    ops = [n.op_type for n in model.graph.node]
    for op in ("Conv", "BatchNormalization", "Relu", "MaxPool", "Gemm"):
        assert op in ops, f"{op} missing from {ops}"
    assert "Flatten" in ops or "Reshape" in ops
    assert ops.count("Conv") == 2
    assert ops.count("BatchNormalization") == 2  # not folded into the convolutions


def test_io_shapes(model):
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["logits"]
    in_dims = _dims(model.graph.input[0])
    out_dims = _dims(model.graph.output[0])
    assert in_dims[1:] == [1, 8, 8] and isinstance(in_dims[0], str)  # dynamic batch
    assert out_dims[1:] == [10] and isinstance(out_dims[0], str)
    sess = _session()
    for n in (1, 7):
        out = sess.run(["logits"], {"input": np.zeros((n, 1, 8, 8), np.float32)})[0]
        assert out.shape == (n, 10) and out.dtype == np.float32


def test_array_shapes_dtypes_ranges(arrays):
    tx, ty, cx = arrays["test_x"], arrays["test_y"], arrays["calib_x"]
    assert tx.shape == (360, 1, 8, 8) and tx.dtype == np.float32
    assert ty.shape == (360,) and ty.dtype == np.int64
    assert cx.shape == (256, 1, 8, 8) and cx.dtype == np.float32
    for x in (tx, cx):
        assert x.min() >= 0.0 and x.max() <= 1.0
        assert np.array_equal(x * 16, np.round(x * 16))  # values are k/16
    assert set(np.unique(ty)) == set(range(10))


def test_split_is_held_out(arrays, digits):
    all_x, all_y = digits
    test_idx = _dataset_indices(arrays["test_x"], all_x)
    calib_idx = _dataset_indices(arrays["calib_x"], all_x)
    assert len(set(test_idx)) == 360 and len(set(calib_idx)) == 256
    assert not set(test_idx) & set(calib_idx)
    np.testing.assert_array_equal(arrays["test_y"], all_y[test_idx])


def test_accuracy_matches_metrics(arrays, metrics):
    logits = _session().run(["logits"], {"input": arrays["test_x"]})[0]
    correct = int((logits.argmax(1) == arrays["test_y"]).sum())
    acc = correct / len(arrays["test_y"])
    assert correct == metrics["inq_test_correct"]
    assert acc == metrics["inq_test_accuracy"]
    assert acc >= 0.95
    assert metrics["test_count"] == 360
    assert 0.95 <= metrics["float_test_accuracy"] <= 1.0


def _folded_weights(model: onnx.ModelProto) -> list[tuple[str, np.ndarray]]:
    """(node name, float64 weight) of each Conv, with the BatchNormalization after it folded in
    (``w·γ/√(var+ε)`` per output channel, as the compiler does), and of the Gemm."""
    inits = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    nodes = list(model.graph.node)
    out = []
    for i, node in enumerate(nodes):
        if node.op_type not in ("Conv", "Gemm"):
            continue
        w = inits[node.input[1]]
        if node.op_type == "Conv":
            bn = nodes[i + 1]
            assert bn.op_type == "BatchNormalization" and bn.input[0] == node.output[0]
            gamma, var = inits[bn.input[1]], inits[bn.input[4]]
            eps = {a.name: helper.get_attribute_value(a) for a in bn.attribute}.get("epsilon", 1e-5)
            w = w * (gamma / np.sqrt(var + eps))[:, None, None, None]
        out.append((node.name, w))
    return out


def test_folded_weights_on_inq_level_set(model, metrics):
    """After BN folding every weight is already an INQ 4-bit level {0, ±2^n2 … ±2^n1}."""
    folded = _folded_weights(model)
    layers = metrics["inq"]["layers"]
    assert [name for name, _ in folded] == [L["onnx_node"] for L in layers]
    assert len(folded) == 3
    for (name, w), L in zip(folded, layers):
        n1 = inq_n1(w)
        assert n1 == L["n1"], name
        codes, n2 = inq_quantize(w, n1)
        assert n2 == L["n2"] == n1 - 6
        dec = inq_decode(codes, n2)
        np.testing.assert_array_less(np.abs(dec - w), 1e-6 * np.abs(w) + 1e-300, err_msg=name)
        assert np.array_equal(dec == 0, w == 0), name
        assert int(np.sum(codes & 7 == 0)) == L["zero_weights"], name
