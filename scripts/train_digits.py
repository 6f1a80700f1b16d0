#!/usr/bin/env python3
"""Train the Nibble demo model: a small CNN on scikit-learn's UCI handwritten digits.

Usage:
    python scripts/train_digits.py [--out models/digits] [--epochs N] [--seed S]

The run is deterministic (fixed seeds, deterministic algorithms, one CPU thread).
It writes, into the output directory:

    digits_cnn.onnx  the trained network, opset 17, input ``input`` (N,1,8,8),
                     output ``logits`` (N,10); BatchNormalization kept as
                     separate nodes (not folded into the convolutions)
    test_x.npy       (360,1,8,8) float32 in [0,1], held-out test images
    test_y.npy       (360,) int64 labels of test_x
    calib_x.npy      (256,1,8,8) float32 in [0,1], calibration images drawn
                     from the training split
    metrics.json     onnxruntime float test accuracy and run parameters

Requires torch==2.13.0 (CPU), scikit-learn, onnx, onnxruntime.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import sys
import time
import warnings
from pathlib import Path

import numpy as np

N_TEST = 360
N_CALIB = 256
OPSET = 17
DEFAULT_EPOCHS = 40
DEFAULT_SEED = 0
BATCH_SIZE = 32
LEARNING_RATE = 2e-3
WEIGHT_DECAY = 1e-4


def load_dataset() -> tuple[np.ndarray, np.ndarray]:
    """UCI digits as float32 NCHW in [0,1] and int64 labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / np.float32(16.0)).reshape(-1, 1, 8, 8)
    y = d.target.astype(np.int64)
    return x, y


