"""Whole path on branching models built with ``onnx.helper`` (no torch): compile_model → Program
with several outputs → golden device, against ONNX Runtime in float.

The weights are powers of two on the INQ level set and the PReLU slopes multiples of 2^−12, so
INQ and the slope codes are exact: the golden device differs from ONNX Runtime (run on the
device's own int8 input) only by the rounding of the biases and of each int8 feature map. Every
output must have an SNR of at least ``MIN_SNR_DB`` against it (30–50 dB observed; the host
Softmax applied on both sides).
"""
import numpy as np
import pytest
from onnx import helper, numpy_helper

from nibble.host.passes.fold_taps import unfold_op
from nibble.host.compiler import compile_graph, compile_model
from nibble.host.driver import Device
from nibble.host.ir import CompileError
from nibble.host.program import Program
from nibble.sim import golden
from onnx_models import conv, ints, model, ort_outputs, snr_db
from test_frontend_onnx import _torch_pad_subgraph

SEED = 79
MIN_SNR_DB = 25.0


def _f(v, name):
    return numpy_helper.from_array(np.asarray(v, np.float32), name)


def _slopes(rng, c):
    """PReLU slopes in [−0.5, 0.5] on the 2^−12 grid of the slope codes."""
    return np.round(rng.uniform(-0.5, 0.5, c) * 4096) / 4096


def _golden_vs_ort(m, x, calib=None, **kw):
    g, p = compile_graph(m, x if calib is None else calib, **kw)
    with Device("golden") as d:
        d.load(p)
        xq = golden.dequantize_features(d.quantize(x), p.input_q)
        y = d.run(x)
    y = y if isinstance(y, dict) else {p.outputs[0].name: y}
    ref = ort_outputs(m, xq)
    assert list(y) == list(ref), (list(y), list(ref))
    for k in ref:
        assert y[k].shape == ref[k].shape, (k, y[k].shape, ref[k].shape)
        s = snr_db(y[k], ref[k])
        assert s >= MIN_SNR_DB, f"output '{k}': {s:.1f} dB against ONNX Runtime"
    return g, p, y


