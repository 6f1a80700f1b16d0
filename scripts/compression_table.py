#!/usr/bin/env python3
"""The README's compression table: the digits CNN and the super-resolution network, float and
compressed with ``nibble.host.compress``, each compiled and run.

Usage:
    python scripts/compression_table.py [--only digits|sr] [-o docs/compression.json]
                                        [--sr-iters N] [--sr-inq-iters M]

Per network, from one float training run of its own script (``scripts/train_digits.py``: 40
epochs, seed 0; ``scripts/train_sr.py``: ``--sr-iters`` iterations, seed 0), the variants:

* ``float``: ONNX Runtime on the float model;
* ``post_training_inq``: every layer's (BatchNorm-folded) weights quantized at once;
* ``incremental_inq``: the paper's 50/75/87.5/100 % schedule with retraining between steps,
  exactly as the training scripts do it;
* ``channels_pruned_<r>``: channel pruning (filter L1 norm, ratio r of every prunable layer),
  float fine-tuning, then incremental INQ;
* ``weights_pruned_<r>``: the smallest r of every layer's weights set to zero, fine-tuning with
  them held at zero, then incremental INQ keeping them zero.

For each: the metric of the float-feature model (ONNX Runtime; accuracy on the 360 held-out
digits, PSNR in dB on the 12 held-out SR crops), the metric of the compiled int8 program on the
golden device (bit-identical to the RTL, ``tests/test_e2e_sim.py``), the RTL cycles per image
measured on the simulated PCIe device (one image), the model cycles, and the weight words.
Writes JSON (``-o``).
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

RATIO = 0.5


def _ort(proto, x, name="input"):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])


def _measure(proto, calib, x, metric, dev):
    """Compile ``proto``; the int8 metric on the golden device, RTL cycles of one image."""
    from nibble.host import compress
    from nibble.host.compiler import compile_model
    from nibble.host.driver import Device
    fig = compress.compile_figures(copy.deepcopy(proto), calib)
    p = compile_model(copy.deepcopy(proto), calib)
    with Device("golden") as g:
        g.load(p)
        y = g.run(x)
    dev.load(p)
    dev.run(x[:1])
    return {"float_features": metric(_ort(proto, x)), "int8_engine": metric(y),
            "rtl_cycles_per_image": int(dev.cycles[0]), **fig}


def digits(dev, log):
    import torch

    import train_digits as td
    from nibble.host import compress
    td.set_determinism(0)
    x, y = td.load_dataset()
    tr, te, ca = td.split_indices(y, 0)
    xt, yt, xe, ye, calib = x[tr], y[tr], x[te], y[te], x[ca]
    acc = lambda out: float(np.mean(out.argmax(1) == ye))          # noqa: E731
    gen = torch.Generator().manual_seed(0)
    base = td.build_model()
    td.train(base, xt, yt, td.DEFAULT_EPOCHS, gen, log=log)
    rows = {}

    def add(name, model, extra=None):
        rows[name] = {**_measure(td.onnx_model(model), calib, xe, acc, dev), **(extra or {})}
        log(f"digits {name}: {rows[name]}")

    add("float", base)
    add("post_training_inq", compress.post_training_inq(base)[0])
    m = copy.deepcopy(base)
    td.inq_retrain(m, xt, yt, td.DEFAULT_INQ_EPOCHS, gen, log=log)
    add("incremental_inq", m)
    m = copy.deepcopy(base)
    rep = compress.prune_channels(m, RATIO, example=torch.from_numpy(xt[:1]))
    td.fit(m, m.parameters(), xt, yt, 10, td.LEARNING_RATE, td.WEIGHT_DECAY, gen, log=log, tag="fine-tune ")
    td.inq_retrain(m, xt, yt, td.DEFAULT_INQ_EPOCHS, gen, log=log)
    add(f"channels_pruned_{RATIO}", m, {"pruning": rep["layers"]})
    m = copy.deepcopy(base)
    compress.prune_weights(m, RATIO)
    hold = compress.hold_zeros(m)
    td.fit(m, m.parameters(), xt, yt, 10, td.LEARNING_RATE, 0.0, gen, after_step=hold, log=log, tag="fine-tune ")

    def retrain(params, after_step, step, frac):
        td.fit(m, params, xt, yt, td.DEFAULT_INQ_EPOCHS, td.INQ_LEARNING_RATE, 0.0, gen, bn_frozen=True,
               after_step=after_step, log=log)
    qs = compress.incremental_inq(m, retrain, td.INQ_SCHEDULE, freeze_zeros=True, log=log)
    add(f"weights_pruned_{RATIO}", m, {"zero_weights": [q.report()["zero_weights"] for q in qs]})
    return {"metric": "top-1 accuracy, 360 held-out digits", "rows": rows}


def sr(dev, log, iters, inq_iters):
    import torch

    import train_sr as ts
    from nibble.host import compress
    ts.set_determinism(0)
    luma = ts.load_luma()
    regions, held = ts.make_regions(luma)
    test_lr, test_hr = ts.test_crops(held)
    calib = ts.calib_crops(regions, 0)
    psnr = lambda out: ts.psnr(out, test_hr)                        # noqa: E731
    gen = torch.Generator().manual_seed(0)
    sampler = ts.PatchSampler(regions, gen)
    base = ts.build_model(0)
    ts.fit(base, base.parameters(), sampler, iters, ts.LEARNING_RATE, ts.MIN_LEARNING_RATE, log=log)
    rows = {}

    def add(name, model, extra=None):
        rows[name] = {**_measure(ts.onnx_model(model), calib, test_lr, psnr, dev), **(extra or {})}
        log(f"sr {name}: {rows[name]}")

    def inq(m, **kw):
        def retrain(params, after_step, step, frac):
            ts.fit(m, params, sampler, inq_iters, ts.INQ_LEARNING_RATE, ts.MIN_LEARNING_RATE,
                   after_step=after_step, log=log)
        compress.incremental_inq(m, retrain, ts.INQ_SCHEDULE, log=log, **kw)
        ts.retrain_biases(m, sampler, inq_iters, log=log)

    add("float", base)
    add("post_training_inq", compress.post_training_inq(base)[0])
    m = copy.deepcopy(base)
    inq(m)
    add("incremental_inq", m)
    m = copy.deepcopy(base)
    rep = compress.prune_channels(m, RATIO, example=torch.zeros(1, 1, ts.LR_SIZE, ts.LR_SIZE))
    ts.fit(m, m.parameters(), sampler, inq_iters, ts.INQ_LEARNING_RATE, ts.MIN_LEARNING_RATE, log=log)
    inq(m)
    add(f"channels_pruned_{RATIO}", m, {"pruning": rep["layers"], "refused": rep["refused"]})
    m = copy.deepcopy(base)
    compress.prune_weights(m, RATIO)
    ts.fit(m, m.parameters(), sampler, inq_iters, ts.INQ_LEARNING_RATE, ts.MIN_LEARNING_RATE,
           after_step=compress.hold_zeros(m), log=log)
    inq(m, freeze_zeros=True)
    add(f"weights_pruned_{RATIO}", m)
    bic = psnr(ts.bicubic_upsample(test_lr))
    return {"metric": "PSNR (dB), 12 held-out 64x64 crops", "bicubic_psnr_db": bic, "float_iters": iters,
            "inq_iters_per_step": inq_iters, "rows": rows}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=["digits", "sr"])
    ap.add_argument("-o", "--out", type=Path, default=ROOT / "docs" / "compression.json")
    ap.add_argument("--sr-iters", type=int, default=6000)
    ap.add_argument("--sr-inq-iters", type=int, default=1000)
    args = ap.parse_args(argv)
    from nibble.host.driver import Device
    quiet = lambda s: None                                            # noqa: E731
    res = json.loads(args.out.read_text()) if args.out.exists() else {}
    t0 = time.perf_counter()
    with Device("sim") as dev:
        if args.only in (None, "digits"):
            res["digits"] = digits(dev, quiet)
        if args.only in (None, "sr"):
            res["sr"] = sr(dev, quiet, args.sr_iters, args.sr_inq_iters)
    res["note"] = ("int8_engine: the compiled program on the golden device (bit-identical to the RTL); "
                   "rtl_cycles_per_image: measured on the simulated PCIe device (default EngineConfig, 200 MHz)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {args.out} in {time.perf_counter() - t0:.0f} s")
    for net in ("digits", "sr"):
        for k, r in res.get(net, {}).get("rows", {}).items():
            print(f"{net:7s} {k:22s} float-features {r['float_features']:.4f}  int8 {r['int8_engine']:.4f}  "
                  f"RTL {r['rtl_cycles_per_image']} cycles  {r.get('weight_words')} weight words")
    return 0


if __name__ == "__main__":
    sys.exit(main())
