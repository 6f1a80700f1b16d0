#!/usr/bin/env python3
"""Make the compact MTCNN data files in ``models/mtcnn`` from images that scikit-image ships.

Usage:
    python scripts/make_mtcnn_data.py [--out models/mtcnn]

Requires numpy, pillow and scikit-image==0.26.* (only for its bundled ``skimage/data`` files,
read from the installed package; nothing is downloaded). The run is deterministic. The network
inputs are made from these files at load time by ``scripts/mtcnn_data.py`` (:func:`lfw`,
:func:`calib`, :func:`astronaut48`), with the same resampler as here
(:func:`mtcnn_data.resize_plane`: PIL bicubic on 32-bit float planes, clipped to [0, 255]).

It writes:

    lfw25.npy           uint16 (200,25,25)  scikit-image's ``lfw_subset.npy`` (float64
                        (200,25,25) grey in [0,1]) as k = round(lfw_subset * 3060), i.e.
                        twelfths of a grey level (pixel 0..255 = k / 12). The file is not 8-bit:
                        its values are multiples of 1/765 (faces) and 1/3060 (non-faces) up to
                        float32 rounding; the script checks |lfw_subset * 3060 - k| < 1e-3
                        (|lfw_subset - k/3060| < 3.3e-7) and fails otherwise
    lfw_labels.npy      int64 (200,)  1 = face (the first 100 crops), 0 = non-face (the last 100)
    calib24_rgb.npy     uint8 (32,24,24,3)  calibration crops, disjoint from the LFW crops:
                        8 jittered boxes around the face in ``astronaut.png`` and 8 random
                        square patches from each of ``coffee.png``, ``chelsea.png`` and
                        ``camera.png`` (grey, replicated to RGB), in that order; each box
                        resized from the photo to 24x24 and rounded to the nearest integer
    calib48_rgb.npy     uint8 (32,48,48,3)  the same boxes resized to 48x48
    astronaut48_rgb.npy uint8 (8,48,48,3)   fixed crops of ``astronaut.png`` (boxes in
                        ASTRONAUT48_BOXES), resized to 48x48 and rounded: four around the face
                        at different scales, four off it
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mtcnn_data import LFW_DENOMINATOR, resize_plane  # noqa: E402

SEED = 20160426
"""Seed of ``numpy.random.default_rng`` for the calibration boxes."""

CALIB_PER_SOURCE = 8
"""Calibration crops per source photo (4 photos)."""

ASTRONAUT_FACE = (222.0, 122.0, 100.0)
"""Face of ``astronaut.png`` (512x512): centre column, centre row, side of a square box, pixels."""

ASTRONAUT48_BOXES = (
    # (left, top, right, bottom) in astronaut.png pixels; face about 100 px wide at (222, 122)
    (174, 74, 270, 170),    # 0: the face, tight (face ~48 px in the 48x48 crop)
    (126, 26, 318, 218),    # 1: face centred, 2x context (face ~25 px)
    (78, 0, 366, 288),      # 2: face in a 288 px box (face ~17 px)
    (30, 0, 414, 384),      # 3: face in a 384 px box (face ~12.5 px, PNet's window)
    (0, 0, 96, 96),         # 4: the flag, no face
    (352, 16, 448, 112),    # 5: the shuttle model, no face
    (120, 340, 216, 436),   # 6: the suit's mission patch, no face
    (300, 320, 492, 512),   # 7: the helmet, no face
)
"""Crop boxes of astronaut48_rgb.npy: 0-3 contain the face, 4-7 do not."""

LFW_CODE_SCALE = 255 * LFW_DENOMINATOR
"""``lfw25.npy`` = round(lfw_subset * LFW_CODE_SCALE) (3060)."""


def skimage_data_dir() -> Path:
    """Directory of scikit-image's bundled data files (``skimage/data``)."""
    import skimage

    return Path(os.path.dirname(skimage.__file__)) / "data"


def lfw_codes() -> np.ndarray:
    """scikit-image's ``lfw_subset.npy`` as uint16 (200, 25, 25) codes k, pixel = k / 12.

    :raises ValueError: the file is not a multiple of 1/3060 to within 1e-3 / 3060.
    """
    raw = np.load(skimage_data_dir() / "lfw_subset.npy")  # float64 (200,25,25) in [0,1]
    if raw.shape != (200, 25, 25):
        raise ValueError(f"lfw_subset.npy has shape {raw.shape}, expected (200, 25, 25)")
    err255 = float(np.abs(raw * 255 - np.round(raw * 255)).max())
    v = raw * LFW_CODE_SCALE
    k = np.round(v)
    err = float(np.abs(v - k).max())
    print(f"lfw_subset.npy: max |x*255 - round| = {err255:.3g} (not 8-bit); "
          f"max |x*{LFW_CODE_SCALE} - round| = {err:.3g}")
    if err >= 1e-3 or k.min() < 0 or k.max() > LFW_CODE_SCALE:
        raise ValueError(f"lfw_subset.npy is not a multiple of 1/{LFW_CODE_SCALE} (max error {err})")
    return k.astype(np.uint16)


