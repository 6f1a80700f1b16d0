#!/usr/bin/env python3
"""MTCNN on the LFW face / non-face subset: float, golden device and RTL in one command.

Usage:
    python scripts/mtcnn_lfw.py [--device golden|sim] [--n N] [--json]

For RNet (24x24 crops) and ONet (48x48 crops) of ``models/mtcnn`` (see its ``SOURCE.md``): the
ONNX model is compiled with ``nibble.host.compiler.compile_model`` on the calibration crops
(``scripts/mtcnn_data.py``: :func:`calib`, disjoint from the evaluation crops) and the LFW crops
(:func:`lfw`) are run through

- ``float``: ONNX Runtime on the original model (CPU, one crop at a time);
- ``golden``: the compiled program on ``Device("golden")`` (the bit-exact model of the engine);
- ``rtl`` (``--device sim``): the same program on ``Device("sim")``, the accelerator's Verilog
  simulated by Verilator (about 3 s per RNet crop and 8 s per ONet crop, plus about 3 s and
  12 s to load the weights; the first use builds the simulator, 1-2 minutes, cached).

The score is the face probability ``prob[:, 1]`` (the golden and simulated devices apply the
Softmax on the host, as the program's output tail). Reported per net:

- ``auc_*``: ROC AUC (Mann-Whitney U, ties 1/2; :func:`mtcnn_data.roc_auc`) on the ``images``
  crops, ``acc_*``: accuracy of ``prob[:, 1] > 0.5`` (1 = face);
- ``mean_abs_prob_diff``, ``max_abs_prob_diff``: |prob_golden - prob_float| of the face
  probability over the crops;
- with ``--device sim``: ``rtl_bit_identical``, the number of crops whose int8 outputs
  (``Device.raw``, every output) are identical to the golden device's, and ``cycles_per_image``
  (mean ``Device.cycles``: engine cycles from start to done, min and max too; ``ms_per_image``
  at the configured clock).

Also PNet on the 8 astronaut crops (:func:`astronaut48`, face in 0-3): ``max_abs_prob_diff``
over every position of the 19x19 face-probability maps, ``mean_abs_prob_diff``, and per crop the
map's largest face probability (``peak_float``, ``peak_golden``; ``max_peak_diff``), the RTL
bit-identity and cycles with ``--device sim``.

``--n N`` takes N of the 200 LFW crops (and min(N, 8) astronaut crops), alternately a face and a
non-face (crops 0, 100, 1, 101, ...), so both classes are present for N >= 2; every device runs
the same crops. Without ``--json`` the figures are printed as lines; with it, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

if __package__:                        # imported as scripts.mtcnn_lfw
    from .mtcnn_data import DATA_DIR, astronaut48, calib, lfw, ort_outputs, roc_auc
else:                                   # run as scripts/mtcnn_lfw.py
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from mtcnn_data import DATA_DIR, astronaut48, calib, lfw, ort_outputs, roc_auc

NETS = {"rnet": 24, "onet": 48}
"""LFW-evaluated nets and their input side in pixels."""

PNET_SIZE = 48
"""PNet's input side (the astronaut crops; output maps 19x19)."""


def lfw_order(n: int) -> np.ndarray:
    """Indices of ``n`` LFW crops (1 <= n <= 200), alternately a face and a non-face:
    0, 100, 1, 101, ... (int64 (n,))."""
    if not 1 <= n <= 200:
        raise ValueError(f"the number of LFW crops must be between 1 and 200, not {n}")
    return np.stack([np.arange(100), np.arange(100, 200)], 1).reshape(-1)[:n]


def run_device(dev, program, x: np.ndarray) -> tuple[dict, list, list]:
    """Load ``program`` on the open ``Device`` ``dev`` (replacing any program) and run ``x``
    float32 (N, 3, H, W) through it.

    Returns ``(outputs, raw, cycles)``: ``{name: float (N, ...)}``, the int8 outputs as a list
    (one (N, C, 1, 1)-style array per output, ``Program.outputs`` order) and the engine cycles
    per input (``None`` entries on the golden device).
    """
    dev.load(program)
    out = dev.run(x)
    if not isinstance(out, dict):
        out = {program.outputs[0].name: out}
    raw = dev.raw if isinstance(dev.raw, list) else [dev.raw]
    return out, [np.array(r) for r in raw], list(dev.cycles)


def bit_identical(raw_a: list, raw_b: list) -> int:
    """Number of inputs whose int8 outputs are identical in ``raw_a`` and ``raw_b`` (lists of
    (N, ...) arrays, one per output)."""
    if len(raw_a) != len(raw_b):
        raise ValueError("the two runs have different numbers of outputs")
    n = len(raw_a[0])
    return int(sum(all(np.array_equal(a[i], b[i]) for a, b in zip(raw_a, raw_b)) for i in range(n)))


