"""Incremental network quantization with retraining (Zhou, Yao, Guo, Xu and Chen, "Incremental
Network Quantization: Towards Lossless CNNs with Low-Precision Weights", ICLR 2017), on the
weights the compiler will quantize: each layer's weights *after BatchNorm folding* are brought
onto the 4-bit INQ level set ``{0, ±2^n2 … ±2^n1}``, ``n2 = n1 − 6``, of
:func:`nibble.sim.golden.inq_quantize` (ARITHMETIC §4.1–4.2).

Per layer ``n1 = inq_n1`` of the float (folded) weights is fixed first. The schedule is a list of
cumulative fractions (the paper's 50 %, 75 %, 87.5 %, 100 % by default): at each step the next
partition of every layer's not yet quantized weights is quantized and frozen — the largest
magnitudes first (the paper's pruning-inspired partition) or a seeded random choice — and the
rest, with every bias, is retrained by the caller's own training loop, the frozen weights held by
a gradient mask and restored after every optimizer step. After the last step every weight is on
its level and the compiler's post-training INQ of the exported model reproduces it exactly.

BatchNorm (``bn=``):

* ``"keep"``: the BatchNorm stays a separate layer in eval mode with ``γ`` frozen, so the fold
  factor ``s = γ/√(var+ε)`` is a constant; the layer is quantized on ``w·s`` and stores
  ``q/s`` (float32). The training loop must keep the BatchNorm in eval mode (a change of its
  statistics or ``γ`` is an error after the step);
* ``"fold"``: each BatchNorm is folded into its layer's weight and bias first and replaced by
  ``nn.Identity``; INQ then runs on the plain weights (the exported model has no BatchNorm).
"""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch
import torch.nn as nn

from ...sim.golden import inq_decode, inq_n1, inq_quantize
from .layers import WeightLayer, find_layers

__all__ = ["InqLayer", "incremental_inq", "post_training_inq", "fold_batchnorm", "check_schedule",
           "DEFAULT_SCHEDULE", "PARTITIONS", "BN_MODES"]

#: The paper's partition schedule: cumulative fraction of each layer's weights quantized per step.
DEFAULT_SCHEDULE = (0.5, 0.75, 0.875, 1.0)
#: Weight-partition rules: largest magnitudes first (the paper's choice), or seeded random.
PARTITIONS = ("magnitude", "random")
BN_MODES = ("keep", "fold")


def check_schedule(schedule):
    """The schedule as a tuple of floats: strictly increasing, in (0, 1], ending at 1.

    :raises ValueError: naming the offending entry.
    """
    s = tuple(float(f) for f in schedule)
    if not s:
        raise ValueError("the INQ schedule is empty")
    for i, f in enumerate(s):
        if not 0.0 < f <= 1.0:
            raise ValueError(f"INQ schedule entry {i} ({f:g}) is not in (0, 1]")
        if i and f <= s[i - 1]:
            raise ValueError(f"INQ schedule entry {i} ({f:g}) does not exceed the one before ({s[i - 1]:g})")
    if s[-1] != 1.0:
        raise ValueError(f"the INQ schedule must end at 1.0 (every weight quantized), not {s[-1]:g}")
    return s


