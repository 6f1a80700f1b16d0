"""The published CNN architectures of ``scripts/zoo.py`` (ONNX built with ``onnx.helper``).

Each model passes the full ONNX checker and runs in ONNX Runtime with sane activations; the
structure (operators, strides, map sizes) is the published one; the parameter counts agree with
the published ones within 1 % and the multiply-accumulate counts with the published ones
(sources below); the same seed gives the same bytes; the command line writes the same model.

Published figures:

* parameters: He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, Table 6
  (ResNet-20: 0.27 M); the torchvision model pages, ``num_params`` (squeezenet1_1 1,235,496,
  resnet18 11,689,512, googlenet 6,624,904 without the auxiliary heads, mobilenet_v2 3,504,872
  with 1000 classes, so 3,504,872 − 1281 · 990 = 2,236,682 with 10);
* multiply-accumulates: the torchvision model pages, "GFLOPS" (a MAC count: squeezenet1_1 0.35,
  resnet18 1.81, googlenet 1.50; 349 M and 1.82 G are the same counts to three digits); for
  ResNet-20 the closed form of the paper's §4.2 layer table (3×3 conv 16, then 6n = 18 3×3
  convs at 16/32/64 filters on 32²/16²/8² maps, a 64 → 10 linear layer): 40,551,040, against
  the ≈ 41 M usually quoted, which also counts BN, ReLU and the additions.
"""
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:                      # ``scripts`` is a namespace package of the root
    sys.path.insert(0, str(ROOT))

from scripts import zoo  # noqa: E402

#: name: (classes, published parameters, published MACs, relative tolerance of the MACs)
PUBLISHED = {
    "resnet20_cifar": (10, 0.27e6, 41e6, 0.015),
    "resnet20_projection": (10, 0.27e6, 41e6, 0.015),
    "mobilenetv2_cifar": (10, 2_236_682, None, None),
    "squeezenet11": (1000, 1_235_496, 349e6, 0.01),
    "resnet18": (1000, 11_689_512, 1.82e9, 0.01),
    "googlenet": (1000, 6_624_904, 1.50e9, 0.01),
}

#: name: the map in front of the global average pooling (C, H, W) at the default size
LAST_MAP = {
    "resnet20_cifar": (64, 8, 8), "resnet20_projection": (64, 8, 8), "mobilenetv2_cifar": (1280, 2, 2),
    "squeezenet11": (1000, 13, 13), "resnet18": (512, 7, 7), "googlenet": (1024, 7, 7),
}


@pytest.fixture(scope="module")
def models():
    """Every network built once with the default size and seed."""
    return {name: build() for name, build in zoo.NETWORKS.items()}


