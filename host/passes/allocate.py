"""Pass ``allocate``: feature-memory allocation by tensor liveness (DESIGN §6).

Feature maps are HWC with ``cb`` words of ``vc`` int8 per pixel (DESIGN §3): ``⌈C/vc⌉`` for a
graph input, ``n_coblk·m/vc`` (every output block the engine writes) for a layer's output; a map
of ``H × W`` pixels takes ``H·W·cb`` words. The engine runs the layers one after the other in
the graph's topological order, each reading its input while it writes its output, so:

* a graph input is live from the start, a layer's output from its layer on;
* a tensor's words are free again after its last reader ran; a graph output stays live (the host
  reads it at the end);
* a layer's output never overlaps its input (both are live while it runs);
* a Concat's output is one map of ``Σ cb`` words per pixel, taken when its first branch runs and
  live until its last reader ran; each branch is a view of it (its ``cb`` words from its offset
  in every pixel, :func:`concat_offsets`), so every branch's input stays live while the map is
  (it is taken before them);
* a residual (a layer's second input) is live until that layer ran, like any input.

Each new map takes a free range first-fit from the end of the memory opposite its input (the
top if the input lies in the lower half, else the bottom; the other end if it does not fit
there), so a chain alternates between the two ends and needs no more than its two largest
neighbours at any time.
"""
from ..graph import Graph, chw
from ..ir import CompileError

__all__ = ["allocate", "tensor_cb", "concat_offsets", "feature_error"]


def tensor_cb(graph, name, config):
    """Feature words per pixel of tensor ``name``: ``n_coblk·m/vc`` for a layer's output, the sum
    over its branches for a Concat's output, else ``⌈C/vc⌉``."""
    t = graph.tensors[name]
    c = chw(t.shape)[0]
    p = graph.producer(name)
    if p is not None and p.is_compute:
        return -(-p.conv.cout // config.m) * (config.m // config.vc)
    if p is not None and p.op == "Concat":
        return sum(tensor_cb(graph, b, config) for b in p.inputs)
    return -(-c // config.vc)


def concat_offsets(graph, name, config):
    """``{branch tensor: first word in the pixel}`` of the Concat output ``name``: the branches'
    words one after the other, in input order."""
    offs, at = {}, 0
    for b in graph.producer(name).inputs:
        offs[b] = at
        at += tensor_cb(graph, b, config)
    return offs


def _role(g, name):
    p = g.producer(name)
    if p is None:
        return f"the network input '{name}'"
    return f"the output '{name}' of layer '{p.name}' ({p.conv.kind if p.conv is not None else p.op})"


def feature_error(g, name, live, depth):
    """The :class:`CompileError` for tensor ``name`` (``cb``, ``words`` set) that does not fit the
    feature memory of ``depth`` words beside the ``live`` ranges ``{tensor: (first, end)}``."""
    t = g.tensors[name]
    c, h, w = chw(t.shape)
    used = sum(e - s for s, e in live.values())
    total = used + t.words
    what = f"{_role(g, name)}: its {h}x{w} map of {c} channels needs {t.words} words"
    if not live:
        return CompileError(f"{what}, the feature memory has {depth} (over by {t.words - depth} words)")
    others = sorted(live.items(), key=lambda kv: kv[1][0])
    names = ", ".join(f"'{k}' ({e - s})" for k, (s, e) in others[:4]) + (", …" if len(others) > 4 else "")
    if total > depth:
        return CompileError(f"{what}; with the {used} words of the tensors live at the same time ({names}) the "
                            f"feature memory needs {total}, it has {depth} (over by {total - depth} words)")
    return CompileError(f"{what}; {used} of the feature memory's {depth} words are taken by the tensors live at "
                        f"the same time ({names}) and no free range of {t.words} words is left")


def _place(live, words, depth, top):
    """First word of a free range of ``words`` words (lowest, or highest with ``top``), or None."""
    gaps, at = [], 0
    for s, e in sorted(live.values()):
        if s > at:
            gaps.append((at, s))
        at = max(at, e)
    if depth > at:
        gaps.append((at, depth))
    fit = [(s, e) for s, e in gaps if e - s >= words]
    if not fit:
        return None
    return fit[-1][1] - words if top else fit[0][0]


def allocate(graph: Graph, config) -> Graph:
    """Give every tensor of a graph of layers its feature-memory range: ``cb``, ``words``,
    ``base`` (first word), ``row = W·cb`` and ``pix = cb`` (dense maps), by liveness (see the
    module docstring).

    :param config: the :class:`~nibble.hw.config.EngineConfig` (``m``, ``vc``, ``feature_depth``).
    :returns: a new graph with the annotations set.
    :raises CompileError: naming the tensor (and its layer) that does not fit, its size, the
        tensors live at the same time and by how many words the feature memory is too small.
    """
    g = graph.copy()
    depth = config.feature_depth
    last = {}
    for i, n in enumerate(g.nodes):
        for t in n.inputs:
            last[t] = i
    keep = set(g.output_tensors())
    live = {}

    def alloc(name, top):
        t = g.tensors[name]
        c, h, w = chw(t.shape)
        t.cb = tensor_cb(g, name, config)
        t.words = h * w * t.cb
        t.row, t.pix = w * t.cb, t.cb
        base = _place(live, t.words, depth, top)
        if base is None:
            base = _place(live, t.words, depth, not top)
        if base is None:
            raise feature_error(g, name, live, depth)
        t.base = base
        live[name] = (base, base + t.words)

    concat_of = {b: n.outputs[0] for n in g.nodes if n.op == "Concat" for b in n.inputs}
    for t in set(concat_of.values()):
        g.tensors[t].base = None

    def alloc_branch(name, top):
        """A Concat branch: its words inside every pixel of the concatenated map (allocated with
        its first branch, live until the map's last reader)."""
        cat = g.tensors[concat_of[name]]
        if cat.base is None:
            alloc(cat.name, top)
        t = g.tensors[name]
        c, h, w = chw(t.shape)
        t.cb = tensor_cb(g, name, config)
        t.base = cat.base + concat_offsets(g, cat.name, config)[name]
        t.row, t.pix = cat.row, cat.pix
        t.words = (h - 1) * t.row + (w - 1) * t.pix + t.cb

    for name in g.inputs:
        alloc(name, top=False)
    for i, n in enumerate(g.nodes):
        src = live.get(n.inputs[0]) if n.inputs else None
        top = src is not None and (src[0] + src[1]) < depth
        for t in n.outputs:
            if n.op == "Concat":
                continue                    # placed with its first branch
            if t in concat_of:
                alloc_branch(t, top)
            else:
                alloc(t, top)
        for t in set(n.inputs):
            if last.get(t) == i and t not in keep:
                live.pop(t, None)
    for name in g.inputs:
        if name not in last and name not in keep:
            live.pop(name, None)
    return g