def _pnet_like(rng):
    """Two heads from one tensor (PNet): PReLU, MaxPool 2x2 s2 ceil on an odd map, Softmax."""
    c0, i0 = conv(rng, "conv1", "x", "c1", 3, 10, exact=True)
    c1, i1 = conv(rng, "conv2", "p1", "c2", 10, 16, exact=True)
    h1, j1 = conv(rng, "conv4_1", "a2", "logits", 16, 2, k=1, exact=True)
    h2, j2 = conv(rng, "conv4_2", "a2", "reg", 16, 4, k=1, exact=True)
    raw = [_f(_slopes(rng, 10).reshape(10, 1, 1), "s1"), _f(_slopes(rng, 16).reshape(16, 1, 1), "s2")]
    nodes = [c0, helper.make_node("PRelu", ["c1", "s1"], ["a1"], name="prelu1"),
             helper.make_node("MaxPool", ["a1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
             c1, helper.make_node("PRelu", ["c2", "s2"], ["a2"], name="prelu2"), h1,
             helper.make_node("Softmax", ["logits"], ["prob"], name="softmax", axis=1), h2]
    return model(nodes, {**i0, **i1, **j1, **j2}, inputs={"x": ("N", 3, 13, 13)}, outputs=["reg", "prob"], raw=raw)


def test_pnet_like_two_heads():
    rng = np.random.default_rng(SEED)
    x = rng.uniform(-1, 1, (12, 3, 13, 13))
    g, p, y = _golden_vs_ort(_pnet_like(rng), x)
    assert [(t.name, t.shape, t.tail) for t in p.outputs] == [("reg", (4, 4, 4), ()), ("prob", (2, 4, 4), ("softmax",))]
    assert p.layers[0].pool == (2, 2, 2, 2, 0, 1, 0, 1) and p.layers[0].prelu and len(p.layers) == 4
    assert np.allclose(y["prob"].sum(axis=1), 1.0)


def _rnet_like(rng, heads=2):
    """conv → PReLU → MaxPool 3x3 s2 ceil → conv → PReLU → permute(0, 3, 2, 1) → view → Linear →
    PReLU → heads (Softmax on the first), as MTCNN's RNet/ONet."""
    c0, i0 = conv(rng, "conv1", "x", "c1", 3, 8, exact=True)
    c1, i1 = conv(rng, "conv2", "p1", "c2", 8, 16, k=2, exact=True)
    inits = {**i0, **i1, "d4_w": _pow2_t(rng, (32, 16 * 3 * 3)), "d4_b": rng.normal(0, 0.1, 32)}
    raw = [_f(_slopes(rng, 8).reshape(8, 1, 1), "s1"), _f(_slopes(rng, 16).reshape(16, 1, 1), "s2"),
           _f(_slopes(rng, 32), "s4"), ints("view", [1, -1])]
    nodes = [c0, helper.make_node("PRelu", ["c1", "s1"], ["a1"], name="prelu1"),
             helper.make_node("MaxPool", ["a1"], ["p1"], name="pool1", kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
             c1, helper.make_node("PRelu", ["c2", "s2"], ["a2"], name="prelu2"),
             helper.make_node("Transpose", ["a2"], ["t"], name="permute", perm=[0, 3, 2, 1]),
             helper.make_node("Reshape", ["t", "view"], ["f"], name="view"),
             helper.make_node("Gemm", ["f", "d4_w", "d4_b"], ["d4"], name="dense4", transB=1),
             helper.make_node("PRelu", ["d4", "s4"], ["a4"], name="prelu4")]
    outs = []
    for k, n in enumerate((2, 4, 10)[:heads]):
        inits[f"h{k}_w"], inits[f"h{k}_b"] = _pow2_t(rng, (n, 32)), rng.normal(0, 0.1, n)
        out = "logits" if k == 0 else f"head{k}"
        nodes.append(helper.make_node("Gemm", ["a4", f"h{k}_w", f"h{k}_b"], [out], name=f"dense5_{k + 1}", transB=1))
        outs.append(out)
    nodes.append(helper.make_node("Softmax", ["logits"], ["prob"], name="softmax", axis=1))
    outs[0] = "prob"
    return model(nodes, inits, inputs={"x": (1, 3, 11, 11)}, outputs=outs[1:] + outs[:1], raw=raw)


def _pow2_t(rng, shape):
    from onnx_models import pow2
    return pow2(rng, shape, n1=-3)


@pytest.mark.parametrize("heads", [2, 3])
def test_rnet_like_permute_flatten_gemm_heads(heads):
    rng = np.random.default_rng(SEED + heads)
    m = _rnet_like(rng, heads)
    x = rng.uniform(-1, 1, (10, 3, 11, 11))
    calib = rng.uniform(-1, 1, (16, 3, 11, 11))
    g, p, y = _runs_one_image_at_a_time(m, x, calib)
    assert [t.name for t in p.outputs] == [f"head{k}" for k in range(1, heads)] + ["prob"]
    assert all(t.flatten for t in p.outputs) and p.outputs[-1].tail == ("softmax",)
    assert [n.op for n in g.nodes] == ["Conv", "Conv", "Gemm"] + ["Gemm"] * heads
    assert g.node("dense4").conv.w.shape == (32, 16, 3, 3) and g.node("dense4").conv.prelu.shape == (32,)


def _runs_one_image_at_a_time(m, x, calib):
    """The model has batch size 1 (as torch exports MTCNN): ONNX Runtime runs one image at a time."""
    g, p = compile_graph(m, calib)
    with Device("golden") as d:
        d.load(p)
        xq = golden.dequantize_features(d.quantize(x), p.input_q)
        y = d.run(x)
    y = y if isinstance(y, dict) else {p.outputs[0].name: y}
    refs = [ort_outputs(m, xi[None]) for xi in xq]
    for k in refs[0]:
        ref = np.concatenate([r[k] for r in refs])
        assert y[k].shape == ref.shape
        assert snr_db(y[k], ref) >= MIN_SNR_DB, (k, snr_db(y[k], ref))
    return g, p, y


def test_torch_style_export_compiles():
    """What torch's exporter writes: equal initializers de-duplicated into Identity nodes, F.pad
    as a Pad whose pads come from a constant subgraph, ``x.view(x.shape[0], -1)`` through Shape /
    Gather / Unsqueeze / Concat, BatchNormalization, ReLU6 (Clip 0, 6), LeakyReLU."""
    rng = np.random.default_rng(SEED)
    sub, raw, pads = _torch_pad_subgraph((1, 1, 2, 0))
    c0, i0 = conv(rng, "c0", "xp", "t0", 2, 4, exact=True)
    inits = {**i0, "bn_g": np.ones(4), "bn_b": np.zeros(4), "bn_m": rng.normal(0, 0.1, 4),
             "gw": _pow2_t(rng, (3, 4 * 5 * 4)), "gb": rng.normal(0, 0.1, 3)}
    raw += [numpy_helper.from_array(np.array(0, np.int64), "zero_i"), ints("axes0", [0]), ints("m1", [-1]),
            _f(0.0, "lo"), _f(6.0, "hi")]
    nodes = [*sub, helper.make_node("Pad", ["x", pads], ["xp"], name="pad"), c0,
             helper.make_node("Identity", ["bn_g"], ["bn_v"], name="dedup"),        # running_var == weight == 1
             helper.make_node("BatchNormalization", ["t0", "bn_g", "bn_b", "bn_m", "bn_v"], ["n0"], name="bn"),
             helper.make_node("Clip", ["n0", "lo", "hi"], ["r0"], name="relu6"),
             helper.make_node("Shape", ["r0"], ["s"], name="shape"),
             helper.make_node("Gather", ["s", "zero_i"], ["b"], name="gather", axis=0),
             helper.make_node("Unsqueeze", ["b", "axes0"], ["b1"], name="unsqueeze"),
             helper.make_node("Concat", ["b1", "m1"], ["vshape"], name="concat", axis=0),
             helper.make_node("Reshape", ["r0", "vshape"], ["f"], name="view"),
             helper.make_node("Gemm", ["f", "gw", "gb"], ["g0"], name="fc", transB=1),
             helper.make_node("LeakyRelu", ["g0"], ["y"], name="lrelu", alpha=0.125)]
    m = model(nodes, inits, inputs={"x": (1, 2, 5, 4)}, raw=raw, opset=13)
    x = rng.uniform(-2, 2, (12, 2, 5, 4))
    g, p, y = _runs_one_image_at_a_time(m, x, x)
    # the Pad folded into the conv's padding (and with the conv's taps into the host's input gather)
    fold = g.tensors["x"].fold
    op = unfold_op(g.node("c0").conv, fold) if fold else g.node("c0").conv
    assert [n.op for n in g.nodes] == ["Conv", "Gemm"] and op.pad == (2, 0, 1, 1)
    assert g.node("c0").conv.clip == (0.0, 6.0) and p.layers[0].clip[0] == 0
    assert p.layers[1].prelu and np.all(p.layer_slopes(1) == golden.prelu_codes(0.125))


def test_program_file_round_trip_with_several_outputs(tmp_path):
    rng = np.random.default_rng(SEED)
    m = _pnet_like(rng)
    x = rng.uniform(-1, 1, (4, 3, 13, 13))
    p = compile_model(m, x)
    p.save(tmp_path / "p.npz")
    q = Program.load(tmp_path / "p.npz")
    assert q.outputs == p.outputs and q.layers == p.layers and np.array_equal(q.params, p.params)


def test_epilogue_on_a_shared_tensor_is_refused():
    rng = np.random.default_rng(SEED)
    c0, i0 = conv(rng, "c0", "x", "t", 2, 4)
    c1, i1 = conv(rng, "c1", "t", "y1", 4, 2, k=1)
    m = model([c0, c1, helper.make_node("Relu", ["t"], ["y2"], name="relu")], {**i0, **i1}, outputs=["y1", "y2"])
    with pytest.raises(CompileError, match=r"node 'relu' \(Relu\): cannot be fused into layer 'c0': its output 't' is "
                                           r"also read by node 'c1' \(Conv\)"):
        compile_model(m, rng.normal(size=(2, 2, 6, 6)))
