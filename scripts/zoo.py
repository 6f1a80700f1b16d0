#!/usr/bin/env python3
"""Published CNN architectures as ONNX models with seeded random weights (no torch needed).

Usage:
    python scripts/zoo.py NAME -o FILE.onnx [--seed S] [--size H]

From Python (repository root on ``sys.path``; ``scripts`` is a namespace package)::

    from scripts import zoo
    model = zoo.resnet18(size=224, seed=0)        # onnx.ModelProto
    zoo.macs(model), zoo.params(model)            # 1_814_073_344, 11_689_512
    zoo.NETWORKS["squeezenet11"]                  # the builder by name

Each builder returns an ``onnx.ModelProto`` built with ``onnx.helper``: operator set 13, IR
version 7 (what ``torch.onnx.export(..., opset_version=13)`` writes), one input ``input`` float32
``(1, 3, H, W)``, one output ``output`` float32 ``(1, classes)``, static shapes, every weight an
initializer stored in the file. The structure is that of the cited source layer for layer, with
the operators and attributes PyTorch's exporter emits for it in eval mode, BatchNormalization
kept as its own node (not folded into the convolution), Dropout dropped (identity in eval mode):

=======================  ===  =======  ==========  =============  ===================================
name                     H    classes  parameters  MACs           source
=======================  ===  =======  ==========  =============  ===================================
``resnet20_cifar``       32   10       269,722     40,551,040     He et al. 2016, option A
``resnet20_projection``  32   10       272,474     40,813,184     He et al. 2016, option B
``mobilenetv2_cifar``    32   10       2,236,682   24,461,312     torchvision mobilenet_v2, conv1 s1
``squeezenet11``         224  1000     1,235,496   349,151,936    torchvision squeezenet1_1
``resnet18``             224  1000     11,689,512  1,814,073,344  torchvision resnet18
``googlenet``            224  1000     6,624,904   1,498,376,192  torchvision googlenet, no aux heads
=======================  ===  =======  ==========  =============  ===================================

(MACs: Conv and Gemm multiply-accumulates at the default H, :func:`macs`.)

Names follow PyTorch's exporter: initializers are the ``state_dict`` keys of the corresponding
``nn.Module`` (``layer1.0.conv1.weight``, ``layer1.0.bn1.running_var`` …), nodes are named by their
module scope (``/layer1/layer1.0/conv1/Conv``) and a node's output is ``<node name>_output_0``.
Parameter counts are those of ``module.parameters()`` (conv and linear weights and biases,
BatchNormalization scale and shift; not the running statistics).

Weights (``numpy.random.default_rng(seed)``, float32, drawn in graph order, so the same seed
gives the same bytes):

* Conv: He-normal, ``N(0, 2 / fan_in)`` with ``fan_in = Cin / group · kh · kw``; a bias (where
  the architecture has one) ``N(0, 0.05²)``.
* Gemm (the classifier): ``N(0, 1 / fan_in)``, bias ``N(0, 0.05²)``.
* BatchNormalization: scale ``U(0.8, 1.2)``, shift ``N(0, 0.1²)``; running statistics random
  but valid and of the right order: the builder follows the expected second moment ``m²`` of
  every tensor for an ``N(0, 1)`` input (a He-normal conv doubles it, ReLU halves it, an Add sums
  it), and draws ``running_var = m² · exp(N(0, 0.25²))`` (> 0) and
  ``running_mean = N(0, (0.1 · m)²)``, so every normalized tensor has roughly unit scale and
  the activations stay in a sane range through the whole depth (the tests check it).

The networks:

``resnet20_cifar`` — He, Zhang, Ren and Sun, "Deep Residual Learning for Image Recognition",
CVPR 2016, §4.2 (CIFAR-10): 3×3 conv 16, three stages of 3 basic blocks at 16, 32, 64 channels
(maps 32², 16², 8² at H = 32), shortcut option A: identity, and where the shape changes the
input subsampled ``x[:, :, ::2, ::2]`` and zero-padded with C/2 channels (C/4 each side, as
``F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, C // 4, C // 4))`` of the common PyTorch version), then
global average pooling and a 64 → 10 linear layer. Emitted as one ``Slice`` (axes 2, 3, steps 2)
and one ``Pad`` (constant 0 on the channel axis) — the Slice + Pad form PyTorch exports, not a
Concat with a zero tensor. The pooling is ``GlobalAveragePool`` + ``Flatten`` (the
``nn.AdaptiveAvgPool2d(1)`` / ``torch.flatten(x, 1)`` form; ``F.avg_pool2d(x, 8)`` is the same
numbers). Conv layers have no bias; BN ε 1e-5.

``resnet20_projection`` — the same with option B: a 1×1 stride-2 Conv + BatchNormalization
projection (``shortcut.0``, ``shortcut.1``) where the shape changes, identity elsewhere. Only
Conv, BatchNormalization, Relu, Add, GlobalAveragePool, Flatten and Gemm.

``mobilenetv2_cifar`` — Sandler, Howard, Zhu, Zhmoginov and Chen, "MobileNetV2: Inverted
Residuals and Linear Bottlenecks", CVPR 2018, as ``torchvision/models/mobilenetv2.py`` with
width 1.0 and 10 classes, the first 3×3 conv at stride 1 instead of 2 (the CIFAR change; every
other stride as published, so the maps are 32², 32², 16², 8², 4², 4², 2², 2² at H = 32). Blocks
``(t, c, n, s)`` = (1,16,1,1) (6,24,2,2) (6,32,3,2) (6,64,4,2) (6,96,3,1) (6,160,3,2) (6,320,1,1):
1×1 expand + BN + ReLU6 (absent for t = 1), 3×3 depthwise (``group`` = channels) + BN + ReLU6,
1×1 project + BN (linear), Add of the input when stride 1 and Cin = Cout; then 1×1 conv
320 → 1280 + BN + ReLU6, global average pooling, Flatten and Gemm 1280 → 10. ReLU6 is
``Clip(x, 0, 6)`` with ``min`` / ``max`` as (shared) scalar initializers ``clip.min``,
``clip.max``. Conv layers have no bias; BN ε 1e-5.

``squeezenet11`` — Iandola et al., "SqueezeNet", arXiv:1602.07360, version 1.1 as
``torchvision/models/squeezenet.py`` (``squeezenet1_1``): 3×3 s2 conv 64 + ReLU, MaxPool 3×3
s2 ``ceil_mode``, Fire(16, 64, 64) ×2, MaxPool, Fire(32, 128, 128) ×2, MaxPool,
Fire(48, 192, 192) ×2, Fire(64, 256, 256) ×2, then 1×1 conv 512 → 1000 + ReLU,
GlobalAveragePool and Flatten (maps 111², 55², 27², 13² at H = 224). A Fire module is a 1×1
squeeze conv + ReLU and a ``Concat`` (axis 1) of the 1×1 and the 3×3 (pad 1) expand convs,
each + ReLU. Every conv has a bias; no BatchNormalization.

``resnet18`` — He et al. 2016 (ImageNet, 18 layers), as ``torchvision/models/resnet.py``:
7×7 s2 conv 64 + BN + ReLU, MaxPool 3×3 s2 pad 1, four stages of 2 basic blocks at 64, 128,
256, 512 channels (maps 56², 28², 14², 7² at H = 224), the first block of stages 2–4 at stride 2
with a 1×1 stride-2 Conv + BN projection (``downsample.0``, ``downsample.1``), then
GlobalAveragePool, Flatten and Gemm 512 → 1000. Conv layers have no bias; BN ε 1e-5.

``googlenet`` — Szegedy et al., "Going Deeper with Convolutions", CVPR 2015, as
``torchvision/models/googlenet.py`` with ``aux_logits=False`` and ``transform_input=False``:
BasicConv2d (conv without bias + BN ε 1e-3 + ReLU) 7×7 s2 64, MaxPool 3×3 s2 ``ceil_mode``,
1×1 64, 3×3 192, MaxPool, inception 3a, 3b, MaxPool, 4a–4e, MaxPool 2×2 s2 ``ceil_mode``, 5a,
5b (maps 112², 56², 28², 14², 7² at H = 224), GlobalAveragePool, Flatten and Gemm 1024 → 1000.
An inception module is the 4-way ``Concat`` of a 1×1 branch, 1×1 → 3×3, 1×1 → 3×3 (torchvision
uses 3×3 where the paper has 5×5, kept for its published weights) and MaxPool 3×3 s1 pad 1
``ceil_mode`` → 1×1.

Sources of the published figures the tests compare with: the parameter counts of He et al.
(ResNet-20: 0.27 M, Table 6) and of the torchvision model pages (``num_params``: squeezenet1_1
1,235,496, resnet18 11,689,512, googlenet 6,624,904; mobilenet_v2 3,504,872 with 1000 classes,
i.e. 2,236,682 with 10), and their "GFLOPS" column, which counts multiply-accumulates
(squeezenet1_1 0.35, resnet18 1.81, googlenet 1.50). For ResNet-20 the MACs are the closed form
of the paper's layer table (§4.2); the ≈ 41 M usually quoted is 1.1 % above it, as it also counts
BatchNormalization, ReLU and the additions.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["NETWORKS", "OPSET", "IR_VERSION", "resnet20_cifar", "resnet20_projection", "mobilenetv2_cifar",
           "squeezenet11", "resnet18", "googlenet", "macs", "params", "main"]

OPSET = 13
IR_VERSION = 7
INT64_MAX = 2 ** 63 - 1


def _scope(path: str) -> str:
    """PyTorch's scope name of a module path: ``layer1.0.conv1`` → ``/layer1/layer1.0/conv1``."""
    parts, out = [p for p in path.split(".") if p], []
    for p in parts:
        out.append(f"{out[-1]}.{p}" if p.isdigit() and out else p)
    return "".join(f"/{p}" for p in out)


