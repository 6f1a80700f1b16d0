"""Pruning: structural channel pruning, and unstructured (weight) pruning.

**Channel pruning** removes whole output channels of a layer — its filters, bias, the following
BatchNorm's and PReLU's entries — and the matching input channels of every layer that reads
them, so the network is smaller and the compiled program runs fewer blocks (TF2's channel
pruning; the filter ranking of Li, Kadav, Durdanovic, Samet and Graf, "Pruning Filters for
Efficient ConvNets", ICLR 2017, ``l1``/``l2``; or the BatchNorm scale of Liu et al., "Learning
Efficient Convolutional Networks through Network Slimming", ICCV 2017, ``bn_gamma``).

A layer's channels can be removed when its output reaches only plain convolutions (``groups``
1), transposed convolutions and Linear layers, through channel-wise operations: BatchNorm,
ReLU/ReLU6/LeakyReLU/PReLU/Hardtanh/Sigmoid/Tanh, max and average pooling, Dropout, Identity,
nearest Upsample, and a Flatten before a Linear (its input columns go by channel, ``H·W``
each). Residual **Adds** tie channel spaces: every layer whose output (through channel-wise
operations) meets another at an Add loses the same channels — a ResNet stage's convolutions,
projections and shortcuts are pruned as one group, ranked by the sum of their normalized
filter norms. A **Concat** along the channels passes a branch's channels on at its offset, so
the layers reading the concatenation lose the matching columns (SqueezeNet's expand branches,
GoogLeNet's inception branches). A space that reaches a grouped convolution, a model output or
input, or any other operation is left whole; :func:`prune_channels` reports why.

**Unstructured pruning** (:func:`prune_weights`) sets the smallest-magnitude weights to zero.
The engine gives a zero weight code the same beat as any other (a shift-accumulate lane is not
skipped), so it makes the program no faster: it is there to measure that, and for a smaller
compressed weight file. INQ keeps such zeros (``freeze_zeros``).
"""
from __future__ import annotations

import dataclasses
import operator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import BN_TYPES, find_layers, trace

__all__ = ["prune_channels", "prune_weights", "hold_zeros", "channel_importance", "prunable_groups", "CRITERIA",
           "ChannelGroup"]

#: Channel ranking criteria.
CRITERIA = ("l1", "l2", "bn_gamma")

_CHANNELWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.MaxPool1d,
                        nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
                        nn.AdaptiveMaxPool2d, nn.Dropout, nn.Dropout2d, nn.Identity, nn.Upsample, *BN_TYPES,
                        nn.PReLU)
_CHANNELWISE_FUNCTIONS = (F.relu, torch.relu, F.relu6, F.leaky_relu, F.hardtanh, torch.sigmoid, torch.tanh,
                          F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.dropout, torch.nn.functional.interpolate)
_CHANNELWISE_METHODS = ("relu", "sigmoid", "tanh", "contiguous")
_FLATTEN_FUNCTIONS = (torch.flatten,)


@dataclasses.dataclass
class ChannelGroup:
    """One channel space that can be pruned: the output channels of ``producers`` (one layer, or
    several tied by residual Adds: ``a + b`` needs the same channels on both sides) and
    everything tied to them.

    ``producers``: :class:`~nibble.host.compress.layers.WeightLayer` list (the same ``Cout``);
    ``channelwise``: the BatchNorm/PReLU modules in the space (their per-channel entries go with
    the channel); ``consumers``: ``(module, hw, offset)`` — a layer reading the channels, ``hw``
    its input columns per channel (1, or ``H·W`` after a Flatten before a Linear), ``offset`` the
    space's first channel in what it reads (non-zero after a Concat).
    """
    producers: list
    channelwise: list
    consumers: list

    @property
    def layer(self):
        return self.producers[0]

    @property
    def name(self):
        return "+".join(L.name for L in self.producers)

    @property
    def channels(self):
        return self.layer.module.weight.shape[self.layer.out_axis]


def _shapes(gm, example):
    from torch.fx.passes.shape_prop import ShapeProp
    ShapeProp(gm).propagate(example)


