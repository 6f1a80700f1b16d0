"""The MTCNN face detector of ``make demo`` (``nibble.host.mtcnn``, ``scripts/mtcnn_demo.py``):
the host pieces alone (NMS against a brute-force reference, rerec, box regression, the pyramid,
area resizing, the PNet tile plan), PNet tiled on the golden device bit-identical to PNet on
the whole image, and the whole cascade on ``astronaut.png`` and ``coffee.png`` in float and on
the golden device (no RTL here: ``make demo`` runs it).
"""
import itertools
import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:                      # ``scripts`` is a namespace package of the root
    sys.path.insert(0, str(ROOT))

from nibble.host import mtcnn  # noqa: E402
from nibble.host.compiler import compile_graph  # noqa: E402
from nibble.host.driver import Device  # noqa: E402
from scripts import mtcnn_demo  # noqa: E402
from scripts.mtcnn_data import DATA_DIR, calib  # noqa: E402

PNET = DATA_DIR / "pnet.onnx"


# --- NMS ---------------------------------------------------------------------------------------

def _overlap_ref(a, b, method):
    """Pure-Python overlap of two boxes as facenet-pytorch / torchvision define it."""
    e = 1.0 if method == "min" else 0.0
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + e)
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + e)
    inter = iw * ih
    area = lambda q: (q[2] - q[0] + e) * (q[3] - q[1] + e)
    den = min(area(a), area(b)) if method == "min" else area(a) + area(b) - inter
    return inter / den