class _Net:
    """Accumulates nodes and initializers in graph order; follows channels and second moments."""

    def __init__(self, name: str, seed: int, size: int):
        if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
            raise ValueError(f"size must be a positive integer, got {size!r}")
        self.name, self.seed, self.size = name, int(seed), int(size)
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.names = [], [], set()
        self.ch = {"input": 3}              # channels of every tensor
        self.hw = {"input": self.size}      # height = width of every feature map
        self.m2 = {"input": 1.0}            # expected second moment for an N(0, 1) input

    # -- plumbing ------------------------------------------------------------------------------------
    def _init(self, name, array):
        assert name not in self.names, name
        self.names.add(name)
        self.inits.append(numpy_helper.from_array(np.array(array, order="C"), name))
        return name

    def _normal(self, shape, std):
        return (self.rng.standard_normal(shape, dtype=np.float32) * np.float32(std)).astype(np.float32)

    def _node(self, op, path, inputs, **attrs):
        base = f"{_scope(path)}/{op}"
        name, k = base, 0
        while name in self.names:
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        out = f"{name}_output_0"
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=name, **attrs))
        return out

    def _same(self, x, y, m2=None):
        self.ch[y] = self.ch[x]
        self.hw[y] = self.hw.get(x)
        self.m2[y] = self.m2[x] if m2 is None else m2
        return y

    # -- layers --------------------------------------------------------------------------------------
    def conv(self, path, x, cout, k, stride=1, pad=0, group=1, bias=False):
        cin = self.ch[x]
        assert cin % group == 0 and cout % group == 0, (path, cin, cout, group)
        fan_in = cin // group * k * k
        w = self._init(f"{path}.weight", self._normal((cout, cin // group, k, k), np.sqrt(2.0 / fan_in)))
        inputs = [x, w]
        if bias:
            inputs.append(self._init(f"{path}.bias", self._normal((cout,), 0.05)))
        h = self.hw[x]
        if h + 2 * pad < k:
            raise ValueError(f"size {self.size} is too small for {self.name}: {path} ({k}x{k} conv, pad {pad}) "
                             f"on a {h}x{h} map")
        y = self._node("Conv", path, inputs, dilations=[1, 1], group=group, kernel_shape=[k, k],
                       pads=[pad] * 4, strides=[stride, stride])
        self.ch[y], self.m2[y] = cout, 2.0 * self.m2[x] + (0.05 ** 2 if bias else 0.0)
        self.hw[y] = (h + 2 * pad - k) // stride + 1
        return y

    def bn(self, path, x, eps=1e-5):
        c, m2 = self.ch[x], self.m2[x]
        gamma = self.rng.uniform(0.8, 1.2, c).astype(np.float32)
        beta = self._normal((c,), 0.1)
        mean = self._normal((c,), 0.1 * np.sqrt(m2))
        var = (m2 * np.exp(self._normal((c,), 0.25))).astype(np.float32)
        names = [self._init(f"{path}.{k}", v) for k, v in
                 (("weight", gamma), ("bias", beta), ("running_mean", mean), ("running_var", var))]
        y = self._node("BatchNormalization", path, [x] + names, epsilon=eps, momentum=0.9)
        out_m2 = float(np.mean(gamma.astype(np.float64) ** 2 * (m2 + mean.astype(np.float64) ** 2) / (var + eps)
                               + beta.astype(np.float64) ** 2))
        return self._same(x, y, out_m2)

    def relu(self, path, x):
        return self._same(x, self._node("Relu", path, [x]), self.m2[x] / 2)

    def relu6(self, path, x):
        if "clip.min" not in self.names:
            self._init("clip.min", np.array(0.0, np.float32))
            self._init("clip.max", np.array(6.0, np.float32))
        return self._same(x, self._node("Clip", path, [x, "clip.min", "clip.max"]), self.m2[x] / 2)

    def add(self, path, a, b):
        assert (self.ch[a], self.hw[a]) == (self.ch[b], self.hw[b]), (path, self.ch[a], self.ch[b])
        return self._same(a, self._node("Add", path, [a, b]), self.m2[a] + self.m2[b])

    def maxpool(self, path, x, k, stride, pad=0, ceil=False):
        h = self.hw[x]                      # output size as PyTorch and ONNX Runtime compute it
        out = (h + 2 * pad - k + (stride - 1 if ceil else 0)) // stride + 1
        if ceil and (out - 1) * stride >= h + pad:
            out -= 1                        # no window may start in the end padding
        if out < 1:
            raise ValueError(f"size {self.size} is too small for {self.name}: {path} ({k}x{k} max-pool, "
                             f"stride {stride}) on a {h}x{h} map")
        y = self._same(x, self._node("MaxPool", path, [x], ceil_mode=int(ceil), dilations=[1, 1],
                                     kernel_shape=[k, k], pads=[pad] * 4, strides=[stride, stride]))
        self.hw[y] = out
        return y

    def concat(self, path, xs):
        assert len({self.hw[x] for x in xs}) == 1, (path, [self.hw[x] for x in xs])
        y = self._node("Concat", path, xs, axis=1)
        self.ch[y], self.hw[y] = sum(self.ch[x] for x in xs), self.hw[xs[0]]
        self.m2[y] = sum(self.ch[x] * self.m2[x] for x in xs) / self.ch[y]
        return y

    def gap(self, path, x):
        y = self._same(x, self._node("GlobalAveragePool", path, [x]))
        self.hw[y] = 1
        return y

    def flatten(self, path, x):
        return self._same(x, self._node("Flatten", path, [x], axis=1))

    def gemm(self, path, x, n):
        k = self.ch[x]
        w = self._init(f"{path}.weight", self._normal((n, k), np.sqrt(1.0 / k)))
        b = self._init(f"{path}.bias", self._normal((n,), 0.05))
        y = self._node("Gemm", path, [x, w, b], alpha=1.0, beta=1.0, transB=1)
        self.ch[y], self.m2[y] = n, self.m2[x] + 0.05 ** 2
        return y

    def subsample_pad(self, path, x, cout):
        """Option-A shortcut: ``F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, p, p))``, p = (cout − cin) / 2."""
        cin = self.ch[x]
        assert (cout - cin) % 2 == 0 and cout > cin, (path, cin, cout)
        p = (cout - cin) // 2
        consts = [self._init(f"{path}.{k}", np.array(v, np.int64)) for k, v in
                  (("starts", [0, 0]), ("ends", [INT64_MAX, INT64_MAX]), ("axes", [2, 3]), ("steps", [2, 2]))]
        s = self._same(x, self._node("Slice", path, [x] + consts))
        self.hw[s] = (self.hw[x] + 1) // 2
        pads = self._init(f"{path}.pads", np.array([0, p, 0, 0, 0, p, 0, 0], np.int64))
        value = self._init(f"{path}.value", np.array(0.0, np.float32))
        y = self._same(s, self._node("Pad", path, [s, pads, value], mode="constant"), self.m2[x] * cin / cout)
        self.ch[y] = cout
        return y

    # -- the model -----------------------------------------------------------------------------------
    def finish(self, y, classes, doc):
        last = self.nodes[-1]
        assert list(last.output) == [y], (last.output, y)
        last.output[0] = "output"
        graph = helper.make_graph(
            self.nodes, self.name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, self.size, self.size])],
            [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, classes])],
            self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                                  producer_name="nibble", producer_version="scripts/zoo.py",
                                  doc_string=f"{self.name}, input (1, 3, {self.size}, {self.size}), seed {self.seed}. "
                                             + doc)
        onnx.checker.check_model(model, full_check=True)
        return model


