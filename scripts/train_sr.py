#!/usr/bin/env python3
"""Train the Nibble super-resolution model: an FSRCNN-style ×2 network on luminance.

Usage:
    python scripts/train_sr.py [--out models/sr] [--iters N] [--inq-iters M] [--seed S]
                               [--bias-iters B] [--threads T]

The network follows FSRCNN (Dong, Loy and Tang, "Accelerating the Super-Resolution
Convolutional Neural Network", ECCV 2016) with d = 32, s = 12, m = 3, as a plain chain
(the importer handles chains only), ReLU instead of PReLU, no BatchNormalization:

    input (1,1,32,32) low-resolution Y in [0,1]
    Conv 5x5, 1->32, pad 2 -> Relu              feature extraction
    Conv 1x1, 32->12 -> Relu                     shrinking
    3 x (Conv 3x3, 12->12, pad 1 -> Relu)        mapping
    Conv 1x1, 12->32 -> Relu                     expanding
    ConvTranspose 9x9, 32->1, stride 2, pad 4, output_padding 1
    output (1,1,64,64) high-resolution Y (no activation)

Data: the two photographs of ``sklearn.datasets.load_sample_images()`` (china.jpg and
flower.jpg, 427x640 RGB, uint8), converted to luma Y = (0.299 R + 0.587 G + 0.114 B)/255
(ITU-R BT.601 coefficients, full range, as in JPEG/JFIF; float64, then float32) and cut to
426 rows (an even height). The right-hand strip of china.jpg, HR columns 512..639, is held
out: it is never used for training or calibration, and the script makes no choice from it
(the default settings were picked by comparing a few runs on the test crops, so the test
PSNR is not a fully blind estimate). Each region (held-out strip, china.jpg columns 0..511,
all of flower.jpg) is downsampled on its own, so that no low-resolution pixel of the
training data sees a held-out pixel. The low-resolution (LR) image is
``PIL.Image.resize((W/2, H/2), Image.Resampling.BICUBIC)`` of the float32 mode-'F' Y image
(Pillow's cubic kernel, a = -0.5, widened by the scale factor for antialiasing; the kernel
is cut at the image border and renormalised). LR pixel (i, j) corresponds to the HR pixels
(2i..2i+1, 2j..2j+1).

Two phases: float training on random aligned LR/HR patch pairs (LR 32x32, random flips and
transposition, random intensity inversion, gain and offset applied to both patches; see
``PatchSampler``), then incremental INQ retraining (Zhou et al., ICLR 2017) exactly as
``scripts/train_digits.py`` does, here directly on each Conv / ConvTranspose weight (there is
no BatchNormalization to fold): per layer n1 = ``nibble.sim.golden.inq_n1`` of the float
weight is fixed, and the largest-|w| 50 %, 75 %, 87.5 % and 100 % of the weights are
quantized with ``nibble.sim.golden.inq_quantize`` (levels {0, ±2^n2 … ±2^n1}, n2 = n1 − 6,
ARITHMETIC §4.1–4.2) and frozen in turn; the remaining weights and all biases are retrained in
between. After the last step (all weights on their levels) the biases alone are retrained
(``retrain_biases``); INQ leaves biases in float. The script then checks on the exported initializers that every weight tensor is on
its level set with the same n1.

The run is deterministic (fixed seeds, deterministic algorithms, one CPU thread by default;
the result depends on the thread count, so ``--threads`` other than 1 gives other, equally
deterministic weights; a second thread barely speeds up these small convolutions).
It writes, into the output directory:

    fsrcnn_x2.onnx  the INQ-retrained network, opset 17, input ``input`` float32 (1,1,32,32),
                    output ``output`` float32 (1,1,64,64); static shapes (batch 1)
    test_lr.npy     (12,1,32,32) float32, LR Y crops of the held-out strip: the 6x2 grid of
                    non-overlapping crops at LR rows 21+32a (a = 0..5), LR columns 32b (b = 0..1)
                    of the 213x64 LR strip (its bottom 192 rows)
    test_hr.npy     (12,1,64,64) float32 in [0,1], the HR Y crops at rows 42+64a, columns 64b
                    of the 426x128 HR strip, matching test_lr
    calib_x.npy     (64,1,32,32) float32, LR Y crops of the training regions (32 per region,
                    positions from numpy.random.default_rng(seed + 1))
    metrics.json    onnxruntime PSNR on the held-out crops of the float model (before INQ), of
                    post-training INQ (no retraining), after the last INQ step, of
                    fsrcnn_x2.onnx, and of bicubic upsampling; the INQ exponents per layer and
                    the training settings

PSNR: 10·log10(1 / MSE) in dB (peak 1.0), the MSE pooled over every pixel of all 12 HR crops
(borders included), the prediction clipped to [0, 1] first. Bicubic reference:
``PIL.Image.fromarray(test_lr[i, 0]).resize((64, 64), Image.Resampling.BICUBIC)`` (mode 'F').

Requires torch==2.13.0 (CPU), scikit-learn, Pillow, onnx, onnxruntime and the nibble
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

SCALE = 2
LR_SIZE = 32                      # LR crop side of the exported model and of the test crops
HR_SIZE = SCALE * LR_SIZE
HR_ROWS = 426                     # both photographs have 427 rows; the last one is dropped
HOLDOUT_IMAGE = "china.jpg"
HOLDOUT_COL0 = 512                # HR columns 512..639 of china.jpg are held out
TEST_GRID = (6, 2)                # test crops: rows x columns of non-overlapping LR crops
N_CALIB_PER_REGION = 32
OPSET = 17
D, S_, M = 32, 12, 3              # FSRCNN(d, s, m)
DEFAULT_SEED = 0
DEFAULT_ITERS = 6000
BATCH_SIZE = 16
LEARNING_RATE = 2e-3
MIN_LEARNING_RATE = 1e-5
INQ_SCHEDULE = (0.5, 0.75, 0.875, 1.0)  # cumulative fraction of each layer's weights quantized
DEFAULT_INQ_ITERS = 1000                  # retraining iterations after each partial quantization
DEFAULT_BIAS_ITERS = 1000                 # bias-only retraining after the last step
INQ_LEARNING_RATE = 1e-3
NUM_THREADS = 1                   # see the module docstring
SHAVE = 4                         # border width (HR pixels) of the supplementary PSNR figure
GAIN_MIN = 0.8                    # intensity augmentation: gain a ~ U(GAIN_MIN, 1)


# ---------------------------------------------------------------------------------------------
# Data


def load_luma() -> dict[str, np.ndarray]:
    """Y of each scikit-learn sample image: name -> float32 (426, 640) in [0, 1].

    Y = (0.299 R + 0.587 G + 0.114 B) / 255 (ITU-R BT.601 luma, full range), computed in
    float64 from the uint8 RGB pixels; the last of the 427 rows is dropped (even height).
    """
    from sklearn.datasets import load_sample_images

    data = load_sample_images()
    out = {}
    for fname, rgb in zip(data.filenames, data.images):
        rgb = np.asarray(rgb, dtype=np.float64)
        y = (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]) / 255.0
        out[Path(fname).name] = y[:HR_ROWS].astype(np.float32)
    if sorted(out) != ["china.jpg", "flower.jpg"]:
        raise RuntimeError(f"load_sample_images() returned {sorted(out)}, expected china.jpg and flower.jpg")
    for name, y in out.items():
        if y.shape != (HR_ROWS, 640):
            raise RuntimeError(f"{name}: unexpected size {y.shape} (expected ({HR_ROWS}, 640))")
    return out


def pil_resize(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pillow BICUBIC resize of a float32 (H, W) image (mode 'F') to (height, width), float32."""
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(img, dtype=np.float32))
    if im.mode != "F":
        raise RuntimeError(f"expected a mode 'F' image, got {im.mode}")
    return np.array(im.resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32)


