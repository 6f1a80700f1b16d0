"""The compression kit (nibble.host.compress): layer discovery, incremental INQ with retraining,
channel and weight pruning, the ONNX export, and ``nibble compress``.

Independent references: the compiler's own front end and INQ pass for the exported weights
(``verify_inq`` and ``compile_model``), ONNX Runtime for the exported model, and for channel
pruning the original model with the removed channels zeroed at its consumers' inputs (a
forward pre-hook), which must give the pruned model's outputs.
"""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")      # the train extra; make test installs it
nn = torch.nn
torch.set_num_threads(1)                  # small layers; a simulator may run on the other core

from nibble.host import compress as C                                # noqa: E402
from nibble.host.compiler import compile_model                       # noqa: E402
from nibble.sim.golden import inq_decode, inq_quantize              # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SEED = 20261203


def _digits(n=400):
    from sklearn.datasets import load_digits
    d = load_digits()
    x = (d.images[:, None] / 16.0).astype(np.float32)
    return x[:n], d.target[:n].astype(np.int64)


def _cnn(c1=16, c2=32, seed=SEED):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU(),
                         nn.Conv2d(c1, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(c2 * 16, 10))


@pytest.fixture(scope="module")
def trained():
    x, y = _digits()
    m = _cnn()
    C.fit(m, m.parameters(), x, y, epochs=3, lr=3e-3, seed=SEED, log=None)
    return m, x, y


def _clone(m):
    import copy
    return copy.deepcopy(m)


# ------------------------------------------------------------------------------------------ layers

class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.b = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        return self.b(torch.relu(self.bn(self.a(x))) + x)


class _Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        return self.c(self.c(x))


class _Dynamic(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        return self.c(x) if x.sum() > 0 else x


def test_find_layers_pairs_batchnorm_in_forward_order():
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.ConvTranspose2d(4, 2, 2, 2),
                      nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2 * 12 * 12, 3))
    got = [(L.name, L.bn_name, L.out_axis) for L in C.find_layers(m)]
    assert got == [("0", "1", 0), ("3", "4", 1), ("6", None, 0)]
    assert [(L.name, L.bn_name) for L in C.find_layers(_Residual())] == [("a", "bn"), ("b", None)]


def test_find_layers_errors():
    with pytest.raises(ValueError, match="module 'c' is called more than once"):
        C.find_layers(_Shared())
    with pytest.raises(ValueError, match="could not be traced with torch.fx.*WeightLayer"):
        C.find_layers(_Dynamic())
    with pytest.raises(ValueError, match="no Conv1d, Conv2d, ConvTranspose2d or Linear"):
        C.find_layers(nn.Sequential(nn.ReLU()))
    bad = nn.Sequential(nn.ConvTranspose2d(4, 4, 2, 2, groups=2), nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match="grouped ConvTranspose2d '0'"):
        C.find_layers(bad)


@pytest.mark.parametrize("schedule, msg", [
    ((), "empty"), ((0.5, 0.5, 1.0), "entry 1 .0.5. does not exceed"), ((0.0, 1.0), r"entry 0 \(0\) is not in"),
    ((0.5, 1.5), "entry 1 .1.5. is not in"), ((0.5, 0.9), "must end at 1.0")])
def test_schedule_errors(schedule, msg):
    with pytest.raises(ValueError, match=msg):
        C.check_schedule(schedule)


# ------------------------------------------------------------------------------------------ INQ

def _on_levels(q):
    codes, n2 = inq_quantize(q.w_eff(), q.n1)
    return np.allclose(inq_decode(codes, n2), q.w_eff(), rtol=1e-6, atol=0)


