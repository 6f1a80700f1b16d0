"""MTCNN on the LFW face / non-face subset (``scripts/mtcnn_data.py``, ``scripts/mtcnn_lfw.py``).

(a) the loaders: shapes, dtypes, ranges, labels, determinism, the stored files' checksums;
(b) the float models (ONNX Runtime) separate faces from non-faces (ROC AUC >= 0.99);
(c, slow) the compiled programs: on the golden device the AUC of RNet and ONet stays within 0.02
of float, PNet's face maps of the astronaut crops stay close to float; on the simulated RTL
(Verilator) RNet on 4 and ONet on 2 LFW crops give int8 outputs bit-identical to the golden
device's.
"""
import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:                      # ``scripts`` is a namespace package of the root
    sys.path.insert(0, str(ROOT))

from scripts import mtcnn_lfw  # noqa: E402
from scripts.mtcnn_data import (DATA_DIR, astronaut48, calib, lfw, lfw_pixels, normalize,  # noqa: E402
                                ort_outputs, roc_auc)

#: sha256 of the data files (as in models/mtcnn/SOURCE.md)
FILES = {
    "lfw25.npy": "785c7ad9fcf1ded4e6a499f36f453edb60bcc8e04b964f2c7ae227bbfe041de1",
    "lfw_labels.npy": "85d5998c5479094c323dfb94cd5061b1f76aad6d1fc50d96e2a024be9912dd70",
    "calib24_rgb.npy": "257671ccd48e047a513e12d98e2c066067336f2ae7e5ddfbb08ecf7ed2773306",
    "calib48_rgb.npy": "45ba0eb25d9520ec5f3a552de549c98680ce80f7e322a6b5635e6cab230160ee",
    "astronaut48_rgb.npy": "e57dcc170076c66b268ccf480380b9be1f564648f8283332f9d635837f075565",
}
LIMIT = 0.99609375                                 # |(x - 127.5) / 128| for x in 0..255


def test_data_files_are_the_documented_ones():
    for name, digest in FILES.items():
        assert hashlib.sha256((DATA_DIR / name).read_bytes()).hexdigest() == digest, name
    assert sum((DATA_DIR / name).stat().st_size for name in FILES) < 600_000


@pytest.mark.parametrize("size", [24, 48])
def test_lfw_loader(size):
    x, y = lfw(size)
    assert x.shape == (200, 3, size, size) and x.dtype == np.float32
    assert y.shape == (200,) and y.dtype == np.int64
    assert (y[:100] == 1).all() and (y[100:] == 0).all()
    assert -LIMIT <= x.min() and x.max() <= LIMIT
    assert (x[:, 0] == x[:, 1]).all() and (x[:, 0] == x[:, 2]).all()   # grey replicated
    x2, y2 = lfw(size)
    assert x2.tobytes() == x.tobytes() and (y2 == y).all()
    assert x.std() > 0.2                                              # real images, not a constant


def test_lfw_pixels_and_normalization():
    p = lfw_pixels()
    assert p.shape == (200, 25, 25) and p.dtype == np.float32 and 0 <= p.min() and p.max() <= 255
    assert (np.round(p * 12) == p * 12).all()                         # twelfths of a grey level
    assert normalize(np.array([0, 127.5, 255])).tolist() == [-LIMIT, 0.0, LIMIT]
    with pytest.raises(ValueError):
        lfw(0)


@pytest.mark.parametrize("size", [24, 48])
def test_calib_and_astronaut_loaders(size):
    c = calib(size)
    assert c.shape == (32, 3, size, size) and c.dtype == np.float32
    assert -LIMIT <= c.min() and c.max() <= LIMIT and calib(size).tobytes() == c.tobytes()
    # 8-bit sources: every value is (k - 127.5) / 128 for an integer k
    k = c.astype(np.float64) * 128 + 127.5
    assert (k == np.round(k)).all()
    grey = c[24:]                                                     # camera.png, replicated
    assert (grey[:, 0] == grey[:, 1]).all() and (grey[:, 0] == grey[:, 2]).all()
    assert not (c[:8, 0] == c[:8, 1]).all()                           # astronaut.png is in colour
    a = astronaut48()
    assert a.shape == (8, 3, 48, 48) and a.dtype == np.float32 and astronaut48().tobytes() == a.tobytes()
    with pytest.raises(ValueError, match="sizes"):
        calib(12)


