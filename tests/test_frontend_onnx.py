"""ONNX front end (``host/frontend/onnx.py``): constant folding with ONNX's reference evaluator,
the operator mapping (PReLU, LeakyRelu, Clip, MaxPool windows, MatMul, Pad, layout, Softmax), and
the refusals, each against ONNX Runtime or naming the node."""
import itertools

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from nibble.host.compiler import build_graph, compile_model
from nibble.host.frontend.onnx import FOLD_ELEMENTS, import_graph
from nibble.host.ir import CompileError
from onnx_models import assert_graph_matches_ort, conv, ints, model, ort_outputs

SEED = 5


def _x(rng, shape=(2, 2, 6, 6)):
    return rng.normal(size=shape)


# ---------------------------------------------------------------------------------------------
# Constant folding

def test_identity_of_initializers_is_folded():
    """torch de-duplicates equal initializers: the second layer's weights are Identity(first's)."""
    rng = np.random.default_rng(SEED)
    c0, inits = conv(rng, "c0", "x", "c", 2, 2, pads=[1, 1, 1, 1])
    nodes = [helper.make_node("Identity", ["c0_w"], ["w2"], name="dup_w"),
             helper.make_node("Identity", ["c0_b"], ["b2"], name="dup_b"), c0,
             helper.make_node("Conv", ["c", "w2", "b2"], ["y"], name="c1", pads=[1, 1, 1, 1])]
    m = model(nodes, inits)
    g = import_graph(m)
    assert [n.name for n in g.nodes] == ["c0", "c1"]
    assert np.array_equal(g.node("c1").conv.w, g.node("c0").conv.w)
    assert_graph_matches_ort(g, m, _x(rng))


def test_shape_gather_unsqueeze_concat_reshape_is_folded():
    """``x.view(x.shape[0], -1)``: Shape of a feature tensor is its static shape (batch 1), and the
    Gather / Unsqueeze / Concat on it are evaluated."""
    rng = np.random.default_rng(SEED)
    c0, inits = conv(rng, "c0", "x", "c", 2, 3)
    nodes = [c0, helper.make_node("Shape", ["c"], ["s"], name="shape"),
             helper.make_node("Gather", ["s", "zero"], ["n"], name="gather", axis=0),
             helper.make_node("Unsqueeze", ["n", "axes"], ["n1"], name="unsq"),
             helper.make_node("Concat", ["n1", "minus1"], ["target"], name="cat", axis=0),
             helper.make_node("Reshape", ["c", "target"], ["f"], name="view"),
             helper.make_node("Gemm", ["f", "gw", "gb"], ["y"], name="fc", transB=1)]
    inits.update({"gw": rng.normal(size=(5, 3 * 4 * 4)), "gb": rng.normal(size=5)})
    m = model(nodes, inits, raw=[numpy_helper.from_array(np.array(0, np.int64), "zero"), ints("axes", [0]),
                                 ints("minus1", [-1])])
    g = build_graph(m)
    assert [n.op for n in g.nodes] == ["Conv", "Gemm"] and g.outputs[0].flatten is False
    assert g.node("fc").conv.w.shape == (5, 3, 4, 4)
    assert_graph_matches_ort(g, m, _x(rng))


