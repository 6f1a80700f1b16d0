#!/usr/bin/env python3
"""Train the Nibble demo model: a small CNN on scikit-learn's UCI handwritten digits.

Usage:
    python scripts/train_digits.py [--out models/digits] [--epochs N] [--seed S]
                                   [--inq-epochs M] [--save-float DIR]

Two phases: float training, then incremental INQ retraining (Zhou et al., ICLR 2017)
so that every layer's weights *after BatchNormalization folding* lie on the 4-bit
INQ level set {0, ±2^n2 … ±2^n1}, n2 = n1 − 6, of ``nibble.sim.golden``
(ARITHMETIC §4.1–4.2). During INQ the BatchNormalization layers are in eval mode
with γ and the running statistics frozen, so the per-channel fold factor
s = γ/√(var+ε) is a constant; each Conv+BN pair is quantized on its folded weight
w_eff = w·s, and ``conv.weight`` stores q_eff/s. Per layer n1 is fixed from the
float w_eff; the largest-|w_eff| 50 %, 75 %, 87.5 % and 100 % of the weights are
quantized and frozen in turn, the rest (and all biases and BN shifts β) retrained
in between. The script then checks, in float64 on the exported initializers, that
folding BN gives weights already on the level set, with the same n1.

The run is deterministic (fixed seeds, deterministic algorithms, one CPU thread).
It writes, into the output directory:

    digits_cnn.onnx  the INQ-retrained network, opset 17, input ``input``
                     (N,1,8,8), output ``logits`` (N,10); BatchNormalization kept
                     as separate nodes (not folded into the convolutions)
    test_x.npy       (360,1,8,8) float32 in [0,1], held-out test images
    test_y.npy       (360,) int64 labels of test_x
    calib_x.npy      (256,1,8,8) float32 in [0,1], calibration images drawn
                     from the training split
    metrics.json     onnxruntime test accuracy before and after INQ, the INQ
                     exponents per layer and run parameters

Requires torch==2.13.0 (CPU), scikit-learn, onnx, onnxruntime and the nibble
package (``pip install -e '.[train,data]'``): the INQ retraining, the ONNX export and the check
of the exported weights against the compiler's own quantization are ``nibble.host.compress``'s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
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
INQ_SCHEDULE = (0.5, 0.75, 0.875, 1.0)  # cumulative fraction of each layer's weights quantized
DEFAULT_INQ_EPOCHS = 10                   # retraining epochs after each partial quantization
INQ_LEARNING_RATE = 1e-3


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


def fit(model, params, x_train: np.ndarray, y_train: np.ndarray, epochs: int, lr: float,
        weight_decay: float, gen, bn_frozen: bool = False, after_step=None, log=print, tag: str = ""):
    """Adam with a cosine schedule over ``epochs``, cross-entropy, shift augmentation.

    ``bn_frozen``: keep the whole model in eval mode (BatchNormalization uses and keeps its
    running statistics). ``after_step``: called after every optimizer step.
    """
    import torch

    xt = torch.from_numpy(x_train)
    yt = torch.from_numpy(y_train)
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    loss_fn = torch.nn.CrossEntropyLoss()
    n = len(xt)
    for epoch in range(epochs):
        model.train(not bn_frozen)
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
            if after_step is not None:
                after_step()
            total += loss.item() * len(b)
            correct += int((out.argmax(1) == yb).sum())
        sched.step()
        if epoch == 0 or (epoch + 1) % 10 == 0 or epoch + 1 == epochs:
            log(f"{tag}epoch {epoch + 1:3d}/{epochs}  loss {total / n:.4f}  train acc {correct / n:.4f}")
    model.eval()
    return model


def train(model, x_train: np.ndarray, y_train: np.ndarray, epochs: int, gen, log=print):
    """Float training of all parameters, BatchNormalization in training mode."""
    return fit(model, model.parameters(), x_train, y_train, epochs, LEARNING_RATE, WEIGHT_DECAY, gen, log=log)


# ---------------------------------------------------------------------------------------------
# Incremental INQ on the BN-folded weights: nibble.host.compress


def inq_retrain(model, x_train: np.ndarray, y_train: np.ndarray, epochs_per_step: int, gen,
                schedule=INQ_SCHEDULE, log=print):
    """Incremental INQ (Zhou et al. 2017) on the folded weights (``nibble.host.compress``, BN
    kept); returns the :class:`~nibble.host.compress.InqLayer` list with n1.

    BatchNormalization stays in eval mode and γ is frozen, so the fold factors never change;
    conv biases, β and the Gemm bias remain trainable throughout.
    """
    from nibble.host import compress

    def retrain(params, after_step, step, frac):
        fit(model, params, x_train, y_train, epochs_per_step, INQ_LEARNING_RATE, 0.0, gen,
            bn_frozen=True, after_step=after_step, log=log, tag=f"  INQ {frac:.3f} ")
    return compress.incremental_inq(model, retrain, schedule, bn="keep", log=log)


def onnx_model(model):
    """The model as a checked opset-17 ONNX model (BatchNormalization kept, ``nibble.host.compress``)."""
    import torch

    from nibble.host import compress

    return compress.export_onnx(model, torch.zeros(1, 1, 8, 8), output_names=("logits",),
                                producer="nibble scripts/train_digits.py")


def ort_logits(model_file, x: np.ndarray) -> np.ndarray:
    """onnxruntime logits, one thread; ``model_file`` is a path or the serialized model."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    src = model_file if isinstance(model_file, bytes) else str(model_file)
    sess = ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    return sess.run(["logits"], {"input": x})[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="models/digits", type=Path, help="output directory")
    ap.add_argument("--epochs", default=DEFAULT_EPOCHS, type=int, help="float training epochs")
    ap.add_argument("--inq-epochs", default=DEFAULT_INQ_EPOCHS, type=int,
                    help="retraining epochs after each of the first three INQ partitions")
    ap.add_argument("--seed", default=DEFAULT_SEED, type=int, help="split and training seed")
    ap.add_argument("--save-float", type=Path, help="also write the float model's state_dict (float.pt) and the "
                    "training split (train_x.npy, train_y.npy) here, for nibble compress")
    args = ap.parse_args(argv)

    import torch

    set_determinism(args.seed)
    x, y = load_dataset()
    train_idx, test_idx, calib_idx = split_indices(y, args.seed)
    assert not set(test_idx) & set(train_idx)
    assert set(calib_idx) <= set(train_idx)
    print(f"digits: {len(y)} images, train {len(train_idx)}, test {len(test_idx)}, calib {len(calib_idx)}")
    test_x, test_y, calib_x = x[test_idx], y[test_idx], x[calib_idx]

    def accuracy(logits: np.ndarray) -> tuple[int, float]:
        correct = int((logits.argmax(1) == test_y).sum())
        return correct, correct / len(test_y)

    model = build_model()
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    train(model, x[train_idx], y[train_idx], args.epochs, gen)
    float_s = time.perf_counter() - t0
    print(f"float training time: {float_s:.1f} s")
    if args.save_float:
        args.save_float.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), args.save_float / "float.pt")
        np.save(args.save_float / "train_x.npy", x[train_idx])
        np.save(args.save_float / "train_y.npy", y[train_idx])

    from nibble.host import compress

    float_correct, float_acc = accuracy(ort_logits(onnx_model(model).SerializeToString(), test_x))
    print(f"float test accuracy (onnxruntime, before INQ): {float_acc:.4f} ({float_correct}/{len(test_y)})")
    ptq_correct, ptq_acc = accuracy(ort_logits(onnx_model(compress.post_training_inq(model)[0]).SerializeToString(),
                                               test_x))
    print(f"post-training INQ test accuracy (no retraining): {ptq_acc:.4f} ({ptq_correct}/{len(test_y)})")

    t1 = time.perf_counter()
    layers = inq_retrain(model, x[train_idx], y[train_idx], args.inq_epochs, gen)
    inq_s = time.perf_counter() - t1
    print(f"INQ retraining time: {inq_s:.1f} s (total training {float_s + inq_s:.1f} s)")

    with torch.no_grad():
        torch_logits = model(torch.from_numpy(test_x)).numpy()
    _, torch_acc = accuracy(torch_logits)

    args.out.mkdir(parents=True, exist_ok=True)
    onnx_path = args.out / "digits_cnn.onnx"
    proto = onnx_model(model)
    ops = [n.op_type for n in proto.graph.node]
    onnx_path.write_bytes(proto.SerializeToString())
    print("onnx nodes:", " -> ".join(ops))
    np.save(args.out / "test_x.npy", test_x)
    np.save(args.out / "test_y.npy", test_y)
    np.save(args.out / "calib_x.npy", calib_x)

    import onnx

    inq_report = compress.verify_inq(onnx.load(str(onnx_path)), layers)
    for r in inq_report:
        print(f"  {r['layer']}: n1 {r['n1']}, n2 {r['n2']}, {r['zero_weights']}/{r['weights']} zero, "
              f"{r['levels_used']} levels used, max rel fold error {r['max_rel_error']:.2g}")
    print("exported folded weights are on the INQ level set (n1 unchanged, float32 rounding harmless)")

    ort_out = ort_logits(onnx_path, test_x)
    max_diff = float(np.abs(ort_out - torch_logits).max())
    correct, acc = accuracy(ort_out)

    import onnxruntime

    metrics = {
        "float_test_accuracy": float_acc,
        "float_test_correct": float_correct,
        "post_training_inq_test_accuracy": ptq_acc,
        "inq_test_accuracy": acc,
        "inq_test_correct": correct,
        "test_count": int(len(test_y)),
        "accuracy_note": (
            "onnxruntime on float features; float = after float training, before INQ; "
            "post_training_inq = the float model's folded weights quantized at once, no "
            "retraining; inq = the exported digits_cnn.onnx after incremental INQ retraining"
        ),
        "torch_inq_test_accuracy": torch_acc,
        "max_abs_logit_diff_torch_vs_onnxruntime": max_diff,
        "inq": {
            "levels": "{0, +-2^n2 .. +-2^n1}, n2 = n1 - 6, of BN-folded weights (nibble.sim.golden)",
            "schedule": list(INQ_SCHEDULE),
            "epochs_per_step": args.inq_epochs,
            "optimizer": f"Adam lr={INQ_LEARNING_RATE} no weight decay, cosine schedule per step",
            "frozen": "BatchNormalization in eval mode: running mean/var and gamma fixed; "
                      "biases and beta trained",
            "layers": inq_report,
        },
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
    print(f"test accuracy (onnxruntime): float {float_acc:.4f}, post-training INQ {ptq_acc:.4f}, "
          f"INQ retrained {acc:.4f} ({correct}/{len(test_y)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
