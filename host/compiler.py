"""Host compiler: ONNX → IR → passes → :class:`Program` (DESIGN §1, §6).

``compile_model(model, calib, config)`` runs: validation (ONNX shape inference, checker and ONNX
Runtime, ``host/onnx_import.py``) → import → BN folding → the memory checks of every layer
against the :class:`EngineConfig` (:func:`check_fits`) → INQ → int8 calibration
(``host/passes.py``) → integer plan (biases, shifts, accumulator check) → memory allocation →
device images (descriptors, biases, packed weights).
Everything that is malformed, not supported or does not fit the engine is a
:class:`CompileError` naming the node or layer; no other exception and no silently wrong program.
"""
import os

import numpy as np

from ..hw.config import DESC_WORDS, EngineConfig
from ..hw.isa import SH_MAX, SH_MIN
from ..sim.golden import DE, acc_bits
from .ir import CompileError
from .onnx_import import import_onnx, load_onnx, validate_model
from .passes import calibrate, calibration_data, fold_bn, inq
from .program import LayerPlan, Program, weight_words

__all__ = ["compile_model", "plan_program", "check_fits", "CompileError", "parse_modes", "layer_cycles",
           "layer_beats", "winograd_work", "WINOGRAD_MODES", "DECONV_MODES"]

#: Per-layer convolution modes: ``auto`` (Winograd where the layer is eligible and the cycle
#: model says it is faster), ``direct`` (SAC lanes), ``winograd`` (multiplier lanes, F(2×2,3×3)).
WINOGRAD_MODES = ("auto", "direct", "winograd")


def compile_model(model, calib, config: EngineConfig = EngineConfig(), winograd="auto", deconv="auto"):
    """Compile an ONNX model for an accelerator configuration.

    :param model: path to an ``.onnx`` file or an ``onnx.ModelProto``.
    :param calib: float calibration inputs (N, C, H, W) (or (N, F) for a vector input).
    :param config: the :class:`EngineConfig` the program is for.
    :param winograd: convolution mode per layer (see :func:`parse_modes`): ``"auto"``,
        ``"direct"``, ``"winograd"``, ``"name=mode,…,default"`` or a dict ``{name: mode}`` (key
        ``"*"`` for the default).
    :param deconv: transposed convolutions: ``"auto"``, ``"tdc"``, ``"nzp"``, ``"winograd"``
        (see :func:`plan_program`).
    :returns: :class:`Program`.
    :raises CompileError: malformed or invalid model (ONNX checker, shape inference or ONNX Runtime
        refuse it), unsupported operator/attribute/shape, attribute of the wrong type, non-finite
        or out-of-range weights, biases or BatchNormalization parameters (naming the node and
        attribute or initializer); calibration data that is not a finite numeric array of the
        input's shape; a layer that does not fit the caches or memories (checked before
        calibration, naming the layer and by how much), an accumulator that could overflow, a
        bias that does not fit 32 bits, a layer named for Winograd that cannot run as Winograd
        (with the reason); a config that is not an EngineConfig, an unknown mode.
    """
    if not isinstance(config, EngineConfig):
        raise CompileError(f"config must be an EngineConfig, not {type(config).__name__}")
    parse_modes(winograd)
    if deconv not in DECONV_MODES:
        raise CompileError(f"deconvolution mode '{deconv}' is not one of {', '.join(DECONV_MODES)}")
    if isinstance(model, (str, bytes, os.PathLike)):
        model = load_onnx(model)
    else:
        model = validate_model(model)
    ops, in_shape, in_name, out_name = import_onnx(model)
    x = calibration_data(calib, in_shape)
    ops = fold_bn(ops)
    check_fits(ops, in_shape, config, deconv)
    ops = inq(ops)
    ops, q_input = calibrate(ops, x, in_shape)
    return plan_program(ops, in_shape, q_input, config, in_name, out_name, winograd=winograd, deconv=deconv)


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


def _popcount(v):
    return bin(v).count("1")