def _torch_pad_subgraph(pads, prefix="p"):
    """The subgraph torch's exporter writes for ``F.pad(x, pads)`` (pads = (left, right, top,
    bottom)): ONNX pads from the reversed (begin, end) pairs, through ConstantOfShape, Concat,
    Reshape, Slice, Transpose, Reshape and Cast; returns ``(nodes, initializers, pads name)``."""
    n = [helper.make_node("Constant", [], [f"{prefix}_p"], name=f"{prefix}_k0",
                          value=numpy_helper.from_array(np.array(pads, np.int64))),
         helper.make_node("Constant", [], [f"{prefix}_four"], name=f"{prefix}_k1", value_ints=[4]),
         helper.make_node("ConstantOfShape", [f"{prefix}_four"], [f"{prefix}_z"], name=f"{prefix}_zeros",
                          value=numpy_helper.from_array(np.array([0], np.int64))),
         helper.make_node("Concat", [f"{prefix}_p", f"{prefix}_z"], [f"{prefix}_c"], name=f"{prefix}_cat", axis=0),
         helper.make_node("Reshape", [f"{prefix}_c", f"{prefix}_shape"], [f"{prefix}_r"], name=f"{prefix}_rs"),
         helper.make_node("Slice", [f"{prefix}_r", f"{prefix}_st", f"{prefix}_en", f"{prefix}_ax", f"{prefix}_sp"],
                          [f"{prefix}_s"], name=f"{prefix}_slice"),
         helper.make_node("Transpose", [f"{prefix}_s"], [f"{prefix}_t"], name=f"{prefix}_tr", perm=[1, 0]),
         helper.make_node("Reshape", [f"{prefix}_t", f"{prefix}_flat"], [f"{prefix}_f"], name=f"{prefix}_rs2"),
         helper.make_node("Cast", [f"{prefix}_f"], [f"{prefix}_pads"], name=f"{prefix}_cast", to=TensorProto.INT64)]
    raw = [ints(f"{prefix}_shape", [-1, 2]), ints(f"{prefix}_st", [-1]), ints(f"{prefix}_en", [-(2 ** 63 - 1)]),
           ints(f"{prefix}_ax", [0]), ints(f"{prefix}_sp", [-1]), ints(f"{prefix}_flat", [-1])]
    return n, raw, f"{prefix}_pads"


def test_torch_pad_subgraph_is_folded_into_the_conv():
    rng = np.random.default_rng(SEED)
    sub, raw, pads = _torch_pad_subgraph((1, 2, 0, 1))           # left 1, right 2, top 0, bottom 1
    c0, inits = conv(rng, "c0", "xp", "y", 2, 3)
    m = model([*sub, helper.make_node("Pad", ["x", pads], ["xp"], name="pad", mode="constant"), c0], inits, raw=raw,
              opset=13)
    g = import_graph(m)
    assert [n.op for n in g.nodes] == ["Pad", "Conv"] and g.node("pad").attrs["pads"] == (0, 1, 1, 2)
    g = build_graph(m)
    assert [n.op for n in g.nodes] == ["Conv"] and g.node("c0").conv.pad == (0, 1, 1, 2)
    assert_graph_matches_ort(g, m, _x(rng))


def test_folding_refuses_huge_constants_and_names_errors():
    rng = np.random.default_rng(SEED)
    c0, inits = conv(rng, "c0", "x", "y", 2, 3)
    big = helper.make_node("ConstantOfShape", ["dims"], ["z"], name="zeros")
    use = helper.make_node("Add", ["c0_b", "zsum"], ["b2"], name="add")
    m = model([big, helper.make_node("ReduceSum", ["z"], ["zsum"], name="sum", keepdims=0), use, c0], inits,
              raw=[ints("dims", [1 << 13, 1 << 12])])
    with pytest.raises(CompileError, match=rf"node 'zeros' \(ConstantOfShape\): folding it on its constant inputs would "
                                           rf"create {1 << 25} values \(more than {FOLD_ELEMENTS}\)"):
        import_graph(m)
    bad = model([helper.make_node("Gather", ["c0_b", "idx"], ["b2"], name="pick", axis=0),
                 helper.make_node("Conv", ["x", "c0_w", "b2"], ["y"], name="c0")], inits, raw=[ints("idx", [0, 9, 1])])
    with pytest.raises(CompileError, match=r"node 'pick' \(Gather\): its constant inputs cannot be evaluated"):
        import_graph(bad)


# ---------------------------------------------------------------------------------------------
# Operators

@pytest.mark.parametrize("shape", [(3, 1, 1), (1, 3, 1, 1), (1,), ()])
def test_prelu_slopes_per_channel(shape):
    rng = np.random.default_rng(SEED)
    c0, inits = conv(rng, "c0", "x", "c", 2, 3)
    inits["slope"] = rng.uniform(-0.5, 0.5, shape) if shape else np.float32(0.25)
    m = model([c0, helper.make_node("PRelu", ["c", "slope"], ["y"], name="pr")], inits)
    g = import_graph(m)
    assert g.node("pr").attrs["slope"].shape == ((3,) if len(shape) > 1 else (1,))
    assert_graph_matches_ort(g, m, _x(rng))
    assert_graph_matches_ort(build_graph(m), m, _x(rng))


