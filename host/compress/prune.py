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
each). A layer whose output reaches an Add, a Concat, a grouped convolution, a graph output or
any other operation is left whole; :func:`prune_channels` reports why.

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
    """One prunable layer: its output channels and everything tied to them.

    ``layer``: the :class:`~nibble.host.compress.layers.WeightLayer` producing the channels;
    ``channelwise``: the BatchNorm/PReLU modules on the way (their per-channel entries go with
    the channel); ``consumers``: ``(module, hw)`` — a layer reading the channels, ``hw`` the
    number of its input columns per channel (1, or ``H·W`` after a Flatten before a Linear).
    """
    layer: object
    channelwise: list
    consumers: list

    @property
    def channels(self):
        return self.layer.module.weight.shape[self.layer.out_axis]


def _shapes(gm, example):
    from torch.fx.passes.shape_prop import ShapeProp
    ShapeProp(gm).propagate(example)


def _walk(gm, modules, start):
    """Follow ``start``'s output to its consumers; ``(channelwise, consumers)`` or a reason string."""
    channelwise, consumers = [], []
    todo, seen = [(start, False)], set()
    while todo:
        node, flat = todo.pop()
        for u in node.users:
            if u in seen:
                continue
            seen.add(u)
            if u.op == "output":
                return "its output is a model output"
            if u.op == "call_module":
                m = modules[u.target]
                if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d)) and not flat:
                    if m.groups != 1:
                        return f"it feeds the grouped convolution '{u.target}'"
                    consumers.append((m, 1))
                    continue
                if isinstance(m, nn.Linear):
                    if not flat:
                        meta = node.meta.get("tensor_meta")
                        if meta is None or len(meta.shape) != 2:
                            return f"it feeds the Linear '{u.target}' without a Flatten"
                    consumers.append((m, flat or 1))
                    continue
                if isinstance(m, nn.Flatten) and not flat:
                    s = u.args[0].meta.get("tensor_meta")
                    if s is None:
                        return "a Flatten needs the example input (to know H·W)"
                    todo.append((u, int(np.prod(s.shape[2:])) if len(s.shape) > 2 else 1))
                    continue
                if isinstance(m, _CHANNELWISE_MODULES) and not flat:
                    if isinstance(m, (*BN_TYPES, nn.PReLU)) and not (isinstance(m, nn.PReLU) and m.num_parameters == 1):
                        channelwise.append(m)
                    todo.append((u, flat))
                    continue
                return f"it feeds '{u.target}' ({type(m).__name__})"
            if u.op == "call_function" and not flat:
                if u.target in _CHANNELWISE_FUNCTIONS and u.args[0] is node:
                    todo.append((u, flat))
                    continue
                if u.target in _FLATTEN_FUNCTIONS and u.args[0] is node:
                    s = node.meta.get("tensor_meta")
                    if s is None or (len(u.args) > 1 and u.args[1] != 1) or u.kwargs.get("start_dim", 1) != 1:
                        return "a flatten other than from axis 1 (or without the example input)"
                    todo.append((u, int(np.prod(s.shape[2:])) if len(s.shape) > 2 else 1))
                    continue
                if u.target in (operator.add, torch.add, operator.iadd):
                    return "it feeds an Add"
                if u.target in (torch.cat, torch.concat):
                    return "it feeds a Concat"
                return f"it feeds '{u.name}' ({getattr(u.target, '__name__', u.target)})"
            if u.op == "call_method" and not flat and u.target in _CHANNELWISE_METHODS:
                todo.append((u, flat))
                continue
            return f"it feeds '{u.name}' ({u.op} {u.target})"
    if not consumers:
        return "nothing reads its channels"
    return channelwise, consumers


def prunable_groups(model, example=None):
    """``(groups, refused)``: the :class:`ChannelGroup` of every layer whose output channels can be
    removed, and ``{layer name: reason}`` for the others. ``example``: an input tensor (needed
    when a Flatten precedes a Linear, for its ``H·W``)."""
    layers = {L.name: L for L in find_layers(model)}
    gm = trace(model)
    if example is not None:
        _shapes(gm, example)
    modules = dict(gm.named_modules())
    own = dict(model.named_modules())
    groups, refused = [], {}
    for node in gm.graph.nodes:
        if node.op != "call_module" or node.target not in layers:
            continue
        L = layers[node.target]
        m = L.module
        if getattr(m, "groups", 1) != 1:
            refused[L.name] = "it is a grouped convolution (its channels are tied to its input's)"
            continue
        if isinstance(m, nn.Linear):
            refused[L.name] = "it is a Linear layer" if list(node.users) else "nothing reads it"
            # a Linear's outputs are usually the classes; prune it only as a consumer
            continue
        got = _walk(gm, modules, node)
        if isinstance(got, str):
            refused[L.name] = got
            continue
        cw, cons = got
        name_of = {id(v): k for k, v in modules.items()}
        groups.append(ChannelGroup(L, [own[name_of[id(c)]] for c in cw],
                                   [(own[name_of[id(c)]], hw) for c, hw in cons]))
    return groups, refused


