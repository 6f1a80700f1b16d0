"""Pass ``inq``: post-training INQ, every layer's weights to 4-bit power-of-two codes with one
``n2`` per layer (ARITHMETIC §4.1–4.2)."""
import dataclasses

import numpy as np

from ...sim.golden import inq_quantize
from ..graph import Graph
from ..ir import CompileError

__all__ = ["inq", "inq_op"]


def inq_op(op):
    """``op`` with ``codes`` (uint8 0..15, the layout of ``w``: ``(Cin, Cout, Kh, Kw)`` for a
    ConvTranspose) and ``n2`` set.

    :raises CompileError: naming the layer if its weights are all zero or not finite.
    """
    if not np.all(np.isfinite(op.w)):
        raise CompileError(f"layer '{op.name}': weights are not finite")
    try:
        codes, n2 = inq_quantize(op.w)
    except ValueError as e:
        raise CompileError(f"layer '{op.name}': {e}") from None
    return dataclasses.replace(op, codes=codes, n2=n2)


def inq(x):
    """Quantize the weights of every layer: of every compute node of a
    :class:`~nibble.host.graph.Graph` (returns a new graph), or of a list of
    :class:`~nibble.host.ir.ConvOp` (returns a new list).

    :raises CompileError: for a layer whose weights are all zero or not finite (:func:`inq_op`).
    """
    if isinstance(x, Graph):
        g = x.copy()
        for n in g.compute_nodes():
            n.conv = inq_op(n.conv)
        return g
    return [inq_op(op) for op in x]
