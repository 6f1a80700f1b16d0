"""The whole compression flow of ``nibble compress``: a trained model and its data in, a
compressed ONNX model and a report out.

Steps (each optional but INQ): channel pruning → unstructured pruning → fine-tuning (the pruned
weights held at zero) → incremental INQ with retraining → ONNX export → the check that the
compiler's INQ gives the trained levels (:func:`~nibble.host.compress.export.verify_inq`) → both
models compiled for the default engine, with their model cycles (the cycle model of
``nibble.host.passes.lower.layer_cycles``, equal to the RTL's per-descriptor cycle counts,
``tests/test_perf_model_rtl.py``) and weight words.
"""
from __future__ import annotations

import copy
import importlib.util
import pathlib

import numpy as np
import torch

from .export import export_onnx, verify_inq
from .inq import DEFAULT_SCHEDULE, incremental_inq, post_training_inq
from .prune import hold_zeros, prune_channels, prune_weights
from .train import evaluate, fit, outputs, predict

__all__ = ["load_factory", "compress_model", "compile_figures", "program_figures"]


def load_factory(spec):
    """The model a ``FILE.py:FUNCTION`` spec names: ``FUNCTION()`` of the Python file, a
    ``torch.nn.Module``.

    :raises ValueError: a malformed spec, a missing file or function, a factory that fails or
        returns something else than a module.
    """
    path, sep, name = str(spec).rpartition(":")
    if not sep or not path or not name:
        raise ValueError(f"model '{spec}': expected FILE.py:FUNCTION")
    p = pathlib.Path(path)
    if not p.is_file():
        raise ValueError(f"model '{spec}': no file '{path}'")
    mod_spec = importlib.util.spec_from_file_location(f"_nibble_factory_{p.stem}", p)
    mod = importlib.util.module_from_spec(mod_spec)
    try:
        mod_spec.loader.exec_module(mod)
    except Exception as e:
        raise ValueError(f"model '{spec}': {path} raised {type(e).__name__}: {e}") from None
    fn = getattr(mod, name, None)
    if not callable(fn):
        raise ValueError(f"model '{spec}': {path} has no function '{name}'")
    try:
        model = fn()
    except Exception as e:
        raise ValueError(f"model '{spec}': {name}() raised {type(e).__name__}: {e}") from None
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"model '{spec}': {name}() returned {type(model).__name__}, not a torch.nn.Module")
    return model


def program_figures(program):
    """``{"model_cycles", "weight_words", "descriptors", "per_channel_layers"}`` of a compiled
    :class:`~nibble.host.program.Program`: the cycle model's cycles per image
    (:func:`~nibble.host.passes.lower.layer_cycles` summed), its weight image's 16-bit words, its
    plans and those with per-channel weight exponents."""
    from ..passes.lower import layer_cycles
    return {"model_cycles": int(sum(layer_cycles(L, program.config) for L in program.layers)),
            "weight_words": int(len(program.weights)), "descriptors": len(program.layers),
            "per_channel_layers": sum(bool(L.ch_sh) for L in program.layers)}


def compile_figures(onnx_model, calib):
    """:func:`program_figures` of the model compiled for the default
    :class:`~nibble.hw.config.EngineConfig` (``{"error": …}`` instead if it does not compile)."""
    from ...hw.config import EngineConfig
    from ..compiler import compile_model
    from ..ir import CompileError
    try:
        return program_figures(compile_model(onnx_model, calib, EngineConfig()))
    except CompileError as e:
        return {"error": str(e)}


