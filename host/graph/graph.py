"""The compiler's graph IR: a DAG of named tensors and nodes (DESIGN §6).

* A :class:`Tensor` has a name, a per-image shape (the ONNX shape without the batch axis:
  ``(C, H, W)`` for a feature map, ``(F,)`` for a vector, or the permuted 3-D shape a Transpose
  gives) and its producer (the node that writes it, ``None`` for a graph input). Passes annotate
  it: ``q`` (feature exponent, ARITHMETIC §4.3), ``cb``, ``base``, ``words``, ``row``, ``pix``
  (feature-memory view, :mod:`nibble.host.passes.allocate`).
* A :class:`Node` has a name (unique), an operator type, the names of the tensors it reads and
  writes, attributes (operator parameters, already checked by the front end), and — for a compute
  node (``Conv``, ``ConvTranspose``, ``Gemm``) — the layer it runs, a :class:`~nibble.host.ir.ConvOp`
  with its fused epilogue.
* The graph has several inputs (tensor names) and several outputs (:class:`Output`: the model's
  output name, the tensor it is, and the host tail ops applied after dequantization, e.g.
  ``("softmax",)``).

``Graph.nodes`` is kept in a topological order (producers before consumers); passes
(``host/passes/``, each a function ``Graph → Graph``) edit a copy with :meth:`Graph.copy`,
:meth:`Graph.remove_node`, :meth:`Graph.replace_uses`, :meth:`Graph.rename_tensor`, and
:meth:`Graph.validate` checks the DAG invariants.
"""
import dataclasses

from ..ir import CompileError, ConvOp

__all__ = ["Tensor", "Node", "Output", "Graph", "COMPUTE_OPS", "chw"]

#: Operator types of compute nodes: each carries a :class:`ConvOp` and becomes engine descriptors.
COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm")


def chw(shape):
    """A per-image shape as the engine's ``(C, H, W)``: a vector ``(F,)`` is ``(F, 1, 1)``.

    :raises ValueError: for a shape that is neither 1-D nor 3-D.
    """
    shape = tuple(int(v) for v in shape)
    if len(shape) == 1:
        return (shape[0], 1, 1)
    if len(shape) == 3:
        return shape
    raise ValueError(f"shape {shape} is not (C, H, W) or (F,)")


@dataclasses.dataclass
class Tensor:
    """A named tensor. ``shape``: per-image dims (ints); ``producer``: node name or ``None``.

    Annotations (``None`` until a pass sets them): ``q`` (int exponent, value = V·2^−q),
    ``cb`` (feature words per pixel), ``base`` (feature-memory word of pixel (0, 0)), ``words``
    (words the map occupies), ``row``/``pix`` (words between rows/pixels); ``fold``: a graph
    input whose first layer's taps are folded into channels on the host
    (:func:`nibble.host.passes.fold_taps.fold_taps`; ``shape`` is then the folded map's).
    """
    name: str
    shape: tuple
    producer: str = None
    q: int = None
    cb: int = None
    base: int = None
    words: int = None
    row: int = None
    pix: int = None
    fold: tuple = ()

    @property
    def chw(self):
        """:func:`chw` of the shape."""
        return chw(self.shape)


@dataclasses.dataclass
class Node:
    """A node: ``op`` reads ``inputs`` and writes ``outputs`` (tensor names; constants are folded
    into ``attrs`` or ``conv`` by the front end, so only feature tensors appear here).
    ``conv``: the :class:`ConvOp` of a compute node, else ``None``."""
    name: str
    op: str
    inputs: list
    outputs: list
    attrs: dict = dataclasses.field(default_factory=dict)
    conv: ConvOp = None

    @property
    def is_compute(self):
        return self.op in COMPUTE_OPS

    @property
    def where(self):
        """How messages name the node: ``node 'name' (Op)``."""
        return f"node '{self.name}' ({self.op})"

    @property
    def layer(self):
        """How messages name a compute node's layer: ``layer 'name' (Kind)``."""
        return f"layer '{self.name}' ({self.conv.kind if self.conv is not None else self.op})"


