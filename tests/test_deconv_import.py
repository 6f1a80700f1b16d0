"""Host front end for transposed convolution and tanh/sigmoid heads (ARITHMETIC §1, §4).

ONNX models are built with ``onnx.helper``; the imported float64 IR (``run_float``) is compared
with ONNX Runtime, which computes in float32: ``|y − ref| ≤ 1e-5·|ref| + 1e-5·max|ref|``.
"""
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from nibble.host.ir import CompileError, ConvOp, run_float
from nibble.host.onnx_import import import_onnx
from nibble.host.passes import calibrate, fold_bn, inq
from nibble.sim import golden
from nibble.sim.deconv import deconv_scatter

SEED = 7
RTOL = 1e-5


def _model(nodes, inits, in_shape):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *in_shape])],
                          [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _ort(m, x):
    return ort.InferenceSession(m.SerializeToString()).run(None, {"x": x.astype(np.float32)})[0]


def _close(y, ref):
    assert y.shape == ref.shape, (y.shape, ref.shape)
    tol = RTOL * np.abs(ref) + RTOL * np.abs(ref).max()
    assert np.all(np.abs(y - ref) <= tol), np.abs(y - ref).max()


def _deconv(name="dc", inp="x", out="y", cin=2, cout=3, k=3, rng=None, bias=True, **attrs):
    """A ConvTranspose node and its initializers (weights (Cin, Cout, K, K) as ConvTranspose2d)."""
    kh, kw = (k, k) if isinstance(k, int) else k
    inits = {f"{name}_w": rng.normal(0, 0.3, (cin, cout, kh, kw))}
    ins = [inp, f"{name}_w"]
    if bias:
        inits[f"{name}_b"] = rng.normal(0, 0.1, cout)
        ins.append(f"{name}_b")
    return helper.make_node("ConvTranspose", ins, [out], name=name, **attrs), inits


def _check_against_ort(nodes, inits, in_shape, n=3, seed=SEED, fold=True):
    m = _model(nodes, inits, in_shape)
    ops, shape, _, _ = import_onnx(m)
    assert shape == tuple(in_shape)
    if fold:
        ops = fold_bn(ops)
    x = np.random.default_rng(seed).normal(size=(n, *in_shape)).astype(np.float32)
    ref = _ort(m, x)
    outs = run_float(ops, x.astype(np.float64))
    _close(outs[-1], ref)
    s = tuple(in_shape)
    for op in ops:
        s = op.out_shape(s)
    assert s == ref.shape[1:]
    return ops, outs


# ARITHMETIC §1.6: (K, S, P, OP, (H, W), Cin, Cout) → (Cout, Ho, Wo) of the table
CASES_1_6 = [
    (4, 2, 1, 0, (8, 8), 3, 4, (4, 16, 16)),
    (4, 2, 1, 0, (5, 7), 2, 3, (3, 10, 14)),
    (5, 2, 2, 1, (8, 8), 3, 4, (4, 16, 16)),
    (5, 2, 2, 1, (6, 9), 3, 2, (2, 12, 18)),
    (3, 2, 1, 1, (8, 8), 2, 4, (4, 16, 16)),
    (3, 2, 1, 0, (7, 5), 2, 3, (3, 13, 9)),
    (3, 1, 1, 0, (8, 8), 3, 4, (4, 8, 8)),
    (3, 1, 0, 0, (6, 7), 2, 2, (2, 8, 9)),
    (2, 2, 0, 0, (8, 8), 2, 4, (4, 16, 16)),
    (2, 2, 0, 1, (5, 6), 3, 2, (2, 11, 13)),
    (9, 3, 3, 0, (6, 6), 2, 4, (4, 18, 18)),
    (9, 3, 0, 2, (5, 4), 2, 2, (2, 23, 20)),
    (9, 3, 4, 1, (5, 5), 3, 2, (2, 14, 14)),
    (7, 2, 3, 1, (6, 6), 2, 3, (3, 12, 12)),
    (4, 4, 0, 0, (4, 4), 2, 2, (2, 16, 16)),
    (6, 3, 1, 2, (4, 5), 3, 2, (2, 15, 18)),
]


@pytest.mark.parametrize("K,S,P,OP,hw,cin,cout,out", CASES_1_6,
                         ids=[f"K{c[0]}S{c[1]}P{c[2]}OP{c[3]}_{c[4][0]}x{c[4][1]}" for c in CASES_1_6])
def test_arithmetic_1_6_cases_match_onnxruntime(K, S, P, OP, hw, cin, cout, out):
    rng = np.random.default_rng(SEED)
    node, inits = _deconv(cin=cin, cout=cout, k=K, rng=rng, strides=[S, S], pads=[P, P, P, P],
                          output_padding=[OP, OP])
    ops, outs = _check_against_ort([node], inits, (cin, *hw))
    op, = ops
    assert op.kind == "ConvTranspose" and op.w.shape == (cin, cout, K, K)
    assert np.array_equal(op.w, inits["dc_w"].astype(np.float32))          # layout kept: (Cin, Cout, K, K)
    assert (op.stride, op.pad, op.output_padding) == (S, (P, P, P, P), (OP, OP))
    assert op.deconv_geometry() == (S, (P, P), (OP, OP)) and op.out_shape((cin, *hw)) == out
    assert outs[-1].shape[1:] == out and op.act == golden.ACT_NONE and op.q_act is None


def test_deconv_bn_relu_folds_per_output_channel():
    """ConvTranspose(K5 S2 P2 OP1) + BatchNormalization + Relu: BN scales axis 1 of (Cin, Cout, K, K)."""
    rng = np.random.default_rng(SEED)
    node, inits = _deconv(cin=3, cout=4, k=5, rng=rng, out="d", strides=[2, 2], pads=[2, 2, 2, 2],
                          output_padding=[1, 1])
    inits.update({"g": rng.uniform(0.5, 2, 4), "be": rng.normal(0, 1, 4), "mu": rng.normal(0, 1, 4),
                  "var": rng.uniform(0.5, 2, 4)})
    nodes = [node,
             helper.make_node("BatchNormalization", ["d", "g", "be", "mu", "var"], ["n"], name="bn", epsilon=1e-3),
             helper.make_node("Relu", ["n"], ["y"], name="relu")]
    raw = import_onnx(_model(nodes, inits, (3, 5, 5)))[0]
    assert raw[0].bn is not None and raw[0].relu and raw[0].names == ["dc", "bn", "relu"]
    ops, outs = _check_against_ort(nodes, inits, (3, 5, 5))
    op, = ops
    scale = inits["g"] / np.sqrt(inits["var"] + 1e-3)
    assert op.bn is None and op.w.shape == (3, 4, 5, 5)
    assert np.allclose(op.w, raw[0].w * scale.astype(np.float32)[None, :, None, None], rtol=1e-6)
    assert outs[-1].shape == (3, 4, 10, 10) and outs[-1].min() == 0


def test_deconv_tanh_head_and_calibration():
    """ConvTranspose(K4 S2 P1) + Tanh: act set, q_out = ACT_Q_OUT (7), q_act = ACT_Q_IN (5)."""
    rng = np.random.default_rng(SEED)
    n0, i0 = _deconv("up0", out="u", cin=4, cout=3, k=4, rng=rng, strides=[2, 2], pads=[1, 1, 1, 1])
    inits = {**i0, "g": rng.uniform(0.5, 2, 3), "be": rng.normal(0, 1, 3), "mu": rng.normal(0, 1, 3),
             "var": rng.uniform(0.5, 2, 3)}
    n1, i1 = _deconv("up1", inp="r", out="t", cin=3, cout=2, k=4, rng=rng, strides=[2, 2], pads=[1, 1, 1, 1])
    inits.update(i1)
    nodes = [n0, helper.make_node("BatchNormalization", ["u", "g", "be", "mu", "var"], ["n"], name="bn0"),
             helper.make_node("Relu", ["n"], ["r"], name="r0"), n1, helper.make_node("Tanh", ["t"], ["y"], name="tanh")]
    ops, outs = _check_against_ort(nodes, inits, (4, 3, 3))
    assert [op.act for op in ops] == [golden.ACT_NONE, golden.ACT_TANH] and [op.relu for op in ops] == [True, False]
    assert ops[1].names == ["up1", "tanh"] and outs[-1].shape == (3, 2, 12, 12) and np.abs(outs[-1]).max() < 1
    q = inq(ops)
    for op in q:
        codes, n2 = golden.inq_quantize(op.w)
        assert op.codes.shape == op.w.shape and np.array_equal(op.codes, codes) and op.n2 == n2
    calib = rng.normal(size=(16, 4, 3, 3))
    cal, q_input = calibrate(q, calib, (4, 3, 3))
    assert q_input == golden.feature_q(np.abs(calib).max())
    assert (cal[1].q_out, cal[1].q_act) == (golden.ACT_Q_OUT, golden.ACT_Q_IN) == (7, 5)
    hidden = run_float(q, calib, weights="inq")[0]
    assert cal[0].q_act is None and cal[0].q_out == golden.feature_q(np.abs(hidden).max())
    assert cal[0].q_in == q_input and cal[1].q_in == cal[0].q_out


def test_deconv_k3_s1_no_bias():
    rng = np.random.default_rng(SEED)
    node, inits = _deconv(cin=3, cout=2, k=3, rng=rng, bias=False, pads=[1, 1, 1, 1])
    ops, outs = _check_against_ort([node], inits, (3, 6, 7))
    assert ops[0].stride == 1 and np.array_equal(ops[0].b, np.zeros(2)) and outs[-1].shape == (3, 2, 6, 7)


def test_conv_deconv_sigmoid_chain():
    """Conv → Relu → MaxPool → ConvTranspose → Sigmoid; and Flatten → Gemm → Sigmoid."""
    rng = np.random.default_rng(SEED)
    inits = {"cw": rng.normal(0, 0.3, (4, 2, 3, 3)), "cb": rng.normal(0, 0.1, 4)}
    dn, di = _deconv("dc", inp="p", out="d", cin=4, cout=2, k=(4, 3), rng=rng, strides=[2, 2],
                     pads=[1, 1, 1, 1], output_padding=[0, 1])
    inits.update(di)
    nodes = [helper.make_node("Conv", ["x", "cw", "cb"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
             dn, helper.make_node("Sigmoid", ["d"], ["y"], name="sig")]
    ops, outs = _check_against_ort(nodes, inits, (2, 8, 6))
    assert [op.kind for op in ops] == ["Conv", "ConvTranspose"] and ops[1].act == golden.ACT_SIGMOID
    assert ops[1].w.shape == (4, 2, 4, 3) and outs[-1].shape == (3, 2, 8, 6)
    assert 0 < outs[-1].min() and outs[-1].max() < 1

    inits = {"gw": rng.normal(0, 0.3, (5, 2 * 3 * 3)), "gb": rng.normal(0, 0.1, 5)}
    nodes = [helper.make_node("Flatten", ["x"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "gw", "gb"], ["g"], name="fc", transB=1),
             helper.make_node("Sigmoid", ["g"], ["y"], name="sig")]
    m = _model(nodes, inits, (2, 3, 3))
    ops = import_onnx(m)[0]
    x = rng.normal(size=(4, 2, 3, 3)).astype(np.float32)
    assert ops[0].kind == "Gemm" and ops[0].act == golden.ACT_SIGMOID
    _close(run_float(ops, x.astype(np.float64))[-1].reshape(4, -1), _ort(m, x))


@pytest.mark.parametrize("attrs,hw", [
    ({"pads": [0, 0, 1, 1], "output_padding": [1, 1]}, (4, 5)),    # (top 0, bottom 1) + OP 1 → P 0, OP 0
    ({"pads": [1, 2, 0, 1]}, (5, 4)),                               # top 1 bottom 0 → OP 1; left 2 right 1 → OP 1
    ({"auto_pad": "SAME_UPPER"}, (4, 5)),                           # K4 S2: crop 2 = 1 + 1
    ({"auto_pad": "SAME_LOWER"}, (4, 5)),
    ({"auto_pad": "VALID"}, (3, 4)),
    ({"output_shape": [8, 10]}, (4, 5)),                            # total 2 → (1, 1)
    ({"output_shape": [7, 10], "pads": [2, 1, 1, 1]}, (4, 5)),      # rows: total 3 → (2, 1), consistent
])
def test_deconv_pad_forms_match_onnxruntime(attrs, hw):
    rng = np.random.default_rng(SEED)
    node, inits = _deconv(cin=2, cout=3, k=4, rng=rng, strides=[2, 2], **attrs)
    ops, _ = _check_against_ort([node], inits, (2, *hw))
    t, b, l, r = ops[0].pad
    assert t == b and l == r and all(0 <= v < 2 for v in ops[0].output_padding)


@pytest.mark.parametrize("k,attrs,op", [(5, {"pads": [0, 0, 1, 1]}, (-1, -1)), (5, {"auto_pad": "SAME_UPPER"}, (-1, -1)),
                                       (3, {"pads": [3, 0, 0, 2]}, (3, -2))])
def test_deconv_end_pad_beyond_the_output_padding(k, attrs, op):
    """``OP = output_padding + begin − end`` outside ``[0, S)`` (an end pad larger than the begin
    pad, or a begin pad larger than the end pad + S) is the same crop of the scatter canvas."""
    rng = np.random.default_rng(SEED)
    node, inits = _deconv(cin=2, cout=3, k=k, rng=rng, strides=[2, 2], **attrs)
    ops, _ = _check_against_ort([node], inits, (2, 4, 5))
    assert ops[0].deconv_geometry()[2] == op


@pytest.mark.parametrize("k,auto,pads", [(5, "SAME_LOWER", (2, 2, 2, 2)), (3, "SAME_LOWER", (1, 1, 1, 1))])
def test_deconv_same_odd_crop(k, auto, pads):
    """SAME with an odd total crop: SAME_LOWER crops the odd row at the top (P = 2, OP = 1 for K5 S2)."""
    rng = np.random.default_rng(SEED)
    node, inits = _deconv(cin=2, cout=2, k=k, rng=rng, strides=[2, 2], auto_pad=auto)
    ops, outs = _check_against_ort([node], inits, (2, 4, 3))
    assert ops[0].pad == pads and ops[0].output_padding == (1, 1) and outs[-1].shape == (3, 2, 8, 6)


def test_asymmetric_deconv_geometry_is_exact():
    """A ConvOp built with asymmetric pads runs as the ONNX crop canvas[top : top + Ho]."""
    rng = np.random.default_rng(SEED)
    w, x = rng.normal(size=(2, 3, 5, 4)), rng.normal(size=(1, 2, 4, 3))
    op = ConvOp(name="d", w=w, b=np.zeros(3), stride=2, pad=(2, 1, 0, 1), output_padding=(0, 1), kind="ConvTranspose")
    assert op.deconv_geometry() == (2, (2, 0), (1, 0)) and op.out_shape((2, 4, 3)) == (3, 8, 8)
    full = deconv_scatter(x[0], w, 2, 0, 1)                           # uncropped canvas + 1 zero row/column
    assert np.allclose(run_float([op], x)[0][0], full[:, 2:10, 0:8])
    # an end pad larger than begin pad + output padding: OP = -1 (the canvas cropped at the end)
    end = ConvOp(name="end", w=w, b=np.zeros(3), stride=2, pad=(0, 1, 0, 0), kind="ConvTranspose")
    assert end.deconv_geometry() == (2, (0, 0), (-1, 0)) and end.out_shape((2, 4, 3)) == (3, 10, 8)
    full = deconv_scatter(x[0], w, 2, 0, 0)
    assert np.allclose(run_float([end], x)[0][0], full[:, 0:10, 0:8])
    # a begin pad larger than end pad + S: OP = 3 >= S (zero canvas rows beyond the end)
    big = ConvOp(name="big", w=w, b=np.zeros(3), stride=2, pad=(3, 0, 0, 0), kind="ConvTranspose")
    assert big.deconv_geometry() == (2, (3, 0), (3, 0)) and big.out_shape((2, 4, 3)) == (3, 8, 8)
    assert np.allclose(run_float([big], x)[0][0], full[:, 3:11, 0:8])
    bad = ConvOp(name="bad", w=w, b=np.zeros(3), stride=2, pad=(0, -1, 0, 0), kind="ConvTranspose")
    with pytest.raises(CompileError, match=r"layer 'bad' \(ConvTranspose\).*pads >= 0"):
        bad.deconv_geometry()


def _raises(nodes, inits, in_shape, match):
    with pytest.raises(CompileError, match=match):
        import_onnx(_model(nodes, inits, in_shape))


@pytest.mark.parametrize("attrs,msg", [
    ({"group": 2}, r"group=2 is not supported \(only group = 1\)"),
    ({"dilations": [2, 2]}, r"dilation \[2, 2\] is not supported"),
    ({"strides": [1, 2], "output_padding": [1, 0]}, r"output_padding \[1, 0\] must be smaller than the stride \[1, 2\]"),
    ({"strides": [2, 2], "output_padding": [2, 2]}, r"output_padding \[2, 2\] must be smaller than the stride 2"),
    ({"strides": [2, 2], "auto_pad": "SAME_UPPER", "output_padding": [1, 0]},
     r"auto_pad=SAME_UPPER with output_padding \[1, 0\] is ambiguous"),
    ({"strides": [3, 3], "auto_pad": "SAME_UPPER", "kernel_shape": [2, 2]},
     r"auto_pad=SAME_UPPER needs kernel \+ output_padding >= stride"),
    ({"strides": [2, 2], "auto_pad": "VALID", "pads": [1, 1, 1, 1]},
     r"pads and auto_pad=VALID cannot be used together"),
    ({"strides": [2, 2], "output_shape": [8, 8], "pads": [1, 1, 1, 1]},
     r"output_shape \[8, 8\] and pads .* inconsistent"),
    ({"strides": [2, 2], "output_shape": [13, 13]}, r"output_shape \[13, 13\] does not fit.*negative begin padding"),
    ({"kernel_shape": [3, 3]}, r"kernel_shape \[3, 3\] does not match the 5x5 weights"),
])
def test_unsupported_deconv_attributes_name_the_node(attrs, msg):
    rng = np.random.default_rng(SEED)
    k = attrs.get("kernel_shape", [5, 5])[0] if "auto_pad" in attrs else 5
    node, inits = _deconv("deconv3", cin=2, cout=2, k=k, rng=rng, **attrs)
    _raises([node], inits, (2, 4, 4), r"node 'deconv3' \(ConvTranspose\): .*" + msg)


@pytest.mark.parametrize("first,second,prev", [("Relu", "Tanh", "Relu"), ("Tanh", "Relu", "Tanh"),
                                               ("Tanh", "Sigmoid", "Tanh"), ("Sigmoid", "Sigmoid", "Sigmoid")])
def test_second_activation_is_an_error(first, second, prev):
    rng = np.random.default_rng(SEED)
    node, inits = _deconv("dc", out="d", rng=rng)
    nodes = [node, helper.make_node(first, ["d"], ["a"], name="act1"),
             helper.make_node(second, ["a"], ["y"], name="act2")]
    _raises(nodes, inits, (2, 4, 4), rf"node 'act2' \({second}\): layer 'dc' already has the activation {prev}; "
                                      r"only one activation")


def test_activation_and_bn_placement_errors():
    rng = np.random.default_rng(SEED)
    _raises([helper.make_node("Tanh", ["x"], ["y"], name="t0")], {}, (2, 4, 4),
            r"node 't0' \(Tanh\): Tanh on the network input is not supported")
    node, inits = _deconv("dc", out="d", rng=rng, cout=3)
    inits.update({n: np.ones(3) for n in ("g", "be", "mu", "var")})
    _raises([node, helper.make_node("Tanh", ["d"], ["t"], name="t0"),
             helper.make_node("BatchNormalization", ["t", "g", "be", "mu", "var"], ["y"], name="bn0")], inits,
            (2, 4, 4), r"node 'bn0' \(BatchNormalization\): BatchNormalization must directly follow")
    inits.update({"g": np.ones(2)})
    _raises([node, helper.make_node("BatchNormalization", ["d", "g", "be", "mu", "var"], ["y"], name="bn1")], inits,
            (2, 4, 4), r"node 'bn1' \(BatchNormalization\): scale, bias, mean and var must have 3 entries")


def test_relu_twice_is_one_relu():
    rng = np.random.default_rng(SEED)
    node, inits = _deconv("dc", out="d", rng=rng, strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1])
    nodes = [node, helper.make_node("Relu", ["d"], ["a"], name="r1"), helper.make_node("Relu", ["a"], ["y"], name="r2")]
    ops, _ = _check_against_ort(nodes, inits, (2, 4, 4))
    assert ops[0].relu and ops[0].act == golden.ACT_NONE and ops[0].names == ["dc", "r1", "r2"]


def test_deconv_weights_must_match_the_input():
    rng = np.random.default_rng(SEED)
    node, inits = _deconv("dc", cin=3, rng=rng)
    _raises([node], inits, (2, 4, 4), r"node 'dc' \(ConvTranspose\): weights expect 3 input channels, the input has 2")
    node, inits = _deconv("dc", cout=3, rng=rng)
    inits["dc_b"] = np.zeros(4)
    _raises([node], inits, (2, 4, 4), r"node 'dc' \(ConvTranspose\): bias of shape \(4,\) does not match 3 output")