# -- CIFAR ResNet-20 -------------------------------------------------------------------------------------
def _resnet20(name, size, seed, projection):
    n = _Net(name, seed, size)
    x = n.relu("relu", n.bn("bn1", n.conv("conv1", "input", 16, 3, pad=1)))
    cin = 16
    for stage, planes in enumerate((16, 32, 64), start=1):
        for b in range(3):
            stride = 2 if stage > 1 and b == 0 else 1
            p = f"layer{stage}.{b}"
            y = n.relu(f"{p}.relu", n.bn(f"{p}.bn1", n.conv(f"{p}.conv1", x, planes, 3, stride, 1)))
            y = n.bn(f"{p}.bn2", n.conv(f"{p}.conv2", y, planes, 3, 1, 1))
            if stride != 1 or cin != planes:
                if projection:
                    sc = n.bn(f"{p}.shortcut.1", n.conv(f"{p}.shortcut.0", x, planes, 1, stride))
                else:
                    sc = n.subsample_pad(f"{p}.shortcut", x, planes)
            else:
                sc = x
            x = n.relu(f"{p}.relu_1", n.add(p, y, sc))
            cin = planes
    x = n.flatten("", n.gap("avgpool", x))
    return n, n.gemm("linear", x, 10)


def resnet20_cifar(size: int = 32, seed: int = 0) -> onnx.ModelProto:
    """CIFAR ResNet-20 with option-A shortcuts (He et al. 2016, §4.2): (1, 3, H, W) → (1, 10).

    conv 3×3 16 + BN + ReLU; 3 stages × 3 basic blocks (conv 3×3 + BN + ReLU, conv 3×3 + BN,
    Add, ReLU) at 16, 32, 64 channels, maps H, H/2, H/4; the first block of stages 2 and 3 at
    stride 2 with the shortcut ``Slice`` (x[:, :, ::2, ::2]) → ``Pad`` (C/4 zero channels each
    side); GlobalAveragePool, Flatten, Gemm 64 → 10. 269,722 parameters, 40.55 M MACs at H = 32.
    """
    n, y = _resnet20("resnet20_cifar", size, seed, projection=False)
    return n.finish(y, 10, "CIFAR ResNet-20, option-A shortcuts (He et al. 2016).")


