"""Pass ``fuse_epilogue`` alone: bias, activations and max-pool fused into the layer before them
in the output stage's order; the fused graph equals ONNX Runtime in float; the refusals name
the node."""
import numpy as np
import pytest
from onnx import helper, numpy_helper

from nibble.host.frontend.onnx import import_graph
from nibble.host.ir import CompileError
from nibble.host.passes import flatten_gemm, fuse_epilogue
from nibble.sim import golden
from onnx_models import assert_graph_matches_ort, conv, model

SEED = 47


def _f(v, name):
    return numpy_helper.from_array(np.asarray(v, np.float32), name)


def _chain(rng, ops, in_shape=("N", 2, 7, 7)):
    """Conv c0 then the nodes ``ops`` (``(op, attrs, extra inputs)``) in a chain to ``y``."""
    c0, inits = conv(rng, "c0", "x", "t0", in_shape[1], 3, pads=[1, 1, 1, 1])
    nodes, prev = [c0], "t0"
    for i, (op, attrs, extra) in enumerate(ops):
        out = "y" if i == len(ops) - 1 else f"t{i + 1}"
        nodes.append(helper.make_node(op, [prev, *extra], [out], name=f"n{i}", **attrs))
        prev = out
    return nodes, inits


RAW = [_f(0.0, "zero"), _f(6.0, "six"), _f(0.5, "half"), _f([[[0.25]], [[-0.5]], [[0.125]]], "slope"),
       _f([[[0.25]], [[0.5]], [[0.125]]], "pos_slope"), _f([[[1.0]], [[-2.0]], [[0.5]]], "bias3")]
MP = ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}, [])


@pytest.mark.parametrize("ops,check", [
    ([("Relu", {}, []), ("Relu", {}, [])], lambda op: op.relu),
    ([("Clip", {}, ["zero", "six"])], lambda op: op.clip == (0.0, 6.0) and not op.relu),
    ([("Relu", {}, []), ("Clip", {}, ["", "half"])], lambda op: op.relu and op.clip == (-np.inf, 0.5)),
    ([("Clip", {}, ["half", ""]), ("Relu", {}, [])], lambda op: op.relu and op.clip == (0.5, np.inf)),
    ([("Clip", {}, ["zero", "six"]), ("Clip", {}, ["half", ""])], lambda op: op.clip == (0.5, 6.0)),
    ([("PRelu", {}, ["slope"]), ("Clip", {}, ["", "half"])], lambda op: list(op.prelu) == [0.25, -0.5, 0.125]),
    ([("LeakyRelu", {"alpha": 0.1}, []), MP], lambda op: np.allclose(op.prelu, 0.1) and op.pool[:4] == (3, 3, 2, 2)),
    ([("PRelu", {}, ["slope"]), MP], lambda op: op.pool == (3, 3, 2, 2, 0, 0, 0, 0)),
    ([MP, ("Relu", {}, [])], lambda op: op.relu and op.pools),
    ([MP, ("PRelu", {}, ["pos_slope"])], lambda op: op.prelu is not None and op.pools),
    ([MP, ("Sigmoid", {}, [])], lambda op: op.act == golden.ACT_SIGMOID),
    ([("Add", {}, ["bias3"]), ("Tanh", {}, [])], lambda op: op.act == golden.ACT_TANH),
])
def test_fused_chain_matches_ort(ops, check):
    rng = np.random.default_rng(SEED)
    nodes, inits = _chain(rng, ops)
    m = model(nodes, inits, raw=RAW, inputs={"x": ("N", 2, 7, 7)})
    g = fuse_epilogue(import_graph(m)).validate()
    n, = g.nodes
    assert check(n.conv) and n.conv.names == ["c0", *(f"n{i}" for i in range(len(ops)))]
    assert_graph_matches_ort(g, m, 3 * rng.normal(size=(3, 2, 7, 7)))


