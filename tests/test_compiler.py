"""Host compiler: ONNX import, BN folding, INQ, calibration, plan, Program file, clear errors."""
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from nibble.hw.config import EngineConfig
from nibble.host.compiler import CompileError, compile_model
from nibble.host.driver import Device, golden_forward
from nibble.host.ir import run_float
from nibble.host.onnx_import import import_onnx, load_onnx
from nibble.host.passes import fold_bn
from nibble.host.program import Program, weight_codes, weight_words
from nibble.sim import golden

MODEL = "models/digits/digits_cnn.onnx"
SEED = 99


@pytest.fixture(scope="module")
def digits():
    return (np.load("models/digits/calib_x.npy"), np.load("models/digits/test_x.npy"),
            np.load("models/digits/test_y.npy"))


def test_import_and_bn_fold_match_onnxruntime(digits):
    """The folded float IR equals ONNX Runtime within float32 tolerance (1e-4 relative)."""
    _, x, _ = digits
    ops, shape, in_name, out_name = import_onnx(load_onnx(MODEL))
    assert shape == (1, 8, 8) and [op.kind for op in ops] == ["Conv", "Conv", "Gemm"]
    assert [op.relu for op in ops] == [True, True, False] and [op.pool for op in ops] == [golden.POOL_NONE, golden.POOL_2X2, golden.POOL_NONE]
    ops = fold_bn(ops)
    ref = ort.InferenceSession(MODEL).run(None, {in_name: x[:50]})[0]
    y = run_float(ops, x[:50].astype(np.float64))[-1].reshape(50, -1)
    assert np.allclose(y, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_digits_program_and_golden_accuracy(digits, tmp_path):
    calib, x, y = digits
    p = compile_model(MODEL, calib)
    # the first layer's 3×3 taps folded into 9 channels on the host (fold_taps): a 1×1 plan
    assert [(L.cin, L.cout, L.kh, L.kw, L.pool, L.out_h) for L in p.layers] == \
        [(9, 16, 1, 1, golden.POOL_NONE, 8), (16, 16, 3, 3, golden.POOL_2X2, 4), (16, 10, 4, 4, golden.POOL_NONE, 1)]
    assert p.inputs[0].fold == (1, 8, 8, 3, 3, 1, 1, 1, 1, 1) and p.input_shape == (1, 8, 8)
    for L in p.layers:
        assert L.sh == L.q_in - L.n2 - L.q_out and L.acc_bits <= p.config.acc_width
    path = tmp_path / "digits.npz"
    p.save(path)
    q = Program.load(path)
    assert q.layers == p.layers and np.array_equal(q.weights, p.weights) and np.array_equal(q.params, p.params)
    with Device("golden") as d:
        d.load(q)
        out = d.run(x)
    acc = np.mean(out.argmax(1) == y)
    fl = np.mean(ort.InferenceSession(MODEL).run(None, {"input": x})[0].argmax(1) == y)
    assert acc >= fl - 0.03, (acc, fl)


def test_weight_layout_round_trip():
    rng = np.random.default_rng(SEED)
    codes = rng.integers(0, 16, (21, 13, 3, 2)).astype(np.uint8)
    words = weight_words(codes, 16, 8, 2)
    assert len(words) == 2 * 16 * 3 * 2 * 2 * 2       # blocks·m·taps·cb·(vc/4)
    assert np.array_equal(weight_codes(words, 21, 13, 3, 2, 16, 8, 2), codes)
    # memory word 0 = PE 0, tap (0,0), channels 0..7 of output channel 0, lowest nibble first
    assert words[0] == golden.pack_codes(codes[0, 0:4, 0, 0])[0]


def test_program_reads_back_codes_and_bias(digits):
    calib, x, _ = digits
    p = compile_model(MODEL, calib[:64])
    ops = import_onnx(load_onnx(MODEL))[0]
    codes, n2 = golden.inq_quantize(fold_bn(ops)[0].w)
    # the first layer's taps are folded into channels: its codes in (Cout, kh·kw·C, 1, 1)
    c, kh, kw = codes.shape[1:]
    folded = codes.transpose(0, 2, 3, 1).reshape(len(codes), kh * kw * c, 1, 1)
    assert np.array_equal(p.layer_codes(0), folded) and p.layers[0].n2 == n2
    v = golden.quantize_features(x[0], p.input_q)
    assert golden_forward(p, v).shape == (10, 1, 1)


def _model(nodes, inits, in_shape=(1, 2, 6, 6), out_shape=None, opset=17):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape or [None] * 4)],
                          [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _conv_inits(rng, co=3, ci=2, k=3):
    return {"w": rng.normal(0, 0.3, (co, ci, k, k)), "b": rng.normal(0, 0.1, co)}


def test_unsupported_operator_names_the_node():
    rng = np.random.default_rng(SEED)
    m = _model([helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv0", pads=[1, 1, 1, 1]),
                helper.make_node("Softplus", ["c"], ["y"], name="head")], _conv_inits(rng))
    with pytest.raises(CompileError, match=r"node 'head' \(Softplus\): unsupported operator"):
        compile_model(m, rng.normal(size=(4, 2, 6, 6)))


@pytest.mark.parametrize("attrs,msg", [({"dilations": [2, 2]}, "dilation"),
                                       ({"strides": [1, 2]}, "unequal strides")])
def test_unsupported_conv_attributes(attrs, msg):
    rng = np.random.default_rng(SEED)
    inits = _conv_inits(rng, co=4, ci=1 if "group" in attrs else 2)
    m = _model([helper.make_node("Conv", ["x", "w", "b"], ["y"], name="convA", **attrs)], inits)
    with pytest.raises(CompileError, match=f"node 'convA' \\(Conv\\): {msg}"):
        compile_model(m, rng.normal(size=(4, 2, 6, 6)))


def test_accumulator_overflow_is_a_compile_error():
    rng = np.random.default_rng(SEED)
    m = _model([helper.make_node("Conv", ["x", "w", "b"], ["y"], name="wide")],
               _conv_inits(rng, co=4, ci=64, k=3), in_shape=(1, 64, 5, 5))
    cfg = EngineConfig(acc_width=20)
    with pytest.raises(CompileError, match=r"layer 'wide' \(Conv\): the accumulator could overflow: "
                                           r"64x3x3 taps need 24 bits, the engine has 20"):
        compile_model(m, rng.normal(size=(2, 64, 5, 5)), cfg)


def test_filter_cache_and_memory_limits():
    rng = np.random.default_rng(SEED)
    m = _model([helper.make_node("Conv", ["x", "w", "b"], ["y"], name="big")],
               _conv_inits(rng, co=4, ci=64, k=5), in_shape=(1, 64, 6, 6))
    with pytest.raises(CompileError, match="filter needs 100 words, the filter cache holds 64"):
        compile_model(m, rng.normal(size=(2, 64, 6, 6)), EngineConfig(filter_depth=64))


def test_calibration_shape_error():
    with pytest.raises(CompileError, match=r"calibration data has shape \(1, 8, 9\)"):
        compile_model(MODEL, np.zeros((2, 1, 8, 9)))


def test_malformed_onnx(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07this is not a protobuf\xff\xff\xff")
    with pytest.raises(CompileError, match="is not a valid ONNX model"):
        compile_model(bad, np.zeros((1, 1, 8, 8)))
    with pytest.raises(CompileError, match="does not exist"):
        compile_model(tmp_path / "missing.onnx", np.zeros((1, 1, 8, 8)))


def test_wrong_input_shape(digits):
    p = compile_model(MODEL, digits[0][:32])
    d = Device("golden")
    d.load(p)
    with pytest.raises(ValueError, match=r"input shape \(1, 7, 7\) does not match the model's input \(1, 8, 8\)"):
        d.run(np.zeros((3, 1, 7, 7)))


def _cli(*args):
    return subprocess.run([sys.executable, "-c", "from nibble.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("case", ["malformed", "unsupported", "shape"])
def test_cli_errors_are_one_line(case, tmp_path):
    rng = np.random.default_rng(SEED)
    inputs = tmp_path / "x.npy"
    np.save(inputs, np.zeros((2, 1, 8, 8), np.float32))
    model = MODEL
    if case == "malformed":
        model = tmp_path / "bad.onnx"
        model.write_bytes(b"garbage" * 10)
    elif case == "unsupported":
        model = tmp_path / "sig.onnx"
        onnx.save(_model([helper.make_node("Conv", ["x", "w", "b"], ["c"], name="c0", pads=[1, 1, 1, 1]),
                          helper.make_node("Softplus", ["c"], ["y"], name="sig")],
                         _conv_inits(rng, ci=1), in_shape=(1, 1, 8, 8)), model)
    else:
        np.save(inputs, np.zeros((2, 1, 9, 8), np.float32))
        calib = tmp_path / "c.npy"
        np.save(calib, np.load("models/digits/calib_x.npy")[:16])
    args = ["run", str(model), "--inputs", str(inputs), "--device", "golden"]
    if case == "shape":
        args += ["--calib", str(calib)]
    r = _cli(*args)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr, r.stderr
    assert {"malformed": "not a valid ONNX model", "unsupported": "node 'sig' (Softplus)",
            "shape": "does not match the model's input (1, 8, 8)"}[case] in lines[0]


def test_bn_must_follow_a_conv():
    rng = np.random.default_rng(SEED)
    inits = _conv_inits(rng)
    inits.update({n: np.ones(3) for n in ("g", "bb", "mu", "var")})
    m = _model([helper.make_node("Conv", ["x", "w", "b"], ["c"], name="c0", pads=[1, 1, 1, 1]),
                helper.make_node("Relu", ["c"], ["r"], name="r0"),
                helper.make_node("BatchNormalization", ["r", "g", "bb", "mu", "var"], ["y"], name="bn0")], inits)
    with pytest.raises(CompileError, match=r"node 'bn0' \(BatchNormalization\): BatchNormalization must directly follow"):
        compile_model(m, rng.normal(size=(4, 2, 6, 6)))


def test_bn_fold_through_identity_matches_onnxruntime(tmp_path):
    """Conv → Identity → BatchNormalization → Relu: folded, and equal to ONNX Runtime in float."""
    rng = np.random.default_rng(SEED)
    inits = _conv_inits(rng)
    inits.update({"g": rng.uniform(0.5, 2, 3), "bb": rng.normal(0, 1, 3), "mu": rng.normal(0, 1, 3),
                  "var": rng.uniform(0.5, 2, 3)})
    m = _model([helper.make_node("Conv", ["x", "w", "b"], ["c"], name="c0", pads=[1, 1, 1, 1]),
                helper.make_node("Identity", ["c"], ["i"], name="id0"),
                helper.make_node("BatchNormalization", ["i", "g", "bb", "mu", "var"], ["n"], name="bn0"),
                helper.make_node("Relu", ["n"], ["y"], name="r0")], inits, out_shape=[1, 3, 6, 6])
    ops = fold_bn(import_onnx(m)[0])
    assert len(ops) == 1 and ops[0].relu and ops[0].bn is None
    path = tmp_path / "m.onnx"
    onnx.save(m, path)
    x = rng.normal(size=(1, 2, 6, 6)).astype(np.float32)
    ref = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    assert np.allclose(run_float(ops, x.astype(np.float64))[-1], ref, rtol=1e-5, atol=1e-5)