class InqLayer:
    """One weight layer under INQ.

    ``scale`` is the float64 per-output-channel BatchNorm fold factor (``None`` without one);
    ``w_eff()`` the folded float64 weight, the one quantized; ``frozen`` (bool, the weight's
    shape) marks the quantized weights, ``w_exact`` their exact float64 level; ``n1`` the
    layer's largest exponent (fixed from the float weights before the first step).
    ``freeze_zeros``: weights that are exactly zero (pruned) are frozen at the level 0 from the
    start and count towards the schedule's fractions.
    """

    def __init__(self, layer: WeightLayer, freeze_zeros=False):
        self.layer = layer
        self.name = layer.name
        self.module = layer.module
        self.scale = layer.fold_scale()
        shape = tuple(self.module.weight.shape)
        self.frozen = np.zeros(shape, dtype=bool)
        self.w_exact = np.zeros(shape, dtype=np.float64)
        self.n1 = inq_n1(self.w_eff())
        if freeze_zeros:                             # pruned weights: already on the level 0
            self.frozen = self.weight32() == 0
        self._hook = None

    def _per_channel(self, v, ndim):
        return v.reshape(self.layer.scale_shape(ndim))

    def weight32(self):
        return self.module.weight.detach().cpu().numpy().copy()

    def w_eff(self):
        """The folded weight ``w·s`` (float64), the one the compiler quantizes."""
        w = self.weight32().astype(np.float64)
        return w if self.scale is None else w * self._per_channel(self.scale, w.ndim)

    def stored(self, q_eff):
        """The float32 weight that folds back to ``q_eff``: ``q_eff / s``."""
        q = q_eff if self.scale is None else q_eff / self._per_channel(self.scale, q_eff.ndim)
        return q.astype(np.float32)

    def quantize_step(self, fraction, partition="magnitude", rng=None):
        """Quantize and freeze not yet frozen weights up to ``fraction`` of the layer.

        ``partition``: ``"magnitude"`` (largest ``|w·s|`` first; ties in index order) or
        ``"random"`` (uniform among the free weights, ``rng`` a ``numpy.random.Generator``).
        :returns: the number of weights newly frozen.
        """
        w_eff = self.w_eff()
        target = w_eff.size if fraction >= 1.0 else int(round(fraction * w_eff.size))
        k = max(target - int(self.frozen.sum()), 0)
        free = np.flatnonzero(~self.frozen.ravel())
        if partition == "magnitude":
            order = np.argsort(-np.abs(w_eff.ravel()[free]), kind="stable")
        elif partition == "random":
            order = (rng or np.random.default_rng(0)).permutation(len(free))
        else:
            raise ValueError(f"unknown INQ partition '{partition}' ({', '.join(PARTITIONS)})")
        new = np.zeros(w_eff.size, dtype=bool)
        new[free[order[:k]]] = True
        new = new.reshape(w_eff.shape)
        codes, n2 = inq_quantize(w_eff, self.n1)
        q_eff = inq_decode(codes, n2)
        w = self.weight32()
        w[new] = self.stored(q_eff)[new]
        self.w_exact[new] = q_eff[new]
        self.frozen |= new
        with torch.no_grad():
            self.module.weight.copy_(torch.from_numpy(w))
        return k

    def install_masks(self):
        """Zero the gradient of the frozen weights (``restore`` undoes what an optimizer's
        momentum or weight decay moves anyway)."""
        self._mask_t = torch.from_numpy(self.frozen.copy())
        self._free_t = (~self._mask_t).to(self.module.weight.dtype)
        self._values_t = self.module.weight.detach().clone()
        self._hook = self.module.weight.register_hook(lambda g: g * self._free_t)

    def restore(self):
        with torch.no_grad():
            self.module.weight.copy_(torch.where(self._mask_t, self._values_t, self.module.weight))

    def remove_masks(self):
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def check_scale(self):
        """:raises RuntimeError: if the BatchNorm's fold factor changed (statistics or ``γ``)."""
        if self.scale is not None and not np.array_equal(self.layer.fold_scale(), self.scale):
            raise RuntimeError(f"BatchNorm '{self.layer.bn_name}' after layer '{self.name}' changed during "
                               "INQ retraining: keep it in eval mode (model.eval(), its weight frozen) or use "
                               "bn='fold'")

    def report(self):
        """Per-layer figures: ``name``, ``n1``, ``n2``, ``weights``, ``zero_weights``, ``levels_used``."""
        codes, n2 = inq_quantize(self.w_exact, self.n1)
        dec = inq_decode(codes, n2)
        return {"layer": self.name, "n1": int(self.n1), "n2": int(n2), "weights": int(dec.size),
                "zero_weights": int(np.sum(dec == 0)), "levels_used": int(len(np.unique(dec)))}


def _set_module(model, path, new):
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