def winograd_work(L):
    """``(tiles, p)`` of a Winograd plan: 2×2 output tiles (``⌈out_h/2⌉·⌈out_w/2⌉``, or
    ``out_h·out_w`` pooled pixels with pooling) and transformed positions computed per tile
    (``popcount(xmask)·popcount(ymask)``, 16 for a plain layer; ARITHMETIC §2.1, §3)."""
    tiles = L.out_h * L.out_w if L.pool == 2 else -(-L.out_h // 2) * -(-L.out_w // 2)
    return tiles, _popcount(L.wmask[0]) * _popcount(L.wmask[1])


def layer_cycles(L, config, winograd=None):
    """Cycle model of one layer on the engine (``hw/engine.py`` schedule), in clock cycles.

    :param winograd: model the Winograd schedule (default: the layer's own mode).
    Per output block: biases ``m + 1``, filters ``m·T·cb + 1`` (direct), beats
    ``pixels·max(T·cb, k)`` (``k = m/vc`` writer cycles per pixel), drain. Winograd: the weight
    transform ``16·m·cb + 12`` before block 0, later blocks' transforms overlap the computation;
    beats ``tiles·max(p·cb, 4k)`` with ``p`` the transformed positions computed (16, fewer for
    TDC phases). Per layer 21 (descriptor fetch and checks).
    """
    c = config
    k = c.m // c.vc
    wino = L.winograd if winograd is None else winograd
    cb = L.cb_in
    nb = L.n_coblk(c.m)
    if wino:
        tiles, p = winograd_work(L)
        if not L.winograd:                    # modelling a direct layer as a plain Winograd one
            p = 16
        load = 16 * c.m * cb + 12
        run = tiles * max(p * cb, 4 * k)
        return 21 + load + nb * (c.m + 1 + run + 24) + (nb - 1) * max(0, load - run)
    per_pix = max(L.pool * L.pool * L.kh * L.kw * cb, k)
    return 21 + nb * (c.m + 1 + c.m * L.kh * L.kw * cb + 1 + L.out_h * L.out_w * per_pix + 10)


def layer_beats(L, config):
    """Beats (vectors of ``vc`` values) the engine sends through the PE array for layer ``L``:
    output pixels × pool² × taps × input blocks × output blocks (direct), or
    tiles × 16 × input blocks × output blocks (Winograd; tiles = ⌈out_h/2⌉·⌈out_w/2⌉, or
    out_h·out_w pooled pixels with pooling)."""
    if L.winograd:
        tiles, p = winograd_work(L)
        return L.n_coblk(config.m) * tiles * p * L.cb_in
    return L.n_coblk(config.m) * L.out_h * L.out_w * L.pool ** 2 * L.kh * L.kw * L.cb_in


def _winograd_check(L, config, bits, bias):
    """Why layer ``L`` cannot run as Winograd F(2×2,3×3), or ``""`` if it can (ARITHMETIC §2.3, §2.5)."""
    c = config
    if not c.winograd:
        return "the engine is built without the Winograd path (EngineConfig.winograd = false)"
    if (L.kh, L.kw, L.stride) != (3, 3, 1):
        return f"it is a {L.kh}x{L.kw} stride-{L.stride} layer; Winograd F(2x2,3x3) needs 3x3 stride 1"
    if 16 * L.cb_in > c.filter_depth // 2:
        return (f"its 16 x {L.cb_in} transformed-weight words per filter exceed half the filter cache "
                f"({c.filter_depth // 2} words; the other half loads the next output block)")
    if bits + 2 > c.acc_width:
        return (f"the 4x scaled accumulator needs {bits + 2} bits, the engine has {c.acc_width} "
                "(ARITHMETIC §2.5)")
    if np.abs(bias).max(initial=0) * 4 >= 1 << 31:
        return "a 4x scaled bias needs more than 32 bits"
    if L.sh + 2 > SH_MAX:
        return f"the shift sh + 2 = {L.sh + 2} exceeds the hardware's {SH_MAX}"
    return ""


def _bias_int(op, where):
    """``b_int = round_half_up(b · 2^(q_in − n2))`` (ARITHMETIC §4.4).

    :raises CompileError: naming the layer if a bias is not finite or needs more than 32 bits.
    """
    with np.errstate(all="ignore"):
        v = np.floor(np.ldexp(np.asarray(op.b, np.float64), int(op.q_in - op.n2)) + 0.5)
    if not np.all(np.isfinite(op.b)):
        raise CompileError(f"{where}: its bias is not finite")
    big = np.abs(v).max(initial=0)
    if not np.isfinite(big) or big >= 1 << 31:
        raise CompileError(f"{where}: a bias needs more than 32 bits (max |b_int| = {big:.4g}, from max |b| = "
                           f"{np.abs(op.b).max():.4g} at the accumulator scale 2^{int(op.q_in - op.n2)})")
    return v.astype(np.int64)


DECONV_MODES = ("auto", "tdc", "nzp", "winograd")


def _pow2(n):
    return n >= 1 and n & (n - 1) == 0


def _check_fields(where, c, kh, kw, stride, top, left, cb_in, sizes):
    """Descriptor fields and filter cache of one descriptor (:class:`CompileError` naming the layer)."""
    if top < 0 or left < 0:
        raise CompileError(f"{where}: a negative top/left padding ({top}, {left}) cannot be mapped")
    if kh * kw * cb_in > c.filter_depth:
        raise CompileError(f"{where}: a filter needs {kh * kw * cb_in} words, the filter cache "
                           f"holds {c.filter_depth}")
    if max(kh, kw, stride, top, left) > 255 or max(sizes) > 65535:
        raise CompileError(f"{where}: kernel, stride or padding beyond the descriptor's 8-bit fields "
                           f"(kernel {kh}x{kw}, stride {stride}, top/left padding {top}/{left}; at most 255) or a map "
                           f"size beyond 16 bits ({max(sizes)})")


def _check_plan(L, where, c):
    """Descriptor-field and cache limits of one plan (:class:`CompileError` naming the layer)."""
    t, _, l, _ = L.pad
    _check_fields(where, c, L.kh, L.kw, L.stride, t, l, L.cb_in, (L.in_h, L.in_w, L.out_h, L.out_w))
    if not SH_MIN <= L.sh <= SH_MAX:
        raise CompileError(f"{where}: requantization shift {L.sh} outside the hardware's [{SH_MIN}, {SH_MAX}]")


def _check_deconv_stride(where, S):
    """A transposed convolution's stride: at most 255, as a convolution's (its S² phases are listed)."""
    if S > 255:
        raise CompileError(f"{where}: stride {S} is beyond the descriptor's 8-bit fields (at most 255)")


def _feature_error(what, shape, words, c):
    """The feature memory holds two maps (input and output of a layer, in turn)."""
    ch, h, w = shape
    return CompileError(f"{what}: its {h}x{w} map of {ch} channels needs {words} words; the two feature "
                        f"buffers need 2 x {words} = {2 * words}, the feature memory has {c.feature_depth} "
                        f"(over by {2 * words - c.feature_depth} words)")


def _memory_error(where, what, need, total, depth):
    return CompileError(f"{where}: its {what} need {need} words, {total} with the layers before it; the "
                        f"{'weight' if what == 'weights' else 'parameter'} memory has {depth} (over by "
                        f"{total - depth} words)")


def check_fits(ops, in_shape, config=EngineConfig(), deconv="auto"):
    """Check, from the shapes alone and before calibration, that every layer fits the engine.

    Per layer: its output map against the feature memory (two buffers of the largest map,
    ``H·W·⌈C/vc⌉`` words each, exact), its weights against the weight memory and its
    descriptors and biases against the parameter memory (cumulative over the layers, the least
    any mode needs: the direct form, TDC phases for a transposed convolution, one NZP descriptor
    for ``deconv="nzp"``), and for a Conv or Gemm its filter (``Kh·Kw·⌈Cin/vc⌉`` words) and
    descriptor fields (8-bit kernel, stride and top/left padding, 16-bit map sizes).
    :func:`plan_program` checks the exact figures of the chosen plans again.

    :raises CompileError: naming the first layer that does not fit and by how much.
    """
    from ..sim.deconv import tdc_phases
    c = config
    k = c.m // c.vc
    shape = tuple(in_shape)
    cb = -(-shape[0] // c.vc)
    words = shape[1] * shape[2] * cb
    if 2 * words > c.feature_depth:
        raise _feature_error("the network input", shape, words, c)
    w_total = p_total = 0
    for op in ops:
        where = f"layer '{op.name}' ({op.kind})"
        out = op.out_shape(shape)
        if out[1] < 1 or out[2] < 1:
            raise CompileError(f"{where}: gives an empty output ({out[1]}x{out[2]}) on a {shape[1]}x{shape[2]} input")
        nb = -(-op.cout // c.m)
        kh, kw = op.w.shape[2:]
        if op.kind != "ConvTranspose":
            t, _, l, _ = op.pad
            _check_fields(where, c, kh, kw, op.stride, t, l, cb, (*shape[1:], *out[1:]))
        cb_out = nb * k
        words = out[1] * out[2] * cb_out
        if 2 * words > c.feature_depth:
            raise _feature_error(where, out, words, c)
        if op.kind == "ConvTranspose":
            if op.pool != 1:
                raise CompileError(f"{where}: max-pool after a transposed convolution is not supported")
            S, P, OP = op.deconv_geometry()
            _check_deconv_stride(where, S)
            # one descriptor per output phase with outputs (TDC), or one (NZP); checked before the
            # phases are listed (a huge stride has S² of them)
            n_desc = 1 if deconv == "nzp" else min(S, out[1]) * min(S, out[2])
            if p_total + n_desc * (DESC_WORDS + nb * c.m) > c.param_depth:
                need = n_desc * (DESC_WORDS + nb * c.m)
                raise _memory_error(where, "descriptors and biases", need, p_total + need, c.param_depth)
            if deconv == "nzp":
                taps = [kh * kw]
            else:
                phases = [ph for ph in tdc_phases((kh, kw), S, P, OP, shape[1:]) if 0 not in ph.n_out]
                for ph in phases:
                    if ph.y.n == 0 or ph.x.n == 0:
                        raise CompileError(f"{where}: kernel {kh}x{kw} smaller than the stride {S}: phase "
                                           f"{ph.phi} has no taps")
                taps, n_desc = [ph.y.n * ph.x.n for ph in phases], len(phases)
        else:
            taps, n_desc = [kh * kw], 1
        need = sum(nb * c.m * t_ * cb for t_ in taps)
        w_total += need
        if w_total > c.weight_depth:
            raise _memory_error(where, "weights", need, w_total, c.weight_depth)
        need = n_desc * (DESC_WORDS + nb * c.m)
        p_total += need
        if p_total > c.param_depth:
            raise _memory_error(where, "descriptors and biases", need, p_total, c.param_depth)
        shape, cb = out, cb_out


def _shift(op):
    """``sh = q_in − n2 − q_out``, or ``q_in − n2 − q_act`` before a tanh/sigmoid table."""
    q_to = op.q_act if getattr(op, "act", 0) else op.q_out
    return int(op.q_in - op.n2 - q_to)


def _conv_plans(op, shape, cb_in, c, modes, where):
    """One plan (with its codes and integer biases) for a Conv/Gemm IR layer."""
    default_mode, named_modes = modes
    k = c.m // c.vc
    co, ci, kh, kw = op.codes.shape
    out = op.out_shape(shape)
    if out[1] < 1 or out[2] < 1:
        raise CompileError(f"{where}: a {kh}x{kw} kernel (stride {op.stride}, pad {op.pad}, pool {op.pool}) "
                           f"on a {shape[1]}x{shape[2]} input gives an empty output")
    t, b, l, r = op.pad
    conv_h = (shape[1] + t + b - kh) // op.stride + 1
    conv_w = (shape[2] + l + r - kw) // op.stride + 1
    bias = _bias_int(op, where)
    bits = acc_bits(ci * kh * kw, DE, np.abs(bias).max(initial=0))
    if bits > c.acc_width:
        raise CompileError(f"{where}: the accumulator could overflow: {ci}x{kh}x{kw} taps need "
                           f"{bits} bits, the engine has {c.acc_width} (ARITHMETIC §4.4)")
    nb = -(-co // c.m)
    L = LayerPlan(name=op.name, op="conv", cin=ci, cout=co, in_h=shape[1], in_w=shape[2], kh=kh, kw=kw,
                  stride=op.stride, pad=tuple(op.pad), conv_h=conv_h, conv_w=conv_w, pool=op.pool,
                  out_h=out[1], out_w=out[2], relu=bool(op.relu), n2=int(op.n2), q_in=int(op.q_in),
                  q_out=int(op.q_out), sh=_shift(op), acc_bits=int(bits), cb_in=cb_in, cb_out=nb * k,
                  act=int(getattr(op, "act", 0)), group=op.name, full_h=out[1], full_w=out[2])
    _check_plan(L, where, c)
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
    return [(L, op.codes, bias)]


def _deconv_plans(op, shape, cb_in, c, deconv, where):
    """Plans of a ConvTranspose (ARITHMETIC §1): one NZP plan (zero-inserted input read by the
    engine, flipped kernel, §1.3), or one plan per TDC phase (§1.4; structural zero taps dropped;
    outputs written interleaved, §5), in Winograd form where the phase allows (§3: F(2×2,3×3) on
    the zero-filled 3×3 sub-kernel, or a 2×2 sub-kernel extended by a leading zero row and column;
    the structurally zero transformed positions are skipped)."""
    from ..sim.deconv import tdc_phases, tdc_subkernels, winograd_u_mask
    k = c.m // c.vc
    if op.pool != 1:
        raise CompileError(f"{where}: max-pool after a transposed convolution is not supported")
    S, (py_, px_), (opy, opx) = op.deconv_geometry()
    _check_deconv_stride(where, S)
    ci, co, K_h, K_w = op.codes.shape
    _, H, W = shape
    _, Ho, Wo = op.out_shape(shape)
    if Ho < 1 or Wo < 1:
        raise CompileError(f"{where}: gives an empty output on a {H}x{W} input")
    bias = _bias_int(op, where)
    nb = -(-co // c.m)
    common = dict(cin=ci, cout=co, in_h=H, in_w=W, stride=1, pool=1, relu=bool(op.relu), n2=int(op.n2),
                  q_in=int(op.q_in), q_out=int(op.q_out), sh=_shift(op), cb_in=cb_in, cb_out=nb * k,
                  act=int(getattr(op, "act", 0)), group=op.name, full_h=Ho, full_w=Wo)
    if deconv == "nzp":
        if not (_pow2(S) and S <= 128):
            raise CompileError(f"{where}: the NZP form needs a power-of-two stride (≤ 128), not {S}")
        pad = (K_h - 1 - py_, K_h - 1 - py_ + opy, K_w - 1 - px_, K_w - 1 - px_ + opx)
        codes = np.ascontiguousarray(op.codes.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])
        bits = acc_bits(ci * K_h * K_w, DE, np.abs(bias).max(initial=0))
        if bits > c.acc_width:
            raise CompileError(f"{where}: the accumulator could overflow ({bits} bits needed, {c.acc_width} present)")
        L = LayerPlan(name=op.name, op="deconv_nzp", kh=K_h, kw=K_w, pad=pad, conv_h=Ho, conv_w=Wo,
                      out_h=Ho, out_w=Wo, acc_bits=int(bits), dil=S, mode_reason="nzp: zero insertion",
                      **common)
        _check_plan(L, where, c)
        return [(L, codes, bias)]
    plans = []
    sub = tdc_subkernels(op.codes, S)
    for ph in tdc_phases((K_h, K_w), S, (py_, px_), (opy, opx), (H, W)):
        if 0 in ph.n_out:
            continue
        f, _ = sub[ph.r]
        kcy, kcx = f.shape[2:]
        if ph.y.n == 0 or ph.x.n == 0:
            raise CompileError(f"{where}: kernel {K_h}x{K_w} smaller than the stride {S}: phase {ph.phi} has no taps")
        name = f"{op.name}/phase{ph.phi[0]}{ph.phi[1]}"
        pw = f"layer '{name}' (ConvTranspose phase)"
        t, b, l, r = ph.pad
        bits = acc_bits(ci * ph.y.n * ph.x.n, DE, np.abs(bias).max(initial=0))
        if bits > c.acc_width:
            raise CompileError(f"{pw}: the accumulator could overflow ({bits} bits needed, {c.acc_width} present)")
        geo = dict(name=name, op="deconv_phase", conv_h=ph.n_out[0], conv_w=ph.n_out[1], out_h=ph.n_out[0],
                   out_w=ph.n_out[1], phase=(ph.phi[0], ph.phi[1], S), **common)
        wino = None
        if deconv in ("winograd", "auto") and kcy in (2, 3) and kcx in (2, 3):
            ey, ex = 3 - kcy, 3 - kcx                   # leading zero rows / columns added
            f3 = np.zeros((co, ci, 3, 3), np.uint8)
            f3[:, :, ey:, ex:] = f
            my = [False] * ey + [tp is not None for tp in ph.y.taps]
            mx = [False] * ex + [tp is not None for tp in ph.x.taps]
            um = [winograd_u_mask("F2x2_3x3", mk) for mk in (my, mx)]
            Lw = LayerPlan(kh=3, kw=3, pad=(t + ey, b, l + ex, r), acc_bits=int(bits), winograd=True,
                           wmask=tuple(int(sum(1 << i for i, v in enumerate(u) if v)) for u in um),
                           mode_reason=f"winograd-tdc: {int(um[0].sum()) * int(um[1].sum())} of 16 "
                                       "transformed positions", **geo)
            reason = _winograd_check(Lw, c, bits, bias)
            if not reason and Lw.pad[0] >= 0 and Lw.pad[2] >= 0:
                Lw.acc_bits = int(bits + 2)
                wino = (Lw, f3, bias * 4)
        dy, dx = kcy - ph.y.n, kcx - ph.x.n
        Ld = LayerPlan(kh=ph.y.n, kw=ph.x.n, pad=(t - dy, b, l - dx, r), acc_bits=int(bits),
                       mode_reason="tdc: structural zero taps dropped", **geo)
        direct = (Ld, np.ascontiguousarray(f[:, :, dy:, dx:]), bias)
        if wino is not None and deconv == "auto":
            if layer_cycles(wino[0], c) >= layer_cycles(Ld, c):
                wino = None
        if wino is None and deconv == "winograd":
            Ld.mode_reason = "tdc: Winograd needs 2x2 or 3x3 sub-kernels that fit the engine"
        pick = wino if wino is not None else direct
        _check_plan(pick[0], pw, c)
        plans.append(pick)
    return plans


def plan_program(ops, in_shape, q_input, config, in_name="input", out_name="output", winograd="auto",
                 deconv="auto"):
    """Integer plan, allocation and device images for quantized IR ``ops`` (INQ + Q set).

    :param winograd: convolution modes (:func:`parse_modes`). A Winograd layer stores ``4·b_int``
        as its biases and the descriptor carries ``sh + 2`` (ARITHMETIC §2.3); its weights are
        the same 4-bit codes as in direct mode (the engine computes ``U = G₂ g G₂ᵀ`` exactly
        while loading, the same integers as :func:`nibble.sim.winograd.weight_transform`).
    :param deconv: transposed convolutions as ``tdc`` (one stride-1 descriptor per output phase,
        structural zeros dropped), ``nzp`` (zero insertion, the baseline), ``winograd``
        (Winograd-TDC where a phase allows, else TDC) or ``auto`` (per phase, the faster of TDC and
        Winograd-TDC by :func:`layer_cycles`).
    :raises CompileError: naming the layer: no layers, an unknown mode or layer named in the modes,
        input channels that do not match, a bias that is not finite or needs more than 32 bits, an
        accumulator that could overflow, descriptor fields, filter cache or shift out of range, a
        layer named for Winograd that cannot run as Winograd, a feature, weight or parameter
        memory that is too small (by how much).
    """
    c = config
    if not ops:
        raise CompileError("the model has no layers")
    modes = parse_modes(winograd)
    if deconv not in DECONV_MODES:
        raise CompileError(f"deconvolution mode '{deconv}' is not one of {', '.join(DECONV_MODES)}")
    unknown = set(modes[1]) - {op.name for op in ops}
    if unknown:
        raise CompileError(f"convolution mode given for unknown layer(s): {', '.join(sorted(unknown))} "
                           f"(layers: {', '.join(op.name for op in ops)})")
    k = c.m // c.vc
    groups = []                  # per IR layer: [(LayerPlan, codes, bias)]
    shape = tuple(in_shape)
    cb_in = -(-shape[0] // c.vc)
    for op in ops:
        where = f"layer '{op.name}' ({op.kind})"
        ci = op.codes.shape[0] if op.kind == "ConvTranspose" else op.codes.shape[1]
        if ci != shape[0]:
            raise CompileError(f"{where}: expects {ci} input channels, gets {shape[0]}")
        _bias_int(op, where)
        if op.kind == "ConvTranspose":
            plans = _deconv_plans(op, shape, cb_in, c, deconv, where)
        else:
            plans = _conv_plans(op, shape, cb_in, c, modes, where)
        groups.append(plans)
        L = plans[0][0]
        shape = (L.cout, L.full_h, L.full_w)
        cb_in = L.cb_out

    # feature memory: two buffers, used in turn (input in A, layer 0 writes B, layer 1 writes A …)
    first = groups[0][0][0]
    sizes = [first.in_h * first.in_w * first.cb_in] + [g[0][0].full_h * g[0][0].full_w * g[0][0].cb_out
                                                       for g in groups]
    half = max(sizes)
    if 2 * half > c.feature_depth:
        i = sizes.index(half)
        if i == 0:
            raise _feature_error("the network input", tuple(in_shape), half, c)
        L = groups[i - 1][0][0]
        raise _feature_error(f"layer '{ops[i - 1].name}' ({ops[i - 1].kind})", (L.cout, L.full_h, L.full_w), half, c)
    # weight memory and parameter memory (sizes checked before the images are built)
    w_total = p_total = 0
    for op, g in zip(ops, groups):
        where = f"layer '{op.name}' ({op.kind})"
        need = sum(L.n_coblk(c.m) * c.m * L.kh * L.kw * L.cb_in for L, _, _ in g)
        w_total += need
        if w_total > c.weight_depth:
            raise _memory_error(where, "weights", need, w_total, c.weight_depth)
        need = sum(DESC_WORDS + L.n_coblk(c.m) * c.m for L, _, _ in g)
        p_total += need
        if p_total > c.param_depth:
            raise _memory_error(where, "descriptors and biases", need, p_total, c.param_depth)
    layers, codes_list, biases = [], [], []
    for i, g in enumerate(groups):
        in_base = 0 if i % 2 == 0 else half
        map_base = half if i % 2 == 0 else 0
        for L, codes, bias in g:
            L.in_base = in_base
            L.map_base = map_base
            if L.phase:
                py, px, S = L.phase
                L.out_base = map_base + (py * L.full_w + px) * L.cb_out
                L.out_row, L.out_pix = S * L.full_w * L.cb_out, S * L.cb_out
            else:
                L.out_base = map_base
            layers.append(L)
            codes_list.append(codes)
            biases.append(bias)

    wblobs, w_ptr = [], 0
    p_ptr = DESC_WORDS * len(layers)
    for codes, L in zip(codes_list, layers):
        L.w_base = w_ptr
        blob = weight_words(codes, c.m, c.vc, L.cb_in)
        wblobs.append(blob)
        w_ptr += len(blob) // (c.vc // 4)
        L.bias_base = p_ptr
        p_ptr += L.n_coblk(c.m) * c.m
    assert w_ptr == w_total and p_ptr == p_total
    params = np.zeros(p_ptr, np.uint32)
    for i, (L, bias) in enumerate(zip(layers, biases)):
        params[DESC_WORDS * i:DESC_WORDS * (i + 1)] = L.descriptor(c, last=i == len(layers) - 1)
        params[L.bias_base:L.bias_base + L.cout] = bias.astype(np.int32).view(np.uint32)
    last = layers[-1]
    return Program(config=c, layers=layers, params=params, weights=np.concatenate(wblobs).astype(np.uint16),
                   input_shape=tuple(in_shape), input_q=int(q_input),
                   output_shape=(last.cout, last.full_h, last.full_w), output_q=last.q_out,
                   input_name=in_name, output_name=out_name, flatten_output=ops[-1].kind == "Gemm")