def _nms_ref(boxes, scores, thr, method):
    """Brute force: visit every box in order of score (ties: lower index), keep it unless a kept
    box overlaps it by more than ``thr``."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    keep = []
    for i in order:
        if all(_overlap_ref(boxes[i], boxes[k], method) <= thr for k in keep):
            keep.append(i)
    return keep


@pytest.mark.parametrize("method,thr", [("union", 0.5), ("union", 0.7), ("min", 0.7), ("union", 0.0)])
def test_nms_matches_brute_force(method, thr):
    rng = np.random.default_rng(7)
    for trial in range(40):
        n = int(rng.integers(0, 60))
        xy = rng.uniform(0, 100, (n, 2))
        wh = rng.uniform(1, 40, (n, 2))
        boxes = np.concatenate([xy, xy + wh], 1)
        scores = rng.choice(np.linspace(0.6, 1.0, 9), n)        # many ties, as int8 probabilities
        got = mtcnn.nms(boxes, scores, thr, method)
        assert got.dtype == np.int64
        assert got.tolist() == _nms_ref(boxes.tolist(), scores.tolist(), thr, method), (trial, method, thr)


def test_nms_edge_cases():
    assert mtcnn.nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []
    same = np.array([[0, 0, 10, 10]] * 3, float)
    assert mtcnn.nms(same, [0.9, 0.9, 0.9], 0.5).tolist() == [0]   # ties: the lowest index
    with pytest.raises(ValueError, match="3 boxes and 2 scores"):
        mtcnn.nms(same, [1, 2], 0.5)
    with pytest.raises(ValueError, match="unknown NMS method"):
        mtcnn.nms(same, [1, 2, 3], 0.5, "max")


# --- boxes -------------------------------------------------------------------------------------

def test_rerec_squares_around_the_centre():
    rng = np.random.default_rng(3)
    b = np.concatenate([rng.uniform(0, 50, (20, 2)), rng.uniform(60, 120, (20, 2)), rng.uniform(0, 1, (20, 1))], 1)
    r = mtcnn.rerec(b)
    side = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
    np.testing.assert_allclose(r[:, 2] - r[:, 0], side, rtol=0, atol=1e-12)
    np.testing.assert_allclose(r[:, 3] - r[:, 1], side, rtol=0, atol=1e-12)
    np.testing.assert_allclose(r[:, [0, 1]] + r[:, [2, 3]], b[:, [0, 1]] + b[:, [2, 3]], atol=1e-12)
    np.testing.assert_array_equal(r[:, 4], b[:, 4])
    assert r is not b and not np.shares_memory(r, b)
    with pytest.raises(ValueError, match=r"boxes must be \(N, >= 4\)"):
        mtcnn.rerec(np.zeros((3, 3)))


def test_bbreg_and_pad_boxes():
    b = np.array([[10.0, 20.0, 29.0, 59.0, 0.9]])
    r = mtcnn.bbreg(b, [[0.1, -0.25, 0.5, 0.0]])            # sides 20 and 40 (x2 - x1 + 1)
    np.testing.assert_allclose(r[0], [12.0, 10.0, 39.0, 59.0, 0.9])
    y, ey, x, ex = mtcnn.pad_boxes(np.array([[-5.7, 3.9, 700.2, 99.99], [2.5, 1.0, 8.0, 9.0]]), 640, 480)
    assert (y.tolist(), ey.tolist(), x.tolist(), ex.tolist()) == ([3, 1], [99, 9], [1, 2], [640, 8])


def test_generate_boxes_maps_windows_to_image_pixels():
    prob = np.zeros((5, 7))
    prob[2, 3], prob[4, 0] = 0.8, 0.6
    reg = np.arange(4 * 35, dtype=float).reshape(4, 5, 7)
    b = mtcnn.generate_boxes(reg, prob, 0.5, 0.6)
    # window (row 2, col 3): x from (2*3 + 1)/0.5 = 14 to (2*3 + 12)/0.5 = 36
    np.testing.assert_array_equal(b[0], [14, 10, 36, 32, 0.8, *reg[:, 2, 3]])
    np.testing.assert_array_equal(b[1], [2, 18, 24, 40, 0.6, *reg[:, 4, 0]])


def test_box_iou():
    a = np.array([[0, 0, 10, 10], [0, 0, 4, 4]], float)
    np.testing.assert_allclose(mtcnn.box_iou(a, [[5, 0, 15, 10]]), [[50 / 150], [0.0]])
    assert mtcnn.box_iou(a, np.zeros((0, 5))).shape == (2, 0)


# --- pyramid and resizing ------------------------------------------------------------------------

def test_pyramid_scales_as_facenet_pytorch():
    s = mtcnn.pyramid_scales(512, 512)
    assert len(s) == 10 and s[0] == 12 / 20
    np.testing.assert_allclose(np.array(s[1:]) / np.array(s[:-1]), 0.709)
    assert 512 * s[-1] >= 12 > 512 * s[-1] * 0.709
    assert [mtcnn.scaled_size(512, 512, v)[0] for v in s] == [308, 218, 155, 110, 78, 56, 40, 28, 20, 14]
    assert mtcnn.scaled_size(400, 600, s[0]) == (241, 361)
    assert mtcnn.pyramid_scales(300, 451, min_face=60)[0] == 0.2
    assert mtcnn.pyramid_scales(15, 40) == []                  # smaller than the smallest face
    with pytest.raises(ValueError, match="min_face must be positive"):
        mtcnn.pyramid_scales(100, 100, min_face=0)
    with pytest.raises(ValueError, match="factor"):
        mtcnn.pyramid_scales(100, 100, factor=1.0)


def test_area_resize_is_adaptive_average_pooling():
    rng = np.random.default_rng(5)
    img = rng.uniform(0, 255, (3, 13, 17)).astype(np.float32)
    for oh, ow in [(5, 7), (13, 17), (24, 24), (1, 1), (4, 30)]:
        ref = np.zeros((3, oh, ow))
        for i, j in itertools.product(range(oh), range(ow)):        # PyTorch's bins, one by one
            r0, r1 = math.floor(i * 13 / oh), math.ceil((i + 1) * 13 / oh)
            c0, c1 = math.floor(j * 17 / ow), math.ceil((j + 1) * 17 / ow)
            ref[:, i, j] = img[:, r0:r1, c0:c1].astype(np.float64).mean((1, 2))
        got = mtcnn.area_resize(img, (oh, ow))
        assert got.dtype == np.float32 and got.shape == (3, oh, ow)
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-4)
    with pytest.raises(ValueError, match="cannot resize"):
        mtcnn.area_resize(img, (0, 4))


def test_load_image_checks():
    grey = np.full((20, 30), 7, np.uint8)
    x = mtcnn.load_image(grey)
    assert x.shape == (3, 20, 30) and x.dtype == np.float32 and np.all(x == 7)
    for bad, msg in [(np.zeros((20, 30, 4)), "must be"), (np.zeros((11, 30)), "at least 12"),
                     (np.full((20, 20), 256.0), "not in"), (np.full((20, 20), np.nan), "NaN"),
                     (np.full((20, 20), "a"), "data type")]:
        with pytest.raises(ValueError, match=msg):
            mtcnn.load_image(bad)


# --- PNet tiles ----------------------------------------------------------------------------------

@pytest.mark.parametrize("tile", [24, 30, 80])
def test_tile_plan_covers_the_output_map(tile):
    for side in range(12, 400):
        plan = mtcnn.tile_plan(side, tile)
        o = mtcnn.pnet_output_size(side, 12)[0]
        covered = np.zeros(o, int)
        for off, n in plan:
            assert off % 2 == 0 and off >= 0 and off + n <= side and n <= tile, (side, plan)
            assert n == side or n == tile or (n == tile - 1 and off + n == side and side % 2), (side, plan)
            k = mtcnn.pnet_output_size(n, 12)[0]
            covered[off // 2:off // 2 + k] += 1
        assert covered.min() >= 1, (side, plan)
        assert len(plan) == len({off for off, _ in plan})                      # no tile twice
    with pytest.raises(ValueError, match="even integer of at least 24"):
        mtcnn.tile_plan(100, 25)
    with pytest.raises(ValueError, match="at least 12"):
        mtcnn.tile_plan(11, 24)


@pytest.fixture(scope="module")
def pnet_graph():
    """PNet calibrated at 48x48 on the repository's calibration crops (what the demo uses)."""
    return compile_graph(PNET, calib(48))[0]


