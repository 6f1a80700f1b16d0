"""No wrong answer without an error (issue #9): validation, attribute types, constants, non-finite
numbers, memory checks before calibration, and the cases ONNX accepts that the accelerator used to
compute wrongly, each compared with ONNX Runtime.

Models are built with ``onnx.helper``. Where a model compiles, the golden device's output is
compared with ONNX Runtime run on the device's own int8 input (dequantized, exact in float32);
the weights are powers of two on the INQ level set, so INQ is exact and the only differences are
the int8 output rounding and saturation: ``|y − ref| ≤ 1.5 · 2^−q_out``.
"""
import re
import time

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import nibble.host.compiler as compiler
from nibble.host.compiler import CompileError, check_fits, compile_model, plan_program
from nibble.host.driver import Device
from nibble.host.ir import ConvOp
from nibble.host.onnx_import import import_onnx, validate_model
from nibble.host.passes import calibration_data, fold_bn
from nibble.hw.config import EngineConfig
from nibble.hw.isa import DESC_WORDS
from nibble.sim import golden

SEED = 2027


def _model(nodes, inits, in_shape, out_shape=None, opset=17, raw=(), in_type=TensorProto.FLOAT):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", in_type, ["N", *in_shape[1:]])],
                          [helper.make_tensor_value_info(nodes[-1].output[0], in_type, out_shape)],
                          [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()]
                          + list(raw))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _session(m):
    so = ort.SessionOptions()
    so.log_severity_level = 4
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _ort(m, x):
    return _session(m).run(None, {"x": np.asarray(x, np.float32)})[0]


def _pow2(rng, shape, n1=-1):
    """Weights ±2^e, e in [n1 − 6, n1], with one weight 2^n1: on the INQ level set (exact)."""
    w = np.ldexp(1.0, rng.integers(n1 - 6, n1 + 1, shape)) * rng.choice([-1.0, 1.0], shape)
    w.reshape(-1)[0] = 2.0 ** n1
    return w


def _golden_matches_ort(m, x):
    """Compile ``m``, run the golden device, compare with ONNX Runtime on the quantized input."""
    p = compile_model(m, x)
    with Device("golden") as d:
        d.load(p)
        xq = golden.dequantize_features(d.quantize(x), p.input_q)
        y = d.run(x)
    ref = _ort(m, xq)
    assert y.shape == ref.shape, (y.shape, ref.shape)
    err = np.abs(y - ref).max() / 2.0 ** -p.output_q
    assert err <= 1.5, f"golden differs from ONNX Runtime by {err:.2f} output LSB"
    return p


def _conv(rng, ci=2, co=3, k=3, name="c0", inp="x", out="c", **attrs):
    inits = {f"{name}_w": _pow2(rng, (co, ci, k, k)), f"{name}_b": rng.normal(0, 0.1, co)}
    return helper.make_node("Conv", [inp, f"{name}_w", f"{name}_b"], [out], name=name, **attrs), inits


# ---------------------------------------------------------------------------------------------
# The four cases ONNX Runtime accepts that used to compile to a wrong answer

@pytest.mark.parametrize("auto", ["SAME_UPPER", "SAME_LOWER"])
def test_maxpool_same_padding_matches_ort(auto):
    """(a) MaxPool auto_pad=SAME_* pads an odd map (ORT: 7x7 → 4x4; the engine once pooled 7x7 →
    3x3 and then refused it): the padding is now part of the max-pool window (padded positions
    never win), so odd and even maps both give ONNX Runtime's output."""
    rng = np.random.default_rng(SEED)
    conv, inits = _conv(rng, pads=[1, 1, 1, 1])
    pool = helper.make_node("MaxPool", ["c"], ["y"], name="pool", kernel_shape=[2, 2], strides=[2, 2], auto_pad=auto)
    odd = _model([conv, pool], inits, (1, 2, 7, 7))
    x = rng.normal(size=(4, 2, 7, 7))
    assert _ort(odd, x).shape == (4, 3, 4, 4)
    p = _golden_matches_ort(odd, x)
    head = 1 if auto == "SAME_LOWER" else 0
    assert p.layers[0].pool == (2, 2, 2, 2, head, 1 - head, head, 1 - head) and p.output_shape == (3, 4, 4)
    even = _model([conv, pool], inits, (1, 2, 8, 8))
    p = _golden_matches_ort(even, rng.normal(size=(4, 2, 8, 8)))
    assert p.layers[0].pool == golden.POOL_2X2 and p.output_shape == (3, 4, 4)