def test_prelu_slope_that_broadcasts_over_the_width_is_refused():
    """A (C,) slope on an (N, C, H, W) input broadcasts over the width axis, not the channels."""
    rng = np.random.default_rng(SEED)
    c0, inits = conv(rng, "c0", "x", "c", 2, 4, pads=[1, 1, 1, 1])
    inits["slope"] = np.full(4, 0.1)
    m = model([c0, helper.make_node("PRelu", ["c", "slope"], ["y"], name="pr")], inits, inputs={"x": (1, 2, 4, 4)})
    with pytest.raises(CompileError, match=r"node 'pr' \(PRelu\): the slope 'slope' of shape \(4,\) is not one value per "
                                           r"channel .*PyTorch exports \(C, 1, 1\)"):
        compile_model(m, rng.normal(size=(2, 2, 4, 4)))


def test_prelu_on_a_gemm_vector_and_matmul_add():
    rng = np.random.default_rng(SEED)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"], name="mm"),
             helper.make_node("Add", ["mm", "b"], ["fc"], name="bias"),
             helper.make_node("PRelu", ["fc", "slope"], ["y"], name="pr")]
    m = model(nodes, {"w": rng.normal(size=(12, 5)), "b": rng.normal(size=5), "slope": rng.uniform(0, 0.5, 5)},
              inputs={"x": ("N", 12)})
    g = build_graph(m)
    n, = g.nodes
    assert n.op == "Gemm" and n.conv.prelu.shape == (5,) and n.conv.names == ["mm", "bias", "pr"]
    assert_graph_matches_ort(g, m, rng.normal(size=(3, 12)))


@pytest.mark.parametrize("lo,hi", [(0.0, 6.0), (None, 0.5), (-0.25, None), (None, None)])
def test_clip_bounds_from_inputs(lo, hi):
    rng = np.random.default_rng(SEED)
    c0, inits = conv(rng, "c0", "x", "c", 2, 3)
    raw = [numpy_helper.from_array(np.array(v, np.float32), k) for k, v in (("lo", lo), ("hi", hi)) if v is not None]
    clip = helper.make_node("Clip", ["c", "lo" if lo is not None else "", "hi" if hi is not None else ""], ["y"],
                            name="clip")
    m = model([c0, clip], inits, raw=raw)
    g = build_graph(m)
    assert g.nodes[0].conv.clip == (-np.inf if lo is None else lo, np.inf if hi is None else hi)
    assert_graph_matches_ort(g, m, 4 * _x(rng))


def test_clip_with_min_above_max_is_refused():
    rng = np.random.default_rng(SEED)
    c0, inits = conv(rng, "c0", "x", "c", 2, 3)
    raw = [numpy_helper.from_array(np.array(v, np.float32), k) for k, v in (("lo", 2.0), ("hi", 1.0))]
    with pytest.raises(CompileError, match=r"node 'clip' \(Clip\): min 2 is larger than max 1"):
        import_graph(model([c0, helper.make_node("Clip", ["c", "lo", "hi"], ["y"], name="clip")], inits, raw=raw))


def _pool_cases():
    cases = []
    for (k, s), size, ceil in itertools.product([(2, 2), (3, 2), (3, 1), (2, 1), (3, 3), (4, 2)], [5, 6, 7, 8], [0, 1]):
        cases.append((k, s, size, ceil, None, None))
    for k, s, size in [(3, 2, 7), (2, 2, 5), (3, 1, 6), (3, 2, 8)]:
        cases.append((k, s, size, 0, [1, 0, 1, 1], None))
        cases.append((k, s, size, 1, [1, 1, 0, 1], None))
        for auto in ("SAME_UPPER", "SAME_LOWER", "VALID"):
            cases.append((k, s, size, 0, None, auto))
    return cases


