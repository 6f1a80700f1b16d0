"""Host compiler: ONNX → IR → passes → :class:`Program` (DESIGN §1, §6).

``compile_model(model, calib, config)`` runs: import (``host/onnx_import.py``) → BN folding →
INQ → int8 calibration (``host/passes.py``) → integer plan (biases, shifts, accumulator check)
→ memory allocation → device images (descriptors, biases, packed weights).
Everything that does not fit the engine is a :class:`CompileError` naming the layer.
"""
import numpy as np

from ..hw.config import DESC_WORDS, EngineConfig
from ..hw.output import SH_MAX, SH_MIN
from ..sim.golden import DE, acc_bits
from .ir import CompileError
from .onnx_import import import_onnx, load_onnx
from .passes import calibrate, fold_bn, inq
from .program import LayerPlan, Program, weight_words

__all__ = ["compile_model", "plan_program", "CompileError"]


def compile_model(model, calib, config: EngineConfig = EngineConfig()):
    """Compile an ONNX model for an accelerator configuration.

    :param model: path to an ``.onnx`` file or an ``onnx.ModelProto``.
    :param calib: float calibration inputs (N, C, H, W) (or (N, F) for a vector input).
    :param config: the :class:`EngineConfig` the program is for.
    :returns: :class:`Program`.
    :raises CompileError: malformed model, unsupported operator/attribute/shape (naming the node),
        an accumulator that could overflow, a layer that does not fit the caches or memories.
    """
    if not hasattr(model, "graph"):
        model = load_onnx(model)
    ops, in_shape, in_name, out_name = import_onnx(model)
    ops = fold_bn(ops)
    ops = inq(ops)
    ops, q_input = calibrate(ops, calib, in_shape)
    return plan_program(ops, in_shape, q_input, config, in_name, out_name)


def _bias_int(op):
    """``b_int = round_half_up(b · 2^(q_in − n2))`` (ARITHMETIC §4.4)."""
    return np.floor(np.ldexp(op.b, op.q_in - op.n2) + 0.5).astype(np.int64)


def plan_program(ops, in_shape, q_input, config, in_name="input", out_name="output"):
    """Integer plan, allocation and device images for quantized IR ``ops`` (INQ + Q set)."""
    c = config
    k = c.m // c.vc
    layers, biases = [], []
    shape = tuple(in_shape)
    cb_in = -(-shape[0] // c.vc)
    for op in ops:
        co, ci, kh, kw = op.codes.shape
        where = f"layer '{op.name}' ({op.kind})"
        if ci != shape[0]:
            raise CompileError(f"{where}: expects {ci} input channels, gets {shape[0]}")
        out = op.out_shape(shape)
        if out[1] < 1 or out[2] < 1:
            raise CompileError(f"{where}: a {kh}x{kw} kernel (stride {op.stride}, pad {op.pad}, pool {op.pool}) "
                               f"on a {shape[1]}x{shape[2]} input gives an empty output")
        t, b, l, r = op.pad
        conv_h = (shape[1] + t + b - kh) // op.stride + 1
        conv_w = (shape[2] + l + r - kw) // op.stride + 1
        bias = _bias_int(op)
        if np.abs(bias).max(initial=0) >= 1 << 31:
            raise CompileError(f"{where}: a bias needs more than 32 bits (max |b_int| = {np.abs(bias).max()})")
        bits = acc_bits(ci * kh * kw, DE, np.abs(bias).max(initial=0))
        if bits > c.acc_width:
            raise CompileError(f"{where}: the accumulator could overflow: {ci}x{kh}x{kw} taps need "
                               f"{bits} bits, the engine has {c.acc_width} (ARITHMETIC §4.4)")
        if kh * kw * cb_in > c.filter_depth:
            raise CompileError(f"{where}: a filter needs {kh * kw * cb_in} words, the filter cache holds {c.filter_depth}")
        if max(kh, kw, op.stride, t, l) > 255 or max(shape[1:]) > 65535:
            raise CompileError(f"{where}: kernel, stride or padding beyond the descriptor's 8-bit fields")
        sh = op.q_in - op.n2 - op.q_out
        if not SH_MIN <= sh <= SH_MAX:
            raise CompileError(f"{where}: requantization shift {sh} outside the hardware's [{SH_MIN}, {SH_MAX}]")
        nb = -(-co // c.m)
        L = LayerPlan(name=op.name, op="conv", cin=ci, cout=co, in_h=shape[1], in_w=shape[2], kh=kh, kw=kw,
                      stride=op.stride, pad=tuple(op.pad), conv_h=conv_h, conv_w=conv_w, pool=op.pool,
                      out_h=out[1], out_w=out[2], relu=bool(op.relu), n2=int(op.n2), q_in=int(op.q_in),
                      q_out=int(op.q_out), sh=int(sh), acc_bits=int(bits), cb_in=cb_in, cb_out=nb * k)
        layers.append(L)
        biases.append(bias)
        shape = out
        cb_in = nb * k

    # feature memory: two buffers, used in turn (input in A, layer 0 writes B, layer 1 writes A …)
    sizes = [layers[0].in_h * layers[0].in_w * layers[0].cb_in] + [L.out_h * L.out_w * L.cb_out for L in layers]
    half = max(sizes)
    if 2 * half > c.feature_depth:
        raise CompileError(f"feature maps need 2 x {half} words, the feature memory has {c.feature_depth}")
    for i, L in enumerate(layers):
        L.in_base = 0 if i % 2 == 0 else half
        L.out_base = half if i % 2 == 0 else 0

    # weight memory and parameter memory
    wblobs, w_ptr = [], 0
    p_ptr = DESC_WORDS * len(layers)
    for op, L in zip(ops, layers):
        L.w_base = w_ptr
        blob = weight_words(op.codes, c.m, c.vc, L.cb_in)
        wblobs.append(blob)
        w_ptr += len(blob) // (c.vc // 4)
        L.bias_base = p_ptr
        p_ptr += L.n_coblk(c.m) * c.m
    if w_ptr > c.weight_depth:
        raise CompileError(f"weights need {w_ptr} words, the weight memory has {c.weight_depth}")
    if p_ptr > c.param_depth:
        raise CompileError(f"descriptors and biases need {p_ptr} words, the parameter memory has {c.param_depth}")
    params = np.zeros(p_ptr, np.uint32)
    for i, (L, bias) in enumerate(zip(layers, biases)):
        params[DESC_WORDS * i:DESC_WORDS * (i + 1)] = L.descriptor(c, last=i == len(layers) - 1)
        params[L.bias_base:L.bias_base + L.cout] = bias.astype(np.int32).view(np.uint32)
    last = layers[-1]
    return Program(config=c, layers=layers, params=params, weights=np.concatenate(wblobs).astype(np.uint16),
                   input_shape=tuple(in_shape), input_q=int(q_input),
                   output_shape=(last.cout, last.out_h, last.out_w), output_q=last.q_out,
                   input_name=in_name, output_name=out_name, flatten_output=ops[-1].kind == "Gemm")
