"""A plain training loop for :func:`~nibble.host.compress.inq.incremental_inq`'s ``retrain`` and
for fine-tuning after pruning, when the caller has none of its own: Adam with a cosine
learning-rate schedule over mini-batches of in-memory arrays; and the evaluation of a model on
arrays (accuracy for classification, PSNR for images in [0, 1], the distance to the float
model for distillation).

Losses (:data:`LOSSES`): ``ce`` (cross-entropy on class labels), ``mse`` (mean squared error on
targets), ``distill`` (no targets: the sum over the model's outputs of the mean squared error
against a frozen ``teacher``'s outputs on the same batch — the float model retraining its
compressed self; for models with several outputs, such as MTCNN's box and score heads).
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["fit", "predict", "evaluate", "LOSSES", "outputs"]

#: ``nibble compress --loss``.
LOSSES = ("ce", "mse", "distill")


def outputs(o):
    """A model's output as a tuple of tensors (one for a single output)."""
    return tuple(o) if isinstance(o, (tuple, list)) else (o,)


def fit(model, params, x, y=None, *, loss="ce", teacher=None, epochs=1, lr=1e-3, weight_decay=0.0, batch_size=32,
        seed=0, train_mode=True, after_step=None, augment=None, log=print, tag=""):
    """Train ``params`` of ``model`` on ``x`` for ``epochs`` epochs.

    :param x: float32 array ``(N, …)``; ``y``: int64 labels ``(N,)`` (``loss="ce"``), float32
        targets (``"mse"``), unused with ``"distill"`` (``teacher``: the frozen reference module).
    :param train_mode: ``model.train()`` (BatchNorm statistics update) or eval mode throughout
        (INQ with BatchNorm kept).
    :param after_step: called after every optimizer step (INQ's restore of frozen weights).
    :param augment: ``augment(xb, generator) → xb`` applied to every batch (e.g. flips).
    :returns: the last epoch's mean loss.
    :raises ValueError: an unknown loss, ``x`` and ``y`` of different lengths, a missing ``y`` or
        ``teacher``, fewer than 2 samples.
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown loss '{loss}' ({', '.join(LOSSES)})")
    if loss == "distill":
        if teacher is None:
            raise ValueError("loss 'distill' needs a teacher model")
    elif y is None or len(x) != len(y):
        raise ValueError(f"{len(x)} inputs but {'no' if y is None else len(y)} targets")
    xt = torch.from_numpy(np.ascontiguousarray(x))
    yt = torch.from_numpy(np.ascontiguousarray(y)) if loss != "distill" else None
    params = list(params)
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1))
    crit = torch.nn.CrossEntropyLoss() if loss == "ce" else torch.nn.MSELoss()
    gen = torch.Generator().manual_seed(seed)
    n, mean = len(xt), float("nan")
    if n < 2:
        raise ValueError(f"training needs at least 2 samples, not {n}")
    for epoch in range(epochs):
        model.train(train_mode)
        perm = torch.randperm(n, generator=gen)
        total, seen = 0.0, 0
        for s in range(0, n, batch_size):
            b = perm[s:s + batch_size]
            if len(b) < 2 and train_mode:          # BatchNorm needs two samples in training mode
                continue
            xb = xt[b] if augment is None else augment(xt[b], gen)
            opt.zero_grad()
            if loss == "distill":
                with torch.no_grad():
                    want = outputs(teacher(xb))
                out = sum(crit(a, w) for a, w in zip(outputs(model(xb)), want))
            else:
                out = crit(model(xb), yt[b])
            out.backward()
            opt.step()
            if after_step is not None:
                after_step()
            total += out.item() * len(b)
            seen += len(b)
        sched.step()
        mean = total / max(seen, 1)
        if log is not None:
            log(f"{tag}epoch {epoch + 1}/{epochs}  loss {mean:.4g}")
    model.eval()
    return mean


def predict(model, x, batch_size=256):
    """The model's float32 outputs on ``x`` (eval mode, no gradient): one array, or a list with one
    per output for a model with several."""
    model.eval()
    outs = []
    with torch.no_grad():
        for s in range(0, len(x), batch_size):
            outs.append([o.numpy() for o in outputs(model(torch.from_numpy(np.ascontiguousarray(x[s:s + batch_size]))))])
    res = [np.concatenate([o[k] for o in outs]) for k in range(len(outs[0]))]
    return res[0] if len(res) == 1 else res


def evaluate(out, y, loss="ce"):
    """``{"accuracy": …}`` of logits ``out`` against labels (``"ce"``); ``{"psnr_db": …, "mse": …}``
    of outputs clipped to [0, 1] against targets (``"mse"``; PSNR = 10·log10(1/MSE), peak 1.0);
    ``{"mse_vs_float": …, "max_abs_diff_vs_float": …}`` of every output against the float model's
    ``y`` (``"distill"``: arrays or lists of arrays, the mean of the outputs' MSEs)."""
    if loss == "ce":
        return {"accuracy": float(np.mean(np.argmax(out, axis=1) == y))}
    if loss == "distill":
        a, b = (out if isinstance(out, list) else [out]), (y if isinstance(y, list) else [y])
        return {"mse_vs_float": float(np.mean([np.mean((p - q) ** 2) for p, q in zip(a, b)])),
                "max_abs_diff_vs_float": float(max(np.max(np.abs(p - q)) for p, q in zip(a, b)))}
    mse = float(np.mean((np.clip(out, 0.0, 1.0) - y) ** 2))
    return {"mse": mse, "psnr_db": float(10 * np.log10(1.0 / mse)) if mse > 0 else float("inf")}
