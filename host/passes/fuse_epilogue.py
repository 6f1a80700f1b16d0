"""Pass ``fuse_epilogue``: bias, activations and max-pool fused into the layer that produces
their input (DESIGN §5; the output stage's order, ARITHMETIC §4.5):

    bias (+ Add of a per-channel constant) → ReLU or PReLU/LeakyReLU → Clip → tanh/sigmoid → max-pool

A layer takes one activation (a repeated ReLU is one ReLU); a Clip may follow the ReLU or PReLU
(ReLU6 = ReLU + Clip(0, 6), or Clip(0, 6) alone); Clip then ReLU is ``Clip(max(lo, 0), max(hi, 0))``
with ReLU. An element-wise, monotonic non-decreasing activation after the max-pool commutes with
it (``max(f(a), f(b)) = f(max(a, b))``: ReLU, Clip, tanh, sigmoid, a PReLU whose slopes are all
≥ 0), so it is fused too; one with the same value for every channel also commutes with a
Flatten / Reshape / Transpose in front of a Gemm and is moved before it.

A layer is fused with an epilogue only if the layer's output has no other reader (another node
or a graph output): the epilogue changes the tensor all of them read. A MaxPool that cannot be
fused so (on the network input, on a tensor other nodes also read, after a Concat) gets a layer
of its own: an exact identity copy (:mod:`nibble.host.passes.identity`) with the pool fused
(GoogLeNet's inception branch ``MaxPool 3×3 s1 → 1×1 conv``).
"""
import dataclasses

import numpy as np

from ..graph import Graph
from ..ir import ACT_NAMES, ACT_NONE, ACT_SIGMOID, ACT_TANH, CompileError
from .identity import insert_copy

__all__ = ["fuse_epilogue", "EPILOGUE_OPS", "LAYOUT_OPS"]

#: Operators this pass fuses into the layer before them.
EPILOGUE_OPS = ("Add", "Relu", "PRelu", "LeakyRelu", "Clip", "Tanh", "Sigmoid", "MaxPool")
#: Layout operators (in front of a Gemm, :mod:`nibble.host.passes.flatten_gemm`).
LAYOUT_OPS = ("Flatten", "Reshape", "Transpose")
_ACT = {"Tanh": ACT_TANH, "Sigmoid": ACT_SIGMOID}


def _uniform(n):
    """True if activation node ``n`` computes the same function on every channel."""
    if n.op in ("Relu", "Tanh", "Sigmoid", "Clip", "LeakyRelu"):
        return True
    s = np.asarray(n.attrs.get("slope", [0.0]))
    return n.op in ("PRelu", "Add") and s.size == 1


def _monotonic(n):
    if n.op in ("PRelu", "LeakyRelu"):
        return bool(np.all(np.asarray(n.attrs["slope"]) >= 0))
    return n.op in ("Relu", "Clip", "Tanh", "Sigmoid")


def _activation_name(op):
    """The activation a layer already has, for messages (``None`` if it has none)."""
    if op.relu:
        return "Relu"
    if op.prelu is not None:
        return "PRelu"
    if op.act != ACT_NONE:
        return ACT_NAMES[op.act].capitalize()
    return None


def _fuse(g, n, p):
    """Fuse node ``n`` into compute node ``p`` (its producer) or raise naming ``n``."""
    op, where, layer = p.conv, n.where, p.conv.name
    prev = _activation_name(op)
    one = f"{where}: layer '{layer}' already has the activation {{}}; only one activation per layer is supported"
    if n.op == "Add":
        if prev or op.clip is not None or op.pools or op.bn is not None:
            raise CompileError(f"{where}: a bias added after the activation, max-pool or BatchNormalization of layer "
                               f"'{layer}' is not supported by the engine yet")
        with np.errstate(all="ignore"):
            b = op.b + np.broadcast_to(n.attrs["bias"], op.b.shape)
        if not np.all(np.isfinite(b)):
            raise CompileError(f"{where}: adding it to the bias of layer '{layer}' overflows")
        return dataclasses.replace(op, b=b)
    if op.pools and not _monotonic(n) and n.op != "MaxPool":
        raise CompileError(f"{where}: a {n.op} with a negative slope after the max-pool of layer '{layer}' is not "
                           "supported (it does not commute with the max)")
    if n.op == "Relu":
        if prev not in (None, "Relu"):
            raise CompileError(one.format(prev))
        clip = op.clip if op.clip is None else (max(op.clip[0], 0.0), max(op.clip[1], 0.0))
        return dataclasses.replace(op, relu=True, clip=clip)
    if n.op in ("PRelu", "LeakyRelu"):
        if prev is not None:
            raise CompileError(one.format(prev))
        if op.clip is not None:
            raise CompileError(one.format("Clip"))
        s = np.asarray(n.attrs["slope"], np.float64)
        return dataclasses.replace(op, prelu=np.broadcast_to(s, (op.cout,)).copy())
    if n.op == "Clip":
        if op.act != ACT_NONE:
            raise CompileError(one.format(prev))
        lo, hi = float(n.attrs["lo"]), float(n.attrs["hi"])
        if op.clip is not None:       # clip(clip(x, a, b), lo, hi) = clip(x, clip(a, lo, hi), clip(b, lo, hi))
            a, b = op.clip
            lo, hi = min(max(a, lo), hi), min(max(b, lo), hi)
        return dataclasses.replace(op, clip=(lo, hi))
    if n.op in _ACT:
        if prev is not None:
            raise CompileError(one.format(prev))
        if op.clip is not None:
            raise CompileError(one.format("Clip"))
        return dataclasses.replace(op, act=_ACT[n.op])
    if n.op == "MaxPool":
        if op.kind == "ConvTranspose":
            raise CompileError(f"{where}: max-pool after a transposed convolution (layer '{layer}') is not supported")
        if op.pools:
            raise CompileError(f"{where}: max-pool must follow a Conv or ConvTranspose (one pool per layer)")
        return dataclasses.replace(op, pool=tuple(n.attrs["pool"]))
    raise AssertionError(n.op)


