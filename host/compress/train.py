"""A plain training loop for :func:`~nibble.host.compress.inq.incremental_inq`'s ``retrain`` and
for fine-tuning after pruning, when the caller has none of its own: Adam with a cosine
learning-rate schedule over mini-batches of in-memory arrays; and the evaluation of a model on
arrays (accuracy for classification, PSNR for images in [0, 1])."""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["fit", "predict", "evaluate", "LOSSES"]

#: ``nibble compress --loss``: cross-entropy on class labels, mean squared error on targets.
LOSSES = {"ce": torch.nn.CrossEntropyLoss, "mse": torch.nn.MSELoss}


def fit(model, params, x, y, *, loss="ce", epochs=1, lr=1e-3, weight_decay=0.0, batch_size=32, seed=0,
        train_mode=True, after_step=None, log=print, tag=""):
    """Train ``params`` of ``model`` on ``(x, y)`` for ``epochs`` epochs.

    :param x: float32 array ``(N, …)``; ``y``: int64 labels ``(N,)`` (``loss="ce"``) or float32
        targets (``"mse"``).
    :param train_mode: ``model.train()`` (BatchNorm statistics update) or eval mode throughout
        (INQ with BatchNorm kept).
    :param after_step: called after every optimizer step (INQ's restore of frozen weights).
    :returns: the last epoch's mean loss.
    :raises ValueError: an unknown loss, ``x`` and ``y`` of different lengths, no batch.
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown loss '{loss}' ({', '.join(LOSSES)})")
    if len(x) != len(y):
        raise ValueError(f"{len(x)} inputs but {len(y)} targets")
    xt, yt = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))
    params = list(params)
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1))
    loss_fn = LOSSES[loss]()
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
            opt.zero_grad()
            out = loss_fn(model(xt[b]), yt[b])
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
    """The model's float32 outputs on ``x`` (eval mode, no gradient)."""
    model.eval()
    outs = []
    with torch.no_grad():
        for s in range(0, len(x), batch_size):
            outs.append(model(torch.from_numpy(np.ascontiguousarray(x[s:s + batch_size]))).numpy())
    return np.concatenate(outs)


def evaluate(out, y, loss="ce"):
    """``{"accuracy": …}`` of logits ``out`` against labels (``"ce"``), or ``{"psnr_db": …,
    "mse": …}`` of outputs clipped to [0, 1] against targets (``"mse"``; PSNR = 10·log10(1/MSE),
    peak 1.0)."""
    if loss == "ce":
        return {"accuracy": float(np.mean(np.argmax(out, axis=1) == y))}
    mse = float(np.mean((np.clip(out, 0.0, 1.0) - y) ** 2))
    return {"mse": mse, "psnr_db": float(10 * np.log10(1.0 / mse)) if mse > 0 else float("inf")}