@pytest.mark.parametrize("size", [5, 6])
def test_maxpool_ceil_mode_matches_ort(size):
    rng = np.random.default_rng(SEED)
    conv, inits = _conv(rng, pads=[1, 1, 1, 1])
    pool = helper.make_node("MaxPool", ["c"], ["y"], name="pool", kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)
    p = _golden_matches_ort(_model([conv, pool], inits, (1, 2, size, size)), rng.normal(size=(4, 2, size, size)))
    assert p.output_shape == (3, 3, 3) and p.layers[0].pool == (2, 2, 2, 2, 0, size % 2, 0, size % 2)


def _gemm_model(rng, c_shape, n=4):
    inits = {"gw": _pow2(rng, (n, 2 * 3 * 3)), "gb": rng.normal(0, 0.2, c_shape)}
    nodes = [helper.make_node("Flatten", ["x"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "gw", "gb"], ["y"], name="fc", transB=1, beta=0.5)]
    return _model(nodes, inits, (1, 2, 3, 3))


def test_gemm_bias_column_rejected_like_ort():
    """(b) A Gemm bias C of shape (N, 1): ONNX broadcasts C to the (1, N) output, which a (N, 1)
    C is not (ORT creates the session but fails on every run, "Invalid bias shape for broadcast");
    the compiler used to read it as one bias per output. Now a CompileError naming the node and
    the initializer."""
    rng = np.random.default_rng(SEED)
    m = _gemm_model(rng, (4, 1))
    x = rng.normal(size=(2, 2, 3, 3))
    with pytest.raises(Exception, match="Invalid bias shape for broadcast"):
        _ort(m, x[:1])
    with pytest.raises(CompileError, match=r"node 'fc' \(Gemm\): the bias 'gb' of shape \(4, 1\) is not one value per "
                                           r"output"):
        compile_model(m, x)


@pytest.mark.parametrize("c_shape", [(1, 4), (4,), (1, 1), (1,), ()])
def test_gemm_bias_broadcast_shapes_match_ort(c_shape):
    rng = np.random.default_rng(SEED)
    _golden_matches_ort(_gemm_model(rng, c_shape), rng.normal(size=(4, 2, 3, 3)))


def test_batchnorm_training_mode_rejected():
    """(c) BatchNormalization training_mode=1: ORT normalizes with the batch statistics (each
    channel's output has mean 0 and variance 1), not with the running mean and var the compiler
    would fold. A CompileError naming the node and the attribute."""
    rng = np.random.default_rng(SEED)
    conv, inits = _conv(rng)
    inits.update({"s": np.ones(3), "bb": np.zeros(3), "mu": np.full(3, 5.0), "var": np.full(3, 4.0)})
    bn = helper.make_node("BatchNormalization", ["c", "s", "bb", "mu", "var"], ["y", "rm", "rv"], name="bn",
                          training_mode=1)
    m = _model([conv, bn], inits, (1, 2, 6, 6))
    x = rng.normal(size=(1, 2, 6, 6))
    ref = _ort(m, x)
    assert np.allclose(ref.mean(axis=(0, 2, 3)), 0, atol=1e-5) and np.allclose(ref.std(axis=(0, 2, 3)), 1, atol=1e-3)
    with pytest.raises(CompileError, match=r"node 'bn' \(BatchNormalization\): attribute 'training_mode' 1"):
        compile_model(m, rng.normal(size=(2, 2, 6, 6)))
    inference = _model([conv, helper.make_node("BatchNormalization", ["c", "s", "bb", "mu", "var"], ["y"], name="bn")],
                       inits, (1, 2, 6, 6))
    assert not np.allclose(_ort(inference, x), ref, atol=0.1)


