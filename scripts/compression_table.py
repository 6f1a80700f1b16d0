#!/usr/bin/env python3
"""The README's compression table: the digits CNN and the super-resolution network, float and
compressed with ``nibble.host.compress``, each compiled and run.

Usage:
    python scripts/compression_table.py [--only digits|sr|mtcnn] [-o docs/compression.json]
                                        [--sr-iters N] [--sr-inq-iters M] [--mtcnn-epochs E]

MTCNN's RNet and ONet (published weights, ``models/mtcnn``) are retrained by distillation from
the float network on half of the LFW face / non-face crops and evaluated on the other half
(ROC AUC), see :func:`mtcnn`.

Per network, from one float training run of its own script (``scripts/train_digits.py``: 40
epochs, seed 0; ``scripts/train_sr.py``: ``--sr-iters`` iterations, seed 0), the variants:

* ``float``: ONNX Runtime on the float model;
* ``post_training_inq``: every layer's (BatchNorm-folded) weights quantized at once;
* ``post_training_inq_per_channel``: the float model compiled with per-output-channel weight
  exponents (``exponents="channel"``: the compiler's INQ, one level set per output channel);
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
    """ONNX Runtime outputs ``{name: (N, …)}``, one input at a time."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    outs = [sess.run(None, {name: x[i:i + 1]}) for i in range(len(x))]
    return {n: np.concatenate([o[k] for o in outs]) for k, n in enumerate(names)}


def _first(outs):
    return next(iter(outs.values()))


