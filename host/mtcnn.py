"""MTCNN face detection: the host side of the three-stage cascade (image pyramid, box
generation, NMS, crops) around PNet, RNet and ONet run on ONNX Runtime or on an accelerator.

The steps are those of facenet-pytorch 2.6.0 (``facenet_pytorch/models/utils/detect_face.py``,
``detect_face``), for one image:

1. **Pyramid** (:func:`pyramid_scales`): scales ``m·factorᵏ`` with ``m = 12 / min_face`` while
   ``min(H, W)·m·factorᵏ >= 12``; each scaled image is ``(int(H·s + 1), int(W·s + 1))`` pixels,
   resized with area averaging (:func:`area_resize`, PyTorch's ``interpolate(mode="area")``)
   and normalized (:func:`normalize`).
2. **PNet** on each scaled image: face probability and box regression per 12×12 window at
   stride 2 (:func:`pnet_windows`); windows with probability ``>= thresholds[0]`` become boxes
   (:func:`generate_boxes`); NMS 0.5 within the scale, then 0.7 over all scales
   (:func:`nms`, ``"union"``); the regression applied with the box side ``x2 − x1``; squared
   (:func:`rerec`).
3. **RNet** on the 24×24 crops (:func:`crop_boxes`, the box clipped to the image as
   :func:`pad_boxes`): probability ``> thresholds[1]``, NMS 0.7, regression (:func:`bbreg`, side
   ``x2 − x1 + 1``), squared.
4. **ONet** on the 48×48 crops: probability ``> thresholds[2]``, the five landmarks from the box
   before regression, regression, NMS 0.7 with the overlap over the smaller box (``"min"``).

Where this module departs from facenet-pytorch (each a matter of order or bookkeeping, not of
the arithmetic): NMS breaks ties of equal scores by the lower index (a stable sort; torchvision
leaves the order of ties unspecified, and the int8 probabilities of an accelerator tie often);
a box whose clipped crop is empty is dropped together with its crop (facenet-pytorch drops the
crop only).

Two back ends give the network outputs (:class:`FloatStages`, :class:`AcceleratorStages`), with
the same methods ``pnet``, ``rnet`` and ``onet``; :func:`detect` runs the cascade on either.

**PNet tiling on the host** (:func:`tile_plan`, :func:`pnet_windows`). The accelerator's feature
memory (128 KiB by default) does not hold a whole pyramid level of a photograph, so an
:class:`AcceleratorStages` runs PNet on tiles of at most ``tile × tile`` input pixels and
stitches the output maps. PNet is fully convolutional: conv 3×3 (no padding) → max-pool 2×2
stride 2 (``ceil_mode``) → conv 3×3 → conv 3×3 → 1×1 heads, so output (r, c) depends on input
rows ``2r .. 2r + 11`` and columns ``2c .. 2c + 11`` only; a tile at an even offset (y0, x0)
gives the outputs from (y0/2, x0/2) on, and with even offsets its pooling windows are those of
the whole image. Tiles of side ``tile`` (even) step by ``tile − 10`` (twice their output side
``tile/2 − 5``). Stitched equals whole-image exactly when no tile meets a pooling window the
whole image does not have: the one such window is the ``ceil_mode`` partial window at the
image's right or bottom edge when that side is odd (conv1 output of odd size, the last window
holding one column or row); a tile ending inside the image would pool two conv1 columns there,
and edge replication to an even size would too. So along an odd side the last tile is
``tile − 1`` pixels and ends at the edge (offset ``S − tile + 1``, even), its own partial window
then being the image's; along an even side the last tile is a whole ``tile`` ending at the edge
(offset ``S − tile``); a side of at most ``tile`` pixels is one tile of the image's own size
(one program per tile shape: at most ``tile``, ``tile − 1`` and the small sides). Every tile
lies inside the image (no padding), every output position is computed by at least one tile,
and the stitched maps equal PNet run on the whole scaled image, for every size, when every
tile's program uses the same feature exponents (:func:`compile_pnet` copies them from one
calibrated graph); tiles that overlap compute the same values. This is a measure until the
engine tiles maps through external memory itself.
"""
from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

__all__ = ["PNET_STRIDE", "PNET_CELL", "PNET_TILE", "THRESHOLDS", "normalize", "pyramid_scales", "scaled_size",
           "area_resize", "pnet_output_size", "pnet_model", "generate_boxes", "nms", "rerec", "bbreg", "pad_boxes",
           "crop_boxes", "check_tile", "tile_plan", "pnet_windows", "stitch", "box_iou", "Detection", "detect", "FloatStages",
           "AcceleratorStages", "compile_pnet", "copy_exponents", "load_image"]

