"""Small ONNX models built with ``onnx.helper`` for the compiler tests, and ONNX Runtime as the
float reference (no torch)."""
import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from nibble.host.graph import run_outputs


def model(nodes, inits, inputs=None, outputs=("y",), opset=17, raw=()):
    """A ModelProto: ``inputs`` ``{name: (N, C, H, W) or (N, F)}`` (default ``x`` (N, 2, 6, 6)),
    outputs by name (shapes left to ONNX inference), float32 initializers ``inits``."""
    inputs = inputs or {"x": ("N", 2, 6, 6)}
    g = helper.make_graph(nodes, "g",
                          [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v)) for k, v in inputs.items()],
                          [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
                          [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()]
                          + list(raw))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def ints(name, values):
    """An int64 initializer."""
    return numpy_helper.from_array(np.asarray(values, np.int64), name)


def pow2(rng, shape, n1=-1):
    """Weights ±2^e, e in [n1 − 6, n1], with one weight 2^n1: on the INQ level set (exact)."""
    w = np.ldexp(1.0, rng.integers(n1 - 6, n1 + 1, shape)) * rng.choice([-1.0, 1.0], shape)
    w.reshape(-1)[0] = 2.0 ** n1
    return w


def conv(rng, name, inp, out, ci, co, k=3, exact=False, **attrs):
    """A Conv node and its initializers (random or INQ-exact weights, bias)."""
    w = pow2(rng, (co, ci, k, k)) if exact else rng.normal(0, 0.3, (co, ci, k, k))
    inits = {f"{name}_w": w, f"{name}_b": rng.normal(0, 0.1, co)}
    return helper.make_node("Conv", [inp, f"{name}_w", f"{name}_b"], [out], name=name, **attrs), inits


def session(m):
    so = ort.SessionOptions()
    so.log_severity_level = 4
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def ort_outputs(m, x, name="x"):
    """ONNX Runtime's outputs ``{name: float64}`` for the batch ``x`` (or a dict of inputs)."""
    s = session(m)
    feeds = {k: np.asarray(v, np.float32) for k, v in (x.items() if isinstance(x, dict) else [(name, x)])}
    return {o.name: np.asarray(v, np.float64) for o, v in zip(s.get_outputs(), s.run(None, feeds))}


def assert_close(y, ref, rtol=1e-5):
    """``|y − ref| ≤ rtol·|ref| + rtol·max|ref|`` (ONNX Runtime computes in float32)."""
    y = np.asarray(y).reshape(np.shape(ref))
    tol = rtol * np.abs(ref) + rtol * np.abs(ref).max(initial=0) + 1e-12
    assert np.all(np.abs(y - ref) <= tol), float(np.abs(y - ref).max())


def assert_graph_matches_ort(g, m, x, rtol=1e-5, weights="float"):
    """Every output of graph ``g`` (:func:`nibble.host.graph.run_outputs`) equals ONNX Runtime's
    output of the same name for model ``m``."""
    got, ref = run_outputs(g, x, weights), ort_outputs(m, x)
    assert set(got) == set(ref), (sorted(got), sorted(ref))
    for k in ref:
        assert_close(got[k], ref[k], rtol)
    return got


def snr_db(y, ref):
    y = np.asarray(y, np.float64).reshape(np.shape(ref))
    err = np.sqrt(np.mean((y - ref) ** 2))
    return np.inf if err == 0 else float(20 * np.log10(np.sqrt(np.mean(ref ** 2)) / err))


def backend_cases(*op_types):
    """ONNX's own backend node tests (the generators the ``onnx`` wheel ships) whose graph is one
    node of one of ``op_types``: ``{name: TestCase}``."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from onnx.backend.test.case.node import collect_testcases
        return {c.name: c for c in collect_testcases(None)
                if len(c.model.graph.node) == 1 and c.model.graph.node[0].op_type in op_types}


def backend_model(case, replace=None):
    """The case's model with every input but the first (the image) made an initializer, with the
    values of its first data set; ``replace`` ``{input index: array}`` substitutes some."""
    m = case.model
    inputs, _ = case.data_sets[0]
    g = m.graph
    values = {i: v for i, v in enumerate(inputs)}
    values.update(replace or {})
    inits = [numpy_helper.from_array(np.asarray(values[i], np.asarray(inputs[i]).dtype), t.name)
             for i, t in enumerate(g.input) if i > 0]
    graph = helper.make_graph(list(g.node), g.name, [g.input[0]], list(g.output), inits)
    return helper.make_model(graph, opset_imports=list(m.opset_import), ir_version=m.ir_version)


def compile_backend_case(name, case, accepted):
    """Compile a backend case (:func:`backend_model`) on its first data set: ``(x, want, graph,
    program)``, or ``None`` if it is refused with a ``CompileError`` — which fails the test for a
    case in ``accepted``, as compiling one that is not in it does."""
    from nibble.host.compiler import compile_graph
    from nibble.host.ir import CompileError
    inputs, (want,) = case.data_sets[0]
    x = np.asarray(inputs[0], np.float64)
    try:
        g, program = compile_graph(backend_model(case), x)
    except CompileError as e:
        assert name not in accepted, f"{name} refused: {e}"
        return None
    assert name in accepted, f"{name} compiled: add it to the accepted cases"
    return x, want, g, program