@pytest.mark.parametrize("op", ["Conv", "ConvTranspose", "MaxPool"])
def test_auto_pad_with_pads_rejected(op):
    """(d) auto_pad together with explicit pads: ORT refuses a Conv/ConvTranspose ("has both
    'auto_pad' and 'pads'", without naming the node) and ignores the pads of a MaxPool; the
    compiler used to ignore the pads. A CompileError naming the node and both attributes."""
    rng = np.random.default_rng(SEED)
    conv, inits = _conv(rng, pads=[1, 1, 1, 1])
    if op == "MaxPool":
        nodes = [conv, helper.make_node("MaxPool", ["c"], ["y"], name="n0", kernel_shape=[2, 2], strides=[2, 2],
                                        auto_pad="VALID", pads=[0, 0, 0, 0])]
        assert _ort(_model(nodes, inits, (1, 2, 6, 6)), rng.normal(size=(1, 2, 6, 6))).shape == (1, 3, 3, 3)
    else:
        w = _pow2(rng, (3, 2, 3, 3) if op == "Conv" else (2, 3, 3, 3))
        nodes = [helper.make_node(op, ["x", "w"], ["y"], name="n0", auto_pad="SAME_UPPER", pads=[1, 1, 1, 1])]
        inits = {"w": w}
        with pytest.raises(Exception, match="both 'auto_pad' and 'pads'|pads attribute cannot be used simultaneously"):
            _session(_model(nodes, inits, (1, 2, 6, 6)))
    m = _model(nodes, inits, (1, 2, 6, 6))
    with pytest.raises(CompileError, match=rf"node 'n0' \({op}\): pads and auto_pad=\w+ cannot be used together"):
        compile_model(m, rng.normal(size=(2, 2, 6, 6)))


# ---------------------------------------------------------------------------------------------
# Validation up front

def test_ort_is_the_arbiter():
    """A model the ONNX checker accepts but ONNX Runtime refuses (two nodes with the same name) is
    refused with ORT's first line."""
    rng = np.random.default_rng(SEED)
    c0, i0 = _conv(rng, pads=[1, 1, 1, 1], name="same")
    c1, i1 = _conv(rng, ci=3, pads=[1, 1, 1, 1], name="c1", inp="c", out="y")
    c1.name = "same"
    with pytest.raises(CompileError, match=r"ONNX Runtime refuses the model: \[ONNXRuntimeError\] .*two nodes with "
                                           r"same node name \(same\)"):
        compile_model(_model([c0, c1], {**i0, **i1}, (1, 2, 6, 6)), rng.normal(size=(2, 2, 6, 6)))


def test_checker_and_shape_inference_errors_are_compile_errors():
    rng = np.random.default_rng(SEED)
    conv, inits = _conv(rng, out="y")
    relu = helper.make_node("Relu", ["y"], ["r"], name="relu")
    m = _model([relu, conv], inits, (1, 2, 6, 6))               # not topologically sorted
    m.graph.output[0].name = "r"
    with pytest.raises(CompileError, match="the model fails (the ONNX checker|ONNX shape inference): .*relu"):
        compile_model(m, rng.normal(size=(2, 2, 6, 6)))
    conv, inits = _conv(rng)
    flat = helper.make_node("Flatten", ["c"], ["y"], name="flat", axis=5)
    with pytest.raises(CompileError, match="the model fails ONNX shape inference: .*node name: flat"):
        compile_model(_model([conv, flat], inits, (1, 2, 6, 6)), rng.normal(size=(2, 2, 6, 6)))
    conv, inits = _conv(rng, ci=3, out="y")                # ONNX accepts 3 weight channels on 2 input channels
    m = _model([conv], inits, (1, 2, 6, 6))
    assert validate_model(m) is not None
    with pytest.raises(CompileError, match=r"node 'c0' \(Conv\): weights expect 3 input channels, the input has 2"):
        compile_model(m, rng.normal(size=(2, 2, 6, 6)))


def test_validation_on_the_model_proto_and_the_file(tmp_path):
    rng = np.random.default_rng(SEED)
    conv, inits = _conv(rng, out="y", strides=[0, 0])
    m = _model([conv], inits, (1, 2, 6, 6))
    path = tmp_path / "m.onnx"
    path.write_bytes(m.SerializeToString())
    for src, name in ((m, "the model"), (path, f"'{path}'"), (str(path), f"'{path}'")):
        with pytest.raises(CompileError, match=re.escape(name) + " fails ONNX shape inference: .*strides must only "
                                               "contain positive"):
            compile_model(src, rng.normal(size=(2, 2, 6, 6)))
    with pytest.raises(CompileError, match="is not an onnx.ModelProto but int"):
        compile_model(3, rng.normal(size=(2, 2, 6, 6)))
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(CompileError, match="is not a valid ONNX model .it has no graph"):
        compile_model(empty, rng.normal(size=(2, 2, 6, 6)))


def test_validate_model_returns_inferred_shapes():
    rng = np.random.default_rng(SEED)
    conv, inits = _conv(rng, out="y", pads=[1, 1, 1, 1])
    m = validate_model(_model([conv], inits, (1, 2, 6, 6)))
    assert [d.dim_value for d in m.graph.output[0].type.tensor_type.shape.dim][1:] == [3, 6, 6]