#: PNet's output stride and window (cell) size in input pixels.
PNET_STRIDE, PNET_CELL = 2, 12
#: Default PNet tile side (input pixels) on the accelerator: the largest even side whose input
#: and pooled conv1 maps fit the default 8,192-word feature memory together (80² + 39² words).
PNET_TILE = 80
#: facenet-pytorch's thresholds of the three stages (face probability).
THRESHOLDS = (0.6, 0.7, 0.7)


def normalize(pixels):
    """MTCNN's input normalization: float32 ``(pixels − 127.5) · 0.0078125``, same shape."""
    x = np.asarray(pixels, np.float32)
    return ((x - np.float32(127.5)) * np.float32(0.0078125)).astype(np.float32)


def load_image(image):
    """An image as float32 (3, H, W) RGB pixel values 0..255.

    :param image: (H, W, 3) RGB or (H, W) grey (replicated to three channels), any real dtype,
        values in [0, 255]; or a path to an image file PIL reads (converted to RGB).
    :raises ValueError: another shape, fewer than 12 rows or columns, values that are not
        finite or outside [0, 255], a non-numeric array. :raises OSError: an unreadable file.
    """
    if isinstance(image, (str, pathlib.Path)):
        from PIL import Image
        with Image.open(image) as im:
            image = np.asarray(im.convert("RGB"))
    a = np.asarray(image)
    if a.dtype.kind not in "biuf":
        raise ValueError(f"the image has data type {a.dtype}, not a real number type")
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"the image must be (H, W, 3) RGB or (H, W) grey, not {a.shape}")
    if min(a.shape[:2]) < PNET_CELL:
        raise ValueError(f"the image is {a.shape[0]}x{a.shape[1]} pixels; MTCNN needs at least "
                         f"{PNET_CELL} rows and columns")
    a = a.astype(np.float32)
    if not np.all(np.isfinite(a)):
        raise ValueError("the image contains NaN or infinite values")
    if a.min() < 0 or a.max() > 255:
        raise ValueError(f"the image values lie in [{a.min():g}, {a.max():g}], not in [0, 255]")
    return np.ascontiguousarray(a.transpose(2, 0, 1))


def pyramid_scales(h, w, min_face=20.0, factor=0.709):
    """The pyramid's scales for an ``h × w`` image (facenet-pytorch): ``m·factorᵏ``,
    ``m = 12 / min_face``, for k = 0, 1, … while ``min(h, w)·m·factorᵏ >= 12``.

    :param min_face: smallest face side searched for, in image pixels (> 0).
    :param factor: ratio of consecutive scales, in (0, 1).
    :returns: list of float scales, largest first (empty if the image is smaller than
        ``min_face``). :raises ValueError: a non-positive size or ``min_face``, a factor outside (0, 1).
    """
    if h < 1 or w < 1:
        raise ValueError(f"image size {h}x{w} must be positive")
    if not min_face > 0:
        raise ValueError(f"min_face must be positive, not {min_face}")
    if not 0 < factor < 1:
        raise ValueError(f"the pyramid factor must lie in (0, 1), not {factor}")
    m = 12.0 / min_face
    minl = min(h, w) * m
    scales, s = [], m
    while minl >= 12:
        scales.append(s)
        s *= factor
        minl *= factor
    return scales


def scaled_size(h, w, scale):
    """Rows and columns of the image scaled by ``scale``: ``(int(h·scale + 1), int(w·scale + 1))``."""
    return int(h * scale + 1), int(w * scale + 1)


def _area_matrix(n_in, n_out):
    """(n_out, n_in) float64: row i averages input bins ``⌊i·n_in/n_out⌋ .. ⌈(i+1)·n_in/n_out⌉``
    (PyTorch's adaptive average pooling)."""
    a = np.zeros((n_out, n_in))
    for i in range(n_out):
        lo, hi = (i * n_in) // n_out, -(-((i + 1) * n_in) // n_out)
        a[i, lo:hi] = 1.0 / (hi - lo)
    return a


def area_resize(img, size):
    """Resize (C, H, W) to (C, oh, ow) by area averaging: PyTorch's ``interpolate(mode="area")``
    (adaptive average pooling; up- or down-scaling), computed in float64.

    :param img: float (C, H, W). :param size: (oh, ow), positive.
    :returns: float32 (C, oh, ow). :raises ValueError: an empty image or size.
    """
    img = np.asarray(img)
    oh, ow = (int(v) for v in size)
    if img.ndim != 3 or min(img.shape[1:]) < 1 or oh < 1 or ow < 1:
        raise ValueError(f"cannot resize an image of shape {img.shape} to {oh}x{ow}")
    ah, aw = _area_matrix(img.shape[1], oh), _area_matrix(img.shape[2], ow)
    return np.einsum("ih,chw,jw->cij", ah, img.astype(np.float64), aw, optimize=True).astype(np.float32)