def _channels(node):
    meta = node.meta.get("tensor_meta")
    return None if meta is None or len(meta.shape) < 2 else int(meta.shape[1])


def _spatial(node):
    meta = node.meta.get("tensor_meta")
    return None if meta is None else (int(np.prod(meta.shape[2:])) if len(meta.shape) > 2 else 1)


def _is_add(u):
    return u.op == "call_function" and u.target in (operator.add, torch.add, operator.iadd) or \
        u.op == "call_method" and u.target in ("add", "add_")


def _is_cat(u):
    return u.op == "call_function" and u.target in (torch.cat, torch.concat)


class _Space:
    """The channel space of one producer, grown by :func:`_grow`."""

    def __init__(self):
        self.producers, self.channelwise, self.consumers, self.nodes = [], [], [], set()


def _has_channel_entries(m):
    """A module in a channel space whose per-channel entries go with the channels (BatchNorm, a
    per-channel PReLU)."""
    return isinstance(m, BN_TYPES) or (isinstance(m, nn.PReLU) and m.num_parameters > 1)


def _unary_channelwise(u, modules):
    if u.op == "call_module":
        return isinstance(modules[u.target], _CHANNELWISE_MODULES)
    if u.op == "call_function":
        return u.target in _CHANNELWISE_FUNCTIONS
    return u.op == "call_method" and u.target in _CHANNELWISE_METHODS


def _grow(start, modules, layers):
    """The :class:`_Space` of ``start`` (a weight layer's node), or a reason string."""
    sp = _Space()
    todo = [("fwd", start, 0, False)]          # (direction, node, channel offset, flattened)
    sp.nodes.add(start)
    sp.producers.append(layers[start.target])
    seen_cons = set()
    while todo:
        way, node, off, flat = todo.pop()
        if way == "back":
            if node in sp.nodes:
                continue
            if node.op == "call_module" and node.target in layers:
                m = modules[node.target]
                if getattr(m, "groups", 1) != 1:
                    return f"it is added to the output of the grouped convolution '{node.target}'"
                if isinstance(m, nn.Linear):
                    return f"it is added to the output of the Linear layer '{node.target}'"
                sp.nodes.add(node)
                sp.producers.append(layers[node.target])
                todo.append(("fwd", node, 0, False))
                continue
            if _unary_channelwise(node, modules) or _is_add(node):
                sp.nodes.add(node)
                if node.op == "call_module" and _has_channel_entries(modules[node.target]):
                    sp.channelwise.append(modules[node.target])
                args = [a for a in node.args if isinstance(a, torch.fx.Node)]
                todo += [("back", a, 0, False) for a in (args if _is_add(node) else args[:1])]
                todo.append(("fwd", node, 0, False))
                continue
            if node.op == "placeholder":
                return "it is added to the model input"
            return f"it is added to '{node.name}', which is not a layer or a channel-wise operation"
        for u in node.users:
            if u.op == "output":
                return "its output is a model output"
            if u.op == "call_module" and u.target in layers:
                m = modules[u.target]
                if isinstance(m, nn.Linear):
                    meta = node.meta.get("tensor_meta")
                    if not flat and (meta is None or len(meta.shape) != 2):
                        return f"it feeds the Linear '{u.target}' without a Flatten"
                elif flat:
                    return f"it feeds '{u.target}' after a Flatten"
                elif m.groups != 1:
                    return f"it feeds the grouped convolution '{u.target}'"
                if (u, off) not in seen_cons:
                    seen_cons.add((u, off))
                    sp.consumers.append((m, flat or 1, off))
                continue
            if u in sp.nodes:
                continue
            flatten = (u.op == "call_module" and isinstance(modules[u.target], nn.Flatten)) or \
                (u.op == "call_function" and u.target in _FLATTEN_FUNCTIONS)
            if flatten and not flat:
                hw = _spatial(node)
                start_dim = u.kwargs.get("start_dim", u.args[1] if len(u.args) > 1 else 1) \
                    if u.op == "call_function" else modules[u.target].start_dim
                if hw is None:
                    return "a Flatten needs the example input (to know H·W)"
                if start_dim != 1:
                    return "a flatten other than from axis 1"
                todo.append(("fwd", u, off, hw))
                continue
            if _unary_channelwise(u, modules) and not flat and u.args and u.args[0] is node:
                if off == 0:
                    sp.nodes.add(u)
                if u.op == "call_module" and _has_channel_entries(modules[u.target]):
                    if off:
                        return f"it reaches the BatchNorm/PReLU '{u.target}' after a Concat"
                    sp.channelwise.append(modules[u.target])
                todo.append(("fwd", u, off, flat))
                continue
            if _is_add(u) and not flat:
                if off:
                    return "it reaches an Add after a Concat"
                sp.nodes.add(u)
                todo += [("back", a, 0, False) for a in u.args if isinstance(a, torch.fx.Node) and a is not node]
                todo.append(("fwd", u, 0, False))
                continue
            if _is_cat(u) and not flat:
                parts = u.args[0]
                dim = u.args[1] if len(u.args) > 1 else u.kwargs.get("dim", 0)
                if dim != 1:
                    return "it feeds a Concat along another axis than the channels"
                if sum(1 for a in parts if a is node) != 1:
                    return "it enters a Concat twice"
                widths = [_channels(a) for a in parts]
                if any(w is None for w in widths):
                    return "a Concat needs the example input (to know its inputs' channels)"
                k = list(parts).index(node)
                todo.append(("fwd", u, off + sum(widths[:k]), flat))
                continue
            return f"it feeds '{u.name}' ({getattr(u.target, '__name__', u.target)})"
    if not sp.consumers:
        return "nothing reads its channels"
    return sp


