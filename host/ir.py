"""The compiler's layer: a float convolution with its fused epilogue (DESIGN §5, §6).

A :class:`ConvOp` is what one compute node of the graph IR (:mod:`nibble.host.graph`) carries: a
convolution, a transposed convolution (ARITHMETIC §1, PyTorch ``ConvTranspose2d`` semantics) or a
Gemm (a conv whose kernel covers its whole input), with its fused epilogue in the output stage's
order: bias → ReLU or PReLU/LeakyReLU → Clip → tanh/sigmoid → max-pool (ARITHMETIC §4.5).
A chain of layers (``list[ConvOp]``, what :func:`run_float` runs) is the special case of a graph
with one input and one output.
"""
import dataclasses

import numpy as np

from ..sim.golden import ACT_NONE, ACT_SIGMOID, ACT_TANH, POOL_2X2, POOL_NONE, pool_out_size

__all__ = ["CompileError", "ConvOp", "ACT_NAMES", "POOL_NONE", "POOL_2X2", "conv_float", "deconv_float", "inq_weights",
           "apply_act", "maxpool_float", "op_float", "run_float", "pool_text"]

#: Name of each ``act`` value (``nibble.sim.golden.ACT_*``), for messages and listings.
ACT_NAMES = {ACT_NONE: "none", ACT_TANH: "tanh", ACT_SIGMOID: "sigmoid"}


class CompileError(Exception):
    """A model cannot be compiled; the message names the node and what is wrong."""