def pnet_output_size(h, w):
    """PNet's output map for an ``h × w`` input: ``(⌈(h − 2)/2⌉ − 4, ⌈(w − 2)/2⌉ − 4)``.
    :raises ValueError: a side below 12 pixels (no output)."""
    if h < PNET_CELL or w < PNET_CELL:
        raise ValueError(f"PNet needs at least {PNET_CELL}x{PNET_CELL} input pixels, not {h}x{w}")
    return -(-(h - 2) // 2) - 4, -(-(w - 2) // 2) - 4


def pnet_model(model, h, w):
    """PNet (the published ``pnet.onnx``, any static input size) with input (1, 3, h, w) and
    outputs ``reg`` (1, 4, oh, ow), ``prob`` (1, 2, oh, ow) (:func:`pnet_output_size`): the
    graph input and output dims are edited in memory, the stored intermediate shapes dropped and
    ONNX shape inference re-run (strict: a model whose shapes do not follow raises).

    :param model: path or ``onnx.ModelProto`` (not modified). :returns: ``onnx.ModelProto``.
    :raises ValueError: a model that is not PNet-shaped (one 4-D input, 4-D outputs ``reg`` and
        ``prob``), a side below 12 pixels.
    """
    import onnx

    m = onnx.load(str(model)) if isinstance(model, (str, pathlib.Path)) else onnx.ModelProto.FromString(
        model.SerializeToString())
    g = m.graph
    outs = {o.name: o for o in g.output}
    rank = lambda v: len(v.type.tensor_type.shape.dim)
    if len(g.input) != 1 or set(outs) != {"reg", "prob"} or {rank(v) for v in [*g.input, *g.output]} != {4}:
        raise ValueError(f"not a PNet model (one input, 4-D outputs 'reg' and 'prob'): inputs "
                         f"{[i.name for i in g.input]}, outputs {sorted(outs)}")
    oh, ow = pnet_output_size(h, w)
    dims = g.input[0].type.tensor_type.shape.dim
    for d, v in zip(dims, (1, 3, h, w)):
        d.Clear()
        d.dim_value = v
    for name, c in (("reg", 4), ("prob", 2)):
        for d, v in zip(outs[name].type.tensor_type.shape.dim, (1, c, oh, ow)):
            d.Clear()
            d.dim_value = v
    del g.value_info[:]
    return onnx.shape_inference.infer_shapes(m, strict_mode=True)


def generate_boxes(reg, prob, scale, threshold):
    """Boxes of the PNet windows whose face probability is at least ``threshold``.

    :param reg: float (4, oh, ow) box regression; :param prob: float (oh, ow) face probability.
    :param scale: the pyramid scale of the maps. :returns: float64 (N, 9): x1, y1, x2, y2 (image
        pixels: ``⌊(2·c + 1)/scale⌋``, ``⌊(2·c + 12)/scale⌋`` for column c, rows alike), score,
        then the four regression values; row-major order of the windows.
    """
    rows, cols = np.nonzero(prob >= threshold)
    bb = np.stack([cols, rows], 1).astype(np.float64)
    q1 = np.floor((PNET_STRIDE * bb + 1) / scale)
    q2 = np.floor((PNET_STRIDE * bb + PNET_CELL) / scale)
    return np.concatenate([q1, q2, prob[rows, cols][:, None], reg[:, rows, cols].T], 1).astype(np.float64)


def _priority(scores):
    """Indices by decreasing score, ties by increasing index."""
    return np.argsort(-np.asarray(scores, np.float64), kind="stable")


def nms(boxes, scores, threshold, method="union"):
    """Greedy non-maximum suppression: in order of decreasing score (ties: lower index first)
    keep a box unless its overlap with a kept box exceeds ``threshold``.

    :param boxes: float (N, 4) x1, y1, x2, y2. :param scores: float (N,).
    :param method: ``"union"``: intersection over union with areas ``(x2 − x1)·(y2 − y1)``
        (torchvision's ``nms``, facenet-pytorch's first two stages); ``"min"``: intersection over
        the smaller area, sides ``x2 − x1 + 1`` (facenet-pytorch's ``nms_numpy(..., 'Min')``).
    :returns: int64 indices of the kept boxes, by decreasing score.
    :raises ValueError: shapes that do not match, an unknown method.
    """
    b = np.asarray(boxes, np.float64).reshape(-1, 4) if np.size(boxes) else np.zeros((0, 4))
    s = np.asarray(scores, np.float64).reshape(-1)
    if len(b) != len(s):
        raise ValueError(f"{len(b)} boxes and {len(s)} scores")
    if method not in ("union", "min"):
        raise ValueError(f"unknown NMS method '{method}' (union, min)")
    e = 1.0 if method == "min" else 0.0
    x1, y1, x2, y2 = b.T
    area = (x2 - x1 + e) * (y2 - y1 + e)
    order = _priority(s)
    keep = []
    while len(order):
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + e)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + e)
        inter = w * h
        with np.errstate(divide="ignore", invalid="ignore"):
            o = inter / (np.minimum(area[i], area[rest]) if method == "min" else area[i] + area[rest] - inter)
        order = rest[~(o > threshold)]
    return np.asarray(keep, np.int64)