def test_roc_auc():
    y = np.array([1, 1, 0, 0])
    assert roc_auc(np.array([0.9, 0.8, 0.1, 0.2]), y) == 1.0
    assert roc_auc(np.array([0.1, 0.2, 0.9, 0.8]), y) == 0.0
    assert roc_auc(np.array([0.5, 0.5, 0.5, 0.5]), y) == 0.5          # ties count 1/2
    assert roc_auc(np.array([0.9, 0.3, 0.3, 0.1]), y) == 0.875        # one tied pair of four
    with pytest.raises(ValueError):
        roc_auc(np.array([0.1, 0.2]), np.array([1, 1]))


def test_lfw_order_alternates():
    assert mtcnn_lfw.lfw_order(5).tolist() == [0, 100, 1, 101, 2]
    assert sorted(mtcnn_lfw.lfw_order(200).tolist()) == list(range(200))
    with pytest.raises(ValueError):
        mtcnn_lfw.lfw_order(201)


@pytest.mark.parametrize("net,size", [("rnet", 24), ("onet", 48)])
def test_float_auc(net, size):
    x, y = lfw(size)
    p = ort_outputs(DATA_DIR / f"{net}.onnx", x)["prob"][:, 1]
    assert roc_auc(p, y) >= 0.99
    assert ((p > 0.5) == (y == 1)).mean() >= 0.99


# ---------------------------------------------------------------------------------------------
# Compiled programs (slow: whole networks; the RTL test builds or reuses the Verilator device)

@pytest.fixture(scope="module")
def golden_report():
    """``scripts/mtcnn_lfw.py`` on the golden device over all 200 LFW crops and 8 astronaut crops."""
    return mtcnn_lfw.evaluate("golden", 200)


@pytest.mark.slow
@pytest.mark.parametrize("net", ["rnet", "onet"])
def test_golden_auc_close_to_float(golden_report, net):
    r = golden_report[net]
    assert r["images"] == 200 and r["faces"] == 100
    assert r["auc_float"] >= 0.99
    assert r["auc_golden"] >= r["auc_float"] - 0.02, r
    assert r["acc_golden"] >= r["acc_float"] - 0.03, r
    assert r["mean_abs_prob_diff"] < 0.1, r


@pytest.mark.slow
def test_pnet_golden_close_to_float_on_astronaut(golden_report):
    r = golden_report["pnet_astronaut"]
    assert r["images"] == 8
    assert min(r["peak_golden"][:4]) >= 0.9 and min(r["peak_float"][:4]) >= 0.9   # the face
    assert r["max_peak_diff"] <= 0.25, r       # each crop's best window, golden vs float
    assert r["mean_abs_prob_diff"] <= 0.15, r  # over all 8 x 19 x 19 windows


@pytest.mark.slow
def test_rtl_bit_identical_to_golden():
    from nibble.host.compiler import compile_model
    from nibble.host.driver import Device

    with Device("sim") as sim:
        for net, size, n in (("rnet", 24, 4), ("onet", 48, 2)):
            x = lfw(size)[0][mtcnn_lfw.lfw_order(n)]
            program = compile_model(DATA_DIR / f"{net}.onnx", calib(size))
            with Device("golden") as gold:
                _, raw_golden, _ = mtcnn_lfw.run_device(gold, program, x)
            out, raw_rtl, cycles = mtcnn_lfw.run_device(sim, program, x)
            assert [r.shape for r in raw_rtl] == [r.shape for r in raw_golden]
            assert mtcnn_lfw.bit_identical(raw_rtl, raw_golden) == n, net
            assert len(cycles) == n and all(c > 0 for c in cycles)
            assert set(out) == {t.name for t in program.outputs} and out["prob"].shape == (n, 2)