def fold_batchnorm(model, layers=None):
    """Fold every BatchNorm into the layer before it, in place (``w·s``, ``(b − μ)·s + β``,
    ``s = γ/√(var+ε)`` in float64 as the compiler computes it, stored float32), replace the
    BatchNorm by ``nn.Identity`` and return the layers (now without BatchNorm)."""
    layers = find_layers(model) if layers is None else layers
    out = []
    for L in layers:
        if L.bn is None:
            out.append(L)
            continue
        m, bn, s = L.module, L.bn, L.fold_scale()
        w = m.weight.detach().cpu().numpy().astype(np.float64) * s.reshape(L.scale_shape(m.weight.ndim))
        b = m.bias.detach().cpu().numpy().astype(np.float64) if m.bias is not None else np.zeros(len(s))
        beta = bn.bias.detach().cpu().numpy().astype(np.float64) if bn.affine else np.zeros(len(s))
        b = (b - bn.running_mean.detach().cpu().numpy().astype(np.float64)) * s + beta
        with torch.no_grad():
            m.weight.copy_(torch.from_numpy(w.astype(np.float32)))
            if m.bias is None:
                m.bias = nn.Parameter(torch.from_numpy(b.astype(np.float32)))
            else:
                m.bias.copy_(torch.from_numpy(b.astype(np.float32)))
        _set_module(model, L.bn_name, nn.Identity())
        out.append(WeightLayer(L.name, m))
    return out


def _prepare(model, layers, bn, freeze_zeros=False):
    if bn not in BN_MODES:
        raise ValueError(f"unknown BatchNorm mode '{bn}' ({', '.join(BN_MODES)})")
    layers = find_layers(model) if layers is None else list(layers)
    if bn == "fold":
        layers = fold_batchnorm(model, layers)
    return [InqLayer(L, freeze_zeros) for L in layers]


def incremental_inq(model, retrain, schedule=DEFAULT_SCHEDULE, *, layers=None, bn="keep", partition="magnitude",
                    seed=0, freeze_zeros=False, log=print):
    """Incremental INQ of ``model`` in place; returns its :class:`InqLayer` list (``n1``,
    ``report()``).

    :param retrain: the caller's training loop, ``retrain(params, after_step, step, fraction)``:
        train the tensors ``params`` (every parameter that requires a gradient: biases, BatchNorm
        ``β``, the free weights) and call ``after_step()`` after every optimizer step; with
        ``bn="keep"`` the model must stay in eval mode. Called after every step but the last.
    :param schedule: cumulative fractions (:func:`check_schedule`).
    :param layers: :class:`WeightLayer` list; default :func:`find_layers`.
    :param bn: ``"keep"`` or ``"fold"`` (module docstring).
    :param partition: ``"magnitude"`` or ``"random"`` (seeded with ``seed``).
    :param freeze_zeros: keep weights that are zero (after :func:`~nibble.host.compress.prune.prune_weights`)
        at zero (:class:`InqLayer`).
    :raises ValueError: a bad schedule, mode or partition, a layer whose weights are all zero.
    :raises RuntimeError: a kept BatchNorm changed during retraining.
    """
    schedule = check_schedule(schedule)
    if partition not in PARTITIONS:
        raise ValueError(f"unknown INQ partition '{partition}' ({', '.join(PARTITIONS)})")
    model.eval()
    qs = _prepare(model, layers, bn, freeze_zeros)
    for q in qs:
        if q.layer.bn is not None and q.layer.bn.affine:
            q.layer.bn.weight.requires_grad_(False)
    log("INQ n1 per layer: " + ", ".join(f"{q.name} {q.n1}" for q in qs))
    rng = np.random.default_rng(seed)
    trainable = [p for p in model.parameters() if p.requires_grad]
    for step, frac in enumerate(schedule):
        newly = [q.quantize_step(frac, partition, rng) for q in qs]
        log(f"INQ step {step + 1}/{len(schedule)}: {frac:.1%} of the weights quantized "
            f"(+{', +'.join(str(k) for k in newly)})")
        if frac >= 1.0:
            continue
        for q in qs:
            q.install_masks()

        def after_step():
            for q in qs:
                q.restore()
        try:
            retrain(trainable, after_step, step, frac)
        finally:
            for q in qs:
                q.remove_masks()
        for q in qs:
            q.check_scale()
    model.eval()
    return qs


def post_training_inq(model, *, layers=None, bn="keep"):
    """A copy of ``model`` with every layer's (folded) weights quantized at once, no retraining
    (what the compiler does to a float model): ``(copy, InqLayer list)``."""
    m = copy.deepcopy(model).eval()
    if layers is not None:                               # the same layers, on the copy
        own = dict(m.named_modules())
        layers = [dataclasses.replace(L, module=own[L.name], bn=own[L.bn_name] if L.bn_name else None)
                  for L in layers]
    qs = _prepare(m, layers, bn)
    for q in qs:
        q.quantize_step(1.0)
    return m, qs