def split_indices(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified held-out test split and a calibration subset of the training split.

    Returns (train_idx, test_idx, calib_idx), indices into load_digits() order.
    calib_idx is a subset of train_idx; test_idx is disjoint from both.
    """
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    train_idx, test_idx = train_test_split(
        idx, test_size=N_TEST, stratify=y, random_state=seed, shuffle=True
    )
    rng = np.random.default_rng(seed)
    calib_idx = np.sort(rng.choice(train_idx, size=N_CALIB, replace=False))
    return np.sort(train_idx), np.sort(test_idx), calib_idx


def set_determinism(seed: int) -> None:
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)


def build_model():
    import torch.nn as nn

    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(256, 10),
    )


def augment(xb, gen):
    """Random shift of each image by up to one pixel in each direction (zero fill)."""
    import torch

    n = xb.shape[0]
    padded = torch.nn.functional.pad(xb, (1, 1, 1, 1))
    dy = torch.randint(0, 3, (n,), generator=gen)
    dx = torch.randint(0, 3, (n,), generator=gen)
    out = torch.empty_like(xb)
    for i in range(n):
        out[i] = padded[i, :, dy[i] : dy[i] + 8, dx[i] : dx[i] + 8]
    return out


def train(model, x_train: np.ndarray, y_train: np.ndarray, epochs: int, seed: int, log=print):
    import torch

    gen = torch.Generator().manual_seed(seed)
    xt = torch.from_numpy(x_train)
    yt = torch.from_numpy(y_train)
    opt = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    loss_fn = torch.nn.CrossEntropyLoss()
    n = len(xt)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)
        total, correct = 0.0, 0
        for s in range(0, n, BATCH_SIZE):
            b = perm[s : s + BATCH_SIZE]
            if len(b) < 2:  # BatchNorm needs more than one sample per batch
                continue
            xb = augment(xt[b], gen)
            yb = yt[b]
            opt.zero_grad()
            out = model(xb)
            loss = loss_fn(out, yb)
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
            correct += int((out.argmax(1) == yb).sum())
        sched.step()
        if epoch == 0 or (epoch + 1) % 10 == 0 or epoch + 1 == epochs:
            log(f"epoch {epoch + 1:3d}/{epochs}  loss {total / n:.4f}  train acc {correct / n:.4f}")
    model.eval()
    return model


def _inline_identity_initializers(model_proto) -> None:
    """Replace Identity nodes fed by an initializer with a copy of that initializer.

    The TorchScript exporter deduplicates equal-valued parameters and reconnects
    them through Identity nodes; the graph is cleaner without them.
    """
    import onnx
    from onnx import numpy_helper

    g = model_proto.graph
    inits = {t.name: t for t in g.initializer}
    keep = []
    for node in g.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            arr = numpy_helper.to_array(inits[node.input[0]])
            g.initializer.append(numpy_helper.from_array(arr, node.output[0]))
            inits[node.output[0]] = g.initializer[-1]
        else:
            keep.append(node)
    used = {i for n in keep for i in n.input}
    del g.node[:]
    g.node.extend(keep)
    unused = [t for t in g.initializer if t.name not in used]
    for t in unused:
        g.initializer.remove(t)
    onnx.checker.check_model(model_proto)


def export_onnx(model, path: Path) -> list[str]:
    import onnx
    import torch

    dummy = torch.zeros(1, 1, 8, 8)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # the TorchScript exporter is used on purpose: it keeps BatchNormalization
        # as separate nodes when do_constant_folding=False
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (dummy,),
            buf,
            dynamo=False,
            export_params=True,
            opset_version=OPSET,
            training=torch.onnx.TrainingMode.EVAL,
            do_constant_folding=False,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
        )
    m = onnx.load_from_string(buf.getvalue())
    _inline_identity_initializers(m)
    m.producer_name = "nibble scripts/train_digits.py"
    onnx.checker.check_model(m, full_check=True)
    path.write_bytes(m.SerializeToString())
    return [n.op_type for n in m.graph.node]


def ort_logits(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return sess.run(["logits"], {"input": x})[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="models/digits", type=Path, help="output directory")
    ap.add_argument("--epochs", default=DEFAULT_EPOCHS, type=int)
    ap.add_argument("--seed", default=DEFAULT_SEED, type=int, help="split and training seed")
    args = ap.parse_args(argv)

    import torch

    set_determinism(args.seed)
    x, y = load_dataset()
    train_idx, test_idx, calib_idx = split_indices(y, args.seed)
    assert not set(test_idx) & set(train_idx)
    assert set(calib_idx) <= set(train_idx)
    print(f"digits: {len(y)} images, train {len(train_idx)}, test {len(test_idx)}, calib {len(calib_idx)}")

    model = build_model()
    t0 = time.perf_counter()
    train(model, x[train_idx], y[train_idx], args.epochs, args.seed)
    train_s = time.perf_counter() - t0
    print(f"training time: {train_s:.1f} s")

    test_x, test_y, calib_x = x[test_idx], y[test_idx], x[calib_idx]
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(test_x)).numpy()
    torch_acc = float((torch_logits.argmax(1) == test_y).mean())

    args.out.mkdir(parents=True, exist_ok=True)
    onnx_path = args.out / "digits_cnn.onnx"
    ops = export_onnx(model, onnx_path)
    print("onnx nodes:", " -> ".join(ops))
    np.save(args.out / "test_x.npy", test_x)
    np.save(args.out / "test_y.npy", test_y)
    np.save(args.out / "calib_x.npy", calib_x)

    ort_out = ort_logits(onnx_path, test_x)
    max_diff = float(np.abs(ort_out - torch_logits).max())
    correct = int((ort_out.argmax(1) == test_y).sum())
    acc = correct / len(test_y)

    import onnxruntime

    metrics = {
        "float_test_accuracy": acc,
        "test_correct": correct,
        "test_count": int(len(test_y)),
        "torch_test_accuracy": torch_acc,
        "max_abs_logit_diff_torch_vs_onnxruntime": max_diff,
        "split_seed": args.seed,
        "split": (
            "sklearn.model_selection.train_test_split(arange(1797), test_size=360, "
            "stratify=target, random_state=seed); calib = sorted "
            "numpy.random.default_rng(seed).choice(train, 256, replace=False)"
        ),
        "train_count": int(len(train_idx)),
        "calib_count": int(len(calib_idx)),
        "epochs": args.epochs,
        "batch_size": BATCH_SIZE,
        "optimizer": f"Adam lr={LEARNING_RATE} weight_decay={WEIGHT_DECAY}, cosine schedule",
        "augmentation": "random shift by up to 1 pixel, zero fill",
        "opset": OPSET,
        "onnx_nodes": ops,
        "torch_version": torch.__version__,
        "onnxruntime_version": onnxruntime.__version__,
        "python_version": platform.python_version(),
    }
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")

    if max_diff > 1e-4:
        print(f"FAIL: onnxruntime and torch logits differ by {max_diff:.3g} (> 1e-4)", file=sys.stderr)
        return 1
    print(f"onnxruntime vs torch max |logit diff|: {max_diff:.3g}")
    print(f"float test accuracy (onnxruntime): {acc:.4f} ({correct}/{len(test_y)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