def _attrs(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _inits(model):
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _session(model):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", list(zoo.NETWORKS))
def test_checker_ort_and_sane_activations(models, name):
    m = models[name]
    onnx.checker.check_model(m, full_check=True)
    assert [(o.domain, o.version) for o in m.opset_import] == [("", 13)] and m.ir_version == zoo.IR_VERSION
    size = zoo.NETWORKS[name].__defaults__[0]
    assert [i.name for i in m.graph.input] == ["input"] and [o.name for o in m.graph.output] == ["output"]
    assert [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim] == [1, 3, size, size]
    assert all(t.data_type in (TensorProto.FLOAT, TensorProto.INT64) for t in m.graph.initializer)
    # every feature tensor of the weighted layers, pooling and joins as an extra output
    probe = onnx.ModelProto()
    probe.CopyFrom(m)
    inner = [n.output[0] for n in m.graph.node
             if n.op_type in ("Conv", "BatchNormalization", "Relu", "Clip", "Add", "Concat", "GlobalAveragePool")]
    probe.graph.output.extend(helper.make_tensor_value_info(t, TensorProto.FLOAT, None) for t in inner)
    x = np.random.default_rng(7).standard_normal((1, 3, size, size), dtype=np.float32)
    y, *acts = _session(probe).run(None, {"input": x})
    assert y.shape == (1, PUBLISHED[name][0]) and np.all(np.isfinite(y))
    assert 0.05 < float(np.sqrt(np.mean(np.square(y)))) < 20
    rms = [float(np.sqrt(np.mean(np.square(a)))) for a in acts]
    assert min(rms) > 0.1 and max(rms) < 20, (min(rms), max(rms))
    assert max(float(np.abs(a).max()) for a in acts) < 200
    # the map in front of the pooling
    gap = next(n for n in m.graph.node if n.op_type == "GlobalAveragePool")
    assert acts[inner.index(gap.input[0])].shape == (1,) + LAST_MAP[name]


@pytest.mark.parametrize("name", list(zoo.NETWORKS))
def test_parameter_count_is_the_published_one(models, name):
    published = PUBLISHED[name][1]
    n = zoo.params(models[name])
    assert abs(n / published - 1) < 0.01, (n, published)
    exact = {"resnet20_cifar": 269_722, "resnet20_projection": 269_722 + 16 * 32 + 64 + 32 * 64 + 128}
    if name in exact:
        assert n == exact[name]
    elif isinstance(published, int):
        assert n == published


def _resnet20_macs(h=32, projection=False):
    """The closed form from He et al. §4.2 (maps h, h/2, h/4; 16, 32, 64 filters)."""
    total = h * h * 16 * 3 * 9
    cin = 16
    for i, c in enumerate((16, 32, 64)):
        s = h >> i
        for b in range(3):
            total += s * s * c * cin * 9 + s * s * c * c * 9
            if projection and cin != c:
                total += s * s * c * cin
            cin = c
    return total + 64 * 10


@pytest.mark.parametrize("name", list(zoo.NETWORKS))
def test_mac_count_is_the_published_one(models, name):
    n = zoo.macs(models[name])
    _, _, published, tol = PUBLISHED[name]
    if published is not None:
        assert abs(n / published - 1) < tol, (n, published)
    exact = {"resnet20_cifar": _resnet20_macs(), "resnet20_projection": _resnet20_macs(projection=True),
             "mobilenetv2_cifar": 24_461_312, "squeezenet11": 349_151_936, "resnet18": 1_814_073_344,
             "googlenet": 1_498_376_192}
    assert n == exact[name]


def test_operators_and_structure(models):
    ops = {name: Counter(n.op_type for n in m.graph.node) for name, m in models.items()}
    common = {"Conv", "BatchNormalization", "Relu", "Add", "GlobalAveragePool", "Flatten", "Gemm"}
    assert set(ops["resnet20_cifar"]) == common | {"Slice", "Pad"}
    assert (ops["resnet20_cifar"]["Conv"], ops["resnet20_cifar"]["Add"], ops["resnet20_cifar"]["Slice"],
            ops["resnet20_cifar"]["Pad"]) == (19, 9, 2, 2)
    assert set(ops["resnet20_projection"]) == common and ops["resnet20_projection"]["Conv"] == 21
    assert set(ops["mobilenetv2_cifar"]) == (common - {"Relu"}) | {"Clip"}
    assert (ops["mobilenetv2_cifar"]["Conv"], ops["mobilenetv2_cifar"]["Clip"], ops["mobilenetv2_cifar"]["Add"]) \
        == (52, 35, 10)
    assert set(ops["squeezenet11"]) == {"Conv", "Relu", "MaxPool", "Concat", "GlobalAveragePool", "Flatten"}
    assert (ops["squeezenet11"]["Conv"], ops["squeezenet11"]["Concat"], ops["squeezenet11"]["MaxPool"]) == (26, 8, 3)
    assert set(ops["resnet18"]) == common | {"MaxPool"}
    assert (ops["resnet18"]["Conv"], ops["resnet18"]["Add"]) == (20, 8)
    assert set(ops["googlenet"]) == {"Conv", "BatchNormalization", "Relu", "MaxPool", "Concat", "GlobalAveragePool",
                                     "Flatten", "Gemm"}
    assert (ops["googlenet"]["Conv"], ops["googlenet"]["Concat"], ops["googlenet"]["MaxPool"]) == (57, 9, 13)

    # option A: x[:, :, ::2, ::2] then C/4 zero channels on each side
    m = models["resnet20_cifar"]
    inits = _inits(m)
    slices = [n for n in m.graph.node if n.op_type == "Slice"]
    for n in slices:
        assert [inits[i].tolist() for i in n.input[3:]] == [[2, 3], [2, 2]]
    pads = [inits[n.input[1]].tolist() for n in m.graph.node if n.op_type == "Pad"]
    assert pads == [[0, 8, 0, 0, 0, 8, 0, 0], [0, 16, 0, 0, 0, 16, 0, 0]]

    # depthwise: group = channels, one input channel per filter; ReLU6 = Clip(0, 6)
    m = models["mobilenetv2_cifar"]
    inits = _inits(m)
    dw = [n for n in m.graph.node if n.op_type == "Conv" and _attrs(n)["group"] > 1]
    assert len(dw) == 17
    for n in dw:
        w = inits[n.input[1]]
        assert w.shape[1:] == (1, 3, 3) and _attrs(n)["group"] == w.shape[0]
    assert {(float(inits[n.input[1]]), float(inits[n.input[2]])) for n in m.graph.node if n.op_type == "Clip"} \
        == {(0.0, 6.0)}
    first = next(n for n in m.graph.node if n.op_type == "Conv")
    assert _attrs(first)["strides"] == [1, 1]

    # pooling as torchvision writes it
    def pools(name):
        return [tuple(_attrs(n)[k] for k in ("kernel_shape", "strides", "pads", "ceil_mode"))
                for n in models[name].graph.node if n.op_type == "MaxPool"]

    assert pools("squeezenet11") == [([3, 3], [2, 2], [0] * 4, 1)] * 3
    assert pools("resnet18") == [([3, 3], [2, 2], [1] * 4, 0)]
    g = pools("googlenet")
    assert g.count(([3, 3], [1, 1], [1] * 4, 1)) == 9 and g.count(([3, 3], [2, 2], [0] * 4, 1)) == 3
    assert g.count(([2, 2], [2, 2], [0] * 4, 1)) == 1

    # BatchNormalization: valid statistics, torchvision's epsilon
    for name, m in models.items():
        inits = _inits(m)
        for n in m.graph.node:
            if n.op_type == "BatchNormalization":
                assert np.all(inits[n.input[4]] > 0) and np.all(np.isfinite(inits[n.input[3]]))
                assert _attrs(n)["epsilon"] == pytest.approx(1e-3 if name == "googlenet" else 1e-5)
    # biases where torchvision has them: SqueezeNet convs and the classifiers only
    for name, m in models.items():
        for n in m.graph.node:
            if n.op_type == "Conv":
                assert (len(n.input) == 3) == (name == "squeezenet11"), n.name
            if n.op_type == "Gemm":
                assert len(n.input) == 3 and _attrs(n)["transB"] == 1


def test_torch_names(models):
    names = {t.name for t in models["resnet18"].graph.initializer}
    assert {"conv1.weight", "bn1.running_var", "layer2.0.downsample.0.weight", "layer4.1.bn2.bias",
            "fc.weight", "fc.bias"} <= names
    nodes = {n.name for n in models["resnet18"].graph.node}
    assert {"/conv1/Conv", "/layer1/layer1.0/conv1/Conv", "/layer2/layer2.0/downsample/downsample.0/Conv",
            "/fc/Gemm"} <= nodes
    assert "inception4e.branch3.1.conv.weight" in {t.name for t in models["googlenet"].graph.initializer}
    assert "features.12.expand3x3.bias" in {t.name for t in models["squeezenet11"].graph.initializer}
    assert "features.17.conv.1.0.weight" in {t.name for t in models["mobilenetv2_cifar"].graph.initializer}


@pytest.mark.parametrize("name", list(zoo.NETWORKS))
def test_same_seed_same_bytes(models, name):
    assert zoo.NETWORKS[name]().SerializeToString() == models[name].SerializeToString()


def test_other_seed_and_size():
    a, b = zoo.resnet20_cifar(seed=0), zoo.resnet20_cifar(seed=1)
    assert a.SerializeToString() != b.SerializeToString()
    assert [t.name for t in a.graph.initializer] == [t.name for t in b.graph.initializer]
    big = zoo.resnet20_projection(size=64)
    assert zoo.macs(big) == _resnet20_macs(64, projection=True)
    x = np.zeros((1, 3, 64, 64), np.float32)
    assert _session(big).run(None, {"input": x})[0].shape == (1, 10)
    with pytest.raises(ValueError, match="size"):
        zoo.squeezenet11(size=0)
    # torchvision's smallest SqueezeNet 1.1 input is 17x17; below it a pooling window has no pixel
    small = zoo.squeezenet11(size=17)
    assert _session(small).run(None, {"input": np.ones((1, 3, 17, 17), np.float32)})[0].shape == (1, 1000)
    with pytest.raises(ValueError, match=r"size 16 is too small for squeezenet11: features\.8"):
        zoo.squeezenet11(size=16)
    # odd sizes: the maps the builder follows are those of ONNX shape inference
    for build, size in ((zoo.googlenet, 97), (zoo.resnet20_cifar, 33), (zoo.mobilenetv2_cifar, 35)):
        m = onnx.shape_inference.infer_shapes(build(size=size), strict_mode=True)
        gap = next(n for n in m.graph.node if n.op_type == "GlobalAveragePool")
        vi = next(v for v in m.graph.value_info if v.name == gap.input[0])
        assert all(d.dim_value >= 1 for d in vi.type.tensor_type.shape.dim)
        x = np.ones((1, 3, size, size), np.float32)
        assert np.all(np.isfinite(_session(m).run(None, {"input": x})[0]))


def test_command_line(tmp_path):
    out = tmp_path / "r.onnx"
    assert zoo.main(["resnet20_projection", "-o", str(out), "--seed", "3"]) == 0
    assert out.read_bytes() == zoo.resnet20_projection(seed=3).SerializeToString()
    out = tmp_path / "m.onnx"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "zoo.py"), "mobilenetv2_cifar", "-o", str(out),
                        "--size", "16"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "2,236,682 parameters" in r.stdout
    assert out.read_bytes() == zoo.mobilenetv2_cifar(size=16).SerializeToString()
    with pytest.raises(SystemExit) as e:
        zoo.main(["alexnet", "-o", str(out)])
    assert e.value.code == 2
    assert zoo.main(["squeezenet11", "-o", str(out), "--size", "0"]) == 1