@pytest.mark.parametrize("k,s,size,ceil,pads,auto", _pool_cases())
def test_maxpool_window_matches_ort(k, s, size, ceil, pads, auto):
    """The window's output size is ONNX Runtime's (ceil_mode, padding, auto_pad), and the values
    are: padded positions never win."""
    rng = np.random.default_rng(SEED)
    attrs = {"kernel_shape": [k, k], "strides": [s, s], "ceil_mode": ceil}
    if pads:
        attrs["pads"] = pads
    if auto:
        attrs["auto_pad"] = auto
    m = model([helper.make_node("MaxPool", ["x"], ["y"], name="mp", **attrs)], {},
              inputs={"x": ("N", 2, size, size + 1)})
    g = import_graph(m)
    pool = g.node("mp").attrs["pool"]
    assert pool[:4] == (k, k, s, s) and max(pool[4:6]) < k and max(pool[6:]) < k
    x = rng.normal(size=(2, 2, size, size + 1)) - 3.0           # all negative: a padded 0 must never win
    assert_graph_matches_ort(g, m, x)


def test_maxpool_refusals():
    with pytest.raises(CompileError, match=r"node 'mp' \(MaxPool\): attribute 'dilations' \[2, 2\] is not supported"):
        import_graph(model([helper.make_node("MaxPool", ["x"], ["y"], name="mp", kernel_shape=[2, 2],
                                             dilations=[2, 2])], {}))
    with pytest.raises(CompileError, match=r"node 'mp' \(MaxPool\): the Indices output 'i' is not supported"):
        import_graph(model([helper.make_node("MaxPool", ["x"], ["y", "i"], name="mp", kernel_shape=[2, 2])], {}))


@pytest.mark.parametrize("op,attrs,msg", [
    ("AveragePool", {"kernel_shape": [2, 2]}, "AveragePool is not supported by the engine"),
    ("GlobalMaxPool", {}, "GlobalMaxPool is not supported by the engine yet")])
def test_engine_cannot_run_names_the_node(op, attrs, msg):
    rng = np.random.default_rng(SEED)
    c0, inits = conv(rng, "c0", "x", "c", 2, 2, pads=[1, 1, 1, 1])
    m = model([c0, helper.make_node(op, ["c"], ["y"], name="n1", **attrs)], inits)
    with pytest.raises(CompileError, match=rf"node 'n1' \({op}\): {msg}"):
        compile_model(m, rng.normal(size=(2, 2, 6, 6)))


def test_grouped_conv_is_stored_block_diagonal():
    """group = 2: dense weights with zeros outside each output channel's group (ConvOp.groups)."""
    rng = np.random.default_rng(SEED)
    w = rng.normal(size=(4, 1, 3, 3)).astype(np.float32)
    g = import_graph(model([helper.make_node("Conv", ["x", "w"], ["y"], name="dw", group=2)], {"w": w}))
    op = g.nodes[0].conv
    assert op.groups == 2 and op.w.shape == (4, 2, 3, 3)
    assert np.array_equal(op.w[:2, 0], w[:2, 0]) and np.array_equal(op.w[2:, 1], w[2:, 0])
    assert not np.any(op.w[:2, 1]) and not np.any(op.w[2:, 0])


@pytest.mark.parametrize("opset,axis,msg", [
    (17, -1, r"Softmax over axis -1 of the rank-4 input is not supported \(only over the channel axis 1\)"),
    (17, 2, r"Softmax over axis 2"),
    (12, 1, r"Softmax\(axis=1\) in operator set 12 runs over all C x H x W values"),
])
def test_softmax_over_another_axis_is_refused(opset, axis, msg):
    rng = np.random.default_rng(SEED)
    c0, inits = conv(rng, "c0", "x", "c", 2, 2)
    m = model([c0, helper.make_node("Softmax", ["c"], ["y"], name="sm", axis=axis)], inits, opset=opset)
    with pytest.raises(CompileError, match=r"node 'sm' \(Softmax\): " + msg):
        compile_model(m, rng.normal(size=(2, 2, 6, 6)))


