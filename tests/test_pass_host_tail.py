"""Pass ``host_tail`` alone: a Softmax on a graph output becomes the output's declared host op;
anywhere else it is refused naming the node."""
import numpy as np
import pytest
from onnx import helper

from nibble.host.frontend.onnx import import_graph
from nibble.host.ir import CompileError
from nibble.host.passes import host_tail
from nibble.host.program import HOST_OPS
from onnx_models import assert_graph_matches_ort, conv, model

SEED = 59


def test_softmax_on_outputs_becomes_the_tail():
    """PNet's heads: one tensor feeds a Softmax output and a plain output."""
    rng = np.random.default_rng(SEED)
    c0, i0 = conv(rng, "c0", "x", "t", 2, 4)
    c1, i1 = conv(rng, "c1", "t", "logits", 4, 2, k=1)
    c2, i2 = conv(rng, "c2", "t", "reg", 4, 4, k=1)
    m = model([c0, c1, helper.make_node("Softmax", ["logits"], ["prob"], name="sm", axis=1), c2],
              {**i0, **i1, **i2}, outputs=["reg", "prob"])
    g = import_graph(m)
    h = host_tail(g).validate()
    assert [n.op for n in h.nodes] == ["Conv", "Conv", "Conv"]
    assert [(o.name, o.tensor, o.tail) for o in h.outputs] == [("reg", "reg", ()), ("prob", "prob", ("softmax",))]
    assert h.node("c1").outputs == ["prob"] and "softmax" in HOST_OPS
    assert_graph_matches_ort(h, m, rng.normal(size=(2, 2, 6, 6)))
    assert [o.tail for o in g.outputs] == [(), ()]                 # the argument is unchanged


def test_softmax_before_the_end_is_refused():
    rng = np.random.default_rng(SEED)
    c0, i0 = conv(rng, "c0", "x", "t", 2, 4)
    c1, i1 = conv(rng, "c1", "s", "y", 4, 2, k=1)
    m = model([c0, helper.make_node("Softmax", ["t"], ["s"], name="sm", axis=1), c1], {**i0, **i1})
    with pytest.raises(CompileError, match=r"node 'sm' \(Softmax\): Softmax is supported only on a graph output, run by "
                                           r"the host after dequantization; its output 's' is read by node 'c1' \(Conv\)"):
        host_tail(import_graph(m))


def test_argmax_is_not_a_host_op_of_the_program_format():
    rng = np.random.default_rng(SEED)
    c0, i0 = conv(rng, "c0", "x", "t", 2, 4)
    m = model([c0, helper.make_node("ArgMax", ["t"], ["y"], name="am", axis=1)], i0)
    assert "argmax" not in HOST_OPS
    with pytest.raises(CompileError, match=r"node 'am' \(ArgMax\): ArgMax is not an operator the host runs after an "
                                           r"output \(those are: gap, softmax\)"):
        host_tail(import_graph(m))