@dataclasses.dataclass
class ConvOp:
    """A float layer with its fused epilogue: ``pool(act(clip(relu|prelu(layer(x) + b))))``.

    ``kind``: ``"Conv"``, ``"ConvTranspose"`` or ``"Gemm"``.

    ``w``: float64 weights. Conv and Gemm: ``(Cout, Cin, Kh, Kw)`` (cross-correlation, as
    ``conv2d``; a Gemm's kernel covers its whole ``(Cin, H, W)`` input). ConvTranspose: the PyTorch
    ``ConvTranspose2d.weight`` layout ``(Cin, Cout, Kh, Kw)`` (ARITHMETIC §0, §1.1).
    ``b``: float64 ``(Cout,)``.

    ``stride``: int, equal on both axes; a ConvTranspose may have a ``(rows, columns)`` pair
    (:attr:`strides` gives the pair in every case). ``pad``: ``(top, bottom, left, right)`` ints ≥ 0. For a
    Conv/Gemm the input is zero-padded by it. For a ConvTranspose it is the ONNX ``pads`` crop of
    the output canvas (ARITHMETIC §1.1: ``y = canvas[top : top + Ho]``); the importer stores it
    symmetric per axis (``top == bottom``, ``left == right``), so ``P = (pad[0], pad[2])``.
    ``output_padding``: ``(OPy, OPx)``, ConvTranspose only, otherwise
    ``(0, 0)``. ConvTranspose output size: ``Ho = (H − 1)·Sy − top − bottom + Kh + OPy`` (and the
    same with ``left``, ``right``, ``Kw``, ``OPx`` for ``Wo``). :meth:`deconv_geometry` gives the
    ``(S, P, OP)`` arguments of ``nibble.sim.deconv``.

    Epilogue, applied in this order (ARITHMETIC §4.5): the bias; ``relu`` (ReLU) or ``prelu``
    (float64 ``(Cout,)`` slopes of PReLU, or all equal for LeakyReLU: ``x < 0 → slope·x``;
    ``None`` = none; exclusive with ``relu``); ``clip`` (``(lo, hi)`` floats of a Clip, e.g.
    ReLU6 = ``(0, 6)``, ``None`` = none); ``act`` (``ACT_NONE`` / ``ACT_TANH`` / ``ACT_SIGMOID``,
    ``nibble.sim.golden``; exclusive with ``prelu`` and ``clip``); ``pool``: the max-pool window
    ``(kh, kw, sy, sx, top, bottom, left, right)`` over the layer's output, padded positions never
    winning (ONNX MaxPool; ``ceil_mode`` is a larger bottom/right padding), ``POOL_NONE`` =
    ``(1, 1, 1, 1, 0, 0, 0, 0)`` for none, ``POOL_2X2`` = ``(2, 2, 2, 2, 0, 0, 0, 0)``; the ints
    1 and 2 are accepted for these two. ``bn``: a pending BatchNormalization ``(scale, shift)``,
    float64 ``(Cout,)`` each, not yet folded. ``names``: the ONNX nodes the layer came from.

    Filled by the passes (``host/passes/``): ``codes``: uint8 4-bit INQ codes in the layout
    of ``w`` (``(Cin, Cout, Kh, Kw)`` for a ConvTranspose); ``n2``: int, weight exponent
    (ARITHMETIC §4.2). ``q_in``, ``q_out``: int feature exponents of the layer's input and output
    (value = V · 2^−Q, ARITHMETIC §4.3); for a tanh/sigmoid layer ``q_out = ACT_Q_OUT``.
    ``q_act``: the exponent the pre-activation is requantized to before the tanh/sigmoid table,
    ``ACT_Q_IN``; ``None`` for layers without ``act`` (requantization shift
    ``sh = q_in − n2 − q_act`` instead of ``q_in − n2 − q_out``, ARITHMETIC §4.5).

    ``groups``: the ONNX ``group`` of a grouped or depthwise Conv; ``w`` is then stored dense,
    ``(Cout, Cin, Kh, Kw)`` with zeros outside each output channel's group (block-diagonal: output
    channel ``o`` reads input channels ``(o // (Cout/groups))·Cin/groups …`` only), so every pass
    and the float reference treat it as a dense conv; :func:`nibble.host.passes.lower.lower` maps
    it to a grouped plan (``LayerPlan.grp``) where the channel counts align. ``res``: the layer
    adds a residual tensor (its compute node's second input, :func:`nibble.host.passes.fuse_add`)
    after the bias, before the activation: ``act(conv(x) + b + r)``.

    Per-channel weight exponents (:func:`nibble.host.passes.inq`, ``exponents``): ``dn2``, int64
    ``(Cout,)`` ≥ 0 or ``None``: output channel ``co``'s codes are in units of ``2^(n2 + dn2[co])``
    (``n2`` is then the layer's smallest exponent; the output stage shifts channel ``co`` by
    ``sh − dn2[co]``, ARITHMETIC §4.5). ``wsnr``: ``(per-layer, per-channel)`` SNR in dB of the
    quantized weights against ``w``, as the INQ pass measured them.
    """
    name: str
    w: np.ndarray
    b: np.ndarray
    stride: int = 1
    pad: tuple = (0, 0, 0, 0)
    relu: bool = False
    pool: tuple = POOL_NONE
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
    prelu: np.ndarray = None
    clip: tuple = None
    groups: int = 1
    res: bool = False
    dn2: np.ndarray = None
    wsnr: tuple = None

    def __post_init__(self):
        if isinstance(self.pool, (int, np.integer)) and not isinstance(self.pool, bool):
            if int(self.pool) not in (1, 2):
                raise ValueError(f"layer '{self.name}': pool {self.pool} is not 1, 2 or a window tuple")
            self.pool = POOL_NONE if int(self.pool) == 1 else POOL_2X2
        self.pool = tuple(int(v) for v in self.pool)
        if len(self.pool) != 8:
            raise ValueError(f"layer '{self.name}': pool {self.pool} is not (kh, kw, sy, sx, top, bottom, left, right)")

    @property
    def pools(self):
        """True if the layer max-pools its output (``pool != POOL_NONE``)."""
        return self.pool != POOL_NONE

    def epilogue(self):
        """The fused epilogue as text, e.g. ``"bias, PReLU, maxpool 3x3 s2 pad (0, 1, 0, 1)"``."""
        parts = ["bias"]
        if self.res:
            parts.append("residual Add")
        if self.groups > 1:
            parts.insert(0, f"{self.groups} groups")
        if self.bn is not None:
            parts.append("BatchNormalization (pending)")
        if self.relu:
            parts.append("ReLU")
        if self.prelu is not None:
            s = np.asarray(self.prelu)
            parts.append(f"LeakyReLU({s.reshape(-1)[0]:g})" if s.size and np.all(s == s.reshape(-1)[0])
                         else "PReLU")
        if self.clip is not None:
            parts.append(f"Clip({self.clip[0]:g}, {self.clip[1]:g})")
        if self.act != ACT_NONE:
            parts.append(ACT_NAMES[self.act])
        if self.pools:
            parts.append(pool_text(self.pool))
        return ", ".join(parts)

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

        ``OP`` may be negative (an end pad larger than the begin pad plus the output padding) or
        ``≥ S`` (the begin pad the larger): the TDC phases and the oracles take any ``OP``.
        ``S`` is an int, or the ``(Sy, Sx)`` pair when the strides differ.

        :raises CompileError: if the layer is not a ConvTranspose, or a pad is negative.
        """
        if self.kind != "ConvTranspose":
            raise CompileError(f"layer '{self.name}' ({self.kind}) is not a ConvTranspose")
        t, b, l, r = (int(v) for v in self.pad)
        sy, sx = self.strides
        s = sy if sy == sx else (sy, sx)
        opy, opx = (int(v) for v in self.output_padding)
        P, OP = (t, l), (opy + t - b, opx + l - r)
        if min(sy, sx) < 1 or min(P) < 0 or min(b, r) < 0:
            raise CompileError(
                f"layer '{self.name}' (ConvTranspose): stride {s}, pads {self.pad} (top, bottom, left, "
                f"right) and output_padding {self.output_padding} are not a transposed convolution "
                f"with S >= 1 and pads >= 0")
        return s, P, OP

    @property
    def strides(self):
        """``(rows, columns)`` stride."""
        s = self.stride
        return (int(s[0]), int(s[1])) if isinstance(s, (tuple, list)) else (int(s), int(s))

    def out_shape(self, in_shape):
        """``(Cout, H, W)`` after the layer and its pool for an input ``(Cin, H, W)``.

        Sizes < 1 are returned as computed (the caller reports a layer that does not fit).
        """
        c, h, w = in_shape
        kh, kw = self.w.shape[2:]
        t, b, l, r = self.pad
        if self.kind == "ConvTranspose":
            opy, opx = self.output_padding
            sy, sx = self.strides
            ho = (h - 1) * sy - t - b + kh + opy
            wo = (w - 1) * sx - l - r + kw + opx
        else:
            ho, wo = (h + t + b - kh) // self.stride + 1, (w + l + r - kw) // self.stride + 1
        if self.pools:
            ho, wo = pool_out_size(ho, wo, self.pool)
        return (self.cout, ho, wo)

    def conv_shape(self, in_shape):
        """``(Cout, H, W)`` of the layer before its max-pool for an input ``(Cin, H, W)``."""
        return dataclasses.replace(self, pool=POOL_NONE, names=[]).out_shape(in_shape)


def pool_text(pool):
    """A max-pool window as text: ``"maxpool 3x3 s2"``, with ``" pad (t, b, l, r)"`` if padded."""
    kh, kw, sy, sx, t, b, l, r = pool
    s = f"maxpool {kh}x{kw} s{sy}" if sy == sx else f"maxpool {kh}x{kw} s{sy}x{sx}"
    return s + (f" pad ({t}, {b}, {l}, {r})" if any((t, b, l, r)) else "")


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


def maxpool_float(y, pool):
    """Max-pool of a float batch ``y`` (N, C, H, W) with window ``pool`` = ``(kh, kw, sy, sx, top,
    bottom, left, right)``; padded positions are −∞ (never win, ONNX MaxPool). ``POOL_NONE``
    returns ``y``. Output size ``nibble.sim.golden.pool_out_size``.

    :raises ValueError: if the output is empty.
    """
    pool = tuple(int(v) for v in pool)
    if pool == POOL_NONE:
        return y
    kh, kw, sy, sx, t, b, l, r = pool
    n, c, h, w = y.shape
    ho, wo = pool_out_size(h, w, pool)
    if ho < 1 or wo < 1:
        raise ValueError(f"max-pool {pool} of a {h}x{w} map is empty")
    yp = np.full((n, c, h + t + b + kh, w + l + r + kw), -np.inf)
    yp[:, :, t:t + h, l:l + w] = y
    out = np.full((n, c, ho, wo), -np.inf)
    for dy in range(kh):
        for dx in range(kw):
            out = np.maximum(out, yp[:, :, dy:dy + sy * (ho - 1) + 1:sy, dx:dx + sx * (wo - 1) + 1:sx])
    return out


def inq_weights(op):
    """The float64 weights of ``op``'s INQ codes: ``code_to_int · 2^n2``, times ``2^dn2[co]`` per
    output channel (axis 0; axis 1 of a ConvTranspose) with per-channel exponents."""
    from ..sim.golden import inq_decode
    w = inq_decode(op.codes, op.n2)
    if op.dn2 is not None:
        shape = [1] * w.ndim
        shape[1 if op.kind == "ConvTranspose" else 0] = -1
        w = w * np.ldexp(1.0, np.asarray(op.dn2, np.int64)).reshape(shape)
    return w


def op_float(op, x, weights="float", residual=None):
    """One layer in float64 on a batch ``x`` (N, Cin, H, W) → (N, Cout, Ho, Wo): the convolution,
    transposed convolution or Gemm with its bias, the residual (``op.res``), then the epilogue in
    the output stage's order (ReLU or PReLU, Clip, tanh/sigmoid, max-pool; ARITHMETIC §4.5).

    :param weights: ``"float"`` for ``op.w``, ``"inq"`` for the INQ-decoded ``op.codes``, ``op.n2``.
    :param residual: float (N, Cout, Ho', Wo') added before the activation (the conv output's
        shape); required exactly when ``op.res``.
    :raises ValueError: a residual missing, given to a layer without one, or of another shape.
    """
    w = op.w if weights == "float" else inq_weights(op)
    if op.kind == "ConvTranspose":
        y = deconv_float(x, w, op.b, *op.deconv_geometry())
    else:
        y = conv_float(x, w, op.b, op.stride, op.pad)
    if op.res != (residual is not None):
        raise ValueError(f"layer '{op.name}': {'a residual is missing' if op.res else 'it has no residual Add'}")
    if residual is not None:
        if residual.shape != y.shape:
            raise ValueError(f"layer '{op.name}': residual of shape {residual.shape[1:]}, the output is {y.shape[1:]}")
        y = y + residual
    if op.relu:
        y = np.maximum(y, 0)
    if op.prelu is not None:
        y = np.where(y < 0, y * np.asarray(op.prelu, np.float64)[None, :, None, None], y)
    if op.clip is not None:
        y = np.clip(y, op.clip[0], op.clip[1])
    y = apply_act(y, op.act)
    return maxpool_float(y, op.pool)


def run_float(ops, x, weights="float"):
    """Run a chain of layers in float64 on a batch (N, C, H, W); returns the list of every
    layer's output (:func:`op_float`).

    :param weights: ``"float"`` for the float weights, ``"inq"`` for the INQ-decoded weights.
    """
    outs = []
    for op in ops:
        x = op_float(op, x, weights)
        outs.append(x)
    return outs