@pytest.mark.parametrize("h,w,photo", [(47, 50, False), (50, 47, False), (38, 38, False), (24, 61, False),
                                       (20, 13, False), (55, 49, True)])
def test_pnet_tiles_equal_the_whole_image_on_golden(pnet_graph, h, w, photo):
    """Tiles of at most 24x24 (even offsets, odd edge tiles ending at the image's edge) stitched:
    bit-identical to the whole h x w image on the golden device (both fit the feature memory),
    with the same exponents; and tiles that overlap compute the same int8 values. Random pixels,
    or astronaut.png area-resized to h x w."""
    if photo:
        img = mtcnn.load_image(mtcnn_demo.photo_path("astronaut"))
        x = mtcnn.normalize(mtcnn.area_resize(img, (h, w)))
    else:
        x = mtcnn.normalize(np.random.default_rng(h * 100 + w).integers(0, 256, (3, h, w)))
    runs, programs = {}, {}

    def run(batch):
        shape = batch.shape[2:]
        if shape not in programs:
            programs[shape] = mtcnn.compile_pnet(PNET, *shape, pnet_graph)
        with Device("golden") as dev:
            dev.load(programs[shape])
            y = dev.run(batch)
        runs.setdefault(shape, []).append(batch.shape[0])
        return y["reg"], y["prob"][:, 1]

    reg_t, prob_t = mtcnn.pnet_windows(run, x, tile=24)
    reg_w, prob_w = mtcnn.pnet_windows(run, x, tile=None)
    assert reg_w.shape == (4, *mtcnn.pnet_output_size(h, w)) and prob_w.shape == reg_w.shape[1:]
    np.testing.assert_array_equal(reg_t, reg_w)
    np.testing.assert_array_equal(prob_t, prob_w)
    if max(h, w) > 24:
        assert sum(n for k, v in runs.items() if k != (h, w) for n in v) > 1     # it did tile
    # overlapping tiles agree: stitching in the reverse order gives the same maps
    tiles = [(y0, x0, th, tw) for y0, th in mtcnn.tile_plan(h, 24) for x0, tw in mtcnn.tile_plan(w, 24)]
    maps = []
    for y0, x0, th, tw in tiles:
        r, p = run(x[None, :, y0:y0 + th, x0:x0 + tw])
        maps.append(np.concatenate([r[0], p[0][None]]))
    rev = mtcnn.stitch(h, w, tiles[::-1], maps[::-1])
    np.testing.assert_array_equal(rev[:4], reg_w)


