"""Pass ``fold_taps``: a first layer's kernel taps folded into channels, on the host (im2col).

A network's first convolution reads an image of few channels: 3 of a word's ``vc`` = 16 SAC
lanes carry data, and every output pixel takes ``kh·kw`` beats (SqueezeNet 1.1's 3×3 stride-2
conv: 9 beats at 3/16 lanes, about half of the image's cycles on the default configuration;
ResNet-18's 7×7: 49). Folding the taps into channels on the host — channel ``(dy·kw + dx)·C +
c`` of folded pixel ``(y, x)`` holds input ``(c, y·s + dy − top, x·s + dx − left)``, zero in the
padding (im2col, as TF2's first layer packs its input) — makes the layer a 1×1 stride-1 conv over
``(kh·kw·C, Ho, Wo)`` with the weights ``w'[o, (dy·kw + dx)·C + c] = w[o, c, dy, dx]``: each
output pixel takes ``⌈kh·kw·C / vc⌉`` beats (27 channels: 2 beats instead of 9; 147: 10
instead of 49). The sums are the same products in another order, so with the same weight codes
and exponents the integers are the same (a test compares both programs bit for bit). The
layer's epilogue (bias, activation, max-pool) is unchanged.

The program's input then carries the fold (:attr:`nibble.host.program.TensorSpec.fold`): a
caller gives the model's ``(C, H, W)`` input and the driver and the golden model gather it
(:func:`fold_map`) before it goes to the device.

Applied to a Conv (one group, not a residual layer) that reads a graph input nothing else reads,
where it saves cycles by the estimate :func:`fold_gain`: the layer's beats (direct ``kh·kw·⌈C/vc⌉``
a pixel shared by the ``vp`` pixel lanes, or Winograd's ``4·⌈C/vc⌉`` where the layer could run
as Winograd: 3×3 stride 1, no pool or the 2×2 one, an engine with the path) and the input's copy
into feature memory (a beat of ``beat_words`` words a cycle), against the folded layer's
``⌈kh·kw·C/vc⌉`` and its larger input. A layer named for Winograd, or every layer when the
default mode is ``winograd``, keeps its taps (a 1×1 layer cannot run as Winograd). The folded map
can take more words than the input (a stride-1 3×3 layer: about twice): the compiler keeps the
fold only where the program still fits (:func:`nibble.host.compiler.folded`).
"""
import dataclasses

import numpy as np

from ...hw.config import EngineConfig
from ..graph import Graph
from ..ir import POOL_2X2, POOL_NONE

__all__ = ["fold_taps", "fold_map", "fold_shape", "fold_gain", "unfold_op"]


def fold_shape(fold):
    """``(kh·kw·C, Ho, Wo)``: the device map of an input with ``fold`` = ``(C, H, W, kh, kw,
    stride, top, bottom, left, right)``."""
    c, h, w, kh, kw, s, t, b, l, r = fold
    return kh * kw * c, (h + t + b - kh) // s + 1, (w + l + r - kw) // s + 1


def fold_map(x, fold):
    """Gather ``x`` ((C, H, W) or (N, C, H, W), any numeric dtype) into the folded map of ``fold``
    (:func:`fold_shape`; module docstring), zeros where a tap falls in the padding.

    :raises ValueError: ``x`` is not of the fold's ``(C, H, W)``.
    """
    c, h, w, kh, kw, s, t, b, l, r = fold
    x = np.asarray(x)
    if x.shape[-3:] != (c, h, w) or x.ndim not in (3, 4):
        raise ValueError(f"input of shape {tuple(x.shape)} is not (C, H, W) = {(c, h, w)} (or with a batch axis)")
    _, ho, wo = fold_shape(fold)
    lead = x.shape[:-3]
    xp = np.zeros(lead + (c, h + t + b, w + l + r), x.dtype)
    xp[..., t:t + h, l:l + w] = x
    out = np.empty(lead + (kh * kw * c, ho, wo), x.dtype)
    for dy in range(kh):
        for dx in range(kw):
            k = (dy * kw + dx) * c
            out[..., k:k + c, :, :] = xp[..., dy:dy + s * (ho - 1) + 1:s, dx:dx + s * (wo - 1) + 1:s]
    return out


