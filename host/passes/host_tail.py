"""Pass ``host_tail``: Softmax (and the other host operators of a program) on a graph output
become the output's declared host ops (DESIGN §5: tail ops the host runs and the program
declares; ``nibble.host.program.TensorSpec.tail``).

The device returns the int8 logits; the host dequantizes them and applies the tail in order
(``gap``: the mean over the rows and columns of a (C, H, W) map, giving (C,); the others over
the channel axis (the front end accepts only a Softmax over axis 1). A host op anywhere but on a
graph output would need its float result on the device: a :class:`CompileError`.
"""
from ..graph import Graph
from ..ir import CompileError
from ..program import HOST_OPS

__all__ = ["host_tail", "TAIL_OPS"]

#: ONNX operators → host op names (the ones ``nibble.host.program.HOST_OPS`` has are accepted).
TAIL_OPS = {"Softmax": "softmax", "ArgMax": "argmax", "GlobalAveragePool": "gap"}


def host_tail(graph: Graph) -> Graph:
    """Turn the host operators at the graph outputs into ``Output.tail`` entries and remove them.

    An operator is peeled off an output while the output is the operator's result, no node
    reads that result and no other output is it; the output then names the operator's input.

    :returns: a new graph.
    :raises CompileError: naming the node: a Softmax/ArgMax anywhere else (its result read by a
        node, or by two outputs), or one the program format does not run on the host.
    """
    g = graph.copy()
    for o in g.outputs:
        while True:
            p = g.producer(o.tensor)
            if p is None or p.op not in TAIL_OPS:
                break
            if TAIL_OPS[p.op] not in HOST_OPS:
                raise CompileError(f"{p.where}: {p.op} is not an operator the host runs after an output (those "
                                   f"are: {', '.join(HOST_OPS)})")
            if g.consumers(o.tensor) or sum(x.tensor == o.tensor for x in g.outputs) > 1:
                break
            o.tail = (TAIL_OPS[p.op], *o.tail)
            t = o.tensor
            o.tensor = p.inputs[0]
            g.remove_node(p)
            if o.name == t and t not in g.tensors and sum(x.tensor == o.tensor for x in g.outputs) == 1 \
                    and o.tensor not in g.inputs:
                g.rename_tensor(o.tensor, o.name)     # the tensor keeps the output's name
    for n in g.nodes:
        if n.op in TAIL_OPS:
            readers = [c.where for c in g.consumers(n.outputs[0])]
            readers += [f"graph output '{x.name}'" for x in g.outputs if x.tensor == n.outputs[0]]
            raise CompileError(f"{n.where}: {n.op} is supported only on a graph output, run by the host after "
                               f"dequantization; its output '{n.outputs[0]}' is read by {', '.join(readers)}")
    return g