def resnet20_projection(size: int = 32, seed: int = 0) -> onnx.ModelProto:
    """CIFAR ResNet-20 with option-B shortcuts: (1, 3, H, W) → (1, 10).

    As :func:`resnet20_cifar`, the two shape-changing shortcuts a 1×1 stride-2 conv + BN
    (16 → 32, 32 → 64). 272,474 parameters, 40.81 M MACs at H = 32.
    """
    n, y = _resnet20("resnet20_projection", size, seed, projection=True)
    return n.finish(y, 10, "CIFAR ResNet-20, option-B (1x1 conv + BN projection) shortcuts (He et al. 2016).")


# -- MobileNetV2 (CIFAR) ---------------------------------------------------------------------------------
MOBILENETV2_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                       (6, 320, 1, 1))
"""``(t, c, n, s)``: expansion, output channels, repeats, stride of the first repeat (Sandler et al.,
Table 2; torchvision's ``inverted_residual_setting``)."""


def mobilenetv2_cifar(size: int = 32, seed: int = 0) -> onnx.ModelProto:
    """MobileNetV2, width 1.0, first conv at stride 1, 10 classes: (1, 3, H, W) → (1, 10).

    ``features.0``: conv 3×3 32 s1 + BN + ReLU6; ``features.1``–``features.17``: the inverted
    residual blocks of :data:`MOBILENETV2_SETTING` (maps H, H, H/2, H/4, H/8, H/8, H/16, H/16);
    ``features.18``: conv 1×1 320 → 1280 + BN + ReLU6; GlobalAveragePool, Flatten,
    ``classifier.1`` Gemm 1280 → 10. 2,236,682 parameters, 24.46 M MACs at H = 32.
    """
    n = _Net("mobilenetv2_cifar", seed, size)
    x = n.relu6("features.0.2", n.bn("features.0.1", n.conv("features.0.0", "input", 32, 3, 1, 1)))
    idx = 1
    for t, c, reps, s in MOBILENETV2_SETTING:
        for r in range(reps):
            stride = s if r == 0 else 1
            p = f"features.{idx}"
            cin = n.ch[x]
            hidden = cin * t
            y, j = x, 0
            if t != 1:
                y = n.relu6(f"{p}.conv.0.2", n.bn(f"{p}.conv.0.1", n.conv(f"{p}.conv.0.0", y, hidden, 1)))
                j = 1
            y = n.relu6(f"{p}.conv.{j}.2", n.bn(f"{p}.conv.{j}.1",
                                                n.conv(f"{p}.conv.{j}.0", y, hidden, 3, stride, 1, group=hidden)))
            y = n.bn(f"{p}.conv.{j + 2}", n.conv(f"{p}.conv.{j + 1}", y, c, 1))
            x = n.add(p, x, y) if stride == 1 and cin == c else y
            idx += 1
    x = n.relu6(f"features.{idx}.2", n.bn(f"features.{idx}.1", n.conv(f"features.{idx}.0", x, 1280, 1)))
    x = n.flatten("", n.gap("", x))
    y = n.gemm("classifier.1", x, 10)
    return n.finish(y, 10, "MobileNetV2 (Sandler et al. 2018) as torchvision mobilenet_v2, width 1.0, "
                           "first conv stride 1 (CIFAR), 10 classes.")