def _measure(proto, calib, x, metric, dev, pick=_first, exponents="layer"):
    """Compile ``proto`` (weight ``exponents``); the metric of ONNX Runtime (``None`` with
    per-channel exponents: the float model has no INQ levels then) and of the int8 program on the
    golden device, RTL cycles of one image, the model cycles and weight words."""
    from nibble.host import compress
    from nibble.host.compiler import compile_model
    from nibble.host.driver import Device
    p = compile_model(copy.deepcopy(proto), calib, exponents=exponents)
    fig = compress.program_figures(p)
    with Device("golden") as g:
        g.load(p)
        y = g.run(x)
    y = y if isinstance(y, dict) else {p.outputs[0].name: y}
    dev.load(p)
    dev.run(x[:1])
    ff = metric(pick(_ort(proto, x))) if exponents == "layer" else None
    return {"float_features": ff, "int8_engine": metric(pick(y)),
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

    def add(name, model, extra=None, exponents="layer"):
        rows[name] = {**_measure(td.onnx_model(model), calib, xe, acc, dev, exponents=exponents), **(extra or {})}
        log(f"digits {name}: {rows[name]}")

    add("float", base)
    add("post_training_inq", compress.post_training_inq(base)[0])
    add("post_training_inq_per_channel", base, exponents="channel")
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

    def add(name, model, extra=None, exponents="layer"):
        rows[name] = {**_measure(ts.onnx_model(model), calib, test_lr, psnr, dev, exponents=exponents),
                      **(extra or {})}
        log(f"sr {name}: {rows[name]}")

    def inq(m, **kw):
        def retrain(params, after_step, step, frac):
            ts.fit(m, params, sampler, inq_iters, ts.INQ_LEARNING_RATE, ts.MIN_LEARNING_RATE,
                   after_step=after_step, log=log)
        compress.incremental_inq(m, retrain, ts.INQ_SCHEDULE, log=log, **kw)
        ts.retrain_biases(m, sampler, inq_iters, log=log)

    add("float", base)
    add("post_training_inq", compress.post_training_inq(base)[0])
    add("post_training_inq_per_channel", base, exponents="channel")
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


def _mtcnn_module(name):
    """facenet-pytorch's RNet / ONet (re-declared in scripts/export_mtcnn.py) with the published
    weights read from ``models/mtcnn/<name>.onnx``."""
    import onnx
    import torch
    from onnx import numpy_helper

    import export_mtcnn as em
    m = {"rnet": em.RNet, "onet": em.ONet}[name]()
    g = onnx.load(str(ROOT / "models" / "mtcnn" / f"{name}.onnx")).graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    state = {k: torch.from_numpy(inits[k].copy()) for k in m.state_dict() if k in inits}
    slopes = [n.input[1] for n in g.node if n.op_type == "PRelu"]      # prelu1, prelu2, ... in graph order
    keys = sorted((k for k in m.state_dict() if k.startswith("prelu")), key=lambda k: int(k[5:].split(".")[0]))
    for k, t in zip(keys, slopes):
        state.setdefault(k, torch.from_numpy(inits[t].reshape(-1).copy()))
    m.load_state_dict(state, strict=True)
    return m.eval()


def mtcnn(dev, log, epochs):
    """RNet and ONet on the LFW face / non-face subset: retrained (INQ, fine-tuning after pruning)
    by distillation from the float network (every output, MSE) on the LFW crops 0-49 and 100-149
    and the 32 calibration crops, with horizontal flips; evaluated (ROC AUC of the face
    probability) on the disjoint crops 50-99 and 150-199."""
    import torch

    import mtcnn_data as md
    from nibble.host import compress
    out = {}
    for name, size in (("rnet", 24), ("onet", 48)):
        x, labels = md.lfw(size)
        tr = np.r_[0:50, 100:150]
        ev = np.r_[50:100, 150:200]
        xt = np.concatenate([x[tr], md.calib(size)])
        xe, ye = x[ev], labels[ev]
        outs = {"rnet": ("reg", "prob"), "onet": ("reg", "landmarks", "prob")}[name]

        def export(model):
            return compress.export_onnx(model, torch.from_numpy(xt[:1]), output_names=outs, dynamic_batch=False)
        teacher = _mtcnn_module(name)
        ref = _ort(export(teacher), xe)                                # the float network's outputs

        def metric(o):
            return {"auc": md.roc_auc(o["prob"][:, 1], ye), "accuracy": float(np.mean((o["prob"][:, 1] > 0.5) == ye)),
                    "mean_abs_prob_diff_vs_float": float(np.mean(np.abs(o["prob"][:, 1] - ref["prob"][:, 1]))),
                    "mean_abs_reg_diff_vs_float": float(np.mean(np.abs(o["reg"] - ref["reg"])))}
        for p in teacher.parameters():
            p.requires_grad_(False)

        def flip(xb, g):                   # a random horizontal flip of each crop
            f = torch.rand(len(xb), generator=g) < 0.5
            return torch.where(f[:, None, None, None], xb.flip(-1), xb)

        def distill(model, params, after_step=None, lr=1e-4, n_epochs=epochs, seed=0):
            compress.fit(model, params, xt, loss="distill", teacher=teacher, epochs=n_epochs, lr=lr, batch_size=16,
                         seed=seed, train_mode=False, after_step=after_step, augment=flip, log=None)

        rows = {}

        def add(key, model, extra=None, exponents="layer"):
            rows[key] = {**_measure(export(model), md.calib(size), xe, metric, dev, lambda d: d, exponents),
                         **(extra or {})}
            log(f"{name} {key}: {rows[key]}")

        def inq(model):
            compress.incremental_inq(model, lambda params, a, st, f: distill(model, params, a, seed=st + 1), log=log)

        base = _mtcnn_module(name)
        add("float", base)
        add("post_training_inq", compress.post_training_inq(base)[0])
        add("post_training_inq_per_channel", base, exponents="channel")
        m = _mtcnn_module(name)
        inq(m)
        add("incremental_inq", m)
        m = _mtcnn_module(name)
        rep = compress.prune_channels(m, RATIO, example=torch.from_numpy(xt[:1]))
        distill(m, m.parameters(), lr=1e-3, n_epochs=4 * epochs)
        inq(m)
        add(f"channels_pruned_{RATIO}", m, {"pruning": rep["layers"], "refused": rep["refused"]})
        out[name] = {"metric": "on LFW crops 50-99 (faces) and 150-199 (non-faces): ROC AUC and accuracy (> 0.5) of "
                               "prob[:, 1]; mean |prob[:, 1] - float| and mean |reg - float| against the float net",
                     "retraining": f"nibble.host.compress.fit(loss='distill') from the float net, random flips, "
                                   f"batch 16, {epochs} epochs per INQ step, Adam 1e-4 cosine; after pruning "
                                   f"{4 * epochs} epochs at 1e-3", "rows": rows}
    return out


#: README block markers of the table.
MARK = ("<!-- compression:table -->\n", "<!-- /compression:table -->")
VARIANT = {"float": "float", "post_training_inq": "post-training INQ",
           "post_training_inq_per_channel": "post-training INQ, per-channel n2 (compiler)",
           "incremental_inq": "incremental INQ",
           f"channels_pruned_{RATIO}": f"channels pruned {RATIO:.0%} + incremental INQ",
           f"weights_pruned_{RATIO}": f"weights pruned {RATIO:.0%} + incremental INQ"}
NETS = {"digits": ("digits CNN", "accuracy"), "sr": ("super-resolution ×2", "PSNR dB"),
        "rnet": ("MTCNN RNet", "AUC · \\|Δp\\|"), "onet": ("MTCNN ONet", "AUC · \\|Δp\\|")}


def _fmt(v, net):
    if v is None:
        return "—"
    if isinstance(v, dict):
        return f"{v['auc']:.3f} · {v['mean_abs_prob_diff_vs_float']:.4f}"
    return f"{v:.2f}" if net == "sr" else f"{100 * v:.1f} %"


def table(res):
    """The README's compression table (markdown lines) from the JSON this script writes."""
    lines = ["| network | variant | metric | float features (ONNX Runtime) | int8 on the engine | RTL cycles / image "
             "| weight words |", "|---|---|---|---|---|---|---|"]
    for net, (title, metric) in NETS.items():
        for key, r in res.get(net, {}).get("rows", {}).items():
            cyc = r["rtl_cycles_per_image"]
            base = res[net]["rows"]["float"]["rtl_cycles_per_image"]
            speed = f" ({base / cyc:.2f}×)" if cyc != base else ""
            lines.append(f"| {title} | {VARIANT[key]} | {metric} | {_fmt(r['float_features'], net)} | "
                         f"{_fmt(r['int8_engine'], net)} | {cyc:,}{speed} | {r['weight_words']:,} |")
    return lines


def update_readme(text, res):
    """``text`` with its compression table replaced. :raises ValueError: the markers are not there once."""
    a, b = MARK
    if text.count(a) != 1 or text.count(b) != 1:
        raise ValueError(f"the README needs one '{a.strip()}' … '{b}' block")
    i, j = text.index(a) + len(a), text.index(b)
    return text[:i] + "\n".join(table(res)) + "\n" + text[j:]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=["digits", "sr", "mtcnn"])
    ap.add_argument("--mtcnn-epochs", type=int, default=20)
    ap.add_argument("--readme-only", action="store_true", help="only rewrite README.md's table from the JSON")
    ap.add_argument("-o", "--out", type=Path, default=ROOT / "docs" / "compression.json")
    ap.add_argument("--sr-iters", type=int, default=6000)
    ap.add_argument("--sr-inq-iters", type=int, default=1000)
    args = ap.parse_args(argv)
    from nibble.host.driver import Device
    quiet = lambda s: None                                            # noqa: E731
    res = json.loads(args.out.read_text()) if args.out.exists() else {}
    readme = ROOT / "README.md"
    if args.readme_only:
        readme.write_text(update_readme(readme.read_text(), res))
        print(f"updated {readme}")
        return 0
    t0 = time.perf_counter()
    with Device("sim") as dev:
        if args.only in (None, "digits"):
            res["digits"] = digits(dev, quiet)
        if args.only in (None, "sr"):
            res["sr"] = sr(dev, quiet, args.sr_iters, args.sr_inq_iters)
        if args.only in (None, "mtcnn"):
            res.update(mtcnn(dev, quiet, args.mtcnn_epochs))
    res["note"] = ("int8_engine: the compiled program on the golden device (bit-identical to the RTL); "
                   "rtl_cycles_per_image: measured on the simulated PCIe device (default EngineConfig, 200 MHz)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {args.out} in {time.perf_counter() - t0:.0f} s")
    try:
        readme.write_text(update_readme(readme.read_text(), res))
    except ValueError as e:
        print(f"README.md not updated: {e}", file=sys.stderr)
    for net in ("digits", "sr", "rnet", "onet"):
        for k, r in res.get(net, {}).get("rows", {}).items():
            ff, q8 = r["float_features"], r["int8_engine"]
            if isinstance(q8, dict):
                ff = ff and ff["auc"]
                q8 = f"{q8['auc']:.4f} (prob diff {q8['mean_abs_prob_diff_vs_float']:.4f})"
            else:
                q8 = f"{q8:.4f}"
            ff = "-" if ff is None else f"{ff:.4f}"
            print(f"{net:7s} {k:30s} float-features {ff}  int8 {q8}  "
                  f"RTL {r['rtl_cycles_per_image']} cycles  {r.get('weight_words')} weight words")
    return 0


if __name__ == "__main__":
    sys.exit(main())