@dataclasses.dataclass
class Output:
    """A graph output: the model's output ``name``, the ``tensor`` it is, the host ``tail`` ops
    applied in order after dequantization (``("softmax",)``: softmax over the channel axis), and
    ``flatten``: the model returns the (C, H, W) map flattened to (N, C·H·W) (a vector tensor is
    always returned as (N, F))."""
    name: str
    tensor: str
    tail: tuple = ()
    flatten: bool = False


def _copy_conv(op):
    return None if op is None else dataclasses.replace(op, names=list(op.names))


class Graph:
    """A DAG of :class:`Tensor` and :class:`Node` (see the module docstring).

    :ivar tensors: ``{name: Tensor}``. :ivar nodes: list of :class:`Node` in topological order.
    :ivar inputs: graph input tensor names, in the model's order. :ivar outputs: list of :class:`Output`.
    :ivar name: the model's name (for messages).
    """

    def __init__(self, name="model"):
        self.name = name
        self.tensors = {}
        self.nodes = []
        self.inputs = []
        self.outputs = []

    # ----------------------------------------------------------------------------- building
    def add_tensor(self, name, shape, producer=None):
        """Add tensor ``name`` with per-image ``shape``; returns it.

        :raises CompileError: if a tensor of that name exists.
        """
        if name in self.tensors:
            raise CompileError(f"tensor '{name}' is written twice")
        t = Tensor(name=name, shape=tuple(int(v) for v in shape), producer=producer)
        self.tensors[name] = t
        return t

    def add_input(self, name, shape):
        """Add a graph input tensor."""
        self.add_tensor(name, shape)
        self.inputs.append(name)
        return self.tensors[name]

    def add_node(self, node, shapes):
        """Append ``node`` (its inputs must exist) and create its output tensors with ``shapes``.

        :raises CompileError: if the name is taken, an input does not exist or an output exists.
        """
        if any(n.name == node.name for n in self.nodes):
            raise CompileError(f"two nodes are named '{node.name}'")
        for t in node.inputs:
            if t not in self.tensors:
                raise CompileError(f"{node.where}: reads tensor '{t}', which no node writes")
        for t, s in zip(node.outputs, shapes):
            self.add_tensor(t, s, node.name)
        self.nodes.append(node)
        return node

    def add_output(self, name, tensor, tail=()):
        self.outputs.append(Output(name=name, tensor=tensor, tail=tuple(tail)))

    def copy(self):
        """A copy whose tensors, nodes and ConvOps can be edited without touching this graph
        (weight arrays are shared: passes replace them, never write into them)."""
        g = Graph(self.name)
        g.tensors = {k: dataclasses.replace(t) for k, t in self.tensors.items()}
        g.nodes = [dataclasses.replace(n, inputs=list(n.inputs), outputs=list(n.outputs), attrs=dict(n.attrs),
                                       conv=_copy_conv(n.conv)) for n in self.nodes]
        g.inputs = list(self.inputs)
        g.outputs = [dataclasses.replace(o) for o in self.outputs]
        return g

    # ----------------------------------------------------------------------------- queries
    def node(self, name):
        """The node named ``name``. :raises KeyError: if there is none."""
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def producer(self, tensor):
        """The node that writes ``tensor``, or ``None`` (a graph input)."""
        p = self.tensors[tensor].producer
        return None if p is None else self.node(p)

    def consumers(self, tensor):
        """The nodes that read ``tensor``, in topological order (a node reading it twice once)."""
        return [n for n in self.nodes if tensor in n.inputs]

    def output_tensors(self):
        """Names of the tensors that are graph outputs (each once, in output order)."""
        return list(dict.fromkeys(o.tensor for o in self.outputs))

    def is_output(self, tensor):
        return any(o.tensor == tensor for o in self.outputs)

    def compute_nodes(self):
        return [n for n in self.nodes if n.is_compute]

    def topological_order(self):
        """The nodes in a topological order (Kahn's algorithm, ties in list order).

        :raises CompileError: if the graph has a cycle (naming a node on it).
        """
        ready = set(self.inputs) | {t for t, v in self.tensors.items() if v.producer is None}
        left, order = list(self.nodes), []
        while left:
            for i, n in enumerate(left):
                if all(t in ready for t in n.inputs):
                    order.append(n)
                    ready.update(n.outputs)
                    del left[i]
                    break
            else:
                raise CompileError(f"the graph has a cycle through {left[0].where}")
        return order

    # ----------------------------------------------------------------------------- editing
    def remove_node(self, node):
        """Remove ``node`` and the tensors it writes (which must have no readers left).

        :raises CompileError: if an output tensor is still read.
        """
        for t in node.outputs:
            cons = [c for c in self.consumers(t) if c is not node]
            if cons or self.is_output(t):
                raise CompileError(f"{node.where}: cannot be removed, its output '{t}' is still read")
        self.nodes = [n for n in self.nodes if n is not node]
        for t in node.outputs:
            del self.tensors[t]

    def replace_uses(self, old, new):
        """Every node reading tensor ``old`` reads ``new`` instead (graph outputs unchanged)."""
        for n in self.nodes:
            n.inputs = [new if t == old else t for t in n.inputs]

    def bypass(self, node):
        """Remove a one-input one-output ``node`` whose output equals its input: its readers read
        its input, and a graph output it wrote becomes its input tensor."""
        src, dst = node.inputs[0], node.outputs[0]
        self.replace_uses(dst, src)
        for o in self.outputs:
            if o.tensor == dst:
                o.tensor = src
        self.remove_node(node)

    def rename_tensor(self, old, new):
        """Rename tensor ``old`` to ``new`` everywhere (readers, producer, inputs, outputs).

        :raises CompileError: if ``new`` exists.
        """
        if new == old:
            return
        if new in self.tensors:
            raise CompileError(f"tensor '{old}' cannot be renamed '{new}': that name is taken")
        t = self.tensors.pop(old)
        t.name = new
        self.tensors[new] = t
        for n in self.nodes:
            n.inputs = [new if x == old else x for x in n.inputs]
            n.outputs = [new if x == old else x for x in n.outputs]
        self.inputs = [new if x == old else x for x in self.inputs]
        for o in self.outputs:
            if o.tensor == old:
                o.tensor = new

    def prune(self):
        """Remove the nodes no graph output depends on (dead code); returns the removed names."""
        live = set(self.output_tensors())
        keep = []
        for n in reversed(self.nodes):
            if any(t in live for t in n.outputs):
                keep.append(n)
                live.update(n.inputs)
        keep.reverse()
        dead = [n for n in self.nodes if n not in keep]
        for n in reversed(dead):
            self.nodes.remove(n)
            for t in n.outputs:
                self.tensors.pop(t, None)
        return [n.name for n in dead]

    # ----------------------------------------------------------------------------- checks
    def validate(self):
        """Check the DAG invariants; returns the graph.

        Unique node names; every tensor a node reads exists; every tensor is written by at most
        one node and its ``producer`` says which (``None`` exactly for the graph inputs); the
        node list is topologically sorted (no cycle, no read before the write); a compute node
        carries a ConvOp of its kind, other nodes none; at least one input and one output; every
        output names an existing tensor; output names unique.

        :raises CompileError: naming the node or tensor that breaks an invariant.
        """
        if not self.inputs:
            raise CompileError("the graph has no input")
        if not self.outputs:
            raise CompileError("the graph has no output")
        names = set()
        for n in self.nodes:
            if n.name in names:
                raise CompileError(f"two nodes are named '{n.name}'")
            names.add(n.name)
        written = {}
        for t in self.inputs:
            if t not in self.tensors:
                raise CompileError(f"graph input '{t}' is not a tensor of the graph")
            if self.tensors[t].producer is not None:
                raise CompileError(f"graph input '{t}' is written by node '{self.tensors[t].producer}'")
        seen = set(self.inputs)
        for n in self.nodes:
            for t in n.inputs:
                if t not in self.tensors:
                    raise CompileError(f"{n.where}: reads tensor '{t}', which does not exist")
                if t not in seen:
                    raise CompileError(f"{n.where}: reads tensor '{t}' before it is written (the nodes are "
                                       "not in topological order, or there is a cycle)")
            for t in n.outputs:
                if t in written or t in self.inputs:
                    raise CompileError(f"tensor '{t}' is written by {n.where} and by "
                                       f"{written.get(t, 'the graph input')}")
                if t not in self.tensors or self.tensors[t].producer != n.name:
                    raise CompileError(f"{n.where}: its output '{t}' does not name it as its producer")
                written[t] = n.where
                seen.add(t)
            if n.is_compute != (n.conv is not None):
                raise CompileError(f"{n.where}: a compute node carries a layer (ConvOp), other nodes none")
            if n.conv is not None and n.conv.kind != n.op:
                raise CompileError(f"{n.where}: carries a {n.conv.kind} layer")
        for name, t in self.tensors.items():
            if t.name != name:
                raise CompileError(f"tensor '{name}' calls itself '{t.name}'")
            if t.producer is None and name not in self.inputs:
                raise CompileError(f"tensor '{name}' is neither a graph input nor written by a node")
            if t.producer is not None and name not in written:
                raise CompileError(f"tensor '{name}' names node '{t.producer}' as its producer, which does not "
                                   "write it")
        out_names = set()
        for o in self.outputs:
            if o.tensor not in self.tensors:
                raise CompileError(f"graph output '{o.name}' is tensor '{o.tensor}', which does not exist")
            if o.name in out_names:
                raise CompileError(f"two graph outputs are named '{o.name}'")
            out_names.add(o.name)
        return self

    # ----------------------------------------------------------------------------- listing
    def summary(self):
        """A readable listing: inputs, every node (operator, fused epilogue, input → output
        shapes, the compute node's mapping), outputs with their host tail ops."""
        def shp(t):
            return str(tuple(self.tensors[t].shape)) if t in self.tensors else "?"

        lines = [f"graph '{self.name}': {len(self.nodes)} nodes"]
        for t in self.inputs:
            q = self.tensors[t].q
            lines.append(f"  input  {t} {shp(t)}" + (f" q={q}" if q is not None else ""))
        for n in self.nodes:
            ins = ", ".join(shp(t) for t in n.inputs)
            outs = ", ".join(shp(t) for t in n.outputs)
            if n.conv is not None:
                fused = [x for x in n.conv.names[1:] if x]
                fused = f" [fused: {', '.join(fused)}]" if fused else ""
                lines.append(f"  {n.name}: {_mapping(n.conv)}; {n.conv.epilogue()}; {ins} -> {outs}{fused}")
            else:
                lines.append(f"  {n.name}: {n.op}; {ins} -> {outs}")
        for o in self.outputs:
            tail = f"; host: {', '.join(o.tail)}" if o.tail else ""
            tail += "; flattened" if o.flatten else ""
            alias = f" (tensor '{o.tensor}')" if o.tensor != o.name else ""
            lines.append(f"  output {o.name}{alias} {shp(o.tensor)}{tail}")
        return "\n".join(lines)

    def __repr__(self):
        return f"<Graph '{self.name}': {len(self.nodes)} nodes, inputs {self.inputs}, outputs " \
               f"{[o.name for o in self.outputs]}>"


def _mapping(op):
    """How a layer maps onto the engine, as text (``Conv 3x3 s1 pad (1, 1, 1, 1)`` …)."""
    kh, kw = op.w.shape[2:]
    if op.kind == "Gemm":
        return f"Gemm {op.cin}x{kh}x{kw} -> {op.cout} (conv covering its input)"
    pad = f" pad ({', '.join(str(int(v)) for v in op.pad)})" if any(op.pad) else ""
    if op.kind == "ConvTranspose":
        sy, sx = op.strides
        return f"ConvTranspose {kh}x{kw} s{sy if sy == sx else f'{sy}x{sx}'}{pad} output_padding {tuple(op.output_padding)}"
    return f"Conv {kh}x{kw} s{op.stride}{pad}"