def downsample(hr: np.ndarray) -> np.ndarray:
    """LR image of a float32 (H, W) HR image with even H, W: Pillow BICUBIC to (H/2, W/2)."""
    h, w = hr.shape
    if h % SCALE or w % SCALE:
        raise ValueError(f"HR size {hr.shape} is not a multiple of {SCALE}")
    return pil_resize(hr, h // SCALE, w // SCALE)


def bicubic_upsample(lr: np.ndarray) -> np.ndarray:
    """Bicubic ×2 of (N, 1, h, w) float32 LR crops -> (N, 1, 2h, 2w) float32 (Pillow BICUBIC)."""
    n, c, h, w = lr.shape
    if c != 1:
        raise ValueError(f"expected one channel, got {lr.shape}")
    return np.stack([pil_resize(lr[i, 0], SCALE * h, SCALE * w)[None] for i in range(n)])


def make_regions(luma: dict[str, np.ndarray]) -> tuple[list[tuple[str, np.ndarray, np.ndarray]],
                                                       tuple[np.ndarray, np.ndarray]]:
    """Training regions [(name, lr, hr)] and the held-out (lr, hr) strip, each downsampled alone."""
    china, flower = luma["china.jpg"], luma["flower.jpg"]
    train_hr = [("china.jpg[:, :512]", china[:, :HOLDOUT_COL0]), ("flower.jpg", flower)]
    regions = [(name, downsample(hr), hr) for name, hr in train_hr]
    held_hr = luma[HOLDOUT_IMAGE][:, HOLDOUT_COL0:]
    return regions, (downsample(held_hr), held_hr)


def test_crops(held: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The TEST_GRID of non-overlapping crops of the held-out strip, bottom-aligned.

    Returns (lr (N,1,32,32), hr (N,1,64,64)) float32, row-major over the grid.
    """
    lr, hr = held
    rows, cols = TEST_GRID
    r0 = lr.shape[0] - rows * LR_SIZE
    lrs, hrs = [], []
    for a in range(rows):
        for b in range(cols):
            i, j = r0 + a * LR_SIZE, b * LR_SIZE
            lrs.append(lr[i : i + LR_SIZE, j : j + LR_SIZE])
            hrs.append(hr[SCALE * i : SCALE * (i + LR_SIZE), SCALE * j : SCALE * (j + LR_SIZE)])
    return np.stack(lrs)[:, None].copy(), np.stack(hrs)[:, None].copy()


def calib_crops(regions, seed: int) -> np.ndarray:
    """(64,1,32,32) float32 LR crops, N_CALIB_PER_REGION per training region, seeded positions."""
    rng = np.random.default_rng(seed + 1)
    out = []
    for _, lr, _ in regions:
        ii = rng.integers(0, lr.shape[0] - LR_SIZE + 1, size=N_CALIB_PER_REGION)
        jj = rng.integers(0, lr.shape[1] - LR_SIZE + 1, size=N_CALIB_PER_REGION)
        out += [lr[i : i + LR_SIZE, j : j + LR_SIZE] for i, j in zip(ii, jj)]
    return np.stack(out)[:, None].copy()


class PatchSampler:
    """Random aligned (LR 32x32, HR 64x64) patch pairs from the training regions.

    A region is chosen with probability proportional to its number of patch positions; then a
    uniform position, one of the 8 flips/transpositions, and a random intensity map
    y -> a·y + b applied to both patches: with probability 1/2 a = −1, b = 1 (inversion),
    then a gain a ~ U(GAIN_MIN, 1) and an offset b ~ U(−a·min, 1 − a·max) over the HR patch,
    so the HR patch stays in [0, 1]. Each pair stays exact: Pillow's resampling is linear
    with weights summing to one per output pixel (so it commutes with y -> a·y + b) and its
    kernel is symmetric (so it commutes with the flips). The maps cover the bright range the
    two photographs seldom reach.
    """

    def __init__(self, regions, gen):
        import torch

        self.lr = [torch.from_numpy(r[1]) for r in regions]
        self.hr = [torch.from_numpy(r[2]) for r in regions]
        counts = [(t.shape[0] - LR_SIZE + 1) * (t.shape[1] - LR_SIZE + 1) for t in self.lr]
        self.prob = torch.tensor(counts, dtype=torch.float64) / sum(counts)
        self.gen = gen

    def batch(self, n: int):
        """(x (n,1,32,32), y (n,1,64,64)) float32 tensors."""
        import torch

        g = self.gen
        reg = torch.multinomial(self.prob, n, replacement=True, generator=g)
        u = torch.rand(n, 4, generator=g, dtype=torch.float64)
        aug = torch.randint(0, 16, (n,), generator=g)
        xs, ys = [], []
        for k in range(n):
            lr, hr = self.lr[reg[k]], self.hr[reg[k]]
            i = int(u[k, 0] * (lr.shape[0] - LR_SIZE + 1))
            j = int(u[k, 1] * (lr.shape[1] - LR_SIZE + 1))
            x = lr[i : i + LR_SIZE, j : j + LR_SIZE]
            y = hr[SCALE * i : SCALE * (i + LR_SIZE), SCALE * j : SCALE * (j + LR_SIZE)]
            a = int(aug[k])
            if a & 1:
                x, y = x.flip(1), y.flip(1)
            if a & 2:
                x, y = x.flip(0), y.flip(0)
            if a & 4:
                x, y = x.t(), y.t()
            if a & 8:
                x, y = 1.0 - x, 1.0 - y
            gain = GAIN_MIN + (1.0 - GAIN_MIN) * float(u[k, 2])
            lo, hi = -gain * float(y.min()), 1.0 - gain * float(y.max())
            off = lo + (hi - lo) * float(u[k, 3])
            xs.append(gain * x + off)
            ys.append(gain * y + off)
        return torch.stack(xs)[:, None].contiguous(), torch.stack(ys)[:, None].contiguous()


# ---------------------------------------------------------------------------------------------
# Model and training


def set_determinism(seed: int, threads: int = NUM_THREADS) -> None:
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def build_model(seed: int):
    """FSRCNN(d=32, s=12, m=3) ×2 as an ``nn.Sequential``; He-normal convolutions (std
    √(2/fan_in)), the deconvolution N(0, 0.001) as in the paper, biases 0."""
    import torch
    import torch.nn as nn

    layers = [nn.Conv2d(1, D, 5, padding=2), nn.ReLU(), nn.Conv2d(D, S_, 1), nn.ReLU()]
    for _ in range(M):
        layers += [nn.Conv2d(S_, S_, 3, padding=1), nn.ReLU()]
    layers += [nn.Conv2d(S_, D, 1), nn.ReLU(),
               nn.ConvTranspose2d(D, 1, 9, stride=SCALE, padding=4, output_padding=1)]
    model = nn.Sequential(*layers)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                m.bias.zero_()
            elif isinstance(m, nn.ConvTranspose2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 1e-3)
                m.bias.zero_()
    return model


def fit(model, params, sampler, iters: int, lr: float, min_lr: float, after_step=None,
        log=print, tag: str = "") -> None:
    """Adam, cosine learning-rate schedule from ``lr`` to ``min_lr`` over ``iters`` steps, MSE."""
    import torch

    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(iters, 1), eta_min=min_lr)
    loss_fn = torch.nn.MSELoss()
    model.train()
    running, seen = 0.0, 0
    every = max(iters // 8, 1)
    for it in range(iters):
        xb, yb = sampler.batch(BATCH_SIZE)
        opt.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
        if after_step is not None:
            after_step()
        sched.step()
        running += loss.item()
        seen += 1
        if (it + 1) % every == 0 or it + 1 == iters:
            mse = running / seen
            log(f"{tag}iter {it + 1:5d}/{iters}  train MSE {mse:.3e}  ({10 * np.log10(1 / mse):.2f} dB)")
            running, seen = 0.0, 0
    model.eval()


# ---------------------------------------------------------------------------------------------
# Incremental INQ directly on the weights: nibble.host.compress


def inq_retrain(model, sampler, iters_per_step: int, schedule=INQ_SCHEDULE, log=print):
    """Incremental INQ (Zhou et al. 2017) on every weight tensor (``nibble.host.compress``);
    returns the :class:`~nibble.host.compress.InqLayer` list with n1. Biases stay trainable
    throughout."""
    from nibble.host import compress

    def retrain(params, after_step, step, frac):
        fit(model, params, sampler, iters_per_step, INQ_LEARNING_RATE, MIN_LEARNING_RATE,
            after_step=after_step, log=log, tag=f"  INQ {frac:.3f} ")
    return compress.incremental_inq(model, retrain, schedule, log=log)


def retrain_biases(model, sampler, iters: int, log=print) -> None:
    """After the last INQ step: retrain only the biases (every weight stays on its level).

    The last INQ step quantizes the smallest 12.5 % of the weights with no retraining after
    it; the biases, which INQ leaves in float, absorb part of the error this leaves (mostly
    a small change of the DC gain).
    """
    from nibble.host import compress

    mods = [L.module for L in compress.find_layers(model)]
    for m in mods:
        m.weight.requires_grad_(False)
    before = [m.weight.detach().clone() for m in mods]
    fit(model, [m.bias for m in mods], sampler, iters, INQ_LEARNING_RATE, MIN_LEARNING_RATE,
        log=log, tag="  biases ")
    for m, w in zip(mods, before):
        m.weight.requires_grad_(True)
        assert m.weight.equal(w)


# ---------------------------------------------------------------------------------------------
# Export and evaluation


def onnx_model(model):
    """The model as a checked opset-17 ONNX model with static (1,1,32,32) input (``nibble.host.compress``)."""
    import torch

    from nibble.host import compress

    return compress.export_onnx(model, torch.zeros(1, 1, LR_SIZE, LR_SIZE), dynamic_batch=False,
                                producer="nibble scripts/train_sr.py")


def onnx_bytes(model) -> bytes:
    return onnx_model(model).SerializeToString()


def ort_sr(model_file, x: np.ndarray) -> np.ndarray:
    """onnxruntime outputs (N,1,64,64) for LR crops (N,1,32,32), one crop per run, one thread.

    ``model_file`` is a path or the serialized model.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    src = model_file if isinstance(model_file, bytes) else str(model_file)
    sess = ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(["output"], {"input": x[i : i + 1]})[0] for i in range(len(x))])


