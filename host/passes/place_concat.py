"""Pass ``place_concat``: a Concat over the channels as placement (DESIGN §5, ``LayerPlan.dst_off``).

Each input of a Concat (a *branch*) is written by its own layer straight into its words of every
pixel of the concatenated tensor, so the Concat itself moves no data. This pass makes every
branch such a layer: a branch that is not the output of a Conv read only by this Concat (a graph
input, a tensor with other readers, a graph output, the same tensor twice, a layer with a
residual Add, whose residual must be laid out as a dense output) is first copied by an exact
identity layer (:mod:`nibble.host.passes.identity`). The Concat node stays in the graph:
calibration gives all branches the Concat's exponent, :func:`~nibble.host.passes.allocate`
places the branches inside the concatenated map and :func:`~nibble.host.passes.lower.lower`
gives each branch layer its ``dst_off`` and scatters the filters of the layers that read the
concatenated map onto its physical channels.
"""
from ..graph import Graph
from ..ir import ACT_NONE, CompileError
from .identity import insert_copy

__all__ = ["place_concat", "concat_branches"]


def _placeable(g, n, t):
    p = g.producer(t)
    return (p is not None and p.op == "Conv" and not p.conv.res and p.conv.act == ACT_NONE
            and g.consumers(t) == [n] and not g.is_output(t) and n.inputs.count(t) == 1)


def concat_branches(g, t):
    """The branch tensors of tensor ``t`` if a Concat node writes it, else ``None``."""
    p = g.producer(t)
    return list(p.inputs) if p is not None and p.op == "Concat" else None


def place_concat(graph: Graph) -> Graph:
    """Make every input of every Concat node a layer of its own that only the Concat reads (see the
    module docstring).

    :returns: a new graph.
    :raises CompileError: naming the Concat node if its output is a graph output or read by
        another Concat (a concatenated map is returned or nested only through a copy, not
        supported).
    """
    g = graph.copy()
    for n in [n for n in g.nodes if n.op == "Concat"]:
        for k, t in enumerate(list(n.inputs)):
            if not _placeable(g, n, t):
                copy = insert_copy(g, t, [], f"{n.name}/copy{k}", n.name)
                n.inputs[k] = copy.outputs[0]
                g.nodes.remove(copy)
                g.nodes.insert(g.nodes.index(n), copy)
        if g.is_output(n.outputs[0]) or any(c.op == "Concat" for c in g.consumers(n.outputs[0])):
            raise CompileError(f"{n.where}: a concatenated map is supported only as the input of layers (not as a "
                               "graph output or a Concat input)")
    return g
