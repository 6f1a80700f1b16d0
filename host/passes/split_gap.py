"""Pass ``split_gap``: a GAP-folded Gemm whose filter does not fit the filter cache, run as a
depthwise sum and a 1×1 Gemm.

:func:`~nibble.host.passes.fold_gap` makes ``Gemm(GAP(x))`` one layer with the kernel
``W/(H·W)`` over the whole (C, H, W) map: ``H·W·⌈C/vc⌉`` filter-cache words per output channel
(ResNet-18 at 224²: 7·7·32 = 1,568, against 512 in the default configuration). Because that
kernel is the same at every position, ``Σ_{c,y,x} W[:, c]/(H·W)·x[c, y, x] = Σ_c W[:, c]/(H·W) ·
s[c]`` with ``s[c] = Σ_{y,x} x[c, y, x]``: this pass writes it as a depthwise Conv with all-one
``H × W`` kernels (``s``, one filter word per channel block; a weight of 1 is the INQ level
2⁰, exact) followed by the Gemm with the ``(N, C, 1, 1)`` kernel ``W/(H·W)``. The sum map is
requantized to int8 with its own calibrated exponent (as a GAP output would be).
"""
import dataclasses

import numpy as np

from ...hw.config import EngineConfig
from ..graph import Graph, Node
from ..ir import ConvOp

__all__ = ["split_gap"]


def split_gap(graph: Graph, config: EngineConfig) -> Graph:
    """Split every Gemm whose kernel is constant over its (H, W) positions (a folded GAP) and
    whose filter, ``H·W·⌈C/vc⌉`` words, exceeds ``config.filter_depth`` (see the module docstring).

    :returns: a new graph (the same graph's copy when nothing is split).
    """
    g = graph.copy()
    for n in [n for n in g.nodes if n.op == "Gemm"]:
        w = n.conv.w
        cout, c, h, wd = w.shape
        if h * wd == 1 or h * wd * -(-c // config.vc) <= config.filter_depth:
            continue
        if not np.array_equal(w, np.broadcast_to(w[:, :, :1, :1], w.shape)):
            continue                       # not a folded GAP: check_fits names the layer
        src = n.inputs[0]
        name = f"{n.name}/gap_sum"
        ones = np.zeros((c, c, h, wd))
        ones[np.arange(c), np.arange(c)] = 1.0
        gap_names = n.conv.names[-1:] if len(n.conv.names) > 1 else [name]    # fold_gap appends the GAP
        sum_op = ConvOp(name=name, w=ones, b=np.zeros(c), groups=c, names=gap_names)
        node = Node(name=name, op="Conv", inputs=[src], outputs=[name], conv=sum_op)
        g.add_node(node, [(c, 1, 1)])
        g.nodes.remove(node)
        g.nodes.insert(g.nodes.index(n), node)
        n.conv = dataclasses.replace(n.conv, w=np.ascontiguousarray(w[:, :, :1, :1]),
                                     names=[x for x in n.conv.names if x not in gap_names])
        n.inputs = [name if x == src else x for x in n.inputs]
    return g
