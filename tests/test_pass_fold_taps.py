"""Pass ``fold_taps``: a first layer's kernel taps folded into channels on the host (im2col).

Named cases: the gather against a direct convolution written here (loops over output pixels and
taps, independent of ``fold_map``) for strides 1–3 and asymmetric padding; which layers fold (a
3-channel 3×3 first layer) and which do not (a 1×1 layer, an input that fills a word, an input
read by two layers, a grouped layer); the float graph against ONNX Runtime on the model's own
input; programs compiled with and without the fold bit-identical on the golden device (seeded
inputs), with fewer modelled cycles, through a program file and through a device; the on-chip
fallback when the folded map does not fit; a damaged fold in a program file.
"""
import dataclasses

import numpy as np
import pytest

from nibble.hw.config import EngineConfig
from nibble.host.compiler import build_graph, compile_graph, compile_model, layer_cycles
from nibble.host.driver import Device, golden_forward
from nibble.host.frontend.onnx import validate_model
from nibble.host.passes import fold_taps
from nibble.host.passes.fold_taps import fold_map, fold_shape
from nibble.host.program import Program, ProgramError
from new_ops_models import node
from onnx_models import assert_graph_matches_ort, conv, model

SEED = 20261206
CFG = EngineConfig(m=8, vc=8)


def _direct_conv(x, w, s, pad):
    """(Cout, Ho, Wo) cross-correlation of x (C, H, W) with w (Cout, C, kh, kw), zero padding."""
    t, b, l, r = pad
    c, h, wd = x.shape
    co, _, kh, kw = w.shape
    ho, wo = (h + t + b - kh) // s + 1, (wd + l + r - kw) // s + 1
    y = np.zeros((co, ho, wo))
    for oy in range(ho):
        for ox in range(wo):
            for dy in range(kh):
                for dx in range(kw):
                    iy, ix = oy * s + dy - t, ox * s + dx - l
                    if 0 <= iy < h and 0 <= ix < wd:
                        y[:, oy, ox] += w[:, :, dy, dx] @ x[:, iy, ix]
    return y


@pytest.mark.parametrize("c, h, w, k, s, pad", [
    (3, 9, 11, 3, 1, (1, 1, 1, 1)), (3, 12, 10, 3, 2, (0, 1, 0, 1)), (2, 13, 13, 5, 3, (2, 0, 1, 2)),
    (1, 7, 8, 7, 2, (3, 3, 3, 3)), (4, 6, 6, 2, 2, (0, 0, 0, 0))])
def test_gather_is_the_convolution(c, h, w, k, s, pad):
    rng = np.random.default_rng(SEED + k * 7 + s)
    x = rng.integers(-128, 128, (c, h, w))
    wt = rng.integers(-8, 9, (5, c, k, k))
    fold = (c, h, w, k, k, s, *pad)
    xf = fold_map(x, fold)
    assert xf.shape == fold_shape(fold) and xf.dtype == x.dtype
    wf = wt.transpose(0, 2, 3, 1).reshape(5, -1)              # the pass's weight layout
    assert np.array_equal(np.einsum("ok,kyx->oyx", wf, xf), _direct_conv(x, wt, s, pad))
    # a batch axis, and a wrong shape refused
    assert np.array_equal(fold_map(np.stack([x, -x]), fold)[1], -xf)
    with pytest.raises(ValueError, match="is not"):
        fold_map(x[:, 1:], fold)


def _first_layer_model(rng, cin=3, k=3, stride=2, pads=(1, 1, 1, 1), size=12, twice=False, group=1, cout=16):
    c0, inits = conv(rng, "c0", "x", "h", cin // group, cout, k=k, strides=[stride, stride], pads=list(pads),
                     group=group)
    c1, i1 = conv(rng, "c1", "hr", "y", cout, 8)
    inits.update(i1)
    nodes = [c0, node("Relu", ["h"], "hr", "r0"), c1]
    if twice:                                    # the input also read by a second layer
        c2, i2 = conv(rng, "c2", "x", "h2", cin, cout, k=k, strides=[stride, stride], pads=list(pads))
        inits.update(i2)
        nodes = [c0, c2, node("Add", ["h", "h2"], "hs", "add"), node("Relu", ["hs"], "hr", "r0"), c1]
    return model(nodes, inits, inputs={"x": ("N", cin, size, size)})