@pytest.mark.parametrize("mutate,msg", [
    (lambda m: setattr(m.opset_import[0], "version", 9), r"ONNX operator set 9 is not supported \(only 11 to"),
    (lambda m: setattr(m.graph.node[0], "domain", "com.microsoft"), r"node 'c0' \(Conv\): operator domain 'com.microsoft'"),
    (lambda m: setattr(m.graph.node[0], "op_type", "Konv"), r"node 'c0' \(Konv\): unknown operator"),
    (lambda m: m.graph.node[0].attribute.append(helper.make_attribute("bogus", 1)),
     r"node 'c0' \(Conv\): unknown attribute 'bogus'"),
    (lambda m: m.graph.initializer[0].external_data.add(), r"initializer 'c0_w' keeps its data in an external file"),
])
def test_structural_errors_name_the_node(mutate, msg):
    rng = np.random.default_rng(SEED)
    conv, inits = _conv(rng, out="y")
    m = _model([conv], inits, (1, 2, 6, 6))
    mutate(m)
    with pytest.raises(CompileError, match=msg):
        compile_model(m, rng.normal(size=(2, 2, 6, 6)))


# ---------------------------------------------------------------------------------------------
# Attribute types

@pytest.mark.parametrize("attr,value,want,got", [
    ("group", 1.0, "INT", "FLOAT"),
    ("group", [1], "INT", "INTS"),
    ("strides", 1, "INTS", "INT"),
    ("pads", [1.0, 1.0, 1.0, 1.0], "INTS", "FLOATS"),
    ("auto_pad", 1, "STRING", "INT"),
    ("kernel_shape", "3", "INTS", "STRING"),
])
def test_attribute_of_the_wrong_type(attr, value, want, got):
    rng = np.random.default_rng(SEED)
    conv, inits = _conv(rng, out="y")
    conv.attribute.append(helper.make_attribute(attr, value))
    m = _model([conv], inits, (1, 2, 6, 6))
    with pytest.raises(CompileError, match=rf"node 'c0' \(Conv\): attribute '{attr}' must be {want}, not {got}"):
        compile_model(m, rng.normal(size=(2, 2, 6, 6)))
    with pytest.raises(CompileError, match=rf"node 'c0' \(Conv\): attribute '{attr}' must be {want}"):
        import_onnx(m)                                   # the importer checks them too


def test_float_attributes_of_other_nodes():
    rng = np.random.default_rng(SEED)
    conv, inits = _conv(rng)
    inits.update({"s": np.ones(3), "bb": np.zeros(3), "mu": np.zeros(3), "var": np.ones(3)})
    bn = helper.make_node("BatchNormalization", ["c", "s", "bb", "mu", "var"], ["y"], name="bn")
    bn.attribute.append(helper.make_attribute("epsilon", 1))
    with pytest.raises(CompileError, match=r"node 'bn' \(BatchNormalization\): attribute 'epsilon' must be FLOAT, not INT"):
        compile_model(_model([conv, bn], inits, (1, 2, 6, 6)), rng.normal(size=(2, 2, 6, 6)))
    gemm = _gemm_model(rng, (4,))
    gemm.graph.node[1].attribute.append(helper.make_attribute("transA", 0.0))
    with pytest.raises(CompileError, match=r"node 'fc' \(Gemm\): attribute 'transA' must be INT, not FLOAT"):
        compile_model(gemm, rng.normal(size=(2, 2, 3, 3)))


# ---------------------------------------------------------------------------------------------
# Constant nodes and initializer types

def _reference_program(m, x):
    p = compile_model(m, x)
    return p.params.copy(), p.weights.copy()


