"""The network zoo (``scripts/zoo.py``) through the compiler: the CIFAR networks on the golden
device against the float graph with the same INQ weights, the ImageNet ones compiled (the
mapping of every layer) on the large configuration."""
import numpy as np
import pytest

from nibble.hw.config import EngineConfig
from nibble.host.compiler import compile_graph
from nibble.host.driver import Device
from nibble.host.graph import run_outputs
from onnx_models import snr_db
from scripts import zoo

#: A configuration large enough for every zoo network (feature, weight, parameter memories).
LARGE = EngineConfig(feature_depth=1 << 20, weight_depth=1 << 22, param_depth=1 << 20, filter_depth=4096)


@pytest.mark.parametrize("name", ["resnet20_projection", "resnet20_cifar", "mobilenetv2_cifar"])
def test_cifar_network_on_the_golden_device(name):
    rng = np.random.default_rng(0)
    cal, x = rng.standard_normal((8, 3, 32, 32)), rng.standard_normal((2, 3, 32, 32))
    g, p = compile_graph(zoo.NETWORKS[name](size=32, seed=0), cal, LARGE)
    d = Device("golden")
    d.load(p)
    assert snr_db(d.run(x), run_outputs(g, x, weights="inq")["output"]) >= 25.0


@pytest.mark.parametrize("name,ops", [("squeezenet11", "Concat"), ("resnet18", "residual Add"),
                                      ("googlenet", "Concat")])
def test_imagenet_network_compiles(name, ops):
    rng = np.random.default_rng(0)
    g, p = compile_graph(zoo.NETWORKS[name](size=224, seed=0), rng.standard_normal((1, 3, 224, 224)), LARGE)
    p.validate()
    text = g.summary()
    assert (ops in text) if ops != "Concat" else any(L.dst_pix for L in p.layers)
