"""The weight layers of a ``torch.nn.Module`` as the compiler will see them: every Conv1d/2d,
ConvTranspose2d and Linear, each with the BatchNorm that directly follows it (the one the
compiler's ``fold_bn`` pass folds into it, DESIGN §5).

Found by tracing the module with ``torch.fx`` (the ``forward`` order, which is also the order of
the exported ONNX graph's compute nodes). A model that cannot be traced gets a ``ValueError``
naming the reason; pass the layers explicitly (:class:`WeightLayer`) instead.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn as nn

__all__ = ["WeightLayer", "find_layers", "trace", "WEIGHT_TYPES", "BN_TYPES"]

#: Modules whose ``weight`` INQ quantizes (the compiler's Conv, ConvTranspose and Gemm).
WEIGHT_TYPES = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
#: BatchNorm modules the compiler folds into the layer before them.
BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d)


@dataclasses.dataclass
class WeightLayer:
    """One weight layer: ``module`` (a :data:`WEIGHT_TYPES` instance), named ``name`` (its path in
    the model), and ``bn``, the BatchNorm module that directly follows it (or ``None``).

    ``bn_name`` is that BatchNorm's path. The output channel is axis 0 of the weight, axis 1 for a
    ConvTranspose2d (``(Cin, Cout, Kh, Kw)``), as in the compiler's ``fold_bn``.
    """
    name: str
    module: nn.Module
    bn: nn.Module | None = None
    bn_name: str | None = None

    @property
    def out_axis(self):
        return 1 if isinstance(self.module, nn.ConvTranspose2d) else 0

    def fold_scale(self):
        """The per-output-channel BatchNorm fold factor ``γ/√(var + ε)`` (float64 ``(Cout,)``),
        computed as the compiler's ONNX front end does (float32 parameters and ε widened to
        float64); ``None`` without a BatchNorm."""
        if self.bn is None:
            return None
        bn = self.bn
        gamma = (bn.weight.detach().cpu().numpy() if bn.affine else np.ones(bn.num_features, np.float32))
        var = bn.running_var.detach().cpu().numpy()
        eps = float(np.float32(bn.eps))                 # the ONNX epsilon attribute is a float32
        return gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)

    def scale_shape(self, ndim):
        """The shape that broadcasts a ``(Cout,)`` vector along the weight's output axis."""
        shape = [1] * ndim
        shape[self.out_axis] = -1
        return tuple(shape)


def trace(model):
    """``torch.fx.symbolic_trace(model)``; a tracing failure is a ``ValueError`` naming it."""
    try:
        return torch.fx.symbolic_trace(model)
    except Exception as e:                          # fx raises TraceError, TypeError, NotImplementedError ...
        raise ValueError(f"the model could not be traced with torch.fx ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}); pass its weight layers explicitly "
                         "as nibble.host.compress.WeightLayer(name, module, bn)") from None


def find_layers(model):
    """The weight layers of ``model`` in ``forward`` order (:class:`WeightLayer` list).

    A BatchNorm is paired with the layer whose output it reads when nothing else reads that
    output (what ``fold_bn`` folds).

    :raises ValueError: if the model cannot be traced; if a weight module is called more than
        once (shared weights: one level set each call cannot be told apart); if the model has no
        weight layer; if a grouped ConvTranspose2d is followed by a BatchNorm (its output channels
        are not one axis of the weight).
    """
    gm = trace(model)
    modules = dict(gm.named_modules())
    calls, layers = {}, []
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], WEIGHT_TYPES):
            continue
        if node.target in calls:
            raise ValueError(f"module '{node.target}' is called more than once in forward(); INQ needs "
                             "one weight tensor per layer")
        calls[node.target] = node
        bn = bn_name = None
        users = list(node.users)
        if len(users) == 1 and users[0].op == "call_module" and isinstance(modules[users[0].target], BN_TYPES):
            bn_name = users[0].target
            bn = modules[bn_name]
            m = modules[node.target]
            if isinstance(m, nn.ConvTranspose2d) and m.groups != 1:
                raise ValueError(f"BatchNorm '{bn_name}' follows the grouped ConvTranspose2d '{node.target}': "
                                 "its output channels are not one axis of the weight")
        layers.append(WeightLayer(node.target, modules[node.target], bn, bn_name))
    if not layers:
        raise ValueError("the model has no Conv1d, Conv2d, ConvTranspose2d or Linear layer")
    # the layers as found on the traced copy are the model's own modules (fx shares them)
    own = dict(model.named_modules())
    for L in layers:
        L.module = own[L.name]
        if L.bn_name is not None:
            L.bn = own[L.bn_name]
    return layers
