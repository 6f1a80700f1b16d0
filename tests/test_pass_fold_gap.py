"""Pass ``fold_gap`` and the ``gap`` host op: GlobalAveragePool → Gemm folded into the Gemm's
weights; a GlobalAveragePool on the output computed by the host; AveragePool refused."""
import numpy as np
import pytest

from nibble.host.compiler import compile_model
from nibble.host.frontend.onnx import import_graph
from nibble.host.ir import CompileError
from nibble.host.passes import flatten_gemm, fold_gap
from new_ops_models import check, node
from onnx_models import conv, model

SEED = 81


def test_gap_then_gemm():
    rng = np.random.default_rng(SEED)
    c0, inits = conv(rng, "c0", "x", "h", 2, 4, pads=[1, 1, 1, 1])
    inits.update(fc_w=rng.normal(0, 0.5, (3, 4)), fc_b=rng.normal(0, 0.1, 3))
    m = model([c0, node("Relu", ["h"], "hr", "r"), node("GlobalAveragePool", ["hr"], "p", "gap"),
               node("Flatten", ["p"], "f", "flat"), node("Gemm", ["f", "fc_w", "fc_b"], "y", "fc", transB=1)], inits)
    g = fold_gap(flatten_gemm(import_graph(m)))
    fc = g.node("fc")
    assert fc.inputs == ["h"] or fc.inputs == [g.node("r").outputs[0]]
    assert fc.conv.w.shape == (3, 4, 6, 6) and "gap" not in [n.name for n in g.nodes]
    check(m, (2, 6, 6))


def test_gap_on_the_output_is_a_host_op():
    """SqueezeNet's head: conv → ReLU → GlobalAveragePool → Flatten as the output."""
    rng = np.random.default_rng(SEED + 1)
    c0, inits = conv(rng, "c0", "x", "h", 2, 5, k=1)
    m = model([c0, node("Relu", ["h"], "hr", "r"), node("GlobalAveragePool", ["hr"], "p", "gap"),
               node("Flatten", ["p"], "y", "flat")], inits)
    _, p = check(m, (2, 6, 6))
    assert p.outputs[0].tail == ("gap",) and p.outputs[0].flatten


def test_average_pool_is_refused():
    rng = np.random.default_rng(SEED)
    c0, inits = conv(rng, "c0", "x", "h", 2, 4, pads=[1, 1, 1, 1])
    m = model([c0, node("AveragePool", ["h"], "y", "ap", kernel_shape=[2, 2])], inits)
    with pytest.raises(CompileError, match=r"node 'ap' \(AveragePool\): AveragePool is not supported"):
        compile_model(m, rng.normal(size=(2, 2, 6, 6)))
