"""The compression kit (DESIGN §2, ``host/compress/``): incremental INQ with retraining, channel
and weight pruning of a trained ``torch.nn.Module``, and the ONNX export the compiler then
quantizes exactly. Needs PyTorch (``pip install 'nibble[train]'``); nothing else in Nibble
imports this package.

A typical run (``nibble compress`` does the same from the command line)::

    from nibble.host import compress
    model = ...                                                  # trained float model
    compress.prune_channels(model, 0.25, example=x[:1])          # optional
    compress.fit(model, model.parameters(), x, y, epochs=5)      # fine-tune after pruning
    layers = compress.incremental_inq(
        model, lambda params, after_step, step, frac: compress.fit(
            model, params, x, y, epochs=3, train_mode=False, after_step=after_step))
    onnx_model = compress.export_onnx(model, torch.from_numpy(x[:1]))
    compress.verify_inq(onnx_model, layers)                      # the compiler's levels = trained
"""
try:
    import torch  # noqa: F401
except ImportError:                                             # pragma: no cover - depends on the install
    raise ImportError("nibble.host.compress needs PyTorch: pip install 'nibble[train]' "
                      "(torch==2.13.0, CPU)") from None

from .flow import compile_figures, compress_model, load_factory, program_figures
from .export import FOLD_RTOL, OPSET, export_onnx, inline_identity_initializers, verify_inq
from .inq import (BN_MODES, DEFAULT_SCHEDULE, PARTITIONS, InqLayer, check_schedule, fold_batchnorm,
                  incremental_inq, post_training_inq)
from .layers import WeightLayer, find_layers
from .prune import CRITERIA, channel_importance, hold_zeros, prunable_groups, prune_channels, prune_weights
from .train import LOSSES, evaluate, fit, outputs, predict

__all__ = ["WeightLayer", "find_layers", "InqLayer", "incremental_inq", "post_training_inq", "fold_batchnorm",
           "check_schedule", "DEFAULT_SCHEDULE", "PARTITIONS", "BN_MODES", "prune_channels", "prune_weights",
           "hold_zeros",
           "channel_importance", "prunable_groups", "CRITERIA", "export_onnx", "verify_inq",
           "inline_identity_initializers", "OPSET", "FOLD_RTOL", "fit", "predict", "evaluate", "outputs", "LOSSES",
           "compress_model", "load_factory", "compile_figures", "program_figures"]
