"""Pass ``flatten_gemm``: the Flatten / Reshape / Transpose between a feature map and a Gemm
folded into a permutation of the Gemm's weights (DESIGN §5: a Gemm is a conv whose kernel covers
its whole input).

The front end gives a Gemm on a vector of F features weights ``(N, F, 1, 1)``. If that vector is
a feature map ``(C, H, W)`` reordered by layout operators (``x.permute(0, 3, 2, 1)`` then a
flatten in MTCNN's RNet and ONet, or a plain Flatten), feature ``j`` of the vector is element
``idx[j]`` of the map in (C, H, W) order, where ``idx`` is ``arange(C·H·W).reshape(C, H, W)``
taken through the same operators. The Gemm then reads the map directly with the kernel
``W'[:, idx[j]] = W[:, j]``, reshaped to ``(N, C, H, W)``: the same sums, no data movement.
"""
import dataclasses

import numpy as np

from ..graph import Graph, chw
from ..ir import CompileError
from .fuse_epilogue import LAYOUT_OPS

__all__ = ["flatten_gemm"]


def _chain(g, t):
    """``(source tensor, [layout nodes from the source to t])`` walking back from tensor ``t``."""
    chain = []
    p = g.producer(t)
    while p is not None and p.op in LAYOUT_OPS:
        chain.append(p)
        t = p.inputs[0]
        p = g.producer(t)
    return t, chain[::-1]


def _index(shape, chain):
    """Index of every element of the last layout node's output in the (C, H, W) source."""
    idx = np.arange(int(np.prod(shape))).reshape(shape)
    for n in chain:
        idx = idx.transpose(n.attrs["perm"]) if n.op == "Transpose" else idx.reshape(-1)
    return idx.reshape(-1)


def flatten_gemm(graph: Graph) -> Graph:
    """Rewire every Gemm that reads a feature map through Flatten / Reshape / Transpose nodes to
    read the map itself, with its weights permuted (see the module docstring); a graph output
    written by Flatten / Reshape nodes alone becomes the map, returned flattened; layout nodes
    left without readers are removed.

    :returns: a new graph.
    :raises CompileError: naming the node: a layout node whose output is read by anything other
        than a Gemm or another layout node, or a graph output reached through a Transpose.
    """
    g = graph.copy()
    for n in [n for n in g.nodes if n.op == "Gemm"]:
        src, chain = _chain(g, n.inputs[0])
        if not chain:
            continue
        shape = chw(g.tensors[src].shape)
        idx = _index(g.tensors[src].shape, chain)
        w = n.conv.w.reshape(n.conv.w.shape[0], -1)
        if w.shape[1] != len(idx):
            raise CompileError(f"{n.where}: weights take {w.shape[1]} inputs, the feature map '{src}' has {len(idx)}")
        full = np.zeros_like(w)
        full[:, idx] = w
        n.conv = dataclasses.replace(n.conv, w=full.reshape(w.shape[0], *shape),
                                     names=[*n.conv.names, *(c.name for c in chain)])
        n.inputs = [src if x == n.inputs[0] else x for x in n.inputs]
    for o in g.outputs:
        src, chain = _chain(g, o.tensor)
        if not chain:
            continue
        if any(c.op == "Transpose" for c in chain):
            bad = next(c for c in chain if c.op == "Transpose")
            raise CompileError(f"{bad.where}: a Transpose is supported only in front of a Gemm, not in front of the "
                               f"graph output '{o.name}'")
        o.tensor, o.flatten = src, True
    changed = True
    while changed:
        changed = False
        for n in reversed(g.nodes):
            if n.op in LAYOUT_OPS and not g.consumers(n.outputs[0]) and not g.is_output(n.outputs[0]):
                g.remove_node(n)
                changed = True
                break
    for n in g.nodes:
        if n.op in LAYOUT_OPS:
            readers = [c.where for c in g.consumers(n.outputs[0])]
            raise CompileError(f"{n.where}: a {n.op} is supported only in front of a Gemm (or a graph output); its "
                               f"output is read by {', '.join(readers)}")
    return g
