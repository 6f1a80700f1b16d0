"""Small graphs with the engine operations a pass maps (residual Add, Concat, grouped conv,
GlobalAveragePool, Slice + channel Pad), and the check every such test makes: the structural
passes against ONNX Runtime in float, and the golden device against the float graph with the
same INQ weights."""
import numpy as np
from onnx import helper

from nibble.hw.config import EngineConfig
from nibble.host.compiler import build_graph, compile_graph
from nibble.host.driver import Device
from nibble.host.frontend.onnx import validate_model
from nibble.host.graph import run_outputs
from onnx_models import assert_graph_matches_ort, snr_db

#: A small engine with two words per pixel (m = 16, vc = 8): layouts of several blocks.
SMALL = EngineConfig(m=16, vc=8, feature_depth=1 << 14, weight_depth=1 << 15, param_depth=1 << 13)


def check(m, shape, config=EngineConfig(), min_db=25.0, seed=0):
    """Float graph = ORT; golden device vs the INQ-float graph ≥ ``min_db``. Returns
    ``(graph, program)``."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((4, *shape))
    m = validate_model(m)
    assert_graph_matches_ort(build_graph(m), m, x, rtol=1e-4)
    g, p = compile_graph(m, x, config)
    ref = run_outputs(g, x, weights="inq")
    d = Device("golden")
    d.load(p)
    y = d.run(x)
    y = y if isinstance(y, dict) else {p.output_name: y}
    for k, v in ref.items():
        assert snr_db(y[k], v) >= min_db, (k, snr_db(y[k], v))
    return g, p


def node(op, ins, out, name, **attrs):
    return helper.make_node(op, ins, [out], name=name, **attrs)