def test_incremental_inq_magnitude_partitions_and_frozen_weights(trained):
    m0, x, y = trained
    m = _clone(m0)
    seen = []

    float_mag = [np.abs(C.InqLayer(L).w_eff()).ravel() for L in C.find_layers(m0)]
    prev = []

    def retrain(params, after_step, step, frac):
        # before retraining: the fraction is frozen, nested in the last step's; at the first step
        # exactly the largest |w·s| of the float model
        for i, q in enumerate(qs_ref):
            assert q.frozen.sum() == int(round(frac * q.frozen.size))
            if step == 0:
                f = q.frozen.ravel()
                assert float_mag[i][f].min() >= float_mag[i][~f].max()
            else:
                assert np.all(q.frozen[prev[i]])
        prev[:] = [q.frozen.copy() for q in qs_ref]
        before = [q.weight32()[q.frozen] for q in qs_ref]
        C.fit(m, params, x, y, epochs=1, train_mode=False, after_step=after_step, seed=step, log=None)
        for q, b in zip(qs_ref, before):             # frozen weights did not move
            assert np.array_equal(q.weight32()[q.frozen], b)
        seen.append(frac)

    qs_ref = []
    orig = C.InqLayer.__init__

    def spy(self, *a, **k):                           # collect the InqLayers as they are made
        orig(self, *a, **k)
        qs_ref.append(self)
    C.InqLayer.__init__ = spy
    try:
        qs = C.incremental_inq(m, retrain, log=lambda s: None)
    finally:
        C.InqLayer.__init__ = orig
    assert seen == [0.5, 0.75, 0.875]
    assert all(q.frozen.all() and _on_levels(q) for q in qs)
    # BatchNorm γ frozen, statistics untouched
    assert not m[1].weight.requires_grad and torch.equal(m[1].running_var, m0[1].running_var)
    # the compiler quantizes the exported file to exactly these levels
    onnx_model = C.export_onnx(m, torch.from_numpy(x[:1]))
    rep = C.verify_inq(onnx_model, qs)
    assert [r["layer"] for r in rep] == ["0", "3", "8"] and all(r["max_rel_error"] < 1e-6 for r in rep)
    # and ONNX Runtime runs the exported model as torch does
    import onnxruntime as ort
    out = ort.InferenceSession(onnx_model.SerializeToString()).run(None, {"input": x[:50]})[0]
    assert np.allclose(out, C.predict(m, x[:50]), atol=1e-4)


def test_inq_random_partition_and_fold_mode(trained):
    m0, x, y = trained
    a, b = _clone(m0), _clone(m0)
    ref = C.predict(b, x[:20])
    layers = C.fold_batchnorm(b)
    assert [L.bn for L in layers] == [None, None, None] and isinstance(b[1], nn.Identity)
    assert np.allclose(C.predict(b, x[:20]), ref, atol=1e-4)      # folding changes nothing but rounding
    for model, kw in ((a, {"partition": "random", "seed": 3}), (b, {"bn": "fold"})):
        qs = C.incremental_inq(model, lambda p, s, st, f: None, (0.6, 1.0), log=lambda s: None, **kw)
        onnx_model = C.export_onnx(model, torch.from_numpy(x[:1]))
        C.verify_inq(onnx_model, qs)
    assert "BatchNormalization" not in [n.op_type for n in onnx_model.graph.node]
    with pytest.raises(ValueError, match="unknown INQ partition 'best'"):
        C.incremental_inq(_clone(m0), lambda *a: None, partition="best")
    with pytest.raises(ValueError, match="unknown BatchNorm mode 'drop'"):
        C.incremental_inq(_clone(m0), lambda *a: None, bn="drop")


def test_inq_refuses_a_batchnorm_that_changes(trained):
    m0, x, y = trained
    m = _clone(m0)

    def retrain(params, after_step, step, frac):          # training mode updates the running statistics
        C.fit(m, params, x, y, epochs=1, train_mode=True, after_step=after_step, log=None)
    with pytest.raises(RuntimeError, match="BatchNorm '1' after layer '0' changed during INQ retraining"):
        C.incremental_inq(m, retrain, log=lambda s: None)


def test_verify_inq_catches_weights_off_their_levels(trained):
    m0, x, _ = trained
    m = _clone(m0)
    qs = C.incremental_inq(m, lambda *a: None, (1.0,), log=lambda s: None)
    with torch.no_grad():
        m[3].weight[0, 0, 0, 0] *= 1.3
    with pytest.raises(ValueError, match="layer '3' .node '/3/Conv'.: folded weights are off the INQ level set"):
        C.verify_inq(C.export_onnx(m, torch.from_numpy(x[:1])), qs)
    with pytest.raises(ValueError, match="the compiled graph has 3 layers"):
        C.verify_inq(C.export_onnx(m, torch.from_numpy(x[:1])), qs[:2])


def test_post_training_inq_leaves_the_model_alone(trained):
    m0, x, _ = trained
    before = [p.detach().clone() for p in m0.parameters()]
    q, qs = C.post_training_inq(m0)
    assert all(torch.equal(a, p) for a, p in zip(before, m0.parameters()))
    assert all(_on_levels(L) for L in qs)


# ------------------------------------------------------------------------------------------ pruning

