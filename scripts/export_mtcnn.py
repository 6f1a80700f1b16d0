#!/usr/bin/env python3
"""Export MTCNN's published PNet, RNet and ONet weights to ONNX.

Usage:
    python scripts/export_mtcnn.py [--out models/mtcnn]

Requires torch==2.13.0 (CPU), facenet-pytorch==2.6.0 (installed with ``--no-deps``: only its
wheel's ``facenet_pytorch/data/{pnet,rnet,onet}.pt`` state dicts are read; the package is not
imported, its ``__init__`` needs ``requests``), onnx, onnxruntime, numpy and pillow (the real
crops of ``scripts/mtcnn_data.py`` for the comparison).

The three ``nn.Module`` classes are re-declared here exactly as in
``facenet_pytorch/models/mtcnn.py`` (same attribute names, so the state dicts load with
``strict=True``; same ``forward``, including the ``permute(0, 3, 2, 1)`` before the first dense
layer and the ``Softmax(dim=1)`` that ends the face-probability head). Each is exported with
``torch.onnx.export(..., dynamo=False, opset_version=13)``, static shapes, batch 1, input
``input`` (float32 N,3,H,W, normalized ``(rgb - 127.5) * 0.0078125``), outputs in ``forward``'s
order:

    pnet.onnx  input (1,3,48,48) -> reg (1,4,19,19), prob (1,2,19,19)
    rnet.onnx  input (1,3,24,24) -> reg (1,4), prob (1,2)
    onet.onnx  input (1,3,48,48) -> reg (1,4), landmarks (1,10), prob (1,2)

``prob[:, 1]`` is the face probability, ``reg`` the bounding-box offsets (fractions of the box
side) and ``landmarks`` five x then five y landmark coordinates (fractions of the box). The files
are written as torch exports them (no simplification).

Each file is then checked with ``onnx.checker.check_model(full_check=True)`` and run with ONNX
Runtime (CPU) against torch on 32 random inputs uniform in [-1, 1] and on real crops (LFW and
calibration crops, PNet also on the astronaut crops); the script prints one JSON line per model
with its size, sha256, operator counts and the largest absolute output differences.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

OPSET = 13

INPUT_SHAPES = {"pnet": (1, 3, 48, 48), "rnet": (1, 3, 24, 24), "onet": (1, 3, 48, 48)}
"""Fixed ONNX input shapes. PNet at 48x48 gives a 19x19 output map (12x12 windows, stride 2)."""

OUTPUT_NAMES = {
    "pnet": ["reg", "prob"],
    "rnet": ["reg", "prob"],
    "onet": ["reg", "landmarks", "prob"],
}
"""Graph output names, in the order each module's ``forward`` returns them."""


class PNet(nn.Module):
    """MTCNN proposal network (facenet-pytorch 2.6.0), fully convolutional.

    x float32 (N,3,H,W) -> (reg (N,4,H',W'), prob (N,2,H',W')) with H' = ceil((H-2)/2) - 4.
    """

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.softmax4_1 = nn.Softmax(dim=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    def forward(self, x):
        x = self.conv1(x)
        x = self.prelu1(x)
        x = self.pool1(x)
        x = self.conv2(x)
        x = self.prelu2(x)
        x = self.conv3(x)
        x = self.prelu3(x)
        a = self.conv4_1(x)
        a = self.softmax4_1(a)
        b = self.conv4_2(x)
        return b, a


class RNet(nn.Module):
    """MTCNN refinement network (facenet-pytorch 2.6.0).

    x float32 (N,3,24,24) -> (reg (N,4), prob (N,2)).
    """

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.softmax5_1 = nn.Softmax(dim=1)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x):
        x = self.conv1(x)
        x = self.prelu1(x)
        x = self.pool1(x)
        x = self.conv2(x)
        x = self.prelu2(x)
        x = self.pool2(x)
        x = self.conv3(x)
        x = self.prelu3(x)
        x = x.permute(0, 3, 2, 1).contiguous()
        x = self.dense4(x.view(x.shape[0], -1))
        x = self.prelu4(x)
        a = self.dense5_1(x)
        a = self.softmax5_1(a)
        b = self.dense5_2(x)
        return b, a