def _boxes2d(boxes):
    """A float64 copy of (N, >= 4) boxes. :raises ValueError: another shape."""
    b = np.array(boxes, np.float64, copy=True)
    if b.ndim != 2 or b.shape[1] < 4:
        raise ValueError(f"boxes must be (N, >= 4), not {b.shape}")
    return b


def rerec(boxes):
    """Square boxes around their centres (side ``max(x2 − x1, y2 − y1)``, facenet-pytorch's
    ``rerec``). :param boxes: float (N, ≥ 4). :returns: a float64 copy, columns 0..3 replaced."""
    b = _boxes2d(boxes)
    h, w = b[:, 3] - b[:, 1], b[:, 2] - b[:, 0]
    side = np.maximum(w, h)
    b[:, 0] += w * 0.5 - side * 0.5
    b[:, 1] += h * 0.5 - side * 0.5
    b[:, 2] = b[:, 0] + side
    b[:, 3] = b[:, 1] + side
    return b


def bbreg(boxes, reg):
    """Apply box regression: each corner moves by ``reg`` times the side ``x2 − x1 + 1``
    (``y2 − y1 + 1``). :param boxes: float (N, ≥ 4); :param reg: float (N, 4).
    :returns: a float64 copy, columns 0..3 replaced."""
    b = _boxes2d(boxes)
    r = np.asarray(reg, np.float64).reshape(len(b), 4)
    w, h = b[:, 2] - b[:, 0] + 1, b[:, 3] - b[:, 1] + 1
    b[:, :4] += r * np.stack([w, h, w, h], 1)
    return b


def pad_boxes(boxes, w, h):
    """facenet-pytorch's ``pad``: the integer crop of each box, clipped to a ``w × h`` image.

    :param boxes: float (N, ≥ 4). :returns: int64 arrays ``(y, ey, x, ex)``, each (N,): the crop
        is rows ``y − 1 .. ey − 1`` and columns ``x − 1 .. ex − 1`` (1-based, inclusive), from
        the corners truncated toward zero and clipped to ``x, y >= 1``, ``ex <= w``, ``ey <= h``.
    """
    b = np.trunc(np.asarray(boxes, np.float64)[:, :4]).astype(np.int64)
    x, y, ex, ey = (np.array(b[:, k]) for k in range(4))
    x[x < 1], y[y < 1] = 1, 1
    ex[ex > w], ey[ey > h] = w, h
    return y, ey, x, ex


def crop_boxes(img, boxes, size):
    """The network inputs of the boxes: each clipped crop (:func:`pad_boxes`) area-resized to
    ``size × size`` and normalized.

    :param img: float32 (3, H, W) pixel values (:func:`load_image`). :param boxes: float (N, ≥ 4).
    :returns: ``(x, ok)``: x float32 (M, 3, size, size) for the M boxes whose crop is not empty,
        ok bool (N,) marking them.
    """
    _, h, w = img.shape
    y, ey, x, ex = pad_boxes(boxes, w, h)
    ok = (ey > y - 1) & (ex > x - 1)
    crops = [area_resize(img[:, y[k] - 1:ey[k], x[k] - 1:ex[k]], (size, size)) for k in np.flatnonzero(ok)]
    out = np.stack(crops) if crops else np.zeros((0, 3, size, size), np.float32)
    return normalize(out), ok


def check_tile(tile):
    """:raises ValueError: unless ``tile`` is an even integer of at least 24 (a PNet tile side:
    its output, ``tile/2 − 5``, must exceed the 10-pixel overlap of neighbouring tiles)."""
    if not isinstance(tile, (int, np.integer)) or tile % 2 or tile < 24:
        raise ValueError(f"the PNet tile side must be an even integer of at least 24, not {tile!r}")


