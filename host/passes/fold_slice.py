"""Pass ``fold_slice``: ResNet's option-A shortcut ``F.pad(x[:, :, ::s, ::s], channels)`` (a
``Slice`` with steps then a ``Pad`` of the channel axis, He et al. 2016 §4.2) as one layer.

* A Slice ``x[:, :, ::s, ::s]`` becomes an identity 1×1 stride-``s`` Conv
  (:func:`~nibble.host.passes.identity.identity_op`): output pixel ``(y, x)`` is input pixel
  ``(s·y, s·x)``, exact.
* A Pad of the channel axis (``c0`` zero channels before, ``c1`` after, no spatial padding) whose
  input is a Conv's output read by nothing else becomes ``c0 + c1`` more output channels of that
  Conv with zero weights and bias (exact: the output stage maps 0 to 0 — there is no epilogue
  yet when this pass runs). The Conv becomes dense (``groups = 1``).
"""
import dataclasses

import numpy as np

from ..graph import Graph
from ..ir import CompileError
from .identity import identity_op

__all__ = ["fold_slice"]


def fold_slice(graph: Graph) -> Graph:
    """Replace every Slice node by an identity strided Conv and fold every channel Pad into the
    Conv before it (see the module docstring).

    :returns: a new graph.
    :raises CompileError: naming the Pad node: channel padding after anything but a Conv whose
        output only the Pad reads, or channel padding together with spatial padding.
    """
    g = graph.copy()
    for n in [n for n in g.nodes if n.op == "Slice"]:
        c = g.tensors[n.inputs[0]].shape[0]
        n.op, n.conv, n.attrs = "Conv", identity_op(n.name, c, n.attrs["step"]), {}
    for n in [n for n in g.nodes if n.op == "Pad" and any(n.attrs.get("channels", (0, 0)))]:
        c0, c1 = n.attrs["channels"]
        t = n.inputs[0]
        p = g.producer(t)
        if any(n.attrs["pads"]):
            raise CompileError(f"{n.where}: padding the channels and the rows or columns at once is not supported")
        if p is None or p.op != "Conv" or g.consumers(t) != [n] or g.is_output(t):
            raise CompileError(f"{n.where}: zero channels are supported only after a Conv whose output nothing else "
                               "reads (they become zero output channels of that Conv)")
        op = p.conv
        w = np.zeros((op.cout + c0 + c1,) + op.w.shape[1:])
        w[c0:c0 + op.cout] = op.w
        b = np.zeros(op.cout + c0 + c1)
        b[c0:c0 + op.cout] = op.b
        bn = None if op.bn is None else tuple(np.pad(v, (c0, c1), constant_values=fill)
                                              for v, fill in zip(op.bn, (1.0, 0.0)))
        p.conv = dataclasses.replace(op, w=w, b=b, groups=1, bn=bn, names=[*op.names, n.name])
        g.tensors[t].shape = g.tensors[n.outputs[0]].shape
        g.bypass(n)
    return g