def cycle_stats(cycles: list, clk_hz: int) -> dict:
    """Mean, min and max engine cycles per image, and the mean in ms at ``clk_hz``."""
    c = np.asarray(cycles, np.float64)
    return {"cycles_per_image": round(float(c.mean()), 1), "cycles_min": int(c.min()),
            "cycles_max": int(c.max()), "ms_per_image": round(float(c.mean()) / clk_hz * 1e3, 4)}


def evaluate(device: str = "golden", n: int = 200, progress: bool = False, log=None) -> dict:
    """The figures described in the module docstring, as a dict (JSON-ready).

    device: ``"golden"`` (float and golden) or ``"sim"`` (also the RTL). n: LFW crops (1..200).
    progress: progress bars on the simulated device. log: callable taking a line, or ``None``.
    """
    from nibble.host.compiler import compile_model
    from nibble.host.driver import Device
    from nibble.hw.config import EngineConfig

    if device not in ("golden", "sim"):
        raise ValueError(f"unknown device '{device}' (golden, sim)")
    say = log or (lambda line: None)
    clk_hz = EngineConfig().clk_hz
    idx = lfw_order(n)
    res: dict = {"device": device, "images": int(n)}
    sim = Device("sim", progress=progress) if device == "sim" else None
    try:
        work = [(net, size, *lfw(size)) for net, size in NETS.items()]
        work.append(("pnet", PNET_SIZE, astronaut48(), None))
        for net, size, x, labels in work:
            t0 = time.time()
            if labels is not None:
                x, labels = x[idx], labels[idx]
            else:
                x = x[:min(n, len(x))]
            model = DATA_DIR / f"{net}.onnx"
            program = compile_model(model, calib(size))
            ref = ort_outputs(model, x)
            with Device("golden") as gold:
                got, raw, _ = run_device(gold, program, x)
            pf = ref["prob"][:, 1].astype(np.float64)
            pg = got["prob"][:, 1].astype(np.float64)
            r: dict = {"images": int(len(x))}
            if labels is not None:
                r["faces"] = int((labels == 1).sum())
                both = 0 < r["faces"] < len(labels)
                for tag, p in (("float", pf), ("golden", pg)):
                    r[f"auc_{tag}"] = round(roc_auc(p, labels), 4) if both else None
                    r[f"acc_{tag}"] = round(float(((p > 0.5) == (labels == 1)).mean()), 4)
            else:
                peak_f = pf.reshape(len(x), -1).max(1)
                peak_g = pg.reshape(len(x), -1).max(1)
                r["peak_float"] = [round(float(v), 3) for v in peak_f]
                r["peak_golden"] = [round(float(v), 3) for v in peak_g]
                r["max_peak_diff"] = round(float(np.abs(peak_g - peak_f).max()), 4)
            r["mean_abs_prob_diff"] = round(float(np.abs(pg - pf).mean()), 4)
            r["max_abs_prob_diff"] = round(float(np.abs(pg - pf).max()), 4)
            if sim is not None:
                rtl, raw_rtl, cycles = run_device(sim, program, x)
                pr = rtl["prob"][:, 1].astype(np.float64)
                if labels is not None:
                    r["auc_rtl"] = round(roc_auc(pr, labels), 4) if both else None
                    r["acc_rtl"] = round(float(((pr > 0.5) == (labels == 1)).mean()), 4)
                r["rtl_bit_identical"] = bit_identical(raw_rtl, raw)
                r.update(cycle_stats(cycles, clk_hz))
            r["seconds"] = round(time.time() - t0, 1)
            key = net if labels is not None else "pnet_astronaut"
            res[key] = r
            say(f"{key}: " + ", ".join(f"{k} {v}" for k, v in r.items()))
    finally:
        if sim is not None:
            sim.close()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("golden", "sim"), default="golden",
                    help="golden: float and golden device; sim: also the RTL (Verilator)")
    ap.add_argument("--n", type=int, default=200, help="LFW crops, alternately face and non-face (1..200)")
    ap.add_argument("--json", action="store_true", help="print one JSON line of results")
    args = ap.parse_args()
    try:
        lfw_order(args.n)
    except ValueError as e:
        ap.error(str(e))
    from nibble.host.compiler import CompileError
    try:
        res = evaluate(args.device, args.n, progress=not args.json and args.device == "sim",
                       log=None if args.json else print)
    except CompileError as e:
        sys.exit(f"mtcnn_lfw: the compiler refused the model: {e}")
    if args.json:
        print(json.dumps(res))


if __name__ == "__main__":
    main()
