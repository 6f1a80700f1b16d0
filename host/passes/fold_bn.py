"""Pass ``fold_bn``: BatchNormalization folded into the layer before it (DESIGN §5, before INQ).

``w' = w · γ/σ`` per output channel, ``b' = (b − μ)·γ/σ + β`` (σ = √(var + ε)); the front end
gives each BatchNormalization node its ``scale = γ/σ`` and ``shift = β − μ·γ/σ``. The output
channel is axis 0 of a Conv/Gemm weight ``(Cout, Cin, Kh, Kw)`` and axis 1 of a ConvTranspose
weight ``(Cin, Cout, Kh, Kw)``.
"""
import dataclasses

import numpy as np

from ..graph import Graph
from ..ir import ACT_NONE, CompileError

__all__ = ["fold_bn", "fold_scale"]


def fold_scale(op, scale, shift, bn_name):
    """``op`` with ``scale`` and ``shift`` (float64 (Cout,)) folded into its weights and bias.

    :raises CompileError: naming the layer and the BatchNormalization node if the folded weights
        or bias are not finite (float64 overflow).
    """
    per_co = scale[None, :, None, None] if op.kind == "ConvTranspose" else scale[:, None, None, None]
    with np.errstate(all="ignore"):
        w, b = op.w * per_co, op.b * scale + shift
    if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
        raise CompileError(f"layer '{op.name}' ({op.kind}): folding BatchNormalization '{bn_name}' into it gives "
                           "weights or biases that are not finite")
    return dataclasses.replace(op, w=w, b=b, bn=None)


def _has_epilogue(op):
    return op.relu or op.prelu is not None or op.clip is not None or op.act != ACT_NONE or op.pools or \
        op.bn is not None


def _fold_graph(graph, pending):
    g = graph.copy()
    for n in [n for n in g.nodes if n.op == "BatchNormalization"]:
        t = n.inputs[0]
        p = g.producer(t)
        others = [c.name for c in g.consumers(t) if c is not n]
        if p is None or not p.is_compute or _has_epilogue(p.conv) or others or g.is_output(t):
            why = ""
            if p is not None and p.is_compute and (others or g.is_output(t)):
                readers = [f"node '{o}'" for o in others] + (["a graph output"] if g.is_output(t) else [])
                why = f" (its input '{t}' is also read by {', '.join(readers)})"
            raise CompileError(f"{n.where}: BatchNormalization must directly follow a Conv, ConvTranspose or Gemm "
                               f"to be folded{why}")
        scale, shift = n.attrs["scale"], n.attrs["shift"]
        if pending:
            p.conv.bn = (scale, shift)
        else:
            p.conv = fold_scale(p.conv, scale, shift, n.name)
        p.conv.names.append(n.name)
        g.bypass(n)
    return g


def fold_bn(x, pending=False):
    """Fold BatchNormalization (ARITHMETIC §4: before INQ, so the quantized weights are the folded ones).

    :param x: a :class:`~nibble.host.graph.Graph`: every BatchNormalization node is folded into the
        compute node that writes its input, which must have no epilogue yet and no other reader,
        and is removed (``pending=True``: the scale and shift are stored in ``ConvOp.bn`` instead,
        to be folded later). Or a list of :class:`~nibble.host.ir.ConvOp` (a chain): every
        pending ``bn`` is folded.
    :returns: a new graph (or list); the argument is not changed.
    :raises CompileError: naming the BatchNormalization node if it does not directly follow a
        Conv, ConvTranspose or Gemm whose output only it reads; naming the layer and the node if
        the folded weights or biases are not finite.
    """
    if isinstance(x, Graph):
        return _fold_graph(x, pending)
    out = []
    for op in x:
        if op.bn is None:
            out.append(op)
            continue
        bn = op.names[1] if len(op.names) > 1 else "BatchNormalization"      # [layer, bn, ...]
        out.append(fold_scale(op, *op.bn, bn))
    return out
