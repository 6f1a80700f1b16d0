"""MTCNN inputs made at load time from the compact files in ``models/mtcnn`` (see its ``SOURCE.md``).

Import from the repository root as ``scripts.mtcnn_data`` (``from scripts.mtcnn_data import lfw``),
or from ``scripts/`` as ``mtcnn_data``. Needs numpy, pillow (the ``data`` extra) and nibble. Every
function is deterministic: the same files and the same pillow give the same arrays, bit for bit.

Network inputs are made the way facenet-pytorch 2.6.0 feeds its MTCNN stages
(``facenet_pytorch/models/utils/detect_face.py``): an RGB image with pixel values 0..255, laid out
(N, 3, H, W) with H the image rows (top to bottom) and W the columns (left to right), then
:func:`normalize`, ``(x - 127.5) * 0.0078125`` in float32, so inputs lie in
[-0.99609375, 0.99609375]. A grey source is replicated into the three channels.

Files read (written by ``scripts/make_mtcnn_data.py``):

    lfw25.npy           uint16 (200,25,25)  scikit-image's ``lfw_subset.npy`` grey crops as
                        twelfths of a grey level: pixel value (0..255) = k / 12
    lfw_labels.npy      int64 (200,)        1 = face (first 100), 0 = non-face (last 100)
    calib24_rgb.npy     uint8 (32,24,24,3)  calibration crops, RGB, already at 24x24
    calib48_rgb.npy     uint8 (32,48,48,3)  the same boxes at 48x48
    astronaut48_rgb.npy uint8 (8,48,48,3)   PNet / ONet test crops of ``astronaut.png``

Only the LFW crops are resampled here (25x25 -> the network's size, :func:`resize_plane`); the
calibration and astronaut crops are stored at their network sizes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).resolve().parent.parent / "models" / "mtcnn"
"""``models/mtcnn`` of this repository."""

LFW_DENOMINATOR = 12
"""``lfw25.npy`` holds pixel values (0..255) times this, as integers."""

CALIB_SIZES = (24, 48)
"""Sizes at which the calibration crops are stored (RNet 24x24, PNet / ONet 48x48)."""


def _load(name: str, dtype, shape_tail: tuple[int, ...]) -> np.ndarray:
    """``DATA_DIR / name`` as an array of ``dtype`` whose shape ends in ``shape_tail``."""
    path = DATA_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; make it with 'python scripts/make_mtcnn_data.py'")
    a = np.load(path)
    if a.dtype != dtype or a.shape[a.ndim - len(shape_tail):] != shape_tail:
        raise ValueError(f"{path}: expected {np.dtype(dtype)} (..., {', '.join(map(str, shape_tail))}), "
                         f"found {a.dtype} {a.shape}")
    return a


def normalize(rgb: np.ndarray) -> np.ndarray:
    """facenet-pytorch's MTCNN input normalization (:func:`nibble.host.mtcnn.normalize`).

    rgb: pixel values 0..255, any shape, any numeric dtype.
    Returns float32 ``(rgb - 127.5) * 0.0078125`` (float32 arithmetic), same shape.
    """
    from nibble.host.mtcnn import normalize as host_normalize

    return host_normalize(rgb)


def resize_plane(plane: np.ndarray, box: tuple[float, float, float, float], size: int) -> np.ndarray:
    """Cut ``box`` out of one image plane and resize it to ``size`` x ``size``.

    plane: (H, W), pixel values 0..255, any numeric dtype (converted to float32).
    box: (left, top, right, bottom) in pixels of ``plane``, possibly fractional.
    Returns float32 (size, size), clipped to [0, 255].

    Resampler: PIL ``Image.resize((size, size), resample=Image.BICUBIC, box=box)`` on a 32-bit
    float (mode "F") image, so nothing is rounded to 8 bits; PIL widens the bicubic kernel by the
    downscale factor (antialiased). Bicubic overshoots slightly at edges, hence the clip.
    """
    from PIL import Image

    p = Image.fromarray(np.ascontiguousarray(np.asarray(plane, np.float32)))  # mode "F"
    r = p.resize((size, size), resample=Image.BICUBIC, box=tuple(float(v) for v in box))
    return np.clip(np.asarray(r, np.float32), 0.0, 255.0)


def lfw_pixels() -> np.ndarray:
    """scikit-image's LFW subset as float32 (200, 25, 25) grey pixel values 0..255 (k / 12)."""
    k = _load("lfw25.npy", np.uint16, (200, 25, 25))
    return (k.astype(np.float64) / LFW_DENOMINATOR).astype(np.float32)


