"""Pass ``fuse_add``: the Add of two feature tensors (a residual connection) fused into the Conv
that produces one of them (DESIGN §5; the engine's residual reader, ``LayerPlan.res``).

``Add(conv(x), r)`` becomes ``conv(x) + r``: the layer adds ``r`` after its bias and before its
activation (``act(conv(x) + b + r)``, ARITHMETIC §4.5), so a ReLU after the Add is fused after
it by :func:`~nibble.host.passes.fuse_epilogue` (ResNet's ``relu(bn(conv(h)) + x)``). The Conv
node reads ``r`` as its second input; it is moved to the Add's place in the node order, so ``r``
is written before it runs and stays live until it ran (:func:`~nibble.host.passes.allocate`).
Calibration gives the Conv's output the Add's exponent (it is the Add's output); ``r`` keeps its
own (``LayerPlan.res_q``).

The input taking the Add is the first of the two whose producer is a Conv (not a ConvTranspose
or Gemm) with no epilogue yet (no activation, clip, pool or residual) whose output has no other
reader and is not a graph output. The other input ``r`` must be laid out as the output (same
words per pixel, a dense map): a graph input or a Concat's output is first copied by an identity
layer (:mod:`nibble.host.passes.identity`). When neither input can take the Add, an identity
layer of the first input takes it (exact: ``identity(a) + b``).
"""
import dataclasses

from ..graph import Graph
from ..ir import ACT_NONE, CompileError
from .identity import insert_copy

__all__ = ["fuse_add"]


def _can_take(g, n, t):
    """True if the producer of tensor ``t`` can take the Add node ``n``."""
    p = g.producer(t)
    if p is None or p.op != "Conv":
        return False
    op = p.conv
    if op.relu or op.prelu is not None or op.clip is not None or op.act != ACT_NONE or op.pools or op.res \
            or op.bn is not None:
        return False
    return g.consumers(t) == [n] and not g.is_output(t) and n.inputs.count(t) == 1


def _laid_out(g, t):
    """True if tensor ``t`` will be a layer's own dense output (the layout a residual must have):
    not a graph input nor a Concat's output (the other producers are layers, or epilogues and
    Adds that the passes fuse into one)."""
    p = g.producer(t)
    return p is not None and p.op != "Concat"


def fuse_add(graph: Graph) -> Graph:
    """Fuse every Add of two feature tensors into the Conv producing one of them (see the module
    docstring).

    :returns: a new graph without two-input Add nodes.
    :raises CompileError: naming the Add node if its inputs have different shapes.
    """
    g = graph.copy()
    while True:
        adds = [n for n in g.nodes if n.op == "Add" and len(n.inputs) == 2]
        if not adds:
            return g
        n = adds[0]
        a, b = n.inputs
        if g.tensors[a].shape != g.tensors[b].shape:
            raise CompileError(f"{n.where}: adds tensors of shapes {g.tensors[a].shape} and {g.tensors[b].shape}")
        takers = [t for t in (a, b) if _can_take(g, n, t)]
        if not takers:
            insert_copy(g, a, [n], f"{n.name}/copy", n.name)
            continue
        t = takers[0]
        r = b if t == a else a
        if not _laid_out(g, r):
            insert_copy(g, r, [n], f"{n.name}/residual_copy", n.name)
            r = n.inputs[1] if t == a else n.inputs[0]
        p = g.producer(t)
        p.conv = dataclasses.replace(p.conv, res=True, names=[*p.conv.names, n.name])
        p.inputs = [p.inputs[0], r]
        g.nodes.remove(p)
        g.nodes.insert(g.nodes.index(n), p)
        out = n.outputs[0]
        g.replace_uses(out, t)
        for o in g.outputs:
            if o.tensor == out:
                o.tensor = t
        g.remove_node(n)