def test_stitch_checks():
    with pytest.raises(ValueError, match="even offsets"):
        mtcnn.stitch(30, 30, [(1, 0, 24, 24)], [np.zeros((1, 7, 7))])
    with pytest.raises(ValueError, match="expected"):
        mtcnn.stitch(30, 30, [(0, 0, 24, 24)], [np.zeros((1, 6, 7))])
    with pytest.raises(ValueError, match="do not cover"):
        mtcnn.stitch(30, 30, [(0, 0, 24, 24)], [np.zeros((1, 7, 7))])


def test_pnet_model_resized_matches_onnx_runtime_shapes():
    import onnxruntime as ort
    m = mtcnn.pnet_model(PNET, 37, 52)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    reg, prob = sess.run(None, {"input": np.zeros((1, 3, 37, 52), np.float32)})
    assert reg.shape == (1, 4, 14, 21) == (1, 4, *mtcnn.pnet_output_size(37, 52)) and prob.shape == (1, 2, 14, 21)
    with pytest.raises(ValueError, match="at least 12x12"):
        mtcnn.pnet_model(PNET, 11, 52)
    with pytest.raises(ValueError, match="not a PNet model"):
        mtcnn.pnet_model(DATA_DIR / "rnet.onnx", 24, 24)


# --- the cascade ---------------------------------------------------------------------------------

def test_detect_astronaut_float_and_golden(tmp_path):
    """facenet-pytorch's published box on astronaut.png (about [181, 62, 268, 172]) in float; the
    golden device finds that face with IoU >= 0.85 and no other box; coffee.png has none."""
    res = mtcnn_demo.run_demo("golden", ("astronaut", "coffee"), out_dir=tmp_path, log=None)
    a = res["photos"]["astronaut"]
    assert len(a["float_boxes"]) == 1
    np.testing.assert_allclose(a["float_boxes"][0][:4], [181, 62, 268, 172], atol=1.0)
    assert len(a["boxes"]) == 1 and a["iou"][0] >= 0.85 and a["extra_boxes"] == 0
    assert np.abs(np.array(a["landmarks"][0]) - [[205, 102], [247, 104], [225, 129], [202, 139], [245, 142]]).max() < 8
    # PNet on each whole pyramid scale (maps in DDR): the 10 scales of a 512 × 512 photo at 20 px
    from nibble.host import mtcnn
    assert a["stage_inputs"]["pnet"] == len(mtcnn.pyramid_scales(512, 512)) == 10
    assert a["stage_inputs"]["rnet"] == a["candidates"]["pnet"]
    c = res["photos"]["coffee"]
    assert c["float_boxes"] == [] and c["boxes"] == [] and res["ok"]
    assert (tmp_path / "mtcnn_astronaut.png").is_file() and (tmp_path / "mtcnn_coffee.png").is_file()


def test_demo_rejects_an_unknown_photo_and_device(tmp_path):
    with pytest.raises(FileNotFoundError, match="no bundled photo 'nosuch.png'"):
        mtcnn_demo.photo_path("nosuch")
    with pytest.raises(ValueError, match="unknown device"):
        mtcnn_demo.run_demo("uart", ("astronaut",), out_dir=tmp_path, log=None)