def load_photo(name: str) -> np.ndarray:
    """A bundled scikit-image photo as uint8 (H, W, 3) RGB or (H, W) grey."""
    im = Image.open(skimage_data_dir() / name)
    if im.mode not in ("L", "RGB"):
        im = im.convert("RGB")
    return np.asarray(im)


def crop_rgb(image: np.ndarray, box: tuple[float, float, float, float], size: int) -> np.ndarray:
    """Cut ``box`` out of ``image``, resize it to ``size`` x ``size`` and round to 8 bits.

    image: uint8 (H, W) grey or (H, W, 3) RGB. box: (left, top, right, bottom) in its pixels.
    Returns uint8 (size, size, 3), each plane resized by :func:`mtcnn_data.resize_plane` (float,
    clipped to [0, 255]) then rounded to the nearest integer; grey is replicated to RGB.
    """
    img = image[:, :, None] if image.ndim == 2 else image
    planes = [resize_plane(img[:, :, c], box, size) for c in range(img.shape[2])]
    out = np.stack(planes, -1)
    if out.shape[2] == 1:
        out = np.repeat(out, 3, axis=2)
    return np.rint(out).astype(np.uint8)


def calib_boxes() -> list[tuple[str, tuple[float, float, float, float]]]:
    """The calibration crops: (photo file, (left, top, right, bottom)), deterministic.

    Astronaut: the face box ASTRONAUT_FACE scaled by U(0.8, 1.3) and moved by U(-0.1, 0.1) of its
    side. Other photos: squares of side U(24, min(H, W) / 2) at uniform positions.
    """
    rng = np.random.default_rng(SEED)
    boxes = []
    cx, cy, s = ASTRONAUT_FACE
    for _ in range(CALIB_PER_SOURCE):
        side = s * rng.uniform(0.8, 1.3)
        x0 = cx + s * rng.uniform(-0.1, 0.1) - side / 2
        y0 = cy + s * rng.uniform(-0.1, 0.1) - side / 2
        boxes.append(("astronaut.png", (x0, y0, x0 + side, y0 + side)))
    for name in ("coffee.png", "chelsea.png", "camera.png"):
        h, w = load_photo(name).shape[:2]
        for _ in range(CALIB_PER_SOURCE):
            side = rng.uniform(24, min(h, w) / 2)
            x0 = rng.uniform(0, w - side)
            y0 = rng.uniform(0, h - side)
            boxes.append((name, (x0, y0, x0 + side, y0 + side)))
    return boxes


def calib_rgb(size: int) -> np.ndarray:
    """Calibration crops, uint8 (4 * CALIB_PER_SOURCE, size, size, 3) RGB."""
    photos: dict[str, np.ndarray] = {}
    out = []
    for name, box in calib_boxes():
        if name not in photos:
            photos[name] = load_photo(name)
        out.append(crop_rgb(photos[name], box, size))
    return np.stack(out)


def astronaut48_rgb() -> np.ndarray:
    """PNet test crops, uint8 (8, 48, 48, 3) RGB; boxes in ASTRONAUT48_BOXES."""
    img = load_photo("astronaut.png")
    return np.stack([crop_rgb(img, b, 48) for b in ASTRONAUT48_BOXES])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_out = Path(__file__).resolve().parent.parent / "models" / "mtcnn"
    ap.add_argument("--out", type=Path, default=default_out)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    files = {
        "lfw25.npy": lfw_codes(),
        "lfw_labels.npy": np.concatenate([np.ones(100, np.int64), np.zeros(100, np.int64)]),
        "calib24_rgb.npy": calib_rgb(24),
        "calib48_rgb.npy": calib_rgb(48),
        "astronaut48_rgb.npy": astronaut48_rgb(),
    }
    for name, arr in files.items():
        path = args.out / name
        np.save(path, arr)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        print(f"{name:20s} {str(arr.dtype):7s} {str(arr.shape):16s} [{arr.min()}, {arr.max()}] "
              f"{path.stat().st_size:7d} B sha256 {digest}")


if __name__ == "__main__":
    main()