# -- SqueezeNet 1.1 --------------------------------------------------------------------------------------
def _fire(n, path, x, squeeze, e1, e3):
    s = n.relu(f"{path}.squeeze_activation", n.conv(f"{path}.squeeze", x, squeeze, 1, bias=True))
    a = n.relu(f"{path}.expand1x1_activation", n.conv(f"{path}.expand1x1", s, e1, 1, bias=True))
    b = n.relu(f"{path}.expand3x3_activation", n.conv(f"{path}.expand3x3", s, e3, 3, 1, 1, bias=True))
    return n.concat(path, [a, b])


def squeezenet11(size: int = 224, seed: int = 0) -> onnx.ModelProto:
    """SqueezeNet 1.1 (torchvision ``squeezenet1_1``): (1, 3, H, W) → (1, 1000).

    ``features``: conv 3×3 s2 64 + ReLU (0, 1), MaxPool 3×3 s2 ceil (2), Fire 3, 4 (16/64/64),
    MaxPool (5), Fire 6, 7 (32/128/128), MaxPool (8), Fire 9, 10 (48/192/192), Fire 11, 12
    (64/256/256); ``classifier``: conv 1×1 512 → 1000 + ReLU (1, 2), GlobalAveragePool (3); Flatten.
    Maps 111², 55², 27², 13² at H = 224. 1,235,496 parameters, 349.15 M MACs at H = 224.
    """
    n = _Net("squeezenet11", seed, size)
    x = n.relu("features.1", n.conv("features.0", "input", 64, 3, 2, bias=True))
    x = n.maxpool("features.2", x, 3, 2, ceil=True)
    x = _fire(n, "features.3", x, 16, 64, 64)
    x = _fire(n, "features.4", x, 16, 64, 64)
    x = n.maxpool("features.5", x, 3, 2, ceil=True)
    x = _fire(n, "features.6", x, 32, 128, 128)
    x = _fire(n, "features.7", x, 32, 128, 128)
    x = n.maxpool("features.8", x, 3, 2, ceil=True)
    x = _fire(n, "features.9", x, 48, 192, 192)
    x = _fire(n, "features.10", x, 48, 192, 192)
    x = _fire(n, "features.11", x, 64, 256, 256)
    x = _fire(n, "features.12", x, 64, 256, 256)
    x = n.relu("classifier.2", n.conv("classifier.1", x, 1000, 1, bias=True))
    y = n.flatten("", n.gap("classifier.3", x))
    return n.finish(y, 1000, "SqueezeNet 1.1 (Iandola et al. 2016) as torchvision squeezenet1_1.")