def tile_plan(side, tile=PNET_TILE):
    """The PNet tiles along one image side (module docstring): ``[(offset, length), …]`` in
    input pixels, offsets even and increasing, each tile inside ``[0, side)``; the output ranges
    ``[offset/2, offset/2 + out(length))`` cover PNet's output side without gaps.

    :param side: the image side in pixels (>= 12). :param tile: the largest tile side, even, >= 24.
    :raises ValueError: a side below 12, a tile side :func:`check_tile` refuses.
    """
    check_tile(tile)
    if side < PNET_CELL:
        raise ValueError(f"PNet needs at least {PNET_CELL} pixels, not {side}")
    if side <= tile:
        return [(0, side)]
    step = tile - (PNET_CELL - PNET_STRIDE)        # 2 · (tile/2 − 5)
    plan, off = [], 0
    while off + tile < side:
        plan.append((off, tile))
        off += step
    plan.append((side - tile, tile) if side % 2 == 0 else (side - tile + 1, tile - 1))
    return plan


def stitch(h, w, tiles, outputs):
    """Stitch PNet tile outputs into the maps of the whole ``h × w`` image.

    :param tiles: ``[(y0, x0, th, tw), …]`` (even offsets). :param outputs: per tile a float
        (C, oth, otw) map (:func:`pnet_output_size` of the tile).
    :returns: float (C, oh, ow) (:func:`pnet_output_size` of the image); a position several
        tiles compute takes the last one's value. :raises ValueError: an odd offset, a tile
        outside the image, a map of the wrong size, a position no tile covers.
    """
    oh, ow = pnet_output_size(h, w)
    out, seen = None, np.zeros((oh, ow), bool)
    for (y0, x0, th, tw), y in zip(tiles, outputs):
        if y0 % 2 or x0 % 2 or y0 < 0 or x0 < 0 or y0 + th > h or x0 + tw > w:
            raise ValueError(f"tile ({y0}, {x0}, {th}, {tw}) is not at even offsets inside the {h}x{w} image")
        if y.shape[1:] != pnet_output_size(th, tw):
            raise ValueError(f"tile ({y0}, {x0}, {th}, {tw}): output {y.shape[1:]}, expected "
                             f"{pnet_output_size(th, tw)}")
        if out is None:
            out = np.zeros((y.shape[0], oh, ow), y.dtype)
        r, c = y0 // 2, x0 // 2
        out[:, r:r + y.shape[1], c:c + y.shape[2]] = y
        seen[r:r + y.shape[1], c:c + y.shape[2]] = True
    if out is None or not seen.all():
        raise ValueError(f"the tiles do not cover the {oh}x{ow} output map")
    return out


def pnet_windows(run, x, tile=None):
    """PNet's maps for one scaled, normalized image, whole or in tiles.

    :param run: callable ``run(batch) -> (reg, prob)`` on float32 (N, 3, th, tw) of one shape,
        returning float (N, 4, oth, otw) and (N, oth, otw) (the face probability).
    :param x: float32 (3, h, w). :param tile: ``None``: one call on the whole image; else the
        tile side (:func:`tile_plan` along both axes, one call per tile shape, tiles batched).
    :returns: ``(reg, prob)``: float (4, oh, ow), (oh, ow).
    """
    _, h, w = x.shape
    if tile is None:
        reg, prob = run(x[None])
        return reg[0], prob[0]
    tiles = [(y0, x0, th, tw) for y0, th in tile_plan(h, tile) for x0, tw in tile_plan(w, tile)]
    by_shape = {}
    for k, t in enumerate(tiles):
        by_shape.setdefault(t[2:], []).append(k)
    maps = [None] * len(tiles)
    for (th, tw), ks in by_shape.items():
        batch = np.stack([x[:, tiles[k][0]:tiles[k][0] + th, tiles[k][1]:tiles[k][1] + tw] for k in ks])
        reg, prob = run(batch)
        for j, k in enumerate(ks):
            maps[k] = np.concatenate([reg[j], prob[j][None]])
    full = stitch(h, w, tiles, maps)
    return full[:4], full[4]


def box_iou(a, b):
    """Intersection over union of boxes ``a`` (N, ≥ 4) and ``b`` (M, ≥ 4) (x1, y1, x2, y2, areas
    ``(x2 − x1)·(y2 − y1)``): float64 (N, M)."""
    a = np.asarray(a, np.float64).reshape(-1, np.shape(a)[-1] if np.size(a) else 4)[:, :4]
    b = np.asarray(b, np.float64).reshape(-1, np.shape(b)[-1] if np.size(b) else 4)[:, :4]
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = w * h
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])
    union = area(a)[:, None] + area(b)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


