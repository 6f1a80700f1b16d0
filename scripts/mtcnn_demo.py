#!/usr/bin/env python3
"""MTCNN face detection on photographs: float (ONNX Runtime) against the accelerator.

Usage:
    python scripts/mtcnn_demo.py [--device golden|sim] [--photos astronaut,camera,coffee]
                                 [--min-face PX] [--pnet ddr|host [--tile PX]] [--out-dir DIR]

The published PNet, RNet and ONet (``models/mtcnn``) detect faces in photographs that
scikit-image ships (``skimage/data``; default ``astronaut.png``, ``camera.png``, both with one
face, and ``coffee.png``, without), with the cascade of :mod:`nibble.host.mtcnn`: the image
pyramid, box generation, NMS, crops and regression on the host, the three networks

- ``float``: on ONNX Runtime (PNet on each whole scaled image), the reference;
- on ``--device``: compiled (INQ 4-bit weights, int8 features) and run on ``Device("sim")``, the
  accelerator's RTL under Verilator over its PCIe host port (default), or ``Device("golden")``.
  PNet runs on each whole pyramid scale with its maps in the device's DDR, in row bands that fit
  feature memory (``--pnet ddr``, the default: ``nibble.host.steps``), or in tiles of at most
  ``--tile`` × ``--tile`` pixels (80: the largest that fits the default feature memory) stitched
  on the host (``--pnet host``); the RNet crops of a photo go to the device in
  one run, the ONet crops in one run. On ``sim`` every run is also made on the golden device and
  the int8 outputs compared (``rtl_equals_golden``).

Calibration: RNet on ``calib(24)``, PNet and ONet on ``calib(48)`` of ``scripts/mtcnn_data.py``
(crops of ``astronaut.png``, ``coffee.png``, ``chelsea.png``, ``camera.png``, disjoint from the
LFW crops); every PNet program (scale or tile shape) gets the exponents of PNet calibrated at 48x48.

For each photo it writes ``DIR/mtcnn_<photo>.png`` (the device's boxes in red with their five
landmarks, the float boxes in green) and prints a line; the last line is one JSON object:
``photos`` → per photo ``float_boxes`` and ``boxes`` (x1, y1, x2, y2, probability; image
pixels), ``landmarks``, ``iou`` (per float box, the best IoU of a device box), ``extra_boxes``
(device boxes overlapping no float box by IoU >= 0.5), ``missed_faces`` (float boxes without a
device box at IoU >= ``--iou``), ``cycles`` and ``engine_cycles`` per stage (``Device.cycles``,
which include the DMA of inputs and outputs through the device's DDR, and the engine's own),
``stage_inputs`` (PNet tiles, RNet and ONet crops), ``images_per_s_at_<clock>``
(the clock ÷ the photo's cycles; cycles and rate ``null`` on the golden device), ``seconds``;
then ``device_open_s`` (opening the device: building the simulator when it is not cached),
``rtl_equals_golden`` (runs bit-identical / runs), ``ok`` and ``wall_s`` (the whole command). The exit status is 1 unless every photo's
device boxes match its float boxes (``missed_faces`` and ``extra_boxes`` 0) and, on ``sim``,
every run is bit-identical to the golden device.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import sys
import time

import numpy as np

if __package__:                        # imported as scripts.mtcnn_demo
    from .mtcnn_data import DATA_DIR, calib
else:                                   # run as scripts/mtcnn_demo.py
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    from mtcnn_data import DATA_DIR, calib

PHOTOS = ("astronaut", "camera", "coffee")
"""Default photos: ``skimage/data/<name>.png`` (faces in the first two, none in ``coffee``)."""

MATCH_IOU = 0.85
"""IoU a device box must reach with a float box to count as the same face."""


def photo_path(name: str) -> pathlib.Path:
    """``skimage/data/<name>.png`` of the installed scikit-image (read from the package, never
    downloaded). :raises FileNotFoundError: scikit-image missing, or no such bundled photo."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("scikit-image is not installed (pip install -e '.[data]')")
    path = pathlib.Path(list(spec.submodule_search_locations)[0]) / "data" / f"{name}.png"
    if not path.is_file():
        raise FileNotFoundError(f"scikit-image has no bundled photo '{name}.png' ({path.parent})")
    return path


def compare(float_boxes: np.ndarray, boxes: np.ndarray, iou_min: float = MATCH_IOU) -> dict:
    """Float against device boxes (N, ≥ 4), (M, ≥ 4): ``iou`` (per float box, the best IoU of a
    device box, 0 without any), ``missed_faces`` (float boxes below ``iou_min``), ``extra_boxes``
    (device boxes whose best IoU with a float box is below 0.5)."""
    from nibble.host.mtcnn import box_iou

    m = box_iou(float_boxes, boxes)
    best = m.max(1) if m.shape[1] else np.zeros(len(float_boxes))
    extra = int((m.max(0) < 0.5).sum()) if m.shape[0] else len(boxes)
    return {"iou": [round(float(v), 4) for v in best], "missed_faces": int((best < iou_min).sum()),
            "extra_boxes": extra}


def draw(path: pathlib.Path, out: pathlib.Path, det, float_det) -> None:
    """Write ``out`` (PNG): the photo with the device's boxes (red, width 3) and landmarks (red
    dots) and the float boxes (green, width 1)."""
    from PIL import Image, ImageDraw

    with Image.open(path) as im:
        im = im.convert("RGB")
    d = ImageDraw.Draw(im)
    for b in float_det.boxes:
        d.rectangle([float(v) for v in b[:4]], outline=(0, 255, 0), width=1)
    for b, pts in zip(det.boxes, det.points):
        d.rectangle([float(v) for v in b[:4]], outline=(255, 0, 0), width=3)
        for x, y in pts:
            d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=(255, 0, 0))
    out.parent.mkdir(parents=True, exist_ok=True)
    im.save(out)


