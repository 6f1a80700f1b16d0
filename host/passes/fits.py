"""``check_fits``: every layer against the engine's memories and descriptor fields, from the
shapes alone and before calibration (so that a model that cannot run fails fast, naming the
layer and by how much)."""
from ...hw.config import EngineConfig
from ...hw.isa import DESC_WORDS
from ..graph import Graph, chw
from ..ir import CompileError
from .allocate import allocate, feature_error, tensor_cb
from .lower import _check_deconv_stride, _check_fields, _grouping, _memory_error, graph_from_chain, weight_space_error

__all__ = ["check_fits"]


def _check_graph(g, config, deconv, stream_weights=False):
    from ...sim.deconv import tdc_phases
    c = config
    g = g.copy()                    # the error messages annotate the tensors' words
    w_total = p_total = 0
    for name in g.inputs:
        h, w = chw(g.tensors[name].shape)[1:]
        words = h * w * tensor_cb(g, name, c)
        if words > c.feature_depth:
            g.tensors[name].words = words
            raise feature_error(g, name, {}, c.feature_depth)
    for n in g.nodes:
        if n.op == "Concat":
            continue                    # placement: its branches write it (allocate checks the map)
        if n.conv is None:
            raise CompileError(f"{n.where}: not supported by the engine here (the passes fuse or fold it only into "
                               "the layer before it)")
        op, where = n.conv, n.layer
        shape = chw(g.tensors[n.inputs[0]].shape)
        cb = tensor_cb(g, n.inputs[0], c)
        out = op.out_shape(shape)
        if out[1] < 1 or out[2] < 1:
            raise CompileError(f"{where}: gives an empty output ({out[1]}x{out[2]}) on a {shape[1]}x{shape[2]} input")
        nb = -(-op.cout // c.m)
        kh, kw = op.w.shape[2:]
        if op.kind != "ConvTranspose":
            t, _, l, _ = op.pad
            conv = op.conv_shape(shape)
            grouping = _grouping(op, shape[0], c)      # a grouped plan reads only its group's blocks
            _check_fields(where, c, kh, kw, op.stride, t, l, grouping[1] if grouping else cb,
                          (*shape[1:], *conv[1:], *out[1:]), op.pool)
        # the output beside the input (both live while the layer runs), before the phases are listed
        words_in = shape[1] * shape[2] * cb
        words = out[1] * out[2] * tensor_cb(g, n.outputs[0], c)
        if words_in + words > c.feature_depth:
            g.tensors[n.outputs[0]].words = words
            raise feature_error(g, n.outputs[0], {n.inputs[0]: (0, words_in)}, c.feature_depth)
        prelu = 2 if op.prelu is not None else 1
        if op.kind == "ConvTranspose":
            if op.pools:
                raise CompileError(f"{where}: max-pool after a transposed convolution is not supported")
            S, P, OP = op.deconv_geometry()
            _check_deconv_stride(where, S)
            # one descriptor per output phase with outputs (TDC), or one (NZP); checked before the
            # phases are listed (a huge stride has S² of them)
            sy, sx = op.strides
            n_desc = 1 if deconv == "nzp" else min(sy, out[1]) * min(sx, out[2])
            if p_total + n_desc * (DESC_WORDS + prelu * nb * c.m) > c.param_depth:
                need = n_desc * (DESC_WORDS + prelu * nb * c.m)
                raise _memory_error(where, "descriptors and biases", need, p_total + need, c.param_depth)
            if deconv == "nzp":
                taps = [kh * kw]
            else:
                phases = [ph for ph in tdc_phases((kh, kw), S, P, OP, shape[1:]) if 0 not in ph.n_out]
                # a phase without taps is a bias-only 1x1 plan (lower._tdc_plans)
                taps, n_desc = [max(1, ph.y.n * ph.x.n) for ph in phases], len(phases)
        else:
            taps, n_desc = [kh * kw], 1
        words = [nb * c.m * t_ * cb for t_ in taps]
        w_total += sum(words)
        err = weight_space_error(where, words, w_total, c, stream_weights)
        if err:
            raise err
        need = n_desc * (DESC_WORDS + prelu * nb * c.m)
        p_total += need
        if p_total > c.param_depth:
            raise _memory_error(where, "descriptors and biases", need, p_total, c.param_depth)
    allocate(g, c)


def check_fits(x, *args, **kwargs):
    """Check, from the shapes alone and before calibration, that every layer fits the engine.

    ``check_fits(graph, config=EngineConfig(), deconv="auto", stream_weights=False)`` for a
    :class:`~nibble.host.graph.Graph` of layers, or ``check_fits(ops, in_shape, config, deconv)``
    for a chain of :class:`~nibble.host.ir.ConvOp` on an input (C, H, W).

    Per layer, in topological order: a non-empty output; for a Conv or Gemm its filter
    (``Kh·Kw·cb`` words) and descriptor fields (kernel, stride, top/left padding, map sizes,
    max-pool window); its output map beside its input map against the feature memory; its
    weights against the weight memory and its descriptors, biases and slope codes against the
    parameter memory (cumulative over the layers, the least any mode needs: the direct form, TDC
    phases for a transposed convolution, one NZP descriptor for ``deconv="nzp"``; with
    ``stream_weights`` each descriptor's weights against half of the weight memory). Then the
    feature-memory allocation by liveness (:func:`~nibble.host.passes.allocate.allocate`).
    :func:`~nibble.host.passes.lower.lower` checks the exact figures of the chosen plans again.

    :raises CompileError: naming the first layer or tensor that does not fit and by how much.
    """
    if isinstance(x, Graph):
        config = args[0] if args else kwargs.get("config", EngineConfig())
        deconv = args[1] if len(args) > 1 else kwargs.get("deconv", "auto")
        return _check_graph(x, config, deconv, kwargs.get("stream_weights", False))
    in_shape = args[0] if args else kwargs["in_shape"]
    config = args[1] if len(args) > 1 else kwargs.get("config", EngineConfig())
    deconv = args[2] if len(args) > 2 else kwargs.get("deconv", "auto")
    return _check_graph(graph_from_chain(list(x), in_shape), config, deconv)