# -- ResNet-18 -------------------------------------------------------------------------------------------
def resnet18(size: int = 224, seed: int = 0) -> onnx.ModelProto:
    """ResNet-18 (torchvision ``resnet18``): (1, 3, H, W) → (1, 1000).

    conv 7×7 s2 pad 3 64 + BN + ReLU, MaxPool 3×3 s2 pad 1; ``layer1``–``layer4``: 2 basic
    blocks each at 64, 128, 256, 512 channels (maps H/4 … H/32), the first block of layers 2–4
    at stride 2 with a ``downsample`` 1×1 s2 conv + BN; GlobalAveragePool, Flatten, ``fc`` Gemm
    512 → 1000. 11,689,512 parameters, 1.814 G MACs at H = 224.
    """
    n = _Net("resnet18", seed, size)
    x = n.relu("relu", n.bn("bn1", n.conv("conv1", "input", 64, 7, 2, 3)))
    x = n.maxpool("maxpool", x, 3, 2, 1)
    for stage, planes in enumerate((64, 128, 256, 512), start=1):
        for b in range(2):
            stride = 2 if stage > 1 and b == 0 else 1
            p = f"layer{stage}.{b}"
            y = n.relu(f"{p}.relu", n.bn(f"{p}.bn1", n.conv(f"{p}.conv1", x, planes, 3, stride, 1)))
            y = n.bn(f"{p}.bn2", n.conv(f"{p}.conv2", y, planes, 3, 1, 1))
            if stride != 1 or n.ch[x] != planes:
                x = n.bn(f"{p}.downsample.1", n.conv(f"{p}.downsample.0", x, planes, 1, stride))
            x = n.relu(f"{p}.relu_1", n.add(p, y, x))
    x = n.flatten("", n.gap("avgpool", x))
    y = n.gemm("fc", x, 1000)
    return n.finish(y, 1000, "ResNet-18 (He et al. 2016) as torchvision resnet18.")