def compress_model(model, x, y, *, loss="ce", x_val=None, y_val=None, channel_ratio=0.0, criterion="l1",
                   scope="layer", channel_multiple=1, weight_ratio=0.0, finetune_epochs=0, inq_epochs=2,
                   schedule=DEFAULT_SCHEDULE, lr=1e-3, batch_size=32, bn="keep", partition="magnitude", seed=0,
                   input_names=("input",), output_names=("output",), log=print):
    """Compress ``model`` (in place) on training data ``(x, y)``; ``(onnx ModelProto, report)``.

    :param loss: ``"ce"`` (``y`` int64 class labels; accuracy reported), ``"mse"`` (``y``
        float32 targets in [0, 1]; PSNR reported) or ``"distill"`` (``y`` unused: every training
        step matches the float model's outputs, all of them for a model with several; the
        distance to the float model reported).
    :param x_val, y_val: evaluation data (default: the training data, and the report says so).
    :param channel_ratio: :func:`~nibble.host.compress.prune.prune_channels` ratio (0: none), with
        ``criterion``, ``scope`` and ``channel_multiple`` (its ``multiple``).
    :param weight_ratio: :func:`~nibble.host.compress.prune.prune_weights` ratio (0: none).
    :param finetune_epochs: float fine-tuning epochs after pruning (training mode).
    :param inq_epochs: retraining epochs after each INQ step but the last (BatchNorm frozen).
    :returns: the exported model and a JSON-ready dict: the metric after each stage (``float``,
        ``post_training_inq``, ``pruned``, ``inq``, ``inq_onnxruntime``), pruning and INQ
        per-layer figures, the compiled figures of the float and the compressed model.
    :raises ValueError: bad arguments (from the steps), a compressed model off its level set.
    """
    import onnxruntime as ort
    torch.manual_seed(seed)
    x = np.ascontiguousarray(x, dtype=np.float32)
    held = x_val is not None
    xv = np.ascontiguousarray(x_val if held else x, dtype=np.float32)
    example = torch.from_numpy(x[:1])
    model.eval()
    teacher = None
    if loss == "distill":                  # the float model, frozen, is the reference
        teacher = copy.deepcopy(model).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        y, yv = None, predict(teacher, xv)
    else:
        y = np.ascontiguousarray(y, dtype=np.int64 if loss == "ce" else np.float32)
        yv = np.asarray(y_val if held else y)
    with torch.no_grad():
        n_out = len(outputs(model(example)))
    if len(output_names) != n_out:
        output_names = tuple(output_names[:1]) if n_out == 1 else tuple(f"output{k}" for k in range(n_out))
    metric = lambda m: evaluate(predict(m, xv), yv, loss)           # noqa: E731
    train = dict(loss=loss, teacher=teacher, lr=lr, batch_size=batch_size, log=log)
    report = {"evaluated_on": "validation data" if held else "the training data (no validation data given)",
              "loss": loss}
    float_onnx = export_onnx(model, example, input_names=input_names, output_names=output_names)
    report["float"] = metric(model)
    report["post_training_inq"] = metric(post_training_inq(model, bn=bn)[0])
    log(f"float {report['float']}, post-training INQ {report['post_training_inq']}")
    if channel_ratio:
        report["channel_pruning"] = prune_channels(model, channel_ratio, criterion=criterion, example=example,
                                                   scope=scope, multiple=channel_multiple)
    if weight_ratio:
        report["weight_pruning"] = prune_weights(model, weight_ratio)
    if channel_ratio or weight_ratio:
        report["pruned_before_finetune"] = metric(model)
        if finetune_epochs:
            fit(model, model.parameters(), x, y, epochs=finetune_epochs, seed=seed, train_mode=True,
                after_step=hold_zeros(model) if weight_ratio else None, tag="fine-tune ", **train)
        report["pruned"] = metric(model)
        log(f"pruned: {report['pruned']}")

    def retrain(params, after_step, step, frac):
        fit(model, params, x, y, epochs=inq_epochs, seed=seed + step + 1, train_mode=False, after_step=after_step,
            tag=f"INQ {frac:.3f} ", **train)
    layers = incremental_inq(model, retrain, schedule, bn=bn, partition=partition, seed=seed,
                             freeze_zeros=bool(weight_ratio), log=log)
    report["inq"] = metric(model)
    onnx_model = export_onnx(model, example, input_names=input_names, output_names=output_names)
    sess = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    runs = [sess.run(None, {input_names[0]: xv[s:s + 256]}) for s in range(0, len(xv), 256)]
    out = [np.concatenate([r[k] for r in runs]) for k in range(len(runs[0]))]
    report["inq_onnxruntime"] = evaluate(out[0] if len(out) == 1 else out, yv, loss)
    report["inq_layers"] = verify_inq(onnx_model, layers)
    report["inq_settings"] = {"schedule": list(schedule), "epochs_per_step": inq_epochs, "bn": bn,
                              "partition": partition, "lr": lr, "batch_size": batch_size, "seed": seed}
    log(f"INQ: {report['inq']} (onnxruntime {report['inq_onnxruntime']})")
    calib = x[:64]
    report["compiled"] = {"float": compile_figures(float_onnx, calib),
                          "compressed": compile_figures(copy.deepcopy(onnx_model), calib)}
    return onnx_model, report