def _zeroing_reference(model, groups, keep):
    """``model`` with the channels not in ``keep`` zeroed at each consumer's input (at the
    group's offset in what the consumer reads)."""
    ref = _clone(model)
    own = dict(ref.named_modules())
    names = {id(v): k for k, v in dict(model.named_modules()).items()}
    masks = {}
    for g in groups:
        k = keep[g.name]
        for cons, hw, off in g.consumers:
            mod = own[names[id(cons)]]
            n_in = mod.weight.shape[0 if isinstance(mod, nn.ConvTranspose2d) else 1]
            mask = masks.setdefault(names[id(cons)], (mod, np.ones(n_in, np.float32)))[1]
            for c in range(g.channels):
                if c not in set(int(i) for i in k):
                    mask[(off + c) * hw:(off + c + 1) * hw] = 0
    for mod, mask in masks.values():
        t = torch.from_numpy(mask)
        shape = (1, -1) if isinstance(mod, nn.Linear) else (1, -1, 1, 1)
        mod.register_forward_pre_hook(lambda _m, a, t=t, s=shape: (a[0] * t.reshape(s),))
    return ref


@pytest.mark.parametrize("criterion, scope", [("l1", "layer"), ("l2", "layer"), ("bn_gamma", "layer"),
                                              ("l1", "global")])
def test_prune_channels_equals_zeroed_channels(trained, criterion, scope):
    m0, x, _ = trained
    m = _clone(m0)
    groups, refused = C.prunable_groups(m0, torch.from_numpy(x[:1]))
    assert [g.layer.name for g in groups] == ["0", "3"] and refused == {"8": "it is a Linear layer"}
    imp = {g.name: C.channel_importance(g, criterion) for g in groups}
    rep = C.prune_channels(m, 0.5, criterion=criterion, example=torch.from_numpy(x[:1]), scope=scope)
    keep = {}
    for g in groups:
        n = g.name
        kept = next(r["kept"] for r in rep["layers"] if r["layer"] == n)
        keep[n] = np.sort(np.argsort(-imp[n], kind="stable")[:kept])
    if scope == "layer":
        assert [(r["channels"], r["kept"]) for r in rep["layers"]] == [(16, 8), (32, 16)]
    else:
        assert sum(r["removed"] for r in rep["layers"]) == 24
    ref = _zeroing_reference(m0, groups, keep)
    assert m[0].out_channels == len(keep["0"]) and m[8].in_features == len(keep["3"]) * 16
    assert np.allclose(C.predict(m, x[:64]), C.predict(ref, x[:64]), atol=1e-5)


def test_prune_channels_hand_checked_norms():
    m = nn.Sequential(nn.Conv2d(1, 4, 1, bias=False), nn.ReLU(), nn.Conv2d(4, 2, 1, bias=False))
    with torch.no_grad():
        m[0].weight.copy_(torch.tensor([1.0, -5.0, 0.5, 3.0]).reshape(4, 1, 1, 1))
        m[2].weight.copy_(torch.arange(8.0).reshape(2, 4, 1, 1))
    C.prune_channels(m, 0.5)
    assert m[0].weight.flatten().tolist() == [-5.0, 3.0]                 # the two largest |w|, in order
    assert m[2].weight.flatten().tolist() == [1.0, 3.0, 5.0, 7.0]        # their input columns


class _Branches(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(4, 8, 1)
        self.b = nn.Conv2d(4, 8, 1)
        self.d = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.e = nn.Conv2d(16, 4, 1)
        self.p = nn.Conv2d(4, 4, 1)
        self.prelu = nn.PReLU(4)
        self.f = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        y = self.e(self.d(torch.cat([self.a(x), self.b(x)], 1)))
        return self.f(self.prelu(self.p(y + x)))


def test_prune_channels_refusals_and_prelu():
    m = _Branches()
    x = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(SEED))
    groups, refused = C.prunable_groups(m, x)
    assert refused == {"a": "it feeds the grouped convolution 'd'", "b": "it feeds the grouped convolution 'd'",
                       "d": "it is a grouped convolution (its channels are tied to its input's)",
                       "e": "it is added to the model input", "f": "its output is a model output"}
    assert [g.layer.name for g in groups] == ["p"] and groups[0].channelwise == [m.prelu]
    keep_imp = C.channel_importance(groups[0], "l1")
    drop = int(np.argmin(keep_imp))
    keep = [c for c in range(4) if c != drop]
    ref = _zeroing_reference(m, groups, {"p": keep})
    C.prune_channels(m, 0.25)
    assert m.prelu.weight.shape == (3,) and m.f.in_channels == 3
    assert np.allclose(m(x).detach().numpy(), ref(x).detach().numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="layer 'e' cannot be channel-pruned: it is added to the model input"):
        C.prune_channels(_Branches(), {"e": 0.5})
    with pytest.raises(ValueError, match="pruning ratio 1.0 of layer 'p' is not in"):
        C.prune_channels(_Branches(), {"p": 1.0})
    with pytest.raises(ValueError, match="no affine BatchNorm for the bn_gamma"):
        C.prune_channels(_Branches(), 0.5, criterion="bn_gamma")


