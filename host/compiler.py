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

__all__ = ["compile_model", "plan_program", "CompileError", "parse_modes", "layer_cycles",
           "layer_beats", "WINOGRAD_MODES"]

#: Per-layer convolution modes: ``auto`` (Winograd where the layer is eligible and the cycle
#: model says it is faster), ``direct`` (SAC lanes), ``winograd`` (multiplier lanes, F(2×2,3×3)).
WINOGRAD_MODES = ("auto", "direct", "winograd")


def compile_model(model, calib, config: EngineConfig = EngineConfig(), winograd="auto"):
    """Compile an ONNX model for an accelerator configuration.

    :param model: path to an ``.onnx`` file or an ``onnx.ModelProto``.
    :param calib: float calibration inputs (N, C, H, W) (or (N, F) for a vector input).
    :param config: the :class:`EngineConfig` the program is for.
    :param winograd: convolution mode per layer (see :func:`parse_modes`): ``"auto"``,
        ``"direct"``, ``"winograd"``, ``"name=mode,…,default"`` or a dict ``{name: mode}`` (key
        ``"*"`` for the default).
    :returns: :class:`Program`.
    :raises CompileError: malformed model, unsupported operator/attribute/shape (naming the node),
        an accumulator that could overflow, a layer that does not fit the caches or memories, a
        layer named for Winograd that cannot run as Winograd (with the reason).
    """
    if not hasattr(model, "graph"):
        model = load_onnx(model)
    ops, in_shape, in_name, out_name = import_onnx(model)
    ops = fold_bn(ops)
    ops = inq(ops)
    ops, q_input = calibrate(ops, calib, in_shape)
    return plan_program(ops, in_shape, q_input, config, in_name, out_name, winograd=winograd)


def parse_modes(spec):
    """Per-layer convolution modes from a string or dict.

    ``"auto"`` / ``"direct"`` / ``"winograd"`` set every layer; ``"conv1=direct,conv2=winograd"``
    names layers (IR layer names, i.e. the ONNX node names), and one entry without ``=`` sets
    the default for the others (``auto`` if absent). A dict ``{name: mode}`` may use the key
    ``"*"`` for the default.

    A default of ``winograd`` applies to the eligible layers (3×3, stride 1, fitting the caches
    and the accumulator) and leaves the others direct; a layer *named* ``winograd`` must be
    eligible, or compiling fails naming it.

    :returns: ``(default, {name: mode})``.
    :raises CompileError: an unknown mode or a malformed entry.
    """
    if isinstance(spec, dict):
        items = [(None if k == "*" else k, v) for k, v in spec.items()]
    else:
        items = []
        for part in str(spec).split(","):
            part = part.strip()
            if not part:
                continue
            name, _, mode = part.rpartition("=")
            items.append((name.strip() or None, mode.strip()))
    default, named = "auto", {}
    for name, mode in items:
        if mode not in WINOGRAD_MODES:
            raise CompileError(f"convolution mode '{mode}'{f' for layer {name!r}' if name else ''} is not "
                               f"one of {', '.join(WINOGRAD_MODES)}")
        if name is None:
            default = mode
        else:
            named[name] = mode
    return default, named