def test_constant_nodes_are_folded():
    """Constant ``value`` (weights), ``value_floats`` (a Conv bias), ``value_ints`` (a Reshape
    shape) and ``value_float`` (a scalar Gemm bias) give the same program as initializers."""
    rng = np.random.default_rng(SEED)
    x = rng.normal(size=(3, 2, 4, 4))
    w, b = _pow2(rng, (3, 2, 3, 3)), rng.normal(0, 0.1, 3)
    gw = _pow2(rng, (5, 3 * 2 * 2))
    tail = [helper.make_node("Relu", ["c"], ["r"], name="relu"),
            helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
            helper.make_node("Reshape", ["p", "shape"], ["f"], name="flat"),
            helper.make_node("Gemm", ["f", "gw", "gb"], ["y"], name="fc", transB=1)]
    conv = helper.make_node("Conv", ["x", "w", "b"], ["c"], name="c0", pads=[1, 1, 1, 1])
    ref_m = _model([conv, *tail], {"w": w, "b": b, "gw": gw, "gb": np.full(5, 0.25)}, (1, 2, 4, 4),
                   raw=[numpy_helper.from_array(np.array([0, -1], np.int64), "shape")])
    ref = _reference_program(ref_m, x)
    _golden_matches_ort(ref_m, x)
    consts = [helper.make_node("Constant", [], ["w"], name="kw", value=numpy_helper.from_array(w.astype(np.float32))),
              helper.make_node("Constant", [], ["b"], name="kb", value_floats=[float(v) for v in b.astype(np.float32)]),
              helper.make_node("Constant", [], ["shape"], name="ks", value_ints=[0, -1]),
              helper.make_node("Constant", [], ["gb"], name="kg", value_float=0.25)]
    m = _model([*consts, conv, *tail], {"gw": gw}, (1, 2, 4, 4))
    got = _reference_program(m, x)
    assert np.array_equal(got[0], ref[0]) and np.array_equal(got[1], ref[1])


@pytest.mark.parametrize("attr,value", [("value_int", 2), ("value_ints", [1, 2, 3])])
def test_integer_constant_as_weights_names_it(attr, value):
    rng = np.random.default_rng(SEED)
    conv, inits = _conv(rng, out="y")
    del inits["c0_b"]
    k = helper.make_node("Constant", [], ["c0_b"], name="kb", **{attr: value})
    with pytest.raises(CompileError, match=r"node 'c0' \(Conv\): initializer 'c0_b' has data type INT64, the node's "
                                           r"input is FLOAT"):
        compile_model(_model([k, conv], inits, (1, 2, 6, 6)), rng.normal(size=(2, 2, 6, 6)))


def test_string_constant_is_refused():
    rng = np.random.default_rng(SEED)
    conv, inits = _conv(rng, out="y")
    del inits["c0_b"]
    k = helper.make_node("Constant", [], ["c0_b"], name="kb", value_string="abc")
    m = _model([k, conv], inits, (1, 2, 6, 6))
    with pytest.raises(CompileError, match=r"node 'c0' \(Conv\): initializer 'c0_b' has data type STRING"):
        compile_model(m, rng.normal(size=(2, 2, 6, 6)))
    with pytest.raises(CompileError, match=r"node 'kb' \(Constant\): a Constant with attribute 'value_string' is not"):
        import_onnx(m)


@pytest.mark.parametrize("dtype", [np.int64, np.float64, np.float16, np.int32])
def test_flipped_initializer_type_names_the_initializer(dtype):
    rng = np.random.default_rng(SEED)
    conv, inits = _conv(rng, out="y")
    w = inits.pop("c0_w")
    m = _model([conv], inits, (1, 2, 6, 6), raw=[numpy_helper.from_array(w.astype(dtype), "c0_w")])
    with pytest.raises(CompileError, match=r"node 'c0' \(Conv\): initializer 'c0_w' has data type \w+, the node's "
                                           r"input is FLOAT"):
        compile_model(m, rng.normal(size=(2, 2, 6, 6)))
    raw = numpy_helper.from_array(w.astype(np.float32), "c0_w")
    raw.data_type = TensorProto.INT64                          # relabelled: its bytes do not fit the type
    with pytest.raises(CompileError, match=r"node 'c0' \(Conv\): initializer 'c0_w' has data type INT64"):
        compile_model(_model([conv], inits, (1, 2, 6, 6), raw=[raw]), rng.normal(size=(2, 2, 6, 6)))


def test_float16_model_compiles_and_matches_ort():
    """A model entirely in float16 (ORT has float16 Conv on the CPU): handled as float."""
    rng = np.random.default_rng(SEED)
    w = _pow2(rng, (3, 2, 3, 3))
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="c0", pads=[1, 1, 1, 1])]
    m = _model(nodes, {}, (1, 2, 6, 6), raw=[numpy_helper.from_array(w.astype(np.float16), "w")],
               in_type=TensorProto.FLOAT16)
    x = rng.normal(size=(2, 2, 6, 6))
    p = compile_model(m, x)
    with Device("golden") as d:
        d.load(p)
        xq = golden.dequantize_features(d.quantize(x), p.input_q)
        y = d.run(x)
    ref = _session(m).run(None, {"x": xq.astype(np.float16)})[0].astype(np.float64)
    assert np.abs(y - ref).max() <= 1.5 * 2.0 ** -p.output_q + 1e-3 * np.abs(ref).max()