def prunable_groups(model, example=None):
    """``(groups, refused)``: the :class:`ChannelGroup` of every channel space that can be
    pruned, and ``{layer name: reason}`` for the layers that cannot. ``example``: an input
    tensor (needed for the ``H·W`` of a Flatten before a Linear and the widths of a Concat's
    inputs)."""
    layers = {L.name: L for L in find_layers(model)}
    gm = trace(model)
    if example is not None:
        _shapes(gm, example)
    modules = dict(gm.named_modules())
    own = dict(model.named_modules())
    name_of = {id(v): k for k, v in modules.items()}
    groups, refused, done = [], {}, set()
    for node in gm.graph.nodes:
        if node.op != "call_module" or node.target not in layers or node.target in done:
            continue
        L = layers[node.target]
        if getattr(L.module, "groups", 1) != 1:
            refused[L.name] = "it is a grouped convolution (its channels are tied to its input's)"
            continue
        if isinstance(L.module, nn.Linear):
            refused[L.name] = "it is a Linear layer"
            continue
        got = _grow(node, modules, layers)
        if isinstance(got, str):
            refused[L.name] = got
            continue
        names = [P.name for P in got.producers]
        done.update(names)
        if len({P.module.weight.shape[P.out_axis] for P in got.producers}) != 1:
            for n in names:
                refused[n] = "the layers tied by its Add have different channel counts"
            continue
        cw = list({id(c): c for c in got.channelwise}.values())
        groups.append(ChannelGroup([layers[n] for n in names], [own[name_of[id(c)]] for c in cw],
                                   [(own[name_of[id(c)]], hw, off) for c, hw, off in got.consumers]))
    return groups, refused