def _boxes(b: np.ndarray) -> list:
    return [[round(float(v), 2) for v in row] for row in b]


def run_demo(device: str = "sim", photos=PHOTOS, min_face: float = 20.0, tile: int | None = None,
             out_dir: str | pathlib.Path = "build", log=print, pnet: str = "ddr") -> dict:
    """The figures of the module docstring, as a dict (JSON-ready).

    device: ``"sim"`` or ``"golden"``. photos: names of bundled scikit-image photos.
    min_face: smallest face side, pixels. pnet: ``"ddr"`` (default) — each pyramid scale whole,
    its maps in the device's DDR, banded by the device; ``"host"`` — tiles of ``tile`` pixels
    (default ``PNET_TILE``) cut and stitched on the host.
    log: callable taking one line of progress, or ``None``.
    :raises FileNotFoundError: a photo or model file missing. :raises CompileError: a model or
        tile that does not compile. :raises ValueError: an unknown device.
    """
    from nibble.host import mtcnn
    from nibble.host.driver import Device
    from nibble.hw.config import EngineConfig

    t_start = time.time()
    if device not in ("golden", "sim"):
        raise ValueError(f"unknown device '{device}' (golden, sim)")
    if pnet not in ("ddr", "host"):
        raise ValueError(f"unknown PNet mode '{pnet}' (ddr, host)")
    say = log or (lambda line: None)
    clk = EngineConfig().clk_hz
    rate_key = f"images_per_s_at_{clk / 1e6:g}MHz"
    paths = {name: photo_path(name) for name in photos}
    out_dir = pathlib.Path(out_dir)
    res: dict = {"device": device, "min_face": min_face, "pnet": pnet,
                 "pnet_tile": (tile or mtcnn.PNET_TILE) if pnet == "host" else None, "photos": {}}
    flt = mtcnn.FloatStages(DATA_DIR)
    with Device("golden") as gold:
        t = time.time()
        dev = Device("sim") if device == "sim" else gold
        res["device_open_s"] = round(time.time() - t, 1)
        try:
            stages = mtcnn.AcceleratorStages(dev, DATA_DIR, calib(24), calib(48),
                                             tile=(tile or mtcnn.PNET_TILE) if pnet == "host" else None,
                                             check=gold if device == "sim" else None)
            for name, path in paths.items():
                t = time.time()
                fd = mtcnn.detect(path, flt, min_face)
                stages.reset_counts()
                det = mtcnn.detect(path, stages, min_face)
                png = out_dir / f"mtcnn_{name}.png"
                draw(path, png, det, fd)
                rtl = device == "sim"                  # the golden device counts no cycles
                total = sum(stages.cycles.values())
                r = {"float_boxes": _boxes(fd.boxes), "boxes": _boxes(det.boxes),
                     "landmarks": [_boxes(p) for p in det.points], **compare(fd.boxes, det.boxes),
                     "cycles": dict(stages.cycles) if rtl else None,
                     "engine_cycles": dict(stages.engine_cycles) if rtl else None,
                     "stage_inputs": dict(stages.inputs), "candidates": det.candidates,
                     rate_key: round(clk / total, 2) if rtl and total else None, "png": str(png),
                     "seconds": round(time.time() - t, 1)}
                res["photos"][name] = r
                say(f"{name}: float {r['float_boxes']}, {device} {r['boxes']}, IoU {r['iou']}, "
                    f"extra {r['extra_boxes']}, cycles {r['cycles']}, {rate_key} {r[rate_key]}, "
                    f"{r['seconds']} s -> {png}")
        finally:
            if dev is not gold:
                dev.close()
    ok = all(r["missed_faces"] == 0 and r["extra_boxes"] == 0 for r in res["photos"].values())
    if device == "sim":
        res["rtl_equals_golden"] = f"{stages.identical}/{stages.checked}"
        ok = ok and stages.identical == stages.checked
    res["ok"] = bool(ok)
    res["wall_s"] = round(time.time() - t_start, 1)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("golden", "sim"), default="sim",
                    help="sim: the RTL under Verilator (default); golden: the NumPy model of the engine")
    ap.add_argument("--photos", default=",".join(PHOTOS),
                    help="comma-separated scikit-image photos (skimage/data/<name>.png)")
    ap.add_argument("--min-face", type=float, default=20.0, help="smallest face side searched, pixels")
    ap.add_argument("--pnet", choices=("ddr", "host"), default="ddr",
                    help="ddr: each pyramid scale whole, its maps in the device's DDR in row bands (default); "
                         "host: tiles cut and stitched on the host")
    ap.add_argument("--tile", type=int, default=None, help="with --pnet host: the tile side (even, default 80)")
    ap.add_argument("--out-dir", default="build", help="where the annotated PNGs go")
    args = ap.parse_args()
    photos = [p for p in args.photos.split(",") if p]
    if not photos:
        ap.error("no photos given")
    from nibble.host.compiler import CompileError
    try:
        res = run_demo(args.device, photos, args.min_face, args.tile, args.out_dir, pnet=args.pnet)
    except (FileNotFoundError, ValueError, CompileError) as e:
        sys.exit(f"mtcnn_demo: {e}")
    print(json.dumps(res))
    sys.exit(0 if res["ok"] else 1)


if __name__ == "__main__":
    main()