def test_one_dimensional_gemm_weight_names_the_node():
    rng = np.random.default_rng(SEED)
    m = _model([helper.make_node("Flatten", ["x"], ["f"], name="flat"),
                helper.make_node("Gemm", ["f", "gw"], ["y"], name="fc")], {"gw": rng.normal(size=18)}, (1, 2, 3, 3))
    with pytest.raises(CompileError, match=r"node name: fc.*rank 2"):
        compile_model(m, rng.normal(size=(2, 2, 3, 3)))
    with pytest.raises(CompileError, match=r"node 'fc' \(Gemm\): the weights 'gw' of shape \(18,\) must be 2-D"):
        import_onnx(m)


# ---------------------------------------------------------------------------------------------
# Non-finite and out-of-range numbers

@pytest.mark.parametrize("what,value", [("c0_w", np.nan), ("c0_w", np.inf), ("c0_b", -np.inf), ("c0_b", np.nan)])
def test_non_finite_weights_and_biases_name_the_node(what, value):
    rng = np.random.default_rng(SEED)
    conv, inits = _conv(rng, out="y")
    inits[what].reshape(-1)[1] = value
    kind = "weights" if what.endswith("w") else "bias"
    with pytest.raises(CompileError, match=rf"node 'c0' \(Conv\): the {kind} '{what}' holds non-finite values"):
        compile_model(_model([conv], inits, (1, 2, 6, 6)), rng.normal(size=(2, 2, 6, 6)))


def test_huge_bias_is_a_compile_error_naming_the_layer():
    """A bias that cannot be represented in the 32-bit bias word (it used to become 0)."""
    rng = np.random.default_rng(SEED)
    conv, inits = _conv(rng, out="y")
    inits["c0_b"][0] = 1e30
    with pytest.raises(CompileError, match=r"layer 'c0' \(Conv\): a bias needs more than 32 bits"):
        compile_model(_model([conv], inits, (1, 2, 6, 6)), rng.normal(size=(2, 2, 6, 6)))


@pytest.mark.parametrize("b", [np.inf, -np.inf, np.nan, 1e300])
def test_plan_program_bias_out_of_range(b):
    """plan_program on IR built by hand: ±inf, NaN or huge biases are CompileErrors, never
    INT64_MIN (whose absolute value passed the old width check) or 0."""
    rng = np.random.default_rng(SEED)
    op = ConvOp(name="L0", w=np.zeros((4, 2, 3, 3)), b=np.array([0.1, b, 0.0, 0.0]), codes=rng.integers(
        0, 16, (4, 2, 3, 3)).astype(np.uint8), n2=-7, q_in=5, q_out=3)
    with pytest.raises(CompileError, match=r"layer 'L0' \(Conv\): (its bias is not finite|a bias needs more than 32)"):
        plan_program([op], (2, 6, 6), 5, EngineConfig())


@pytest.mark.parametrize("inits_update,msg", [
    ({"var": np.array([1.0, -0.5, 1.0])}, r"the var 'var' has a negative entry \(-0.5\)"),
    ({"mu": np.array([0.0, np.nan, 0.0])}, r"the mean 'mu' holds non-finite values \(1 NaN, 0 infinite\)"),
    ({"s": np.array([np.inf, 1.0, 1.0])}, r"the scale 's' holds non-finite values \(0 NaN, 1 infinite\)"),
    ({"bb": np.array([1.0, 1.0, -np.inf])}, r"the bias 'bb' holds non-finite values"),
    ({"var": np.zeros(3), "eps": -1e-3}, r"var \+ epsilon \(-0.001\) is not positive"),
])
def test_batchnorm_parameters_out_of_range(inits_update, msg):
    rng = np.random.default_rng(SEED)
    conv, inits = _conv(rng)
    inits.update({"s": np.ones(3), "bb": np.zeros(3), "mu": np.zeros(3), "var": np.ones(3)})
    eps = inits_update.pop("eps", 1e-5)
    inits.update(inits_update)
    bn = helper.make_node("BatchNormalization", ["c", "s", "bb", "mu", "var"], ["y"], name="bn", epsilon=eps)
    with pytest.raises(CompileError, match=r"node 'bn' \(BatchNormalization\): " + msg):
        compile_model(_model([conv, bn], inits, (1, 2, 6, 6)), rng.normal(size=(2, 2, 6, 6)))


