"""Float64 evaluation of a graph: the reference each pass is tested against (a pass must not
change what the graph computes), and the calibration's forward pass (ARITHMETIC §4.3).

Every node type the front end creates is evaluated with its ONNX semantics, so a graph can be
run before and after any pass. Values are kept in the ONNX layout of their tensor: ``(N, *shape)``.
"""
import numpy as np

from ..ir import CompileError, apply_act, maxpool_float, op_float
from .graph import chw

__all__ = ["run_graph", "run_outputs", "apply_tail"]


def _per_channel(v, x):
    """A per-channel (C,) or single-value (1,) array shaped to broadcast over ``x`` (N, C, …)."""
    v = np.asarray(v, np.float64).reshape(-1)
    return v.reshape((1, -1) + (1,) * (x.ndim - 2))


def _softmax(y):
    e = np.exp(y - y.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _node(n, xs, shape, weights):
    """The value of node ``n``'s output for its input values ``xs`` (each (N, *input shape), in
    ``n.inputs`` order); ``shape`` is the output tensor's per-image shape."""
    op, a, x = n.op, n.attrs, xs[0]
    if n.conv is not None:
        res = xs[1] if n.conv.res else None
        y = op_float(n.conv, x.reshape(len(x), *chw(x.shape[1:])), weights, res)
        return y.reshape(len(y), *shape)
    if op == "Concat":
        return np.concatenate(xs, axis=1)
    if op == "Add":
        if len(xs) == 2:
            return xs[0] + xs[1]
        return x + _per_channel(a["bias"], x)
    if op == "GlobalAveragePool":
        return x.mean(axis=(2, 3), keepdims=True)
    if op == "Relu":
        return np.maximum(x, 0)
    if op in ("PRelu", "LeakyRelu"):
        return np.where(x < 0, x * _per_channel(a["slope"], x), x)
    if op == "Clip":
        return np.clip(x, a["lo"], a["hi"])
    if op in ("Tanh", "Sigmoid"):
        from ...sim.golden import ACT_SIGMOID, ACT_TANH
        return apply_act(x, ACT_TANH if op == "Tanh" else ACT_SIGMOID)
    if op == "BatchNormalization":
        return x * _per_channel(a["scale"], x) + _per_channel(a["shift"], x)
    if op == "MaxPool":
        return maxpool_float(x, a["pool"])
    if op == "Pad":
        t, b, l, r = a["pads"]
        c0, c1 = a.get("channels", (0, 0))
        return np.pad(x, ((0, 0), (c0, c1), (t, b), (l, r)))
    if op == "Slice":
        s = a["step"]
        return x[:, :, ::s, ::s]
    if op in ("Flatten", "Reshape"):
        return x.reshape(len(x), -1)
    if op == "Transpose":
        return x.transpose(0, *(p + 1 for p in a["perm"]))
    if op == "Softmax":
        return _softmax(x)
    if op == "ArgMax":
        return x.argmax(axis=1)[:, None].astype(np.float64)
    raise CompileError(f"{n.where}: cannot be evaluated")


def run_graph(graph, inputs, weights="float", keep=None, visit=None):
    """Run ``graph`` in topological order in float64.

    Layers are :func:`nibble.host.ir.op_float` (convolution, bias, fused epilogue); every other
    node its ONNX operator (activations, BatchNormalization, max-pool, Pad, layout, Softmax …).

    :param inputs: ``{input name: array}``, each (N, *shape) (or (N, C, H, W) for a (C, H, W)
        input; an input whose first layer's taps are folded, ``Tensor.fold``, takes the model's
        (N, C, H, W) and is gathered here); a single array for a one-input graph.
    :param weights: ``"float"`` (``ConvOp.w``) or ``"inq"`` (the INQ-decoded codes).
    :param keep: tensor names whose values are returned (default: every tensor); the others are
        freed after their last reader ran.
    :param visit: called as ``visit(name, value)`` for every input and every computed tensor.
    :returns: ``{tensor name: float64 (N, *shape)}`` for the tensors in ``keep``.
    :raises CompileError: naming a missing input or a node that cannot be evaluated.
    """
    if not isinstance(inputs, dict):
        if len(graph.inputs) != 1:
            raise CompileError(f"the graph has {len(graph.inputs)} inputs; give them as a dict by name")
        inputs = {graph.inputs[0]: inputs}
    keep = set(graph.tensors) if keep is None else set(keep)
    last = {}
    for i, n in enumerate(graph.nodes):
        for t in n.inputs:
            last[t] = i
    vals = {}
    for name in graph.inputs:
        if name not in inputs:
            raise CompileError(f"no value for graph input '{name}'")
        x = np.asarray(inputs[name], np.float64)
        t = graph.tensors[name]
        if t.fold:                       # the model's input, gathered as the host does (fold_taps)
            from ..passes.fold_taps import fold_map
            vals[name] = fold_map(x.reshape(len(x), *t.fold[:3]), t.fold)
        else:
            vals[name] = x.reshape(len(x), *t.shape)
        if visit is not None:
            visit(name, vals[name])
    for i, n in enumerate(graph.nodes):
        y = _node(n, [vals[t] for t in n.inputs], graph.tensors[n.outputs[0]].shape, weights)
        vals[n.outputs[0]] = y
        if visit is not None:
            visit(n.outputs[0], y)
        for t in set(n.inputs):
            if last.get(t) == i and t not in keep:
                del vals[t]
    return {t: v for t, v in vals.items() if t in keep}


def apply_tail(value, tail):
    """The host tail ops (``Output.tail``) on a float output (N, C, …): ``gap`` (the mean over
    the spatial axes: (N, C, H, W) → (N, C)), ``softmax`` (over axis 1), ``argmax`` (over axis 1,
    kept)."""
    for op in tail:
        if op == "gap":
            value = value.reshape(len(value), value.shape[1], -1).mean(axis=2)
        elif op == "softmax":
            value = _softmax(value)
        elif op == "argmax":
            value = value.argmax(axis=1)[:, None].astype(np.float64)
        else:
            raise ValueError(f"unknown host op '{op}'")
    return value


def run_outputs(graph, inputs, weights="float"):
    """The graph's outputs as the model returns them: ``{output name: float64 array}``, each
    flattened to (N, C·H·W) if the output is (``Output.flatten``, or a vector), then its host
    ``tail`` applied (:func:`apply_tail`)."""
    vals = run_graph(graph, inputs, weights, keep=graph.output_tensors())
    res = {}
    for o in graph.outputs:
        v = vals[o.tensor]
        if o.tail[:1] == ("gap",):
            v, tail = apply_tail(v.reshape(len(v), *chw(v.shape[1:])), ("gap",)), o.tail[1:]
            res[o.name] = apply_tail(v, tail)
            continue
        if o.flatten or v.ndim == 2:
            v = v.reshape(len(v), -1)
        res[o.name] = apply_tail(v, o.tail)
    return res
