#!/usr/bin/env python3
"""Make the Nibble GAN-generator model: a DCGAN generator with fixed seeded weights.

Usage:
    python scripts/make_dcgan.py [--out models/dcgan] [--seed S]

The architecture is the generator of the PyTorch DCGAN example (Radford, Metz and Chintala,
"Unsupervised Representation Learning with Deep Convolutional Generative Adversarial
Networks", ICLR 2016), scaled down to nz = 32, ngf = 16 and a 32x32 RGB image:

    z (1,32,1,1)
    ConvTranspose 4x4, 32->64, stride 1, pad 0, no bias -> BatchNormalization -> Relu   (64,4,4)
    ConvTranspose 4x4, 64->32, stride 2, pad 1, no bias -> BatchNormalization -> Relu   (32,8,8)
    ConvTranspose 4x4, 32->16, stride 2, pad 1, no bias -> BatchNormalization -> Relu   (16,16,16)
    ConvTranspose 4x4, 16->3,  stride 2, pad 1, no bias -> Tanh                          (3,32,32)

Nothing is trained. The weights are the DCGAN initialisation drawn from
``torch.Generator().manual_seed(seed)``: ConvTranspose weights N(0, 0.02), BatchNormalization
γ ~ N(1, 0.02), β = 0. The BatchNormalization running statistics are then set by running
BN_BATCHES batches of BN_BATCH latent vectors z ~ N(0,1) (seed + 3) through the network in
training mode with ``momentum=None`` (cumulative average over the batches, the variance
unbiased as PyTorch keeps it), and the network is switched to eval mode. The weights stay in
float32: the compiler's post-training INQ quantizes them (after BN folding); metrics.json
reports how much the output moves when it does.

The run is deterministic (fixed seeds, one CPU thread). It writes, into the output directory:

    dcgan_k4s2.onnx  the generator, opset 17, input ``z`` float32 (1,32,1,1), output ``image``
                     float32 (1,3,32,32) in (-1,1); static shapes; BatchNormalization kept as
                     separate nodes (not folded into the deconvolutions)
    z.npy            (8,32,1,1) float32, N(0,1) from numpy.random.default_rng(seed + 1),
                     clipped to [-4, 4]
    calib_z.npy      (64,32,1,1) float32, N(0,1) from numpy.random.default_rng(seed + 2),
                     clipped to [-4, 4]
    float_out.npy    (8,3,32,32) float32, onnxruntime outputs of dcgan_k4s2.onnx for z.npy
                     (one vector per run)
    metrics.json     seeds, shapes, output and pre-Tanh ranges, the INQ exponents of the
                     BN-folded weights and the output change under post-training INQ

Requires torch==2.13.0 (CPU), onnx, onnxruntime and the nibble package (``pip install -e .``)
for the INQ code of ``nibble.sim.golden``.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import random
import sys
import warnings
from pathlib import Path

import numpy as np

NZ, NGF, NC = 32, 16, 3
OPSET = 17
DEFAULT_SEED = 0
N_Z = 8
N_CALIB = 64
Z_CLIP = 4.0
BN_BATCHES = 8
BN_BATCH = 64
BN_EPS = 1e-5


def set_determinism(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)


def build_generator():
    """The generator as an ``nn.Sequential`` (PyTorch default initialisation, replaced later)."""
    import torch.nn as nn

    return nn.Sequential(
        nn.ConvTranspose2d(NZ, NGF * 4, 4, 1, 0, bias=False),
        nn.BatchNorm2d(NGF * 4, eps=BN_EPS, momentum=None),
        nn.ReLU(),
        nn.ConvTranspose2d(NGF * 4, NGF * 2, 4, 2, 1, bias=False),
        nn.BatchNorm2d(NGF * 2, eps=BN_EPS, momentum=None),
        nn.ReLU(),
        nn.ConvTranspose2d(NGF * 2, NGF, 4, 2, 1, bias=False),
        nn.BatchNorm2d(NGF, eps=BN_EPS, momentum=None),
        nn.ReLU(),
        nn.ConvTranspose2d(NGF, NC, 4, 2, 1, bias=False),
        nn.Tanh(),
    )


def dcgan_init(model, seed: int) -> None:
    """DCGAN initialisation from one seeded generator, in module order: ConvTranspose weights
    N(0, 0.02); BatchNormalization γ ~ N(1, 0.02), β = 0."""
    import torch
    import torch.nn as nn

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.ConvTranspose2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(1.0 + torch.randn(m.weight.shape, generator=g) * 0.02)
                m.bias.zero_()


def set_bn_statistics(model, seed: int) -> None:
    """Running mean/var of every BatchNormalization: cumulative average over BN_BATCHES
    training-mode batches of BN_BATCH z ~ N(0,1) drawn from ``torch.Generator`` seed."""
    import torch
    import torch.nn as nn

    g = torch.Generator().manual_seed(seed)
    for m in model:
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
    model.train()
    with torch.no_grad():
        for _ in range(BN_BATCHES):
            model(torch.randn(BN_BATCH, NZ, 1, 1, generator=g))
    model.eval()


def latents(n: int, seed: int) -> np.ndarray:
    """(n, 32, 1, 1) float32 z ~ N(0,1) from numpy.random.default_rng(seed), clipped to [-4, 4]."""
    z = np.random.default_rng(seed).standard_normal((n, NZ, 1, 1))
    return np.clip(z, -Z_CLIP, Z_CLIP).astype(np.float32)


def onnx_bytes(model) -> tuple[bytes, list[str]]:
    """The generator as a checked opset-17 ONNX file (BatchNormalization kept) and its node types."""
    import onnx
    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings():
        # the TorchScript exporter keeps BatchNormalization as separate nodes when
        # do_constant_folding=False
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(1, NZ, 1, 1),),
            buf,
            dynamo=False,
            export_params=True,
            opset_version=OPSET,
            training=torch.onnx.TrainingMode.EVAL,
            do_constant_folding=False,
            input_names=["z"],
            output_names=["image"],
        )
    m = onnx.load_from_string(buf.getvalue())
    m.producer_name = "nibble scripts/make_dcgan.py"
    onnx.checker.check_model(m, full_check=True)
    return m.SerializeToString(), [n.op_type for n in m.graph.node]


def ort_images(model_file, z: np.ndarray) -> np.ndarray:
    """onnxruntime ``image`` (N,3,32,32) for z (N,32,1,1), one vector per run, one thread."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    src = model_file if isinstance(model_file, bytes) else str(model_file)
    sess = ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(["image"], {"z": z[i : i + 1]})[0] for i in range(len(z))])