@dataclasses.dataclass
class Detection:
    """The result of :func:`detect` on one image.

    ``boxes``: float64 (N, 5) x1, y1, x2, y2 (image pixels, possibly outside the image), face
    probability; ``points``: float64 (N, 5, 2) the landmarks (x, y): eyes, nose, mouth corners;
    ``candidates``: boxes after each stage, ``{"pnet", "rnet", "onet"}``; ``scales``: the pyramid.
    """
    boxes: np.ndarray
    points: np.ndarray
    candidates: dict
    scales: list


def detect(image, stages, min_face=20.0, factor=0.709, thresholds=THRESHOLDS):
    """Detect faces: the MTCNN cascade of the module docstring on ``stages``.

    :param image: as :func:`load_image` (array or file). :param stages: a :class:`FloatStages`
        or :class:`AcceleratorStages` (or any object with their ``pnet``, ``rnet``, ``onet``).
    :param min_face: smallest face side searched, image pixels. :param factor: pyramid ratio.
    :param thresholds: face-probability thresholds of PNet, RNet, ONet.
    :returns: :class:`Detection`. :raises ValueError: as :func:`load_image`, :func:`pyramid_scales`.
    """
    img = load_image(image)
    _, h, w = img.shape
    scales = pyramid_scales(h, w, min_face, factor)
    cand = {"pnet": 0, "rnet": 0, "onet": 0}
    empty = Detection(np.zeros((0, 5)), np.zeros((0, 5, 2)), cand, scales)
    per_scale = []
    for s in scales:
        x = normalize(area_resize(img, scaled_size(h, w, s)))
        reg, prob = stages.pnet(x)
        b = generate_boxes(reg, prob, s, thresholds[0])
        per_scale.append(b[nms(b[:, :4], b[:, 4], 0.5)])
    boxes = np.concatenate(per_scale) if per_scale else np.zeros((0, 9))
    boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7)]
    if not len(boxes):
        return empty
    rw, rh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    q = boxes[:, :4] + boxes[:, 5:9] * np.stack([rw, rh, rw, rh], 1)
    boxes = rerec(np.concatenate([q, boxes[:, 4:5]], 1))
    cand["pnet"] = len(boxes)

    x, ok = crop_boxes(img, boxes, 24)
    boxes = boxes[ok]
    if not len(boxes):
        return empty
    reg, prob = stages.rnet(x)
    keep = prob > thresholds[1]
    boxes = np.concatenate([boxes[keep, :4], prob[keep, None]], 1)
    reg = reg[keep]
    pick = nms(boxes[:, :4], boxes[:, 4], 0.7)
    boxes = rerec(bbreg(boxes[pick], reg[pick]))
    cand["rnet"] = len(boxes)
    if not len(boxes):
        return empty

    x, ok = crop_boxes(img, boxes, 48)
    boxes = boxes[ok]
    if not len(boxes):
        return empty
    reg, marks, prob = stages.onet(x)
    keep = prob > thresholds[2]
    boxes = np.concatenate([boxes[keep, :4], prob[keep, None]], 1)
    reg, marks = reg[keep], marks[keep]
    bw, bh = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
    px = bw[:, None] * marks[:, :5] + boxes[:, 0:1] - 1
    py = bh[:, None] * marks[:, 5:10] + boxes[:, 1:2] - 1
    points = np.stack([px, py], 2)
    boxes = bbreg(boxes, reg)
    pick = nms(boxes[:, :4], boxes[:, 4], 0.7, "min")
    cand["onet"] = len(pick)
    return Detection(boxes[pick], points[pick], cand, scales)


class FloatStages:
    """The float reference: the three ONNX models on ONNX Runtime (CPU, one thread), PNet on
    each whole scaled image (:func:`pnet_model` at its size, one session per size).

    :param models: folder holding ``pnet.onnx``, ``rnet.onnx``, ``onet.onnx`` (the published
        weights, ``models/mtcnn``). :raises FileNotFoundError: a missing model file.
    """

    def __init__(self, models):
        self.models = {k: pathlib.Path(models) / f"{k}.onnx" for k in ("pnet", "rnet", "onet")}
        for p in self.models.values():
            if not p.is_file():
                raise FileNotFoundError(f"{p} is missing")
        self._sessions = {}

    def _session(self, key, model):
        if key not in self._sessions:
            import onnxruntime as ort
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            data = model.SerializeToString() if not isinstance(model, pathlib.Path) else str(model)
            self._sessions[key] = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        return self._sessions[key]

    def _run(self, sess, x):
        names = [o.name for o in sess.get_outputs()]
        outs = [sess.run(None, {"input": np.ascontiguousarray(xi[None], np.float32)}) for xi in x]
        return {k: np.concatenate([o[i] for o in outs]).astype(np.float64) for i, k in enumerate(names)}

    def pnet(self, x):
        """PNet on one scaled image, float32 (3, h, w) normalized → ``(reg (4, oh, ow), prob
        (oh, ow))`` float64 (:func:`pnet_output_size`)."""
        _, h, w = x.shape
        sess = self._session(("pnet", h, w), pnet_model(self.models["pnet"], h, w))
        y = self._run(sess, x[None])
        return y["reg"][0], y["prob"][0, 1]

    def rnet(self, x):
        """RNet on float32 (N, 3, 24, 24) → ``(reg (N, 4), prob (N,))`` float64."""
        y = self._run(self._session("rnet", self.models["rnet"]), x)
        return y["reg"], y["prob"][:, 1]

    def onet(self, x):
        """ONet on float32 (N, 3, 48, 48) → ``(reg (N, 4), landmarks (N, 10), prob (N,))`` float64."""
        y = self._run(self._session("onet", self.models["onet"]), x)
        return y["reg"], y["landmarks"], y["prob"][:, 1]