def test_batchnorm_fold_overflow_names_layer_and_node():
    rng = np.random.default_rng(SEED)
    conv, inits = _conv(rng)
    inits.update({"s": np.full(3, 3e38), "bb": np.zeros(3), "mu": np.zeros(3), "var": np.full(3, 1e-45)})
    bn = helper.make_node("BatchNormalization", ["c", "s", "bb", "mu", "var"], ["y"], name="bn", epsilon=0.0)
    m = _model([conv, bn], inits, (1, 2, 6, 6))
    with pytest.raises(CompileError, match=r"layer 'c0' \(Conv\): (folding BatchNormalization 'bn'|its outputs on the "
                                           r"calibration data are out of the float32 range)"):
        compile_model(m, rng.normal(size=(2, 2, 6, 6)))
    ops = import_onnx(m)[0]
    ops[0].w = ops[0].w * 1e300
    with pytest.raises(CompileError, match=r"layer 'c0' \(Conv\): folding BatchNormalization 'bn' into it gives "
                                           "weights or biases that are not finite"):
        fold_bn(ops)


@pytest.mark.parametrize("calib,msg", [
    (np.full((2, 2, 6, 6), np.nan), r"calibration data is not finite \(144 NaN, 0 infinite values\)"),
    (np.full((2, 2, 6, 6), -np.inf), r"calibration data is not finite \(0 NaN, 144 infinite values\)"),
    (np.full((2, 2, 6, 6), 1e39), r"calibration data is out of the float32 range"),
    (np.zeros((0, 2, 6, 6)), r"calibration data is empty"),
    (np.zeros((2, 2, 6, 6), complex), r"calibration data has data type complex128"),
    ("images", r"calibration data has data type <U6"),
    ([[1.0, 2.0], [3.0]], r"calibration data cannot be read as an array"),
    (np.zeros((2, 2, 5, 6)), r"calibration data has shape \(2, 5, 6\), the model expects \(2, 6, 6\)"),
])
def test_calibration_data_errors(calib, msg):
    rng = np.random.default_rng(SEED)
    conv, inits = _conv(rng, out="y")
    with pytest.raises(CompileError, match=msg):
        compile_model(_model([conv], inits, (1, 2, 6, 6)), calib)


def test_calibration_outputs_beyond_float32_name_the_layer():
    rng = np.random.default_rng(SEED)
    conv, inits = _conv(rng, out="y")
    inits["c0_w"] = inits["c0_w"] * 1e35
    with pytest.raises(CompileError, match=r"layer 'c0' \(Conv\): its outputs on the calibration data are out of the "
                                           r"float32 range"):
        compile_model(_model([conv], inits, (1, 2, 6, 6)), np.full((2, 2, 6, 6), 1e5))


def test_calibration_data_is_checked_once():
    x = calibration_data(np.ones((3, 4), np.int8), (4, 1, 1))
    assert x.shape == (3, 4, 1, 1) and x.dtype == np.float64


def test_dropout_in_training_mode_is_refused():
    rng = np.random.default_rng(SEED)
    conv, inits = _conv(rng)
    drop = helper.make_node("Dropout", ["c", "ratio", "mode"], ["y"], name="drop")
    raw = [numpy_helper.from_array(np.array(0.5, np.float32), "ratio"), numpy_helper.from_array(np.array(True), "mode")]
    with pytest.raises(CompileError, match=r"node 'drop' \(Dropout\): training_mode 'mode' is not false"):
        compile_model(_model([conv, drop], inits, (1, 2, 6, 6), raw=raw), rng.normal(size=(2, 2, 6, 6)))
    raw[1] = numpy_helper.from_array(np.array(False), "mode")
    _golden_matches_ort(_model([conv, drop], inits, (1, 2, 6, 6), raw=raw), rng.normal(size=(4, 2, 6, 6)))


# ---------------------------------------------------------------------------------------------
# Memory checks before calibration

