"""Pass ``fold_gap``: a GlobalAveragePool in front of a Gemm folded into the Gemm's weights.

``Gemm(GAP(x))`` with ``x`` of shape (C, H, W) and weights ``W`` (N, C, 1, 1) (after
:func:`~nibble.host.passes.flatten_gemm`) is the Gemm on ``x`` itself with the kernel
``W'[:, c, y, x] = W[:, c] / (H·W)``: the same sums, no pooling layer (ResNet, MobileNetV2,
GoogLeNet). INQ then quantizes ``W'``, whose values are ``H·W`` times smaller, to its own
power-of-two grid: the quantization grid of the classifier changes (its levels are those of
``W/(H·W)``), so the quantized result differs from INQ of ``W`` followed by an exact mean.

A GlobalAveragePool on a graph output is left to :func:`~nibble.host.passes.host_tail` (the host
computes the mean of the dequantized map, ``"gap"``).
"""
import dataclasses

import numpy as np

from ..graph import Graph, chw

__all__ = ["fold_gap"]


def fold_gap(graph: Graph) -> Graph:
    """Fold every GlobalAveragePool read by Gemm nodes into their weights (see the module
    docstring); a GlobalAveragePool left without readers is removed.

    :returns: a new graph.
    """
    g = graph.copy()
    for n in [n for n in g.nodes if n.op == "GlobalAveragePool"]:
        src, t = n.inputs[0], n.outputs[0]
        c, h, w = chw(g.tensors[src].shape)
        for r in g.consumers(t):
            if r.op != "Gemm" or r.conv.w.shape[1:] != (c, 1, 1):
                continue
            wt = np.broadcast_to(r.conv.w, (r.conv.w.shape[0], c, h, w)) / (h * w)
            r.conv = dataclasses.replace(r.conv, w=np.ascontiguousarray(wt), names=[*r.conv.names, n.name])
            r.inputs = [src if x == t else x for x in r.inputs]
        if not g.consumers(t) and not g.is_output(t):
            g.remove_node(n)
    return g