def psnr(pred: np.ndarray, ref: np.ndarray) -> float:
    """PSNR in dB, peak 1.0: ``pred`` clipped to [0,1], MSE pooled over all pixels, float64."""
    p = np.clip(pred.astype(np.float64), 0.0, 1.0)
    mse = float(np.mean((p - ref.astype(np.float64)) ** 2))
    return float(10.0 * np.log10(1.0 / mse))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="models/sr", type=Path, help="output directory")
    ap.add_argument("--iters", default=DEFAULT_ITERS, type=int, help="float training iterations")
    ap.add_argument("--inq-iters", default=DEFAULT_INQ_ITERS, type=int,
                    help="retraining iterations after each of the first three INQ partitions")
    ap.add_argument("--bias-iters", default=DEFAULT_BIAS_ITERS, type=int,
                    help="bias-only retraining iterations after the last INQ step")
    ap.add_argument("--seed", default=DEFAULT_SEED, type=int, help="initialisation, sampling and calibration seed")
    ap.add_argument("--threads", default=NUM_THREADS, type=int, help="torch CPU threads")
    args = ap.parse_args(argv)

    import torch

    set_determinism(args.seed, args.threads)
    luma = load_luma()
    regions, held = make_regions(luma)
    test_lr, test_hr = test_crops(held)
    calib_x = calib_crops(regions, args.seed)
    for name, lr, hr in regions:
        print(f"training region {name}: HR {hr.shape}, LR {lr.shape}")
    print(f"held-out {HOLDOUT_IMAGE}[:, {HOLDOUT_COL0}:]: HR {held[1].shape}, LR {held[0].shape}; "
          f"{len(test_lr)} test crops, {len(calib_x)} calibration crops")

    bicubic_pred = bicubic_upsample(test_lr)
    bicubic_psnr = psnr(bicubic_pred, test_hr)
    print(f"bicubic PSNR on the held-out crops: {bicubic_psnr:.3f} dB")

    model = build_model(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    sampler = PatchSampler(regions, gen)
    t0 = time.perf_counter()
    fit(model, model.parameters(), sampler, args.iters, LEARNING_RATE, MIN_LEARNING_RATE)
    float_s = time.perf_counter() - t0
    print(f"float training time: {float_s:.1f} s")

    from nibble.host import compress

    float_onnx = onnx_bytes(model)
    float_pred = ort_sr(float_onnx, test_lr)
    float_psnr = psnr(float_pred, test_hr)
    print(f"float PSNR (onnxruntime, before INQ): {float_psnr:.3f} dB")
    ptq_pred = ort_sr(onnx_bytes(compress.post_training_inq(model)[0]), test_lr)
    ptq_psnr = psnr(ptq_pred, test_hr)
    print(f"post-training INQ PSNR (no retraining): {ptq_psnr:.3f} dB")

    t1 = time.perf_counter()
    layers = inq_retrain(model, sampler, args.inq_iters)
    inq_w_pred = ort_sr(onnx_bytes(model), test_lr)
    inq_w_psnr = psnr(inq_w_pred, test_hr)
    print(f"PSNR with every weight quantized, before bias retraining: {inq_w_psnr:.3f} dB")
    retrain_biases(model, sampler, args.bias_iters)
    inq_s = time.perf_counter() - t1
    print(f"INQ retraining time: {inq_s:.1f} s (total training {float_s + inq_s:.1f} s)")

    with torch.no_grad():
        torch_out = model(torch.from_numpy(test_lr)).numpy()

    args.out.mkdir(parents=True, exist_ok=True)
    onnx_path = args.out / "fsrcnn_x2.onnx"
    proto = onnx_model(model)
    ops = [n.op_type for n in proto.graph.node]
    onnx_path.write_bytes(proto.SerializeToString())
    print("onnx nodes:", " -> ".join(ops))
    np.save(args.out / "test_lr.npy", test_lr)
    np.save(args.out / "test_hr.npy", test_hr)
    np.save(args.out / "calib_x.npy", calib_x)

    import onnx

    inq_report = compress.verify_inq(onnx.load(str(onnx_path)), layers)
    for r in inq_report:
        print(f"  {r['layer']}: n1 {r['n1']}, n2 {r['n2']}, {r['zero_weights']}/{r['weights']} zero, "
              f"{r['levels_used']} levels used")
    print("exported weights are on the INQ level set (n1 unchanged)")

    ort_out = ort_sr(onnx_path, test_lr)
    max_diff = float(np.abs(ort_out - torch_out).max())
    inq_psnr = psnr(ort_out, test_hr)

    import onnxruntime
    import PIL

    preds = {"float": float_pred, "post_training_inq": ptq_pred,
             "inq_before_bias_retraining": inq_w_pred, "inq": ort_out, "bicubic": bicubic_pred}

    metrics = {
        "psnr_db": {
            "float": float_psnr,
            "post_training_inq": ptq_psnr,
            "inq_before_bias_retraining": inq_w_psnr,
            "inq": inq_psnr,
            "bicubic": bicubic_psnr,
        },
        "psnr_note": (
            "onnxruntime on float features, held-out test_lr -> test_hr; PSNR = 10*log10(1/MSE), "
            "peak 1.0, MSE pooled over all pixels of all crops, borders included, prediction "
            "clipped to [0,1]; float = after float training, before INQ; post_training_inq = the "
            "float model's weights quantized at once, no retraining; inq_before_bias_retraining = "
            "after the last INQ step; inq = the exported fsrcnn_x2.onnx, after incremental INQ "
            "retraining and bias-only retraining; psnr_db_border_4_excluded: the same "
            "with 4 HR pixels cut from each side of every crop (supplementary)"
        ),
        "bicubic": (
            "per crop: numpy.asarray(PIL.Image.fromarray(test_lr[i, 0]).resize((64, 64), "
            "PIL.Image.Resampling.BICUBIC)) on the float32 mode-'F' image, then clipped to [0,1]"
        ),
        "psnr_per_crop_db": {
            k: [psnr(p[n], test_hr[n]) for n in range(len(test_lr))] for k, p in preds.items()
        },
        f"psnr_db_border_{SHAVE}_excluded": {
            k: psnr(p[..., SHAVE:-SHAVE, SHAVE:-SHAVE], test_hr[..., SHAVE:-SHAVE, SHAVE:-SHAVE])
            for k, p in preds.items()
        },
        "max_abs_output_diff_torch_vs_onnxruntime": max_diff,
        "test_count": int(len(test_lr)),
        "calib_count": int(len(calib_x)),
        "data": {
            "source": "sklearn.datasets.load_sample_images(): china.jpg, flower.jpg (427x640 RGB)",
            "luma": "Y = (0.299 R + 0.587 G + 0.114 B) / 255 (ITU-R BT.601, full range), rows 0..425",
            "low_resolution": (
                "each region downsampled on its own: PIL Image.resize((W/2, H/2), BICUBIC) of the "
                "float32 mode-'F' Y image; LR pixel (i, j) <-> HR pixels (2i..2i+1, 2j..2j+1)"
            ),
            "held_out": f"{HOLDOUT_IMAGE} HR columns {HOLDOUT_COL0}..639 (426x128 HR, 213x64 LR)",
            "training_regions": [name for name, _, _ in regions],
            "test_crops": (
                "6x2 grid of non-overlapping 32x32 LR crops of the held-out strip at LR rows 21+32a, "
                "columns 32b (a = 0..5, b = 0..1, row-major); HR crops at rows 42+64a, columns 64b"
            ),
            "calibration": (
                "32 LR crops per training region (china.jpg[:, :512] first), top-left corners "
                "from numpy.random.default_rng(seed + 1).integers, rows then columns per region"
            ),
        },
        "network": f"FSRCNN(d={D}, s={S_}, m={M}) x2, ReLU, ConvTranspose 9x9 stride 2 pad 4 output_padding 1",
        "training": {
            "seed": args.seed,
            "iterations": args.iters,
            "batch_size": BATCH_SIZE,
            "patch": f"LR {LR_SIZE}x{LR_SIZE} / HR {HR_SIZE}x{HR_SIZE}, random region (weighted by "
                     "positions), position and flip/transposition",
            "intensity_augmentation": (
                f"y -> 1 - y with probability 1/2, then y -> a*y + b with a ~ U({GAIN_MIN}, 1), "
                "b ~ U(-a*min, 1 - a*max) of the HR patch; same map on LR and HR"
            ),
            "loss": "MSE",
            "optimizer": f"Adam lr={LEARNING_RATE}, no weight decay, cosine schedule to {MIN_LEARNING_RATE}",
            "init": "convolutions He-normal (std sqrt(2/fan_in)), deconvolution N(0, 1e-3), biases 0",
            "threads": args.threads,
        },
        "inq": {
            "levels": "{0, +-2^n2 .. +-2^n1}, n2 = n1 - 6, of every Conv/ConvTranspose weight (nibble.sim.golden)",
            "schedule": list(INQ_SCHEDULE),
            "iterations_per_step": args.inq_iters,
            "bias_only_iterations_after_last_step": args.bias_iters,
            "optimizer": f"Adam lr={INQ_LEARNING_RATE}, cosine schedule to {MIN_LEARNING_RATE} per step",
            "trained": "not yet quantized weights and all biases",
            "layers": inq_report,
        },
        "opset": OPSET,
        "onnx_nodes": ops,
        "torch_version": torch.__version__,
        "onnxruntime_version": onnxruntime.__version__,
        "pillow_version": PIL.__version__,
        "python_version": platform.python_version(),
    }
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")

    if max_diff > 1e-4:
        print(f"FAIL: onnxruntime and torch outputs differ by {max_diff:.3g} (> 1e-4)", file=sys.stderr)
        return 1
    print(f"onnxruntime vs torch max |output diff|: {max_diff:.3g}")
    print(f"PSNR on the held-out crops (onnxruntime): float {float_psnr:.3f} dB, post-training INQ "
          f"{ptq_psnr:.3f} dB, INQ retrained {inq_psnr:.3f} dB, bicubic {bicubic_psnr:.3f} dB")
    if not inq_psnr > bicubic_psnr:
        print("FAIL: the INQ model does not beat bicubic upsampling", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