def folded_inq_model(model):
    """Float64 copy of the generator with BN folded into each deconvolution and every folded
    weight quantized at once with ``nibble.sim.golden`` (what the compiler's post-training INQ
    does). Returns (model, [per-layer dict]).

    ConvTranspose weights are (Cin, Cout, K, K): the fold factor s = γ/√(var+ε) scales dim 1;
    the folded bias is β − mean·s.
    """
    import torch
    import torch.nn as nn

    from nibble.sim.golden import inq_decode, inq_n1, inq_quantize

    layers, report = [], []
    mods = list(model)
    for i, m in enumerate(mods):
        if not isinstance(m, nn.ConvTranspose2d):
            if not isinstance(m, nn.BatchNorm2d):
                layers.append(m)
            continue
        w = m.weight.detach().double().numpy()
        bias = np.zeros(w.shape[1])
        bn = mods[i + 1] if isinstance(mods[i + 1], nn.BatchNorm2d) else None
        if bn is not None:
            gamma = bn.weight.detach().double().numpy()
            var = bn.running_var.double().numpy()
            s = gamma / np.sqrt(var + float(np.float32(bn.eps)))
            w = w * s.reshape(1, -1, 1, 1)
            bias = bn.bias.detach().double().numpy() - bn.running_mean.double().numpy() * s
        n1 = inq_n1(w)
        codes, n2 = inq_quantize(w, n1)
        q = inq_decode(codes, n2)
        d = nn.ConvTranspose2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                               bias=True).double()
        with torch.no_grad():
            d.weight.copy_(torch.from_numpy(q))
            d.bias.copy_(torch.from_numpy(bias))
        layers.append(d)
        report.append({"layer": f"deconv{len(report) + 1}", "n1": int(n1), "n2": int(n2),
                       "weights": int(w.size), "zero_weights": int(np.sum(q == 0)),
                       "max_abs_folded_weight": float(np.max(np.abs(w)))})
    return nn.Sequential(*layers).eval(), report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="models/dcgan", type=Path, help="output directory")
    ap.add_argument("--seed", default=DEFAULT_SEED, type=int,
                    help="weight seed; z uses seed+1, calib_z seed+2, BN statistics seed+3")
    args = ap.parse_args(argv)

    import torch

    set_determinism(args.seed)
    model = build_generator()
    dcgan_init(model, args.seed)
    set_bn_statistics(model, args.seed + 3)

    z = latents(N_Z, args.seed + 1)
    calib_z = latents(N_CALIB, args.seed + 2)

    with torch.no_grad():
        torch_out = model(torch.from_numpy(z)).numpy()
        pre_tanh = model[:-1](torch.from_numpy(np.concatenate([z, calib_z]))).numpy()
        ptq_model, inq_report = folded_inq_model(model)
        ptq_out = ptq_model(torch.from_numpy(z).double()).numpy()

    args.out.mkdir(parents=True, exist_ok=True)
    onnx_path = args.out / "dcgan_k4s2.onnx"
    data, ops = onnx_bytes(model)
    onnx_path.write_bytes(data)
    print("onnx nodes:", " -> ".join(ops))
    out = ort_images(onnx_path, z)
    np.save(args.out / "z.npy", z)
    np.save(args.out / "calib_z.npy", calib_z)
    np.save(args.out / "float_out.npy", out)

    max_diff = float(np.abs(out - torch_out).max())
    ptq_err = ptq_out - out.astype(np.float64)
    snr = float(10 * np.log10(np.sum(out.astype(np.float64) ** 2) / np.sum(ptq_err**2)))
    for r in inq_report:
        print(f"  {r['layer']}: BN-folded max|w| {r['max_abs_folded_weight']:.4g}, n1 {r['n1']}, "
              f"n2 {r['n2']}, {r['zero_weights']}/{r['weights']} zero after post-training INQ")
    print(f"image range [{out.min():.4f}, {out.max():.4f}], std {out.std():.4f}; "
          f"pre-Tanh range [{pre_tanh.min():.4f}, {pre_tanh.max():.4f}] (z and calib_z)")
    print(f"post-training INQ: max |output change| {np.abs(ptq_err).max():.4g}, SNR {snr:.2f} dB")

    import onnxruntime

    metrics = {
        "seed": args.seed,
        "seeds": {
            "weights": f"torch.Generator().manual_seed({args.seed}), module order",
            "bn_statistics": f"torch.Generator().manual_seed({args.seed + 3})",
            "z": f"numpy.random.default_rng({args.seed + 1}).standard_normal, clipped to [-4, 4]",
            "calib_z": f"numpy.random.default_rng({args.seed + 2}).standard_normal, clipped to [-4, 4]",
        },
        "architecture": (
            "ConvTranspose(32,64,k4,s1,p0)+BN+Relu, ConvTranspose(64,32,k4,s2,p1)+BN+Relu, "
            "ConvTranspose(32,16,k4,s2,p1)+BN+Relu, ConvTranspose(16,3,k4,s2,p1)+Tanh; no biases"
        ),
        "init": "ConvTranspose weight N(0, 0.02); BN gamma N(1, 0.02), beta 0",
        "bn_statistics": (
            f"cumulative average (momentum=None) over {BN_BATCHES} training-mode batches of "
            f"{BN_BATCH} z ~ N(0,1); eps {BN_EPS}"
        ),
        "input": {"name": "z", "shape": [1, NZ, 1, 1], "dtype": "float32"},
        "output": {"name": "image", "shape": [1, NC, 32, 32], "dtype": "float32"},
        "z_shape": list(z.shape),
        "calib_z_shape": list(calib_z.shape),
        "float_out_shape": list(out.shape),
        "output_range": [float(out.min()), float(out.max())],
        "output_std": float(out.std()),
        "pre_tanh_range": [float(pre_tanh.min()), float(pre_tanh.max())],
        "pre_tanh_note": "input of the Tanh node over z.npy and calib_z.npy (torch, float32)",
        "max_abs_output_diff_torch_vs_onnxruntime": max_diff,
        "post_training_inq": {
            "note": (
                "BN folded into each ConvTranspose (scale on dim 1 of the (Cin, Cout, K, K) weight), "
                "folded weights quantized at once with nibble.sim.golden.inq_quantize (n1 = inq_n1 "
                "of the folded weight, n2 = n1 - 6), float64 features; compared with float_out.npy"
            ),
            "max_abs_output_change": float(np.abs(ptq_err).max()),
            "snr_db": snr,
            "layers": inq_report,
        },
        "opset": OPSET,
        "onnx_nodes": ops,
        "torch_version": torch.__version__,
        "onnxruntime_version": onnxruntime.__version__,
        "python_version": platform.python_version(),
    }
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")

    if max_diff > 1e-5:
        print(f"FAIL: onnxruntime and torch outputs differ by {max_diff:.3g} (> 1e-5)", file=sys.stderr)
        return 1
    print(f"onnxruntime vs torch max |output diff|: {max_diff:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
