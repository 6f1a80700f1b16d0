"""Pass ``split_gap``: a GAP-folded Gemm whose filter exceeds the filter cache becomes a
depthwise all-ones sum and a 1×1 Gemm (ResNet-18's classifier on the default configuration)."""
import numpy as np

from nibble.hw.config import EngineConfig
from nibble.host.compiler import build_graph
from nibble.host.frontend.onnx import validate_model
from nibble.host.graph import run_outputs
from nibble.host.passes import split_gap
from new_ops_models import check, node
from onnx_models import conv, model

SEED = 91
#: A filter cache too small for the folded 6×6×⌈24/8⌉ = 108-word kernel, large enough for the rest.
SMALL_CACHE = EngineConfig(m=8, vc=8, filter_depth=64)


def _gap_model(rng, cin=24):
    c0, inits = conv(rng, "c0", "x", "h", 2, cin, pads=[1, 1, 1, 1])
    inits.update(fc_w=rng.normal(0, 0.5, (5, cin)), fc_b=rng.normal(0, 0.1, 5))
    return model([c0, node("Relu", ["h"], "hr", "r"), node("GlobalAveragePool", ["hr"], "p", "gap"),
                  node("Flatten", ["p"], "f", "flat"), node("Gemm", ["f", "fc_w", "fc_b"], "y", "fc", transB=1)],
                 inits)


def test_split_only_when_the_folded_filter_does_not_fit():
    rng = np.random.default_rng(SEED)
    g = build_graph(validate_model(_gap_model(rng)))
    assert g.node("fc").conv.w.shape == (5, 24, 6, 6)          # folded by fold_gap
    assert split_gap(g, EngineConfig(m=8, vc=8, filter_depth=128)).node("fc").conv.w.shape == (5, 24, 6, 6)
    s = split_gap(g, SMALL_CACHE).validate()
    fc, gap_sum = s.node("fc"), s.node("fc/gap_sum")
    assert fc.conv.w.shape == (5, 24, 1, 1) and fc.inputs == ["fc/gap_sum"]
    assert gap_sum.conv.groups == 24 and gap_sum.conv.w.shape == (24, 24, 6, 6)
    assert np.array_equal(gap_sum.conv.w.sum(axis=(2, 3)), 36 * np.eye(24))
    assert [n.name for n in s.topological_order()].index("fc/gap_sum") < [n.name for n in s.topological_order()].index("fc")
    # the same function: float graphs of both forms
    x = rng.standard_normal((3, 2, 6, 6))
    a, b = run_outputs(g, x), run_outputs(s, x)
    assert all(np.allclose(a[k], b[k], rtol=1e-9, atol=1e-12) for k in a)


def test_a_gemm_that_is_not_a_folded_gap_is_left_to_the_fit_check():
    rng = np.random.default_rng(SEED + 1)
    c0, inits = conv(rng, "c0", "x", "h", 2, 20, pads=[1, 1, 1, 1])
    inits.update(fc_w=rng.normal(0, 0.5, (5, 20 * 36)), fc_b=rng.normal(0, 0.1, 5))
    m = model([c0, node("Flatten", ["h"], "f", "flat"), node("Gemm", ["f", "fc_w", "fc_b"], "y", "fc", transB=1)],
              inits)
    g = build_graph(validate_model(m))
    assert split_gap(g, SMALL_CACHE).node("fc").conv.w.shape == g.node("fc").conv.w.shape


def test_split_model_on_the_golden_device():
    """Compiled for the small filter cache: golden device vs the INQ float graph ≥ 25 dB."""
    g, p = check(_gap_model(np.random.default_rng(SEED + 2)), (2, 6, 6), config=SMALL_CACHE)
    assert [L.name for L in p.layers][-2:] == ["fc/gap_sum", "fc"] and p.layers[-2].grp == 1
