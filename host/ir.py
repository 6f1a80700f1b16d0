"""The compiler's intermediate representation: a chain of float layers (DESIGN §6).

Every supported network is a sequence of :class:`ConvOp`: a convolution, a transposed
convolution (ARITHMETIC §1, PyTorch ``ConvTranspose2d`` semantics) or a Gemm (a conv whose kernel
covers its whole input), each with its fused epilogue (bias, ReLU or tanh/sigmoid, 2×2 max-pool).
Passes are functions ``list[ConvOp] → list[ConvOp]`` (``host/passes.py``).
"""
import dataclasses

import numpy as np

from ..sim.golden import ACT_NONE, ACT_SIGMOID, ACT_TANH

__all__ = ["CompileError", "ConvOp", "ACT_NAMES", "conv_float", "deconv_float", "apply_act", "run_float"]

#: Name of each ``act`` value (``nibble.sim.golden.ACT_*``), for messages and listings.
ACT_NAMES = {ACT_NONE: "none", ACT_TANH: "tanh", ACT_SIGMOID: "sigmoid"}


class CompileError(Exception):
    """A model cannot be compiled; the message names the node and what is wrong."""


@dataclasses.dataclass
class ConvOp:
    """A float layer with its fused epilogue: ``pool(act(layer(x) + b))``.

    ``kind``: ``"Conv"``, ``"ConvTranspose"`` or ``"Gemm"``.

    ``w``: float64 weights. Conv and Gemm: ``(Cout, Cin, Kh, Kw)`` (cross-correlation, as
    ``conv2d``; a Gemm's kernel covers its whole ``(Cin, H, W)`` input). ConvTranspose: the PyTorch
    ``ConvTranspose2d.weight`` layout ``(Cin, Cout, Kh, Kw)`` (ARITHMETIC §0, §1.1).
    ``b``: float64 ``(Cout,)``.

    ``stride``: int, equal on both axes. ``pad``: ``(top, bottom, left, right)`` ints ≥ 0. For a
    Conv/Gemm the input is zero-padded by it. For a ConvTranspose it is the ONNX ``pads`` crop of
    the output canvas (ARITHMETIC §1.1: ``y = canvas[top : top + Ho]``); the importer stores it
    symmetric per axis (``top == bottom``, ``left == right``), so ``P = (pad[0], pad[2])``.
    ``output_padding``: ``(OPy, OPx)``, ConvTranspose only (``0 ≤ OP < stride``), otherwise
    ``(0, 0)``. ConvTranspose output size: ``Ho = (H − 1)·S − top − bottom + Kh + OPy`` (and the
    same with ``left``, ``right``, ``Kw``, ``OPx`` for ``Wo``). :meth:`deconv_geometry` gives the
    ``(S, P, OP)`` arguments of ``nibble.sim.deconv``.

    ``relu``: ReLU after the bias. ``act``: ``ACT_NONE`` / ``ACT_TANH`` / ``ACT_SIGMOID``
    (``nibble.sim.golden``), applied after the bias; ``relu`` and ``act`` are exclusive.
    ``pool``: 1 or 2 (2×2 max-pool, stride 2, floor, after the activation). ``bn``: a pending
    BatchNormalization ``(scale, shift)``, float64 ``(Cout,)`` each, not yet folded.
    ``names``: the ONNX nodes the layer came from.

    Filled by the passes (``host/passes.py``): ``codes``: uint8 4-bit INQ codes in the layout
    of ``w`` (``(Cin, Cout, Kh, Kw)`` for a ConvTranspose); ``n2``: int, weight exponent
    (ARITHMETIC §4.2). ``q_in``, ``q_out``: int feature exponents of the layer's input and output
    (value = V · 2^−Q, ARITHMETIC §4.3); for a tanh/sigmoid layer ``q_out = ACT_Q_OUT``.
    ``q_act``: the exponent the pre-activation is requantized to before the tanh/sigmoid table,
    ``ACT_Q_IN``; ``None`` for layers without ``act`` (requantization shift
    ``sh = q_in − n2 − q_act`` instead of ``q_in − n2 − q_out``, ARITHMETIC §4.5).
    """
    name: str
    w: np.ndarray
    b: np.ndarray
    stride: int = 1
    pad: tuple = (0, 0, 0, 0)
    relu: bool = False
    pool: int = 1
    bn: tuple = None
    names: list = dataclasses.field(default_factory=list)
    kind: str = "Conv"
    codes: np.ndarray = None
    n2: int = None
    q_in: int = None
    q_out: int = None
    output_padding: tuple = (0, 0)
    act: int = ACT_NONE
    q_act: int = None

    @property
    def cout(self):
        """Number of output channels."""
        return self.w.shape[1] if self.kind == "ConvTranspose" else self.w.shape[0]

    @property
    def cin(self):
        """Number of input channels (a Gemm: the channels of its ``(Cin, H, W)`` input)."""
        return self.w.shape[0] if self.kind == "ConvTranspose" else self.w.shape[1]

    def deconv_geometry(self):
        """``(S, (Py, Px), (OPy, OPx))`` of a ConvTranspose, the arguments of ``nibble.sim.deconv``.

        Exact for asymmetric pads too: ``P = begin``, ``OP = output_padding + begin − end`` (the
        same crop start and output size, ARITHMETIC §1.1).

        :raises CompileError: if the layer is not a ConvTranspose, or the pads and output padding
            do not give ``P ≥ 0`` and ``0 ≤ OP < S`` on both axes.
        """
        if self.kind != "ConvTranspose":
            raise CompileError(f"layer '{self.name}' ({self.kind}) is not a ConvTranspose")
        t, b, l, r = (int(v) for v in self.pad)
        s = int(self.stride)
        opy, opx = (int(v) for v in self.output_padding)
        P, OP = (t, l), (opy + t - b, opx + l - r)
        if s < 1 or min(P) < 0 or min(b, r) < 0 or not all(0 <= o < s for o in OP):
            raise CompileError(
                f"layer '{self.name}' (ConvTranspose): stride {s}, pads {self.pad} (top, bottom, left, "
                f"right) and output_padding {self.output_padding} are not a transposed convolution "
                f"with P >= 0 and 0 <= OP < S per axis (OP = output_padding + begin pad - end pad = {OP})")
        return s, P, OP

    def out_shape(self, in_shape):
        """``(Cout, H, W)`` after the layer and its pool for an input ``(Cin, H, W)``.

        Sizes < 1 are returned as computed (the caller reports a layer that does not fit).
        """
        c, h, w = in_shape
        kh, kw = self.w.shape[2:]
        t, b, l, r = self.pad
        if self.kind == "ConvTranspose":
            opy, opx = self.output_padding
            ho = (h - 1) * self.stride - t - b + kh + opy
            wo = (w - 1) * self.stride - l - r + kw + opx
        else:
            ho, wo = (h + t + b - kh) // self.stride + 1, (w + l + r - kw) // self.stride + 1
        return (self.cout, ho // self.pool, wo // self.pool)


def conv_float(x, w, b, stride, pad):
    """Float64 cross-correlation of a batch ``x`` (N, Cin, H, W) with ``w`` (Cout, Cin, Kh, Kw),
    plus bias ``b`` (Cout,), zero padding ``pad`` (top, bottom, left, right) → (N, Cout, Ho, Wo)."""
    t, bo, l, r = pad
    xp = np.pad(x, ((0, 0), (0, 0), (t, bo), (l, r)))
    n, ci, hp, wp = xp.shape
    co, _, kh, kw = w.shape
    ho, wo = (hp - kh) // stride + 1, (wp - kw) // stride + 1
    cols = np.empty((n, ci, kh, kw, ho, wo))
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xp[:, :, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
    y = np.tensordot(cols, w, axes=([1, 2, 3], [1, 2, 3]))      # (n, ho, wo, co)
    return y.transpose(0, 3, 1, 2) + b[None, :, None, None]


def deconv_float(x, wt, b, S, P, OP=0):
    """Float64 transposed convolution of a batch (ARITHMETIC §1.1–1.2, ``conv_transpose2d``).

    Each image goes through the scatter-add oracle ``nibble.sim.deconv.deconv_scatter``.

    :param x: (N, Cin, H, W). :param wt: (Cin, Cout, Kh, Kw). :param b: (Cout,).
    :param S, P, OP: stride, padding, output padding: ints or ``(rows, columns)`` pairs
        (as returned by :meth:`ConvOp.deconv_geometry`).
    :returns: float64 (N, Cout, Ho, Wo), ``Ho = (H − 1)·S − 2P + Kh + OP``.
    """
    from ..sim.deconv import deconv_scatter
    x = np.asarray(x, dtype=np.float64)
    wt = np.asarray(wt, dtype=np.float64)
    y = np.stack([deconv_scatter(xi, wt, S, P, OP) for xi in x])
    return y + np.asarray(b, dtype=np.float64)[None, :, None, None]


def apply_act(y, act):
    """``tanh`` or logistic ``sigmoid`` of a float64 array for ``act`` ``ACT_TANH`` / ``ACT_SIGMOID``;
    ``ACT_NONE`` returns ``y`` unchanged.

    :raises ValueError: for an unknown ``act`` value.
    """
    if act == ACT_NONE:
        return y
    if act == ACT_TANH:
        return np.tanh(y)
    if act == ACT_SIGMOID:
        e = np.exp(-np.abs(y))                         # 1/(1 + e^−y) without overflow
        return np.where(y >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    raise ValueError(f"unknown activation {act!r} (expected one of {sorted(ACT_NAMES)})")


def run_float(ops, x, weights="float"):
    """Run the IR in float64 on a batch (N, C, H, W); returns the list of every layer's output.

    Each layer: conv / transposed conv / Gemm, bias, ReLU or ``act``, then the 2×2 max-pool.

    :param weights: ``"float"`` for the float weights, ``"inq"`` for the INQ-decoded weights.
    """
    from ..sim.golden import inq_decode
    outs = []
    for op in ops:
        w = op.w if weights == "float" else inq_decode(op.codes, op.n2)
        if op.kind == "ConvTranspose":
            y = deconv_float(x, w, op.b, *op.deconv_geometry())
        else:
            y = conv_float(x, w, op.b, op.stride, op.pad)
        if op.relu:
            y = np.maximum(y, 0)
        y = apply_act(y, op.act)
        if op.pool == 2:
            n, c, h, wd = y.shape
            y = y[:, :, :h // 2 * 2, :wd // 2 * 2].reshape(n, c, h // 2, 2, wd // 2, 2).max(axis=(3, 5))
        outs.append(y)
        x = y
    return outs