def unfold_op(op, fold):
    """The layer ``op`` of a folded input as the model has it: its weights (and INQ codes, if
    set) back in ``(Cout, C, kh, kw)``, its stride and padding those of ``fold`` — for a reference
    computed on the model's own input."""
    c, h, w, kh, kw, s, t, b, l, r = fold
    back = lambda a: None if a is None else np.ascontiguousarray(
        a.reshape(a.shape[0], kh, kw, c).transpose(0, 3, 1, 2))
    return dataclasses.replace(op, w=back(op.w), codes=back(op.codes), stride=s, pad=(t, b, l, r))


def fold_gain(op, fold, config, winograd=True):
    """Estimated cycles folding ``fold`` (:func:`fold_shape`) saves on layer ``op`` (module
    docstring; > 0: fold): ``(beats a pixel unfolded − folded)·pixels + input words unfolded −
    folded``, the words over ``beat_words``; ``winograd``: the layer may run as Winograd unfolded
    (its mode is not ``direct``). An estimate, not the cycle model of the lowered plans."""
    c, h, w, kh, kw = fold[:5]
    cf, ho, wo = fold_shape(fold)
    vc, vp, bw = config.vc, config.vp, config.beat_words
    cb, cbf = -(-c // vc), -(-cf // vc)
    before = kh * kw * cb / vp
    if (winograd and config.winograd and (kh, kw, op.stride) == (3, 3, 1)
            and op.pool in (POOL_NONE, POOL_2X2)):
        before = min(before, 4 * cb)
    return (before - cbf / vp) * ho * wo + (h * w * cb - ho * wo * cbf) / bw


def fold_taps(graph: Graph, config: EngineConfig, winograd="auto") -> Graph:
    """Fold the taps of every first layer that qualifies (module docstring) into channels.

    :param config: the :class:`EngineConfig` (``vc``, ``vp``, ``beat_words``, ``winograd``).
    :param winograd: the compile's convolution modes (:func:`~nibble.host.passes.lower.parse_modes`):
        a layer that must run as Winograd keeps its taps.
    :returns: a new graph; a folded input tensor has the shape ``(kh·kw·C, Ho, Wo)`` and its
        ``fold`` set (:attr:`nibble.host.program.TensorSpec.fold`).
    """
    from .lower import parse_modes
    default_mode, named = parse_modes(winograd)
    g = graph.copy()
    outputs = set(g.output_tensors())
    for name in g.inputs:
        t = g.tensors[name]
        readers = [n for n in g.nodes if name in n.inputs]
        if len(t.shape) != 3 or len(readers) != 1 or name in outputs or t.fold:
            continue
        n = readers[0]
        op = n.conv
        if (op is None or op.kind != "Conv" or op.groups != 1 or op.res or n.inputs != [name]
                or op.w.shape[2:] == (1, 1)):
            continue
        mode = named.get(op.name, default_mode)
        if mode == "winograd":
            continue
        c, h, w = t.shape
        cout, _, kh, kw = op.w.shape
        top, bottom, left, right = op.pad
        fold = (c, h, w, kh, kw, op.stride, top, bottom, left, right)
        cf, ho, wo = fold_shape(fold)
        if ho < 1 or wo < 1 or fold_gain(op, fold, config, mode != "direct") <= 0:
            continue                                 # (an empty output: check_fits names the layer)
        wf = np.ascontiguousarray(op.w.transpose(0, 2, 3, 1).reshape(cout, cf, 1, 1))
        n.conv = dataclasses.replace(op, w=wf, stride=1, pad=(0, 0, 0, 0))
        t.shape = (cf, ho, wo)
        t.fold = fold
    return g