def layer_cycles(L, config, winograd=None):
    """Cycle model of one layer on the engine (``hw/engine.py`` schedule), in clock cycles.

    :param winograd: model the Winograd schedule (default: the layer's own mode).
    Per output block: biases ``m + 1``, filters ``m·T·cb + 1`` (direct) or ``16·m·cb + 12``
    (Winograd weight transform), beats ``pixels·max(T·cb, k)`` (direct, ``k = m/vc`` writer
    cycles per pixel) or ``tiles·max(16·cb, 4k)`` (Winograd), plus the drain; per layer 21.
    """
    c = config
    k = c.m // c.vc
    wino = L.winograd if winograd is None else winograd
    cb = L.cb_in
    if wino:
        tiles = L.out_h * L.out_w if L.pool == 2 else -(-L.out_h // 2) * -(-L.out_w // 2)
        per_blk = c.m + 1 + 16 * c.m * cb + 12 + tiles * max(16 * cb, 4 * k) + 24
    else:
        per_pix = max(L.pool * L.pool * L.kh * L.kw * cb, k)
        per_blk = c.m + 1 + c.m * L.kh * L.kw * cb + 1 + L.out_h * L.out_w * per_pix + 10
    return 21 + L.n_coblk(c.m) * per_blk


def layer_beats(L, config):
    """Beats (vectors of ``vc`` values) the engine sends through the PE array for layer ``L``:
    output pixels × pool² × taps × input blocks × output blocks (direct), or
    tiles × 16 × input blocks × output blocks (Winograd; tiles = ⌈out_h/2⌉·⌈out_w/2⌉, or
    out_h·out_w pooled pixels with pooling)."""
    if L.winograd:
        tiles = L.out_h * L.out_w if L.pool == 2 else -(-L.out_h // 2) * -(-L.out_w // 2)
        return L.n_coblk(config.m) * tiles * 16 * L.cb_in
    return L.n_coblk(config.m) * L.out_h * L.out_w * L.pool ** 2 * L.kh * L.kw * L.cb_in


def _winograd_check(L, config, bits, bias):
    """Why layer ``L`` cannot run as Winograd F(2×2,3×3), or ``""`` if it can (ARITHMETIC §2.3, §2.5)."""
    c = config
    if not c.winograd:
        return "the engine is built without the Winograd path (EngineConfig.winograd = false)"
    if (L.kh, L.kw, L.stride) != (3, 3, 1):
        return f"it is a {L.kh}x{L.kw} stride-{L.stride} layer; Winograd F(2x2,3x3) needs 3x3 stride 1"
    if 16 * L.cb_in > c.filter_depth:
        return (f"its 16 x {L.cb_in} transformed-weight words per filter exceed the filter cache "
                f"({c.filter_depth} words)")
    if bits + 2 > c.acc_width:
        return (f"the 4x scaled accumulator needs {bits + 2} bits, the engine has {c.acc_width} "
                "(ARITHMETIC §2.5)")
    if np.abs(bias).max(initial=0) * 4 >= 1 << 31:
        return "a 4x scaled bias needs more than 32 bits"
    if L.sh + 2 > SH_MAX:
        return f"the shift sh + 2 = {L.sh + 2} exceeds the hardware's {SH_MAX}"
    return ""


def _bias_int(op):
    """``b_int = round_half_up(b · 2^(q_in − n2))`` (ARITHMETIC §4.4)."""
    return np.floor(np.ldexp(op.b, op.q_in - op.n2) + 0.5).astype(np.int64)


def plan_program(ops, in_shape, q_input, config, in_name="input", out_name="output", winograd="auto"):
    """Integer plan, allocation and device images for quantized IR ``ops`` (INQ + Q set).

    :param winograd: convolution modes (:func:`parse_modes`). A Winograd layer stores ``4·b_int``
        as its biases and the descriptor carries ``sh + 2`` (ARITHMETIC §2.3); its weights are
        the same 4-bit codes as in direct mode (the engine computes ``U = G₂ g G₂ᵀ`` exactly
        while loading, the same integers as :func:`nibble.sim.winograd.weight_transform`).
    """
    c = config
    default_mode, named_modes = parse_modes(winograd)
    unknown = set(named_modes) - {op.name for op in ops}
    if unknown:
        raise CompileError(f"convolution mode given for unknown layer(s): {', '.join(sorted(unknown))} "
                           f"(layers: {', '.join(op.name for op in ops)})")
    k = c.m // c.vc
    layers, biases = [], []
    shape = tuple(in_shape)
    cb_in = -(-shape[0] // c.vc)
    for op in ops:
        where = f"layer '{op.name}' ({op.kind})"
        if op.kind == "ConvTranspose":
            raise CompileError(f"{where}: transposed convolution is imported but has no accelerator "
                               "mapping yet (TDC/NZP lowering is not implemented)")
        if getattr(op, "act", 0):
            raise CompileError(f"{where}: the tanh/sigmoid output activation is not mapped to the "
                               "accelerator yet")
        co, ci, kh, kw = op.codes.shape
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
        mode = named_modes.get(op.name, default_mode)
        reason = _winograd_check(L, c, bits, bias)
        if mode == "winograd" and op.name in named_modes and reason:
            raise CompileError(f"{where}: cannot run as Winograd: {reason}")
        if reason:
            L.mode_reason = f"direct: {reason}" if mode != "direct" else "direct: chosen"
        elif mode == "direct":
            L.mode_reason = "direct: chosen"
        elif mode == "winograd":
            L.winograd, L.mode_reason = True, "winograd: chosen"
        else:
            d, w = layer_cycles(L, c, False), layer_cycles(L, c, True)
            L.winograd = w < d
            L.mode_reason = f"{'winograd' if L.winograd else 'direct'}: auto, {d} direct vs {w} Winograd cycles"
        if L.winograd:
            bias = bias * 4
            L.acc_bits = int(bits + 2)
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