def copy_exponents(graph, reference):
    """``graph`` with the feature exponents of ``reference``: every tensor's ``q`` and every
    layer's ``q_in``, ``q_out``, ``q_act``, matched by name. For a fully convolutional network
    compiled at several input sizes, so that every size quantizes alike.

    :param graph: a :class:`~nibble.host.graph.Graph` after the structural passes and INQ.
    :param reference: the same network calibrated (``compile_graph``'s graph), any input size.
    :returns: a new graph. :raises CompileError: a tensor or layer ``reference`` lacks.
    """
    from .ir import CompileError

    g = graph.copy()
    ref_nodes = {n.name: n for n in reference.nodes}
    for name, t in g.tensors.items():
        if name not in reference.tensors or reference.tensors[name].q is None:
            raise CompileError(f"tensor '{name}' has no exponent in the reference graph")
        t.q = reference.tensors[name].q
    for n in g.nodes:
        if n.conv is None:
            continue
        r = ref_nodes.get(n.name)
        if r is None or r.conv is None:
            raise CompileError(f"{n.layer} is not in the reference graph")
        n.conv = dataclasses.replace(n.conv, q_in=r.conv.q_in, q_out=r.conv.q_out, q_act=r.conv.q_act)
    return g


def compile_pnet(model, h, w, reference, config=None, tile_features=False):
    """PNet compiled for an ``h × w`` input with the feature exponents of the calibrated graph
    ``reference`` (:func:`copy_exponents`): the compiler's passes without calibration.
    ``tile_features``: with its maps in external memory, banded by the device
    (``nibble.host.compiler`` ``tile_features``), so that a whole pyramid scale runs at once.

    :param model: ``pnet.onnx`` (path or ModelProto). :param reference: a calibrated PNet graph
        (``nibble.host.compiler.compile_graph``). :param config: :class:`EngineConfig`.
    :returns: :class:`~nibble.host.program.Program`. :raises CompileError: the tile does not fit.
    """
    from ..hw.config import EngineConfig
    from .compiler import build_graph, folded
    from .frontend.onnx import validate_model
    from .passes import allocate, check_fits, inq, lower

    config = config or EngineConfig()
    g = build_graph(validate_model(pnet_model(model, h, w)))
    if tile_features:
        from .compiler import feature_space_config, finish_tiled
        g = folded(g, config, lambda gr: check_fits(gr, feature_space_config(gr, config), "auto", stream_weights=True))
        space = feature_space_config(g, config)
        check_fits(g, space, "auto", stream_weights=True)
        g = allocate(copy_exponents(inq(g), reference), space)
        return finish_tiled(lower(g, space, stream_weights=True), config)
    g = folded(g, config, lambda gr: check_fits(gr, config, "auto"))
    check_fits(g, config, "auto")
    g = allocate(copy_exponents(inq(g), reference), config)
    return lower(g, config)