def test_which_layers_fold():
    rng = np.random.default_rng(SEED)
    g = fold_taps(build_graph(validate_model(_first_layer_model(rng))), CFG).validate()
    t = g.tensors["x"]
    assert t.fold == (3, 12, 12, 3, 3, 2, 1, 1, 1, 1) and t.shape == (27, 6, 6)
    op = g.node("c0").conv
    assert op.w.shape == (16, 27, 1, 1) and op.stride == 1 and op.pad == (0, 0, 0, 0)
    for kw in (dict(k=1, pads=(0, 0, 0, 0)), dict(cin=8), dict(twice=True), dict(cin=4, group=2)):
        g = fold_taps(build_graph(validate_model(_first_layer_model(rng, **kw))), CFG)
        assert not g.tensors["x"].fold, kw


def test_a_layer_that_runs_faster_as_winograd_keeps_its_taps():
    """A stride-1 3×3 layer on 3 channels: Winograd takes 4 beats a pixel, the folded layer
    ⌈27/8⌉ = 4 and twice the input words, so it is not folded on an engine with the Winograd
    path; without the path or in ``direct`` mode (9 direct beats) it is; a layer named for
    Winograd never is."""
    rng = np.random.default_rng(SEED + 4)
    g = build_graph(validate_model(_first_layer_model(rng, stride=1, size=16)))
    assert not fold_taps(g, CFG).tensors["x"].fold
    assert fold_taps(g, CFG, winograd="direct").tensors["x"].fold        # Winograd not an option
    direct = dataclasses.replace(CFG, winograd=False)
    assert fold_taps(g, direct).tensors["x"].fold
    assert fold_taps(g, direct, winograd="direct").tensors["x"].fold
    assert not fold_taps(g, direct, winograd="c0=winograd").tensors["x"].fold
    assert not fold_taps(g, direct, winograd="winograd").tensors["x"].fold


def test_float_graph_takes_the_models_input():
    rng = np.random.default_rng(SEED + 1)
    m = validate_model(_first_layer_model(rng, k=5, stride=3, pads=(2, 1, 0, 2), size=14))
    g = fold_taps(build_graph(m), CFG).validate()
    assert g.tensors["x"].fold
    assert_graph_matches_ort(g, m, rng.standard_normal((3, 3, 14, 14)), rtol=1e-4)


@pytest.mark.parametrize("seed", range(3))
def test_programs_with_and_without_the_fold_are_bit_identical(seed, tmp_path):
    rng = np.random.default_rng(SEED + 10 + seed)
    k, s = [(3, 2), (5, 1), (5, 2)][seed]
    m = _first_layer_model(rng, k=k, stride=s, pads=(k // 2,) * 4, size=16)
    calib = rng.standard_normal((4, 3, 16, 16))
    pa = compile_model(m, calib, CFG)
    pb = compile_model(m, calib, CFG, fold_input=False)
    assert pa.inputs[0].fold and not pb.inputs[0].fold
    assert pa.input_shape == pb.input_shape == (3, 16, 16)
    assert sum(layer_cycles(L, CFG) for L in pa.layers) < sum(layer_cycles(L, CFG) for L in pb.layers)
    path = tmp_path / "p.npz"
    pa.save(path)
    pa = Program.load(path)
    for _ in range(3):
        x = rng.integers(-128, 128, (3, 16, 16))
        assert np.array_equal(golden_forward(pa, x), golden_forward(pb, x))
    with Device("golden") as d:                      # float inputs through the driver
        d.load(pa)
        x = rng.standard_normal((2, 3, 16, 16))
        ya = d.run(x)
        d.load(pb)
        assert np.array_equal(ya, d.run(x))


def test_folded_map_that_does_not_fit_on_chip_is_not_folded():
    """A stride-1 3×3 first layer: its folded map (⌈27/8⌉ = 4 words a pixel) would not fit a
    small feature memory beside the output, so the program is compiled without the fold (and
    compiles); with its maps in DDR it is folded."""
    rng = np.random.default_rng(SEED + 2)
    m = _first_layer_model(rng, stride=1, size=24)
    calib = rng.standard_normal((2, 3, 24, 24))
    small = EngineConfig(m=8, vc=8, feature_depth=2048, winograd=False)
    g, p = compile_graph(m, calib, small)
    assert not p.inputs[0].fold
    assert compile_model(m, calib, dataclasses.replace(small, feature_depth=8192)).inputs[0].fold
    assert compile_model(m, calib, small, tile_features=True).inputs[0].fold


def test_damaged_fold_in_a_program_file(tmp_path):
    rng = np.random.default_rng(SEED + 3)
    p = compile_model(_first_layer_model(rng), rng.standard_normal((2, 3, 12, 12)), CFG)
    p.inputs[0] = dataclasses.replace(p.inputs[0], fold=(3, 12, 12, 3, 3, 1, 1, 1, 1, 1))    # stride 1: 12x12
    path = tmp_path / "bad.npz"
    with pytest.raises(ProgramError, match=r"inputs\[0\]\.fold"):
        p.save(path)
        Program.load(path)