def channel_importance(group, criterion="l1"):
    """Importance of each output channel of ``group`` (float64 ``(C,)``): the L1 or L2 norm of its
    filter (all weights feeding the channel), or ``|γ|`` of its BatchNorm (``bn_gamma``).

    :raises ValueError: an unknown criterion; ``bn_gamma`` for a layer without BatchNorm.
    """
    L = group.layer
    w = L.module.weight.detach().cpu().numpy().astype(np.float64)
    w = np.moveaxis(w, L.out_axis, 0).reshape(w.shape[L.out_axis], -1)
    if criterion == "l1":
        return np.abs(w).sum(axis=1)
    if criterion == "l2":
        return np.sqrt((w * w).sum(axis=1))
    if criterion == "bn_gamma":
        bns = [m for m in group.channelwise if isinstance(m, BN_TYPES)]
        if not bns or not bns[0].affine:
            raise ValueError(f"layer '{L.name}' has no affine BatchNorm for the bn_gamma criterion")
        return np.abs(bns[0].weight.detach().cpu().numpy().astype(np.float64))
    raise ValueError(f"unknown pruning criterion '{criterion}' ({', '.join(CRITERIA)})")


def _index(t, keep, axis):
    return t.detach().index_select(axis, torch.as_tensor(keep, dtype=torch.long)).clone()


def _apply(group, keep):
    L = group.layer
    m = L.module
    with torch.no_grad():
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
        for c, hw in group.consumers:
            if isinstance(c, nn.Linear):
                cols = (np.asarray(keep)[:, None] * hw + np.arange(hw)[None, :]).ravel()
                c.weight = nn.Parameter(_index(c.weight, cols, 1))
                c.in_features = len(cols)
            elif isinstance(c, nn.ConvTranspose2d):
                c.weight = nn.Parameter(_index(c.weight, keep, 0))
                c.in_channels = len(keep)
            else:
                c.weight = nn.Parameter(_index(c.weight, keep, 1))
                c.in_channels = len(keep)


def prune_channels(model, ratio, *, criterion="l1", example=None, scope="layer", min_channels=1, multiple=1):
    """Remove the least important output channels of every prunable layer, in place.

    :param ratio: fraction of channels to remove, ``0 ≤ ratio < 1``; or ``{layer name: ratio}``
        (layers not named are left whole).
    :param criterion: :data:`CRITERIA`.
    :param example: an input tensor (for the ``H·W`` of a Flatten before a Linear).
    :param scope: ``"layer"`` (each layer loses ``⌊ratio·C⌋`` channels) or ``"global"`` (one ratio
        over all channels, each layer's importances divided by their mean first).
    :param min_channels: channels every layer keeps.
    :param multiple: the kept count is rounded up to a multiple of this (capped at the layer's
        channels): the engine runs channels in blocks of ``m`` outputs and ``vc`` inputs
        (``EngineConfig``), so a count between two multiples costs the cycles of the next one.
    :returns: ``{"layers": [{"layer", "channels", "kept", "removed"}], "refused": {name: reason}}``.
    :raises ValueError: a ratio outside [0, 1), a ratio for a layer that is not prunable or does
        not exist, an unknown criterion or scope.
    """
    if scope not in ("layer", "global"):
        raise ValueError(f"unknown pruning scope '{scope}' (layer, global)")
    if int(multiple) < 1 or int(min_channels) < 1:
        raise ValueError(f"multiple ({multiple}) and min_channels ({min_channels}) must be at least 1")
    groups, refused = prunable_groups(model, example)
    by_name = {g.layer.name: g for g in groups}
    if isinstance(ratio, dict):
        for k, r in ratio.items():
            if k not in by_name:
                why = refused.get(k, "there is no such weight layer")
                raise ValueError(f"layer '{k}' cannot be channel-pruned: {why}")
        ratios = dict(ratio)
    else:
        ratios = {g.layer.name: ratio for g in groups}
    for k, r in ratios.items():
        if not 0.0 <= float(r) < 1.0:
            raise ValueError(f"pruning ratio {r} of layer '{k}' is not in [0, 1)")
    imp = {g.layer.name: channel_importance(g, criterion) for g in groups if g.layer.name in ratios}

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
    report = []
    for g in groups:
        name = g.layer.name
        if name not in keep:
            continue
        c = g.channels
        if len(keep[name]) < c:
            _apply(g, keep[name])
        report.append({"layer": name, "channels": int(c), "kept": int(len(keep[name])),
                       "removed": int(c - len(keep[name]))})
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
