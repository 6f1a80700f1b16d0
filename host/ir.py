"""The compiler's intermediate representation: a chain of float conv layers (DESIGN §6).

Every supported network is a sequence of :class:`ConvOp` (a Gemm is a conv whose kernel covers
its whole input). Passes are functions ``list[ConvOp] → list[ConvOp]`` (``host/passes.py``).
"""
import dataclasses

import numpy as np

__all__ = ["CompileError", "ConvOp", "conv_float", "run_float"]


class CompileError(Exception):
    """A model cannot be compiled; the message names the node and what is wrong."""


@dataclasses.dataclass
class ConvOp:
    """A float conv layer with its fused epilogue.

    ``w``: float64 (Cout, Cin, Kh, Kw); ``b``: float64 (Cout,); ``pad``: (top, bottom, left,
    right); ``relu``; ``pool`` 1 or 2 (2×2 max-pool stride 2 after the ReLU); ``bn``: a pending
    BatchNormalization ``(scale, shift)`` not yet folded; ``names``: ONNX nodes it came from.
    Quantization fields are filled by the INQ and calibration passes.
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

    def out_shape(self, in_shape):
        """(Cout, H, W) after conv and pool for input (Cin, H, W)."""
        c, h, w = in_shape
        co, _, kh, kw = self.w.shape
        t, b, l, r = self.pad
        ho, wo = (h + t + b - kh) // self.stride + 1, (w + l + r - kw) // self.stride + 1
        return (co, ho // self.pool, wo // self.pool)


def conv_float(x, w, b, stride, pad):
    """Float64 cross-correlation of a batch ``x`` (N, Cin, H, W) → (N, Cout, Ho, Wo)."""
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


def run_float(ops, x, weights="float"):
    """Run the IR in float64 on a batch (N, C, H, W); returns the list of every layer's output.

    :param weights: ``"float"`` for the float weights, ``"inq"`` for the INQ-decoded weights.
    """
    from ..sim.golden import inq_decode
    outs = []
    for op in ops:
        w = op.w if weights == "float" else inq_decode(op.codes, op.n2)
        y = conv_float(x, w, op.b, op.stride, op.pad)
        if op.relu:
            y = np.maximum(y, 0)
        if op.pool == 2:
            n, c, h, wd = y.shape
            y = y[:, :, :h // 2 * 2, :wd // 2 * 2].reshape(n, c, h // 2, 2, wd // 2, 2).max(axis=(3, 5))
        outs.append(y)
        x = y
    return outs