def test_pad_refusals():
    rng = np.random.default_rng(SEED)
    c0, inits = conv(rng, "c0", "xp", "y", 2, 2)
    for attrs, extra, msg in [({"mode": "reflect"}, [], r"mode 'reflect' is not supported"),
                              ({}, [numpy_helper.from_array(np.array(1.5, np.float32), "v")], r"padding with 1.5"),
                              ({}, [], r"negative pads .* \(cropping\)")]:
        pads = [0, 0, -1, 0, 0, 0, 0, 0] if "negative" in msg else [0, 0, 1, 1, 0, 0, 1, 1]
        ins = ["x", "pads"] + (["v"] if extra else [])
        m = model([helper.make_node("Pad", ins, ["xp"], name="pad", **attrs), c0], inits,
                  raw=[ints("pads", pads), *extra])
        with pytest.raises(CompileError, match=r"node 'pad' \(Pad\): " + msg):
            import_graph(m)
    m = model([helper.make_node("Pad", ["x", "pads"], ["xp"], name="pad"), c0], inits,
              raw=[ints("pads", [1, 0, 0, 0, 0, 0, 0, 0])])
    with pytest.raises(CompileError, match=r"node 'pad' \(Pad\): only padding of the channels, rows and columns"):
        import_graph(m)


def test_transpose_of_the_batch_axis_is_refused():
    m = model([helper.make_node("Transpose", ["x"], ["y"], name="tr", perm=[1, 0, 2, 3])], {})
    with pytest.raises(CompileError, match=r"node 'tr' \(Transpose\): perm \[1, 0, 2, 3\] moves the batch axis"):
        import_graph(m)


def test_several_inputs_and_outputs_and_dead_nodes():
    rng = np.random.default_rng(SEED)
    c0, i0 = conv(rng, "c0", "a", "y1", 2, 2, pads=[1, 1, 1, 1])
    c1, i1 = conv(rng, "c1", "b", "y2", 3, 2)
    c2, i2 = conv(rng, "c2", "b", "unused", 3, 2)
    m = model([c0, c1, c2], {**i0, **i1, **i2}, inputs={"a": ("N", 2, 5, 5), "b": ("N", 3, 6, 6)},
              outputs=["y1", "y2"])
    g = import_graph(m)
    assert g.inputs == ["a", "b"] and [o.name for o in g.outputs] == ["y1", "y2"]
    assert "c2" not in [n.name for n in g.nodes]                        # nothing depends on it
    x = {"a": rng.normal(size=(2, 2, 5, 5)), "b": rng.normal(size=(2, 3, 6, 6))}
    assert_graph_matches_ort(g, m, x)


def test_identity_to_an_output_keeps_the_output_name():
    rng = np.random.default_rng(SEED)
    c0, inits = conv(rng, "c0", "x", "c", 2, 2)
    m = model([c0, helper.make_node("Identity", ["c"], ["y"], name="id"),
               helper.make_node("Dropout", ["y"], ["z"], name="drop")], inits, outputs=["y", "z"])
    with pytest.raises(CompileError, match="graph outputs 'y', 'z' are the same tensor 'c'"):
        compile_model(m, rng.normal(size=(2, 2, 6, 6)))
    g = import_graph(model([c0, helper.make_node("Identity", ["c"], ["y"], name="id")], inits))
    assert g.outputs[0].tensor == "y" and g.node("c0").outputs == ["y"]


def test_graph_output_that_is_a_constant_or_an_input():
    rng = np.random.default_rng(SEED)
    c0, inits = conv(rng, "c0", "x", "c", 2, 2)
    with pytest.raises(CompileError, match="graph output 'c0_w' is a constant"):
        import_graph(model([c0], inits, outputs=["c", "c0_w"]))
    with pytest.raises(CompileError, match="graph output 'x' is the graph input 'x'"):
        import_graph(model([c0], inits, outputs=["c", "x"]))
    assert ort_outputs(model([c0], inits, outputs=["c"]), _x(rng))["c"].shape == (2, 2, 4, 4)