def _hoist(g, n, p):
    """Move uniform activation ``n`` in front of layout node ``p`` (``x → p → a → n → y`` becomes
    ``x → n → a → p → y``)."""
    x, a, y = p.inputs[0], p.outputs[0], n.outputs[0]
    shape_a = g.tensors[a].shape
    n.inputs, n.outputs, p.inputs, p.outputs = [x], [a], [a], [y]
    g.tensors[a].shape, g.tensors[a].producer = g.tensors[x].shape, n.name
    g.tensors[y].shape, g.tensors[y].producer = shape_a, p.name
    i, j = g.nodes.index(p), g.nodes.index(n)
    g.nodes[i], g.nodes[j] = n, p


def _step(g):
    """Fuse or move the first node that can be; False when none is left."""
    for n in g.nodes:
        if n.op not in EPILOGUE_OPS or (n.op == "Add" and len(n.inputs) != 1):
            continue
        t = n.inputs[0]
        p = g.producer(t)
        others = [c for c in g.consumers(t) if c is not n]
        alone = not others and not g.is_output(t)
        if n.op == "MaxPool" and (p is None or not alone or not (p.is_compute or p.op in LAYOUT_OPS)):
            insert_copy(g, t, [n], f"{n.name}/copy", n.name)     # a layer of its own for the pool
            return True
        if p is None:
            raise CompileError(f"{n.where}: {n.op} on the network input is not supported")
        if p.op in LAYOUT_OPS:
            if not (_uniform(n) and n.op != "MaxPool" and alone):
                raise CompileError(f"{n.where}: {n.op} after the {p.op} '{p.name}' is not supported (the engine fuses "
                                   "it into the layer before the reshaping)")
            _hoist(g, n, p)
            return True
        if not p.is_compute:
            if n.op == "MaxPool":
                raise CompileError(f"{n.where}: max-pool must follow a Conv or ConvTranspose (one pool per layer)")
            raise CompileError(f"{n.where}: must follow a Conv, ConvTranspose or Gemm (or an activation fused into "
                               f"one) to be fused; it reads the output of {p.where}")
        if not alone:
            readers = [c.where for c in others] + (["a graph output"] if g.is_output(t) else [])
            raise CompileError(f"{n.where}: cannot be fused into layer '{p.name}': its output '{t}' is also read by "
                               f"{', '.join(readers)} (an epilogue changes the tensor every reader sees)")
        p.conv = _fuse(g, n, p)
        p.conv.names.append(n.name)
        g.tensors[t].shape = g.tensors[n.outputs[0]].shape         # a max-pool's output size
        g.bypass(n)
        return True
    return False


def fuse_epilogue(graph: Graph) -> Graph:
    """Fuse every Add (per-channel constant), Relu, PRelu, LeakyRelu, Clip, Tanh, Sigmoid and
    MaxPool node into the compute node whose output it reads (see the module docstring).

    :returns: a new graph without those nodes.
    :raises CompileError: naming the node: on the network input, after a node that is not a layer,
        a second activation (``layer '…' already has the activation …``), a max-pool after a
        transposed convolution or a second max-pool, a bias after an activation, a PReLU with a
        negative slope after a max-pool, a per-channel activation after a Flatten/Reshape/Transpose,
        or a layer whose output has other readers.
    """
    g = graph.copy()
    while _step(g):
        pass
    return g