def channel_importance(group, criterion="l1"):
    """Importance of each output channel of ``group`` (float64 ``(C,)``): the L1 or L2 norm of its
    filters (all weights feeding the channel), or ``|γ|`` of its BatchNorm (``bn_gamma``); for
    channels tied across several layers, the sum over them of each layer's values divided by
    their mean.

    :raises ValueError: an unknown criterion; ``bn_gamma`` for a layer without BatchNorm.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown pruning criterion '{criterion}' ({', '.join(CRITERIA)})")
    vals = []
    if criterion == "bn_gamma":
        bns = [m for m in group.channelwise if isinstance(m, BN_TYPES)]
        if not bns or not all(b.affine for b in bns):
            raise ValueError(f"layer '{group.name}' has no affine BatchNorm for the bn_gamma criterion")
        vals = [np.abs(b.weight.detach().cpu().numpy().astype(np.float64)) for b in bns]
    else:
        for L in group.producers:
            w = L.module.weight.detach().cpu().numpy().astype(np.float64)
            w = np.moveaxis(w, L.out_axis, 0).reshape(w.shape[L.out_axis], -1)
            vals.append(np.abs(w).sum(axis=1) if criterion == "l1" else np.sqrt((w * w).sum(axis=1)))
    if len(vals) == 1:
        return vals[0]
    return sum(v / max(v.mean(), 1e-300) for v in vals)


def _index(t, keep, axis):
    return t.detach().index_select(axis, torch.as_tensor(keep, dtype=torch.long)).clone()


def _apply_producers(group, keep):
    with torch.no_grad():
        for L in group.producers:
            m = L.module
            m.weight = nn.Parameter(_index(m.weight, keep, L.out_axis))
            if m.bias is not None:
                m.bias = nn.Parameter(_index(m.bias, keep, 0))
            m.out_channels = len(keep)
        for c in group.channelwise:
            if isinstance(c, nn.PReLU):
                c.weight = nn.Parameter(_index(c.weight, keep, 0))
                c.num_parameters = len(keep)
                continue
            if c.affine:
                c.weight = nn.Parameter(_index(c.weight, keep, 0))
                c.bias = nn.Parameter(_index(c.bias, keep, 0))
            c.running_mean = _index(c.running_mean, keep, 0)
            c.running_var = _index(c.running_var, keep, 0)
            c.num_features = len(keep)


def _apply_consumers(cuts):
    """``cuts``: ``{id(module): (module, hw, [(offset, channels, keep), …])}`` — every pruned
    space a consumer reads; its input columns are cut once, for all of them."""
    with torch.no_grad():
        for c, hw, spans in cuts.values():
            n_in = c.weight.shape[1] if not isinstance(c, nn.ConvTranspose2d) else c.weight.shape[0]
            n_ch = n_in // hw
            alive = np.ones(n_ch, bool)
            for off, channels, keep in spans:
                dead = np.ones(channels, bool)
                dead[keep] = False
                alive[off:off + channels][dead] = False
            chans = np.flatnonzero(alive)
            if isinstance(c, nn.Linear):
                cols = (chans[:, None] * hw + np.arange(hw)[None, :]).ravel()
                c.weight = nn.Parameter(_index(c.weight, cols, 1))
                c.in_features = len(cols)
            elif isinstance(c, nn.ConvTranspose2d):
                c.weight = nn.Parameter(_index(c.weight, chans, 0))
                c.in_channels = len(chans)
            else:
                c.weight = nn.Parameter(_index(c.weight, chans, 1))
                c.in_channels = len(chans)


def prune_channels(model, ratio, *, criterion="l1", example=None, scope="layer", min_channels=1, multiple=1):
    """Remove the least important output channels of every prunable layer, in place.

    :param ratio: fraction of channels to remove, ``0 ≤ ratio < 1``; or ``{layer name: ratio}``
        (layers not named are left whole; naming one layer of a tied group prunes the group).
    :param criterion: :data:`CRITERIA`.
    :param example: an input tensor (for the ``H·W`` of a Flatten before a Linear).
    :param scope: ``"layer"`` (each layer loses ``⌊ratio·C⌋`` channels) or ``"global"`` (one ratio
        over all channels, each layer's importances divided by their mean first).
    :param min_channels: channels every layer keeps.
    :param multiple: the kept count is rounded up to a multiple of this (capped at the layer's
        channels): the engine runs channels in blocks of ``m`` outputs and ``vc`` inputs
        (``EngineConfig``), so a count between two multiples costs the cycles of the next one.
    :returns: ``{"layers": [{"layer", "layers", "channels", "kept", "removed"}], "refused": {name:
        reason}}`` (``layer``: the group's name, its layers joined by ``+``).
    :raises ValueError: a ratio outside [0, 1), a ratio for a layer that is not prunable or does
        not exist, an unknown criterion or scope.
    """
    if scope not in ("layer", "global"):
        raise ValueError(f"unknown pruning scope '{scope}' (layer, global)")
    if int(multiple) < 1 or int(min_channels) < 1:
        raise ValueError(f"multiple ({multiple}) and min_channels ({min_channels}) must be at least 1")
    groups, refused = prunable_groups(model, example)
    by_name = {P.name: g for g in groups for P in g.producers}
    if isinstance(ratio, dict):
        ratios = {}
        for k, r in ratio.items():
            if k not in by_name:
                why = refused.get(k, "there is no such weight layer")
                raise ValueError(f"layer '{k}' cannot be channel-pruned: {why}")
            ratios[by_name[k].name] = r
    else:
        ratios = {g.name: ratio for g in groups}
    for k, r in ratios.items():
        if not 0.0 <= float(r) < 1.0:
            raise ValueError(f"pruning ratio {r} of layer '{k}' is not in [0, 1)")
    imp = {g.name: channel_importance(g, criterion) for g in groups if g.name in ratios}

    def top(v, n):
        n = min(len(v), -(-max(n, min_channels) // multiple) * multiple)
        return np.sort(np.argsort(-v, kind="stable")[:n])
    keep = {}
    if scope == "global" and not isinstance(ratio, dict):
        norm = {k: v / max(v.mean(), 1e-300) for k, v in imp.items()}
        allv = np.concatenate(list(norm.values())) if norm else np.zeros(0)
        k = int(np.floor(float(ratio) * allv.size))
        thr = np.sort(allv)[k - 1] if k > 0 else -np.inf
        for name, v in norm.items():
            keep[name] = top(v, int(np.sum(v > thr)))
    else:
        for name, v in imp.items():
            keep[name] = top(v, len(v) - int(np.floor(float(ratios[name]) * len(v))))
    report, cuts = [], {}
    for g in groups:
        name = g.name
        if name not in keep:
            continue
        c = g.channels
        if len(keep[name]) < c:
            for mod, hw, off in g.consumers:
                cuts.setdefault(id(mod), (mod, hw, []))[2].append((off, c, keep[name]))
            _apply_producers(g, keep[name])
        report.append({"layer": name, "layers": [P.name for P in g.producers], "channels": int(c),
                       "kept": int(len(keep[name])), "removed": int(c - len(keep[name]))})
    _apply_consumers(cuts)
    return {"layers": report, "refused": refused}


def prune_weights(model, ratio, *, layers=None):
    """Set the smallest-magnitude ``ratio`` of each layer's weights (BatchNorm-folded magnitudes,
    as INQ ranks them) to zero, in place.

    :returns: ``{layer name: number of weights zeroed}``.
    :raises ValueError: a ratio outside [0, 1).
    """
    if not 0.0 <= float(ratio) < 1.0:
        raise ValueError(f"pruning ratio {ratio} is not in [0, 1)")
    out = {}
    for L in (find_layers(model) if layers is None else layers):
        w = L.module.weight.detach().cpu().numpy().copy()
        s = L.fold_scale()
        mag = np.abs(w.astype(np.float64) * (1.0 if s is None else np.abs(s).reshape(L.scale_shape(w.ndim))))
        k = int(np.floor(float(ratio) * w.size))
        idx = np.argsort(mag.ravel(), kind="stable")[:k]
        w.ravel()[idx] = 0.0
        with torch.no_grad():
            L.module.weight.copy_(torch.from_numpy(w))
        out[L.name] = k
    return out


def hold_zeros(model, layers=None):
    """An ``after_step`` callback for fine-tuning after :func:`prune_weights`: it sets the
    weights that are zero now back to zero after every optimizer step."""
    masks = [(L.module.weight, L.module.weight.detach() != 0)
             for L in (find_layers(model) if layers is None else layers)]

    def after_step():
        with torch.no_grad():
            for w, keep in masks:
                w.mul_(keep)
    return after_step