def lfw_labels() -> np.ndarray:
    """int64 (200,): 1 = face (the first 100 LFW crops), 0 = non-face (the last 100)."""
    return _load("lfw_labels.npy", np.int64, (200,))


def lfw(size: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-image's LFW face / non-face subset as MTCNN inputs.

    size: side in pixels (24 for RNet, 48 for ONet; any positive size works).
    Returns (x, labels): x float32 (200, 3, size, size) normalized (:func:`normalize`), each 25x25
    grey crop resized whole (:func:`resize_plane`) and replicated to 3 channels; labels int64
    (200,), 1 = face (first 100), 0 = non-face.
    """
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive integer, not {size!r}")
    pix = lfw_pixels()
    planes = np.stack([resize_plane(p, (0, 0, 25, 25), int(size)) for p in pix])
    x = np.repeat(planes[:, None], 3, axis=1)
    return normalize(x), lfw_labels()


def _rgb(name: str, size: int) -> np.ndarray:
    """uint8 (N, size, size, 3) RGB crops → normalized float32 (N, 3, size, size)."""
    a = _load(name, np.uint8, (size, size, 3))
    return normalize(a.transpose(0, 3, 1, 2))


def calib(size: int) -> np.ndarray:
    """Calibration inputs, float32 (32, 3, size, size), normalized; size 24 or 48.

    32 crops disjoint from the LFW subset: 8 jittered boxes around the face of ``astronaut.png``,
    then 8 random squares from each of ``coffee.png``, ``chelsea.png`` and ``camera.png`` (grey,
    replicated), stored as uint8 RGB at this size (``calib{size}_rgb.npy``).
    """
    if size not in CALIB_SIZES:
        raise ValueError(f"calibration crops exist at sizes {CALIB_SIZES}, not {size!r}")
    return _rgb(f"calib{size}_rgb.npy", size)


def astronaut48() -> np.ndarray:
    """PNet / ONet test inputs, float32 (8, 3, 48, 48), normalized.

    Crops of ``astronaut.png``: 0-3 contain the face (at about 48, 25, 17 and 12 px), 4-7 do not
    (flag, shuttle model, mission patch, helmet); boxes in ``SOURCE.md``.
    """
    return _rgb("astronaut48_rgb.npy", 48)


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney U statistic, ties counted 1/2.

    scores: float (N,); labels: (N,) with 1 = positive, 0 = negative (both classes present).
    Returns P(score of a random positive > score of a random negative) + P(equal) / 2.
    """
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels).astype(bool)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError(f"scores {s.shape} and labels {y.shape} must be equal 1-D shapes")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("the ROC AUC needs both positives and negatives")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(len(s), np.float64)
    i = 0
    while i < len(s):  # average 1-based ranks over runs of equal scores
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def ort_outputs(model: str | Path, x: np.ndarray) -> dict[str, np.ndarray]:
    """Run an MTCNN ONNX model (batch 1, input ``input``) on ONNX Runtime (CPU, one thread).

    x: float32 (N, 3, H, W). Returns ``{output name: float32 (N, ...)}`` in graph order.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    outs = [sess.run(None, {"input": np.asarray(xi[None], np.float32)}) for xi in x]
    return {k: np.concatenate([o[i] for o in outs]) for i, k in enumerate(names)}