class AcceleratorStages:
    """The three stages compiled for an accelerator and run on a :class:`~nibble.host.driver.Device`.

    PNet runs in tiles of at most ``tile × tile`` pixels (module docstring), one program per
    tile shape (compiled on first use, :func:`compile_pnet`), all with the feature exponents of
    PNet calibrated at ``calib48``'s size; the tiles of one shape go to the device in one
    :meth:`~nibble.host.driver.Device.run`. RNet and ONet: one program each, all crops of a
    stage in one run. Programs are loaded when the next run needs another one.

    :param device: an open ``Device`` (``golden``, ``sim``, a board).
    :param models: folder with ``pnet.onnx``, ``rnet.onnx``, ``onet.onnx``.
    :param calib24: float32 (N, 3, 24, 24) normalized calibration crops (RNet).
    :param calib48: float32 (N, 3, 48, 48) normalized calibration crops (PNet, ONet).
    :param config: the device's :class:`EngineConfig` (default configuration).
    :param tile: PNet tile side on the host, even (default :data:`PNET_TILE`); ``None``: each
        pyramid scale whole, its maps in the device's external memory and banded by the device
        (a device with DDR: ``sim`` over PCIe, a ``pcie`` board).
    :param check: another open ``Device`` (normally ``golden``) that runs every batch too; its
        int8 outputs are compared with ``device``'s (``checked``, ``identical``: inputs run and
        inputs whose outputs were bit-identical).

    After runs, per stage (``{"pnet", "rnet", "onet"}``, summed over the stage's inputs since
    :meth:`reset_counts`): ``cycles``, the device's cycles per run (``device.cycles``: on a device
    with external memory they include the DMA of the inputs and outputs); ``engine_cycles``, the
    engine's own (``device.memory``; equal to ``cycles`` on a device without external memory);
    both 0 on the golden device; ``inputs``, the images run.
    :raises CompileError: a model that does not compile (e.g. a tile too large for ``config``).
    """

    def __init__(self, device, models, calib24, calib48, config=None, tile=PNET_TILE, check=None):
        from ..hw.config import EngineConfig
        from .compiler import compile_graph, compile_model

        if tile is not None:
            check_tile(tile)
        models = pathlib.Path(models)
        self.device, self.check, self.tile = device, check, tile
        self.config = config or EngineConfig()
        self.pnet_path = models / "pnet.onnx"
        self.pnet_graph = compile_graph(self.pnet_path, calib48, self.config)[0]
        self.programs = {"rnet": compile_model(models / "rnet.onnx", calib24, self.config),
                         "onet": compile_model(models / "onet.onnx", calib48, self.config)}
        self._loaded = {}
        self.checked = self.identical = 0
        self.reset_counts()

    def reset_counts(self):
        """Zero ``cycles``, ``engine_cycles`` and ``inputs`` (per stage)."""
        self.cycles = {"pnet": 0, "rnet": 0, "onet": 0}
        self.engine_cycles = {"pnet": 0, "rnet": 0, "onet": 0}
        self.inputs = {"pnet": 0, "rnet": 0, "onet": 0}

    def pnet_program(self, h, w):
        """The PNet program for ``h × w`` tiles (compiled once)."""
        key = ("pnet", h, w)
        if key not in self.programs:
            self.programs[key] = compile_pnet(self.pnet_path, h, w, self.pnet_graph, self.config,
                                              tile_features=self.tile is None)
        return self.programs[key]

    def _load(self, dev, program):
        if self._loaded.get(id(dev)) is not program:
            dev.load(program)
            self._loaded[id(dev)] = program

    def _run(self, stage, program, x):
        self._load(self.device, program)
        y = self.device.run(x)
        self.cycles[stage] += sum(c or 0 for c in self.device.cycles)
        self.engine_cycles[stage] += sum(m["engine_cycles"] if m else c or 0
                                         for m, c in zip(self.device.memory, self.device.cycles))
        self.inputs[stage] += len(x)
        if self.check is not None:
            raw = self.device.raw if isinstance(self.device.raw, list) else [self.device.raw]
            self._load(self.check, program)
            ref = self.check.run_int(self.device.quantize(x))
            ref = ref if isinstance(ref, list) else [ref]
            self.checked += len(x)
            self.identical += sum(all(np.array_equal(a[i], b[i]) for a, b in zip(raw, ref)) for i in range(len(x)))
        return y

    def pnet(self, x):
        """PNet on one scaled image, float32 (3, h, w) normalized, in tiles → ``(reg (4, oh,
        ow), prob (oh, ow))`` float64 (:func:`pnet_windows`)."""
        def run(batch):
            y = self._run("pnet", self.pnet_program(*batch.shape[2:]), batch)
            return y["reg"], y["prob"][:, 1]
        return pnet_windows(run, x, self.tile)

    def rnet(self, x):
        """RNet on float32 (N, 3, 24, 24), one device run → ``(reg (N, 4), prob (N,))``."""
        y = self._run("rnet", self.programs["rnet"], x)
        return y["reg"], y["prob"][:, 1]

    def onet(self, x):
        """ONet on float32 (N, 3, 48, 48), one device run → ``(reg (N, 4), landmarks (N, 10),
        prob (N,))``."""
        y = self._run("onet", self.programs["onet"], x)
        return y["reg"], y["landmarks"], y["prob"][:, 1]