# -- GoogLeNet -------------------------------------------------------------------------------------------
GOOGLENET_INCEPTION = (
    ("inception3a", 64, 96, 128, 16, 32, 32), ("inception3b", 128, 128, 192, 32, 96, 64), "maxpool3",
    ("inception4a", 192, 96, 208, 16, 48, 64), ("inception4b", 160, 112, 224, 24, 64, 64),
    ("inception4c", 128, 128, 256, 24, 64, 64), ("inception4d", 112, 144, 288, 32, 64, 64),
    ("inception4e", 256, 160, 320, 32, 128, 128), "maxpool4",
    ("inception5a", 256, 160, 320, 32, 128, 128), ("inception5b", 384, 192, 384, 48, 128, 128))
"""Inception modules ``(name, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj)`` and the pools
between them (Szegedy et al., Table 1; torchvision's ``GoogLeNet.__init__``)."""


def _basic_conv(n, path, x, cout, k, stride=1, pad=0):
    return n.relu(path, n.bn(f"{path}.bn", n.conv(f"{path}.conv", x, cout, k, stride, pad), eps=1e-3))


def googlenet(size: int = 224, seed: int = 0) -> onnx.ModelProto:
    """GoogLeNet (torchvision ``googlenet``, ``aux_logits=False``, ``transform_input=False``):
    (1, 3, H, W) → (1, 1000).

    BasicConv2d = conv (no bias) + BN (ε 1e-3) + ReLU. conv1 7×7 s2 pad 3 64, maxpool1 3×3 s2
    ceil, conv2 1×1 64, conv3 3×3 pad 1 192, maxpool2, then :data:`GOOGLENET_INCEPTION` (maxpool3
    3×3 s2 ceil, maxpool4 2×2 s2 ceil; maps 28², 14², 7² at H = 224); GlobalAveragePool, Flatten,
    ``fc`` Gemm 1024 → 1000. 6,624,904 parameters, 1.498 G MACs at H = 224.
    """
    n = _Net("googlenet", seed, size)
    x = _basic_conv(n, "conv1", "input", 64, 7, 2, 3)
    x = n.maxpool("maxpool1", x, 3, 2, ceil=True)
    x = _basic_conv(n, "conv2", x, 64, 1)
    x = _basic_conv(n, "conv3", x, 192, 3, 1, 1)
    x = n.maxpool("maxpool2", x, 3, 2, ceil=True)
    for m in GOOGLENET_INCEPTION:
        if m == "maxpool3":
            x = n.maxpool(m, x, 3, 2, ceil=True)
            continue
        if m == "maxpool4":
            x = n.maxpool(m, x, 2, 2, ceil=True)
            continue
        p, c1, c3r, c3, c5r, c5, pp = m
        b1 = _basic_conv(n, f"{p}.branch1", x, c1, 1)
        b2 = _basic_conv(n, f"{p}.branch2.1", _basic_conv(n, f"{p}.branch2.0", x, c3r, 1), c3, 3, 1, 1)
        b3 = _basic_conv(n, f"{p}.branch3.1", _basic_conv(n, f"{p}.branch3.0", x, c5r, 1), c5, 3, 1, 1)
        b4 = _basic_conv(n, f"{p}.branch4.1", n.maxpool(f"{p}.branch4.0", x, 3, 1, 1, ceil=True), pp, 1)
        x = n.concat(p, [b1, b2, b3, b4])
    x = n.flatten("", n.gap("avgpool", x))
    y = n.gemm("fc", x, 1000)
    return n.finish(y, 1000, "GoogLeNet (Szegedy et al. 2015) as torchvision googlenet without auxiliary heads.")


