"""Pass ``fold_pad``: a zero Pad in front of Conv layers folded into their padding (DESIGN §6).

``Conv(Pad(x, (t, b, l, r)), pad p) = Conv(x, pad p + (t, b, l, r))``: both pad with zeros, so the
result is exact. This is how ``torch.nn.functional.pad`` and ``nn.ZeroPad2d`` before a conv are
exported.
"""
import dataclasses

from ..graph import Graph
from ..ir import CompileError

__all__ = ["fold_pad"]


def fold_pad(graph: Graph) -> Graph:
    """Fold every Pad node (zero padding of rows and columns, checked by the front end) into the
    padding of the Conv nodes that read it, and remove it; Pads in front of Pads add up.

    :returns: a new graph.
    :raises CompileError: naming the Pad node if its output is read by anything but Conv layers
        (a ConvTranspose, Gemm, MaxPool, activation …) or is a graph output.
    """
    g = graph.copy()
    for n in [n for n in g.nodes if n.op == "Pad"]:
        _fold_one(g, n)
    return g


def _fold_one(g, n):
    t = n.outputs[0]
    readers = g.consumers(t)
    bad = [r for r in readers if r.op not in ("Conv", "Pad")]
    if bad or g.is_output(t) or not readers:
        what = ", ".join(r.where for r in bad) or "a graph output"
        raise CompileError(f"{n.where}: zero padding is supported only in front of a Conv (folded into its "
                           f"padding); its output '{t}' is read by {what}")
    pt, pb, pl, pr = n.attrs["pads"]
    src = n.inputs[0]
    for r in readers:
        if r.op == "Pad":
            a, b, c, d = r.attrs["pads"]
            r.attrs["pads"] = (a + pt, b + pb, c + pl, d + pr)
        else:
            a, b, c, d = r.conv.pad
            r.conv = dataclasses.replace(r.conv, pad=(a + pt, b + pb, c + pl, d + pr),
                                         names=[*r.conv.names, n.name])
        r.inputs = [src if x == t else x for x in r.inputs]
    g.remove_node(n)