class ONet(nn.Module):
    """MTCNN output network (facenet-pytorch 2.6.0).

    x float32 (N,3,48,48) -> (reg (N,4), landmarks (N,10), prob (N,2)).
    """

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.softmax6_1 = nn.Softmax(dim=1)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x):
        x = self.conv1(x)
        x = self.prelu1(x)
        x = self.pool1(x)
        x = self.conv2(x)
        x = self.prelu2(x)
        x = self.pool2(x)
        x = self.conv3(x)
        x = self.prelu3(x)
        x = self.pool3(x)
        x = self.conv4(x)
        x = self.prelu4(x)
        x = x.permute(0, 3, 2, 1).contiguous()
        x = self.dense5(x.view(x.shape[0], -1))
        x = self.prelu5(x)
        a = self.dense6_1(x)
        a = self.softmax6_1(a)
        b = self.dense6_2(x)
        c = self.dense6_3(x)
        return b, c, a


def facenet_data_dir() -> Path:
    """``facenet_pytorch/data`` of the installed wheel, found without importing the package."""
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("facenet-pytorch==2.6.0 is not installed "
                 "(pip install --no-deps facenet-pytorch==2.6.0)")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def load(name: str) -> nn.Module:
    """The pretrained network ``name`` (pnet, rnet, onet) in eval mode, float32, on the CPU."""
    model = {"pnet": PNet, "rnet": RNet, "onet": ONet}[name]()
    state = torch.load(facenet_data_dir() / f"{name}.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


def export(name: str, model: nn.Module, path: Path) -> None:
    """Write ``model`` to ``path`` as ONNX (opset 13, static shape INPUT_SHAPES[name])."""
    dummy = torch.zeros(INPUT_SHAPES[name], dtype=torch.float32)
    torch.onnx.export(
        model, (dummy,), str(path), dynamo=False, opset_version=OPSET,
        input_names=["input"], output_names=OUTPUT_NAMES[name],
    )


def max_abs_diff(model: nn.Module, sess: ort.InferenceSession, names: list[str],
                 xs: np.ndarray) -> dict:
    """Largest |torch - ORT| per output over the inputs ``xs`` (K, 3, H, W), run one at a time."""
    worst = {n: 0.0 for n in names}
    with torch.no_grad():
        for x in xs:
            x1 = np.ascontiguousarray(x[None], np.float32)
            ref = [t.numpy() for t in model(torch.from_numpy(x1))]
            got = sess.run(names, {"input": x1})
            for n, r, g in zip(names, ref, got):
                worst[n] = max(worst[n], float(np.abs(r - g).max()))
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_out = Path(__file__).resolve().parent.parent / "models" / "mtcnn"
    ap.add_argument("--out", type=Path, default=default_out)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import mtcnn_data as data

    real = {
        24: np.concatenate([data.lfw(24)[0], data.calib(24)]),
        48: np.concatenate([data.lfw(48)[0], data.calib(48), data.astronaut48()]),
    }
    rng = np.random.default_rng(0)
    for name in ("pnet", "rnet", "onet"):
        model = load(name)
        path = args.out / f"{name}.onnx"
        export(name, model, path)
        onnx.checker.check_model(onnx.load(str(path)), full_check=True)
        proto = onnx.load(str(path))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        names = OUTPUT_NAMES[name]
        shape = INPUT_SHAPES[name]
        rand = rng.uniform(-1, 1, size=(32,) + shape[1:]).astype(np.float32)
        report = {
            "model": path.name,
            "bytes": path.stat().st_size,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "input": list(shape),
            "outputs": {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim]
                        for o in proto.graph.output},
            "ops": dict(collections.Counter(n.op_type for n in proto.graph.node)),
            "max_abs_diff_random": max_abs_diff(model, sess, names, rand),
            "max_abs_diff_real": max_abs_diff(model, sess, names, real[shape[2]]),
            "real_inputs": int(real[shape[2]].shape[0]),
        }
        print(json.dumps(report))


if __name__ == "__main__":
    main()
