"""MTCNN's published PNet, RNet and ONet (``models/mtcnn``, see ``SOURCE.md``) through the
compiler: branching heads from one tensor, PReLU, MaxPool 3x3 s2 and 2x2 s2 in ceil mode,
``permute(0, 3, 2, 1)`` + flatten before a Linear, Softmax at the end (a host tail op).

The golden device is compared with the float graph run with the INQ weights on the device's
int8 input (the implementation: only the int8 feature rounding differs) and with ONNX Runtime
(float weights: INQ of the published weights without retraining costs more, reported here). The
face / non-face decision ``prob[:, 1] > 0.5`` on the 200 LFW crops is kept.
"""
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from nibble.host.compiler import compile_graph
from nibble.host.driver import Device
from nibble.host.graph import run_outputs
from nibble.host.program import Program
from nibble.sim import golden
from onnx_models import snr_db

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import mtcnn_data  # noqa: E402  (the MTCNN inputs, made from the files in models/mtcnn)

D = ROOT / "models" / "mtcnn"
#: net → (input (C, H, W), calibration size, test inputs, outputs in graph order with their
#:        shapes, minimum SNR in dB of the golden device against the INQ float graph per output)
NETS = {
    "pnet": ((3, 48, 48), 48, lambda: mtcnn_data.astronaut48(), {"reg": (4, 19, 19), "prob": (2, 19, 19)},
             {"reg": 17, "prob": 25}),
    "rnet": ((3, 24, 24), 24, lambda: mtcnn_data.lfw(24)[0], {"reg": (4,), "prob": (2,)}, {"reg": 16, "prob": 28}),
    "onet": ((3, 48, 48), 48, lambda: mtcnn_data.lfw(48)[0], {"reg": (4,), "landmarks": (10,), "prob": (2,)},
             {"reg": 16, "landmarks": 32, "prob": 28}),
}


@pytest.fixture(scope="module", params=sorted(NETS))
def compiled(request):
    net = request.param
    shape, size, test, _, _ = NETS[net]
    g, p = compile_graph(D / f"{net}.onnx", mtcnn_data.calib(size))
    x = test()
    with Device("golden") as d:
        d.load(p)
        xq = golden.dequantize_features(d.quantize(x), p.input_q)
        y = d.run(x)
    return net, g, p, x, xq, y


def test_program_structure(compiled, tmp_path):
    net, g, p, x, _, y = compiled
    shape, _, _, outs, _ = NETS[net]
    assert [t.name for t in p.outputs] == list(outs) and p.input_shape == shape
    assert [t.tail for t in p.outputs] == [("softmax",) if k == "prob" else () for k in outs]
    for k, s in outs.items():
        assert y[k].shape == (len(x), *s)
    assert all(n.is_compute for n in g.nodes)
    assert all(L.prelu for L in p.layers if g.node(L.name).conv.prelu is not None)
    pools = {L.name: L.pool for L in p.layers if L.pools}
    if net == "pnet":
        assert pools == {"/conv1/Conv": golden.POOL_2X2}
    else:
        assert pools["/conv1/Conv"] == (3, 3, 2, 2, 0, 1, 0, 1) and pools["/conv2/Conv"][:4] == (3, 3, 2, 2)
    if net != "pnet":
        dense = g.node("/dense4/Gemm" if net == "rnet" else "/dense5/Gemm")
        assert "/Transpose" in dense.conv.names and dense.conv.w.ndim == 4 and dense.conv.w.shape[2:] == (3, 3)
    p.save(tmp_path / "p.npz")
    q = Program.load(tmp_path / "p.npz")
    assert q.layers == p.layers and q.outputs == p.outputs


def test_golden_matches_the_inq_float_graph(compiled):
    net, g, p, x, xq, y = compiled
    ref = run_outputs(g, xq, weights="inq")
    for k, need in NETS[net][4].items():
        assert snr_db(y[k], ref[k]) >= need, (k, snr_db(y[k], ref[k]))


def test_against_onnx_runtime_and_the_face_decision(compiled):
    net, g, p, x, xq, y = compiled
    sess = ort.InferenceSession(str(D / f"{net}.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    ref = {k: np.concatenate([sess.run(None, {"input": xi[None].astype(np.float32)})[i] for xi in x])
           for i, k in enumerate(names)}
    assert names == list(NETS[net][3])
    assert snr_db(y["prob"], ref["prob"]) >= 10
    if net != "pnet":
        labels = mtcnn_data.lfw_labels()
        float_acc = np.mean((ref["prob"][:, 1] > 0.5) == labels)
        acc = np.mean((y["prob"][:, 1] > 0.5) == labels)
        assert float_acc >= 0.99 and acc >= float_acc - 0.03, (acc, float_acc)