def test_channel_pruning_cuts_compiled_cycles_and_multiple_rounds(trained):
    m0, x, _ = trained
    base = C.compile_figures(C.export_onnx(m0, torch.from_numpy(x[:1])), x[:8])
    m = _clone(m0)
    C.prune_channels(m, 0.5, example=torch.from_numpy(x[:1]))
    pruned = C.compile_figures(C.export_onnx(m, torch.from_numpy(x[:1])), x[:8])
    # 32 → 16 output channels of the second layer: half its m = 16 blocks; 16 → 8 in the first
    # changes nothing (one block either way)
    assert pruned["model_cycles"] < base["model_cycles"] and pruned["weight_words"] < base["weight_words"]
    r = _clone(m0)
    rep = C.prune_channels(r, 0.4, example=torch.from_numpy(x[:1]), multiple=16)
    assert [(d["channels"], d["kept"]) for d in rep["layers"]] == [(16, 16), (32, 32)]   # 10 → 16, 20 → 32
    with pytest.raises(ValueError, match="multiple .0. and min_channels"):
        C.prune_channels(_clone(m0), 0.5, multiple=0)


def test_weight_pruning_is_kept_by_inq_and_costs_the_same_cycles(trained):
    m0, x, y = trained
    m = _clone(m0)
    zeroed = C.prune_weights(m, 0.5)
    assert zeroed == {"0": 72, "3": 2304, "8": 2560}
    zero = [L.module.weight.detach() == 0 for L in C.find_layers(m)]
    C.fit(m, m.parameters(), x, y, epochs=1, after_step=C.hold_zeros(m), log=None)     # fine-tuning keeps them
    assert all(torch.all(L.module.weight.detach()[z] == 0) for L, z in zip(C.find_layers(m), zero))
    qs = C.incremental_inq(m, lambda p, a, s, f: C.fit(m, p, x, y, epochs=1, train_mode=False, after_step=a,
                                                      log=None), freeze_zeros=True, log=lambda s: None)
    rep = C.verify_inq(C.export_onnx(m, torch.from_numpy(x[:1])), qs)
    assert all(r["zero_weights"] >= r["weights"] // 2 for r in rep)
    dense = C.compile_figures(C.export_onnx(m0, torch.from_numpy(x[:1])), x[:8])
    sparse = C.compile_figures(C.export_onnx(m, torch.from_numpy(x[:1])), x[:8])
    assert sparse["model_cycles"] == dense["model_cycles"]      # a zero code costs its beat
    with pytest.raises(ValueError, match="pruning ratio 1 is not in"):
        C.prune_weights(m, 1)


class _ResStage(nn.Module):
    """A ResNet stage: stem, two basic blocks with identity shortcuts, a projection block, GAP, FC."""

    def __init__(self):
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.a1, self.ba1, self.a2, self.ba2 = (nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16),
                                                nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.b1, self.b2 = nn.Conv2d(16, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1)
        self.p1, self.p2 = nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.Conv2d(32, 32, 3, padding=1)
        self.proj = nn.Conv2d(16, 32, 1, stride=2)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(32, 5)

    def forward(self, x):
        x = torch.relu(self.bn0(self.stem(x)))
        x = torch.relu(self.ba2(self.a2(torch.relu(self.ba1(self.a1(x))))) + x)
        x = torch.relu(self.b2(torch.relu(self.b1(x))) + x)
        x = torch.relu(self.p2(torch.relu(self.p1(x))) + self.proj(x))
        return self.fc(torch.flatten(self.pool(x), 1))


class _ScalarPReLUBranch(nn.Module):
    """``b(x) + prelu(a(x))`` with one PReLU slope for all channels: reached backwards from the
    Add, the PReLU has no per-channel entries to prune."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.act, self.out = nn.Conv2d(3, 8, 1), nn.Conv2d(3, 8, 1), nn.PReLU(), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.out(self.b(x) + self.act(self.a(x)))


class _Fire(nn.Module):
    """A SqueezeNet fire module and its reader: squeeze, expand 1×1 and 3×3, Concat, conv."""

    def __init__(self):
        super().__init__()
        self.sq = nn.Conv2d(3, 8, 1)
        self.e1, self.e3 = nn.Conv2d(8, 16, 1), nn.Conv2d(8, 16, 3, padding=1)
        self.out = nn.Conv2d(32, 4, 1)

    def forward(self, x):
        s = torch.relu(self.sq(x))
        return self.out(torch.cat([torch.relu(self.e1(s)), torch.relu(self.e3(s))], 1))


@pytest.mark.parametrize("make, example, groups_want", [
    (_ResStage, (2, 3, 8, 8), [["stem", "a2", "b2"], ["a1"], ["b1"], ["p1"], ["p2", "proj"]]),
    (_Fire, (2, 3, 6, 6), [["sq"], ["e1"], ["e3"]]),
    (_ScalarPReLUBranch, (2, 3, 5, 5), [["a", "b"]]),
])
def test_prune_channels_through_adds_and_concats(make, example, groups_want):
    """Residual Adds tie their layers into one group (a stage's convolutions and shortcuts lose
    the same channels), a Concat's branches are cut at their offsets in the reader; either way
    the pruned model equals the original with those channels zeroed at every reader's input."""
    torch.manual_seed(SEED)
    m0 = make()
    for mod in m0.modules():                    # BatchNorm statistics that are not the identity
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
    m0.eval()
    x = torch.randn(*example, generator=torch.Generator().manual_seed(SEED))
    groups, refused = C.prunable_groups(m0, x[:1])
    assert sorted(sorted(P.name for P in g.producers) for g in groups) == sorted(sorted(n) for n in groups_want)
    m = _clone(m0)
    rep = C.prune_channels(m, 0.5, example=x[:1])
    keep = {}
    for g in groups:
        kept = next(r["kept"] for r in rep["layers"] if r["layer"] == g.name)
        keep[g.name] = np.sort(np.argsort(-C.channel_importance(g, "l1"), kind="stable")[:kept])
    ref = _zeroing_reference(m0, groups, keep)
    with torch.no_grad():
        assert np.allclose(m(x).numpy(), ref(x).numpy(), atol=1e-5)
    assert all(r["kept"] == r["channels"] // 2 for r in rep["layers"])
    # and it compiles: the pruned residual stage / fire module on the engine's golden model
    proto = C.export_onnx(m, x[:1], dynamic_batch=False)
    assert "model_cycles" in C.compile_figures(proto, x.numpy())


# ------------------------------------------------------------------------------------------ CLI and scripts

FACTORY = """
import torch
import torch.nn as nn
def model():
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(512, 10))
def broken():
    raise RuntimeError("no weights here")
class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.p1 = nn.Conv2d(1, 16, 3), nn.PReLU(16)
        self.c2, self.p2 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.box, self.score = nn.Linear(32 * 16, 4), nn.Linear(32 * 16, 2)
    def forward(self, x):
        h = torch.flatten(self.p2(self.c2(self.p1(self.c1(x)))), 1)
        return self.box(h), torch.softmax(self.score(h), 1)
def heads():
    import torch
    torch.manual_seed(5)
    return TwoHeads()
"""


def _nibble(*args, cwd):
    """``nibble ARGS`` in-process (click's runner) in the folder ``cwd``: ``(exit code, stdout, stderr)``."""
    import os

    from click.testing import CliRunner

    from nibble.cli import cli
    old = os.getcwd()
    os.chdir(cwd)
    try:
        r = CliRunner().invoke(cli, list(args), prog_name="nibble")
    finally:
        os.chdir(old)
    return r.exit_code, r.stdout, r.stderr


def test_compress_command(trained, tmp_path):
    m0, x, y = trained
    (tmp_path / "net.py").write_text(FACTORY)
    torch.save(m0.state_dict(), tmp_path / "w.pt")
    np.save(tmp_path / "x.npy", x[:300])
    np.save(tmp_path / "y.npy", y[:300])
    np.save(tmp_path / "xv.npy", x[300:])
    np.save(tmp_path / "yv.npy", y[300:])
    code, out, err = _nibble("compress", "net.py:model", "--weights", "w.pt", "--inputs", "x.npy", "--targets", "y.npy",
                "--val-inputs", "xv.npy", "--val-targets", "yv.npy", "--prune-channels", "0.5",
                "--finetune-epochs", "1", "--inq-epochs", "1", "-o", "c.onnx", "--report", "r.json", cwd=tmp_path)
    assert code == 0, err
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["evaluated_on"] == "validation data"
    assert [d["kept"] for d in rep["channel_pruning"]["layers"]] == [8, 16]
    assert rep["compiled"]["compressed"]["model_cycles"] < rep["compiled"]["float"]["model_cycles"]
    assert "c.onnx: float accuracy" in out and "n1" in out
    p = compile_model(str(tmp_path / "c.onnx"), x[:8])                # the written model compiles
    assert len(p.layers) == 3
    for args, msg in [
        (("net.py:nothing",), "net.py has no function 'nothing'"),
        (("net.py:broken",), r"broken\(\) raised RuntimeError: no weights here"),
        (("net.py",), "expected FILE.py:FUNCTION"),
        (("net.py:model", "--schedule", "0.5,0.7"), "--schedule: the INQ schedule must end at 1.0"),
        (("net.py:model", "--val-inputs", "xv.npy"), "--val-inputs and --val-targets go together"),
        (("net.py:model", "--weights", "x.npy"), "--weights 'x.npy'"),
    ]:
        code, out, err = _nibble("compress", *args, "--inputs", "x.npy", "--targets", "y.npy", "-o", "bad.onnx",
                                 cwd=tmp_path)
        assert code == 1 and re.search(msg, err.splitlines()[-1]), (args, err)
        assert not (tmp_path / "bad.onnx").exists()


def test_distillation_of_a_two_output_model(trained, tmp_path):
    """``--loss distill``: no targets, every output matched to the float model's (MTCNN-like box and
    score heads); pruned and INQ-retrained, both outputs exported and verified."""
    _, x, _ = trained
    (tmp_path / "net.py").write_text(FACTORY)
    np.save(tmp_path / "x.npy", x[:200])
    np.save(tmp_path / "xv.npy", x[200:300])
    code, out, err = _nibble("compress", "net.py:heads", "--loss", "distill", "--inputs", "x.npy",
                             "--val-inputs", "xv.npy", "--prune-channels", "0.5", "--finetune-epochs", "2",
                             "--inq-epochs", "2", "-o", "h.onnx", "--report", "h.json", cwd=tmp_path)
    assert code == 0, err
    rep = json.loads((tmp_path / "h.json").read_text())
    assert rep["float"] == {"mse_vs_float": 0.0, "max_abs_diff_vs_float": 0.0}
    # retraining brings the compressed model closer to the float one than pruning left it
    assert rep["inq"]["mse_vs_float"] < rep["pruned_before_finetune"]["mse_vs_float"]
    # c2's channels go to both heads' columns through the Flatten
    assert [d["kept"] for d in rep["channel_pruning"]["layers"]] == [8, 16]
    import onnx
    assert [o.name for o in onnx.load(str(tmp_path / "h.onnx")).graph.output] == ["output0", "output1"]
    code, out, err = _nibble("compress", "net.py:heads", "--loss", "distill", "--inputs", "x.npy",
                             "--targets", "x.npy", "-o", "bad.onnx", cwd=tmp_path)
    assert code == 1 and "--loss distill takes no targets" in err
    code, out, err = _nibble("compress", "net.py:model", "--inputs", "x.npy", "-o", "bad.onnx", cwd=tmp_path)
    assert code == 1 and "--targets is needed with --loss ce" in err


def test_training_scripts_use_the_library(tmp_path):
    """scripts/train_digits.py, shortened, through nibble.host.compress: its own check of the
    exported weights against the compiler's quantization passes."""
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "train_digits.py"), "--out", str(tmp_path),
                        "--epochs", "2", "--inq-epochs", "1", "--save-float", str(tmp_path / "f")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [L["node"] for L in metrics["inq"]["layers"]] == ["/0/Conv", "/3/Conv", "/8/Gemm"]
    # the float model it saves loads into the factory nibble compress is given (README example)
    m = C.load_factory(f"{ROOT / 'scripts' / 'train_digits.py'}:build_model")
    m.load_state_dict(torch.load(tmp_path / "f" / "float.pt", weights_only=True))
    assert np.load(tmp_path / "f" / "train_x.npy").shape == (1437, 1, 8, 8)
    src = (ROOT / "scripts" / "train_digits.py").read_text() + (ROOT / "scripts" / "train_sr.py").read_text()
    assert "class InqLayer" not in src and src.count("compress.incremental_inq(") == 2