@pytest.mark.parametrize("ops,msg", [
    ([("Relu", {}, []), ("Tanh", {}, [])], r"node 'n1' \(Tanh\): layer 'c0' already has the activation Relu; only one"),
    ([("PRelu", {}, ["slope"]), ("Relu", {}, [])], r"node 'n1' \(Relu\): layer 'c0' already has the activation PRelu"),
    ([("Clip", {}, ["zero", "six"]), ("PRelu", {}, ["slope"])], r"already has the activation Clip"),
    ([("Tanh", {}, []), ("Clip", {}, ["zero", "six"])], r"node 'n1' \(Clip\): layer 'c0' already has the activation Tanh"),
    ([MP, ("PRelu", {}, ["slope"])], r"node 'n1' \(PRelu\): a PRelu with a negative slope after the max-pool of layer 'c0'"),
    ([MP, MP], r"node 'n1' \(MaxPool\): max-pool must follow a Conv or ConvTranspose \(one pool per layer\)"),
    ([("Relu", {}, []), ("Add", {}, ["bias3"])], r"node 'n1' \(Add\): a bias added after the activation"),
])
def test_refused_combinations_name_the_node(ops, msg):
    rng = np.random.default_rng(SEED)
    nodes, inits = _chain(rng, ops)
    with pytest.raises(CompileError, match=msg):
        fuse_epilogue(import_graph(model(nodes, inits, raw=RAW, inputs={"x": ("N", 2, 7, 7)})))


def test_a_layer_with_two_readers_keeps_its_output():
    """A PReLU on a tensor another node also reads cannot be fused (the other reader needs the
    layer's output without it)."""
    rng = np.random.default_rng(SEED)
    c0, i0 = conv(rng, "c0", "x", "c", 2, 3, pads=[1, 1, 1, 1])
    c1, i1 = conv(rng, "c1", "c", "y2", 3, 2, k=1)
    m = model([c0, helper.make_node("PRelu", ["c", "slope"], ["y1"], name="pr"), c1], {**i0, **i1},
              outputs=["y1", "y2"], raw=RAW)
    with pytest.raises(CompileError, match=r"node 'pr' \(PRelu\): cannot be fused into layer 'c0': its output 'c' is "
                                           r"also read by node 'c1' \(Conv\)"):
        fuse_epilogue(import_graph(m))
    m = model([c0, helper.make_node("Relu", ["c"], ["y1"], name="r")], i0, outputs=["y1", "c"])
    with pytest.raises(CompileError, match="also read by a graph output"):
        fuse_epilogue(import_graph(m))


def test_activation_on_the_input_or_after_a_non_layer():
    with pytest.raises(CompileError, match=r"node 't' \(Tanh\): Tanh on the network input is not supported"):
        fuse_epilogue(import_graph(model([helper.make_node("Tanh", ["x"], ["y"], name="t")], {})))
    # a max-pool on the network input gets a layer of its own: an identity copy with the pool fused
    m = model([helper.make_node("MaxPool", ["x"], ["y"], name="mp", kernel_shape=[2, 2])], {})
    g = fuse_epilogue(import_graph(m))
    assert [n.name for n in g.nodes] == ["mp/copy"] and g.nodes[0].conv.pool == (2, 2, 1, 1, 0, 0, 0, 0)
    assert_graph_matches_ort(g, m, np.random.default_rng(SEED).standard_normal((2, 2, 6, 6)))


def test_uniform_activation_moves_before_the_flatten():
    """conv → Flatten → Relu → Gemm: the Relu is fused into the conv (it commutes with the
    flatten), a per-channel PReLU there is refused."""
    rng = np.random.default_rng(SEED)
    c0, inits = conv(rng, "c0", "x", "c", 2, 3)
    inits.update({"gw": rng.normal(size=(4, 3 * 5 * 5)), "gb": rng.normal(size=4),
                  "s75": rng.uniform(0, 0.5, 75)})
    nodes = [c0, helper.make_node("Flatten", ["c"], ["f"], name="flat"), helper.make_node("Relu", ["f"], ["r"], name="r"),
             helper.make_node("Gemm", ["r", "gw", "gb"], ["y"], name="fc", transB=1)]
    m = model(nodes, inits, inputs={"x": ("N", 2, 7, 7)})
    g = fuse_epilogue(import_graph(m)).validate()
    assert [n.op for n in g.nodes] == ["Conv", "Flatten", "Gemm"] and g.node("c0").conv.relu
    assert_graph_matches_ort(flatten_gemm(g), m, rng.normal(size=(2, 2, 7, 7)))
    nodes[2] = helper.make_node("PRelu", ["f", "s75"], ["r"], name="r")
    with pytest.raises(CompileError, match=r"node 'r' \(PRelu\): PRelu after the Flatten 'flat' is not supported"):
        fuse_epilogue(import_graph(model(nodes, inits, inputs={"x": ("N", 2, 7, 7)})))
