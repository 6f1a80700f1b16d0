"""Identity layers: the exact copy of a feature tensor as an engine layer, used where a pass needs
a tensor written by a layer of its own (a residual or Concat branch in the output's layout, a
max-pool of a tensor other layers also read, ResNet's subsampling shortcut).

A copy is a 1×1 depthwise Conv (``groups = C``) with weights 1 and bias 0. It is exact on the
engine: weight 1 is the INQ code ``E = 7`` at ``n2 = −6`` (``2^(n2+E−1) = 1``,
:func:`nibble.sim.golden.inq_quantize`), so the accumulator is ``64·V`` and calibration gives the
copy the exponent of its input (the same values, or for a max-pool copy a maximum that is not
larger: ``q_out ≥ q_in``), so the requantization ``round(64·V·2^(q_out−q_in)/64)`` with
``sh = q_in − n2 − q_out = 6 + q_in − q_out`` is an exact left shift.
"""
import numpy as np

from ..graph import Node, chw
from ..ir import ConvOp

__all__ = ["identity_op", "insert_copy"]


def identity_op(name, channels, stride=1, source=None):
    """The float :class:`~nibble.host.ir.ConvOp` of a copy of ``channels`` channels: 1×1,
    ``stride`` (a stride-s copy is ``x[:, :, ::s, ::s]``), depthwise (``groups = channels``),
    weights (C, C, 1, 1) the identity, bias 0; ``names`` the ONNX node it stands for (``source``)."""
    return ConvOp(name=name, w=np.eye(channels).reshape(channels, channels, 1, 1), b=np.zeros(channels),
                  stride=stride, groups=channels, names=[source or name])


def insert_copy(g, tensor, readers, name, source=None):
    """Insert a copy of ``tensor`` (a Conv node ``name`` writing ``name:out``) in front of the
    nodes ``readers`` (which then read the copy), right before the first of them.

    :returns: the new node.
    """
    c = chw(g.tensors[tensor].shape)[0]
    out = f"{name}:out"
    node = Node(name=name, op="Conv", inputs=[tensor], outputs=[out], conv=identity_op(name, c, 1, source))
    at = min(g.nodes.index(r) for r in readers) if readers else len(g.nodes)
    g.add_tensor(out, g.tensors[tensor].shape, name)
    g.nodes.insert(at, node)
    for r in readers:
        r.inputs = [out if x == tensor else x for x in r.inputs]
    return node
