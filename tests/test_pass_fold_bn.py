"""Pass ``fold_bn`` alone: BatchNormalization nodes folded into the layer before them; the graph
computes the same (float, against ONNX Runtime), the refusals name the node."""
import numpy as np
import pytest
from onnx import helper

from nibble.host.frontend.onnx import import_graph
from nibble.host.ir import CompileError
from nibble.host.passes import fold_bn
from onnx_models import assert_graph_matches_ort, conv, model

SEED = 41


def _bn_inits(rng, c, p="bn"):
    return {f"{p}_g": rng.uniform(0.5, 2, c), f"{p}_b": rng.normal(0, 1, c), f"{p}_m": rng.normal(0, 1, c),
            f"{p}_v": rng.uniform(0.5, 2, c)}


def _bn(inp, out, p="bn"):
    return helper.make_node("BatchNormalization", [inp, f"{p}_g", f"{p}_b", f"{p}_m", f"{p}_v"], [out], name=p,
                            epsilon=1e-3)


@pytest.mark.parametrize("kind", ["Conv", "ConvTranspose", "Gemm"])
def test_fold_bn_matches_ort(kind):
    rng = np.random.default_rng(SEED)
    if kind == "Conv":
        n0, inits = conv(rng, "L", "x", "c", 2, 3, pads=[1, 1, 1, 1])
        inputs = None
    elif kind == "ConvTranspose":
        inits = {"L_w": rng.normal(0, 0.3, (2, 3, 3, 3)), "L_b": rng.normal(0, 0.1, 3)}
        n0 = helper.make_node("ConvTranspose", ["x", "L_w", "L_b"], ["c"], name="L", strides=[2, 2])
        inputs = None
    else:
        inits = {"L_w": rng.normal(size=(3, 10)), "L_b": rng.normal(size=3)}
        n0 = helper.make_node("Gemm", ["x", "L_w", "L_b"], ["c"], name="L", transB=1)
        inputs = {"x": ("N", 10)}
    inits.update(_bn_inits(rng, 3))
    m = model([n0, _bn("c", "n"), helper.make_node("Relu", ["n"], ["y"], name="r")], inits, inputs=inputs)
    g = import_graph(m)
    h = fold_bn(g)
    assert [n.op for n in g.nodes] == [kind, "BatchNormalization", "Relu"]       # the argument is unchanged
    assert [n.op for n in h.validate().nodes] == [kind, "Relu"] and h.node("L").conv.names == ["L", "bn"]
    x = rng.normal(size=(3, 10)) if kind == "Gemm" else rng.normal(size=(3, 2, 6, 6))
    assert_graph_matches_ort(h, m, x)
    p = fold_bn(g, pending=True)
    assert p.node("L").conv.bn is not None and np.array_equal(p.node("L").conv.w, g.node("L").conv.w)


def test_bn_at_a_graph_output_and_after_a_branch():
    rng = np.random.default_rng(SEED)
    c0, inits = conv(rng, "c0", "x", "c", 2, 3)
    inits.update(_bn_inits(rng, 3))
    m = model([c0, _bn("c", "y")], inits)
    h = fold_bn(import_graph(m))
    assert h.outputs[0].name == "y" and h.outputs[0].tensor == "c"
    assert_graph_matches_ort(h, m, rng.normal(size=(2, 2, 6, 6)))
    m = model([c0, _bn("c", "y"), helper.make_node("Relu", ["c"], ["z"], name="r")], inits, outputs=["y", "z"])
    with pytest.raises(CompileError, match=r"node 'bn' \(BatchNormalization\): BatchNormalization must directly follow "
                                           r"a Conv, ConvTranspose or Gemm to be folded \(its input 'c' is also read by "
                                           r"node 'r'\)"):
        fold_bn(import_graph(m))


def test_bn_after_an_activation_or_the_input_is_refused():
    rng = np.random.default_rng(SEED)
    c0, inits = conv(rng, "c0", "x", "c", 2, 3)
    inits.update(_bn_inits(rng, 3))
    for nodes in ([c0, helper.make_node("Tanh", ["c"], ["t"], name="t"), _bn("t", "y")],
                  [_bn("x", "b"), conv(rng, "c9", "b", "y", 3, 2)[0]]):
        extra = {} if nodes[0] is c0 else {**_bn_inits(rng, 2), **conv(rng, "c9", "b", "y", 2, 2)[1]}
        with pytest.raises(CompileError, match=r"node 'bn' \(BatchNormalization\): BatchNormalization must directly "
                                               r"follow"):
            fold_bn(import_graph(model(nodes, {**inits, **extra})))