@pytest.fixture
def no_calibration(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("calibration must not run")
    monkeypatch.setattr(compiler, "calibrate", fail)


@pytest.mark.parametrize("pads,msg", [
    (256, r"layer 'c0' \(Conv\): kernel, stride or padding beyond the descriptor's 8-bit fields \(kernel 3x3, stride 1, "
          r"top/left padding 256/256"),
    (100, r"the output 'y' of layer 'c0' \(Conv\): its 204x204 map of 3 channels needs 41616 words; with the 36 "
          r"words of the tensors live at the same time \('x' \(36\)\) the feature memory needs 41652, it has 8192 "
          r"\(over by 33460 words\)"),
])
def test_huge_padding_is_refused_before_calibration(pads, msg, no_calibration):
    """pads = 256 used to make the calibration ask for 15 GiB (MemoryError)."""
    rng = np.random.default_rng(SEED)
    conv, inits = _conv(rng, out="y", pads=[pads] * 4)
    with pytest.raises(CompileError, match=msg):
        compile_model(_model([conv], inits, (1, 2, 6, 6)), rng.normal(size=(2, 2, 6, 6)))


def test_weight_and_parameter_memory_name_the_layer(no_calibration):
    rng = np.random.default_rng(SEED)
    c0, i0 = _conv(rng, ci=2, co=32, pads=[1, 1, 1, 1])
    c1, i1 = _conv(rng, ci=32, co=32, name="c1", inp="c", out="y", pads=[1, 1, 1, 1])
    m = _model([c0, c1], {**i0, **i1}, (1, 2, 6, 6))
    x = rng.normal(size=(2, 2, 6, 6))
    # c0: 2 blocks x 16 PEs x 9 taps x 1 input block = 288 words; c1: 2 x 16 x 9 x 2 = 576
    with pytest.raises(CompileError, match=r"layer 'c1' \(Conv\): its weights need 576 words, 864 with the layers before "
                                           r"it; the weight memory has 512 \(over by 352 words\)"):
        compile_model(m, x, EngineConfig(weight_depth=512))
    # descriptors and biases: DESC_WORDS + 32 words per layer
    d = DESC_WORDS + 32
    with pytest.raises(CompileError, match=rf"layer 'c1' \(Conv\): its descriptors and biases need {d} words, {2 * d} "
                                           rf"with the layers before it; the parameter memory has 64 \(over by "
                                           rf"{2 * d - 64} words\)"):
        compile_model(m, x, EngineConfig(param_depth=64))


def test_transposed_convolution_with_a_huge_stride_is_refused_fast(no_calibration, monkeypatch):
    """S² TDC phases are not listed before the memories are checked (a stride of 10⁶ would be 10¹²):
    listing them fails the test."""
    import nibble.sim.deconv as dc

    def listed(*a, **k):
        raise AssertionError("the TDC phases were listed before the memory checks")
    monkeypatch.setattr(dc, "tdc_phases", listed)
    rng = np.random.default_rng(SEED)
    w = _pow2(rng, (2, 3, 4, 4))
    for s, hw, msg in ((10 ** 6, (1, 2), r"its 4x1000004 map"), (1000, (1, 1), r"stride 1000 is beyond the descriptor"),
                       (40, (1, 2), r"its descriptors and biases need")):
        node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="up", strides=[s, s])
        with pytest.raises(CompileError, match=r"layer 'up' \(ConvTranspose\): " + msg):
            compile_model(_model([node], {"w": w}, (1, 2, *hw)), rng.normal(size=(2, 2, *hw)))


def test_check_fits_alone():
    rng = np.random.default_rng(SEED)
    conv, inits = _conv(rng, out="y", pads=[1, 1, 1, 1])
    ops, shape, _, _ = import_onnx(_model([conv], inits, (1, 2, 40, 40)))
    check_fits(ops, shape, EngineConfig())                     # 40x40x1 words x 2 = 3200 <= 8192
    with pytest.raises(CompileError, match=r"the output 'output' of layer 'c0' \(Conv\): its 40x40 map of 3 channels "
                                           r"needs 1600 words; with the 1600 words of the tensors live at the same time"):
        check_fits(ops, shape, EngineConfig(feature_depth=2048))
    with pytest.raises(CompileError, match=r"the network input 'input': its 40x40 map of 2 channels needs 1600 words, "
                                           r"the feature memory has 1024 \(over by 576 words\)"):
        check_fits(ops, shape, EngineConfig(feature_depth=1024))


def test_node_name_that_is_not_utf8(tmp_path):
    """ONNX is proto2: a name may hold bytes that are not UTF-8 (ONNX and ORT accept them); the
    layer is named with the replacement character, the program is valid."""
    rng = np.random.default_rng(SEED)
    conv, inits = _conv(rng, out="y", name="NAMEX", pads=[1, 1, 1, 1])
    data = _model([conv], inits, (1, 2, 6, 6)).SerializeToString()
    assert data.count(b"\x1a\x05NAMEX") == 1                  # the node's name field (field 3, 5 bytes)
    path = tmp_path / "m.onnx"
    path.write_bytes(data.replace(b"\x1a\x05NAMEX", b"\x1a\x05N\xb6MEX"))
    p = compile_model(path, rng.normal(size=(2, 2, 6, 6)))
    assert p.layers[0].name == "N\ufffdMEX"
    if hasattr(p, "validate"):
        p.validate()