NETWORKS = {
    "resnet20_cifar": resnet20_cifar,
    "resnet20_projection": resnet20_projection,
    "mobilenetv2_cifar": mobilenetv2_cifar,
    "squeezenet11": squeezenet11,
    "resnet18": resnet18,
    "googlenet": googlenet,
}
"""Builder by network name; each takes ``size`` (input height = width) and ``seed``."""


# -- counts ----------------------------------------------------------------------------------------------
def _shapes(model):
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    shapes = {}
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
    for t in inferred.graph.initializer:
        shapes[t.name] = tuple(t.dims)
    return inferred, shapes


def macs(model: onnx.ModelProto) -> int:
    """Multiply-accumulates of one inference: every Conv (``N·Cout·Ho·Wo · Cin/group·kh·kw``) and
    Gemm (``M·N·K``), with the shapes ONNX shape inference gives (bias additions, BN, pooling and
    activations not counted).

    :raises ValueError: a shape shape inference leaves unknown.
    """
    inferred, shapes = _shapes(model)
    total = 0
    for node in inferred.graph.node:
        if node.op_type not in ("Conv", "Gemm"):
            continue
        y, w = shapes.get(node.output[0]), shapes.get(node.input[1])
        if not y or not w or None in y or None in w:
            raise ValueError(f"{node.name}: shapes unknown ({y}, {w})")
        if node.op_type == "Conv":
            total += int(np.prod(y, dtype=np.int64)) * int(np.prod(w[1:], dtype=np.int64))
        else:
            a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
            k = w[1] if a.get("transB", 0) else w[0]
            total += int(np.prod(y, dtype=np.int64)) * int(k)
    return total


def params(model: onnx.ModelProto) -> int:
    """Trainable parameters (PyTorch's ``module.parameters()``): the elements of the Conv and Gemm
    weights and biases and of the BatchNormalization scales and shifts (not the running
    statistics, nor constants such as Slice / Pad / Clip operands)."""
    inits = {t.name: int(np.prod(t.dims, dtype=np.int64)) for t in model.graph.initializer}
    used = set()
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            used.update(node.input[1:])
        elif node.op_type == "BatchNormalization":
            used.update(node.input[1:3])
    return sum(inits[name] for name in used if name in inits)


# -- command line ----------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Write a published CNN architecture as an ONNX model with seeded "
                                             "random weights.")
    ap.add_argument("name", choices=sorted(NETWORKS), metavar="NAME", help=", ".join(NETWORKS))
    ap.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    ap.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    ap.add_argument("--size", type=int, default=None, help="input height = width (default: the network's own)")
    args = ap.parse_args(argv)
    builder = NETWORKS[args.name]
    kwargs = {"seed": args.seed} if args.size is None else {"seed": args.seed, "size": args.size}
    try:
        model = builder(**kwargs)
    except (ValueError, onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"error: {message}" if args.name in message else f"error: {args.name}: {message}", file=sys.stderr)
        return 1
    onnx.save(model, args.output)
    shape = tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim)
    print(f"{args.output}: {args.name}, input {shape}, {params(model):,} parameters, {macs(model):,} MACs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
