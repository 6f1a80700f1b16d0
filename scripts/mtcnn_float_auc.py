#!/usr/bin/env python3
"""Float ROC AUC of MTCNN's RNet and ONet face probability on the LFW face / non-face subset.

Usage:
    python scripts/mtcnn_float_auc.py [--dir models/mtcnn]

Needs numpy, pillow and onnxruntime. Runs ``rnet.onnx`` and ``onet.onnx`` from ``--dir`` (batch
1, see ``scripts/export_mtcnn.py``) on ONNX Runtime (CPU, one thread, one crop at a time) on the
200 LFW crops of ``scripts/mtcnn_data.py`` (:func:`lfw`: 24x24 for RNet, 48x48 for ONet; labels
1 = face for the first 100). The score is the face probability ``prob[:, 1]``. Prints one JSON
line: per network the AUC (Mann-Whitney, ties 1/2), the mean face probability of the faces and
of the non-faces, and the accuracy at the threshold 0.5 (``prob[:, 1] > 0.5``).
``scripts/mtcnn_lfw.py`` adds the compiled programs on the golden and simulated devices.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mtcnn_data import lfw, ort_outputs, roc_auc  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_dir = Path(__file__).resolve().parent.parent / "models" / "mtcnn"
    ap.add_argument("--dir", type=Path, default=default_dir, help="directory of rnet.onnx, onet.onnx")
    args = ap.parse_args()
    out: dict = {}
    for net, size in (("rnet", 24), ("onet", 48)):
        x, y = lfw(size)
        p = ort_outputs(args.dir / f"{net}.onnx", x)["prob"][:, 1].astype(float)
        out.setdefault("images", int(len(y)))
        out.setdefault("faces", int((y == 1).sum()))
        out[f"{net}_auc"] = round(roc_auc(p, y), 4)
        out[f"{net}_mean_prob_face"] = round(float(p[y == 1].mean()), 4)
        out[f"{net}_mean_prob_nonface"] = round(float(p[y == 0].mean()), 4)
        out[f"{net}_accuracy_at_0.5"] = round(float(((p > 0.5) == (y == 1)).mean()), 4)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
