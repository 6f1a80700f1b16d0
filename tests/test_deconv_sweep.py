"""A seeded sweep of random ``ConvTranspose`` and ``Conv`` ONNX layers (the nodes
``torch.onnx.export`` writes for ``nn.ConvTranspose2d`` / ``nn.Conv2d``, plus the pad forms ONNX
allows beyond PyTorch: asymmetric pads, ``auto_pad``; equal and unequal strides) through the whole compiler in
``--deconv auto`` / ``--winograd auto``.

Every layer must compile (group 1, dilation 1, any kernel, stride, padding and output padding),
its imported float graph must equal ONNX Runtime (``rtol`` 1e-5, float32 reference), and the
compiled program's golden output must equal an integer oracle written independently of the
compiler's plans: the scatter-add definition of the transposed convolution (ARITHMETIC §1.2) or a
direct loop over the convolution's taps, on the layer's 4-bit codes, followed by the
requantization of ARITHMETIC §4.5.
"""
import numpy as np
import pytest
from onnx import helper

from nibble.host.passes.fold_taps import unfold_op
from nibble.host.compiler import build_graph, compile_graph
from nibble.host.driver import golden_forward
from nibble.sim import golden
from nibble.sim.deconv import deconv_scatter_acc
from tests.onnx_models import assert_graph_matches_ort, model

SEED = 2026
N_DECONV = 240
N_CONV = 80


def _deconv_case(rng):
    """A random valid ConvTranspose node: ``(attrs, kernel, (Cin, H, W), Cout)``."""
    while True:
        kh, kw = (int(v) for v in rng.integers(1, 7, 2))
        sy = int(rng.integers(1, 5))
        sx = sy if rng.integers(0, 2) else int(rng.integers(1, 5))       # unequal strides half the time
        ci, co = (int(v) for v in rng.integers(1, 12, 2))
        h, w = (int(v) for v in rng.integers(1, 8, 2))
        outp = [int(rng.integers(0, sy)), int(rng.integers(0, sx))]
        attrs = dict(strides=[sy, sx], output_padding=outp, kernel_shape=[kh, kw])
        form = rng.integers(0, 4)
        if form == 0:                                   # nn.ConvTranspose2d: symmetric pads
            p = [int(v) for v in rng.integers(0, 4, 2)]
            pads = [p[0], p[1], p[0], p[1]]
        elif form == 1:                                 # asymmetric (end pad may exceed begin + OP)
            pads = [int(v) for v in rng.integers(0, 4, 4)]
        elif form == 2:
            pads, attrs["output_padding"] = None, [0, 0]     # SAME with output_padding is ambiguous
            if kh < sy or kw < sx:
                continue
            attrs["auto_pad"] = str(rng.choice(["SAME_UPPER", "SAME_LOWER", "VALID"]))
        else:
            pads = [0, 0, 0, 0]
        if pads is not None:
            attrs["pads"] = pads
            t, l, b, r = pads
            if min((h - 1) * sy + kh + outp[0] - t - b, (w - 1) * sx + kw + outp[1] - l - r) < 1:
                continue
        return attrs, (kh, kw), (ci, h, w), co


def _conv_case(rng):
    while True:
        kh, kw = (int(v) for v in rng.integers(1, 6, 2))
        s = int(rng.integers(1, 4))
        ci, co = (int(v) for v in rng.integers(1, 12, 2))
        h, w = (int(v) for v in rng.integers(1, 10, 2))
        pads = [int(v) for v in rng.integers(0, 3, 4)]
        t, l, b, r = pads
        if h + t + b < kh or w + l + r < kw or max(t, b) >= kh or max(l, r) >= kw:
            continue
        return dict(strides=[s, s], pads=pads, kernel_shape=[kh, kw]), (kh, kw), (ci, h, w), co


def _requantize(acc, op):
    b = np.floor(np.ldexp(op.b, op.q_in - op.n2) + 0.5).astype(np.int64)
    return golden.requantize(acc + b[:, None, None], op.q_in - op.n2 - op.q_out, op.relu)


def _conv_oracle(v, codes, stride, pad):
    """Integer conv by a loop over the taps (not :func:`golden.conv_acc`)."""
    t, b, l, r = pad
    wi = golden.code_to_int(codes)
    co, _, kh, kw = wi.shape
    vp = np.zeros((v.shape[0], v.shape[1] + t + b, v.shape[2] + l + r), np.int64)
    vp[:, t:t + v.shape[1], l:l + v.shape[2]] = v
    ho, wo = (vp.shape[1] - kh) // stride + 1, (vp.shape[2] - kw) // stride + 1
    acc = np.zeros((co, ho, wo), np.int64)
    for i in range(kh):
        for j in range(kw):
            win = vp[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
            acc += np.einsum("oc,chw->ohw", wi[:, :, i, j], win)
    return acc


def _one(rng, kind):
    attrs, (kh, kw), (ci, h, w), co = (_deconv_case if kind == "ConvTranspose" else _conv_case)(rng)
    wshape = (ci, co, kh, kw) if kind == "ConvTranspose" else (co, ci, kh, kw)
    inits = {"w": rng.normal(0, 0.3, wshape), "b": rng.normal(0, 0.2, co)}
    nodes = [helper.make_node(kind, ["x", "w", "b"], ["c" if rng.integers(0, 2) else "y"], name="layer", **attrs)]
    if nodes[0].output[0] == "c":
        nodes.append(helper.make_node("Relu", ["c"], ["y"], name="relu"))
    m = model(nodes, inits, inputs={"x": ("N", ci, h, w)})
    x = rng.normal(size=(3, ci, h, w))
    assert_graph_matches_ort(build_graph(m), m, x)
    g, program = compile_graph(m, x)
    op, = [n.conv for n in g.nodes if n.conv is not None]
    fold = g.tensors[g.inputs[0]].fold              # taps folded into channels: the model's layer back
    op = unfold_op(op, fold) if fold else op
    assert program.inputs[0].q == op.q_in
    v = rng.integers(-128, 128, (ci, h, w))
    if kind == "ConvTranspose":
        S, P, OP = op.deconv_geometry()
        acc = deconv_scatter_acc(v, op.codes, S, P, OP)
    else:
        acc = _conv_oracle(v, op.codes, op.stride, op.pad)
    assert np.array_equal(golden_forward(program, v), _requantize(acc, op)), (kind, attrs, (ci, h, w), co)
    return program


@pytest.mark.parametrize("kind,n", [("ConvTranspose", N_DECONV), ("Conv", N_CONV)])
def test_random_layers_compile_in_auto_and_are_bit_exact(kind, n):
    rng = np.random.default_rng(SEED + (kind == "Conv"))
    reasons = set()
    for _ in range(n):
        program = _one(rng, kind)
        reasons |= {L.mode_reason.split(":")[0] for L in program.layers}
    if kind == "ConvTranspose":        # the sweep reaches every form auto picks
        assert {"tdc", "winograd-tdc"} <= reasons, reasons
