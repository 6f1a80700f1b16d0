"""Pass ``lower``: a quantized graph of layers → :class:`~nibble.host.program.Program` (DESIGN §6).

Per compute node, in the graph's topological order (the order the engine runs them): its
plans — one descriptor for a Conv or Gemm (direct SAC lanes, or Winograd F(2×2,3×3) on the
multiplier lanes, chosen per layer by the cycle model :func:`layer_cycles`), one per output phase
for a transposed convolution (TDC or Winograd-TDC, ARITHMETIC §1.4, §3) or one zero-insertion
plan (NZP, §1.3) — with integer biases (§4.4), the requantization shift, PReLU slope codes and
clip bounds (§4.5), and the accumulator check; each plan reads its input tensor's view and
writes its output tensor's view of the one feature memory (addresses from
:func:`nibble.host.passes.allocate`). Then the memory images: parameter memory holds the
descriptors (``DESC_WORDS`` each, in execution order, the last one flagged ``last``), then per
plan its biases and slope codes (``n_coblk·m`` int32 words each); weight memory the packed codes.
"""
import dataclasses

import numpy as np

from ...hw.engine.scheduler import Scheduler
from ...hw.isa import DESC_WORDS, PRELU_FRAC, RES_SH_MAX, SH_MAX, SH_MIN, descriptor_fields
from ...sim.golden import DE, INT8_CLIP, POOL_2X2, POOL_NONE, acc_bits, prelu_codes
from ..graph import Graph, Node, chw
from ..ir import CompileError, pool_text
from ..program import LayerPlan, Program, TensorSpec, weight_words
from .allocate import allocate, concat_offsets, tensor_cb

__all__ = ["FETCH_CYCLES", "BLOCK_CYCLES", "WINOGRAD_BLOCK_CYCLES", "lower", "plan_program", "graph_from_chain", "parse_modes", "layer_cycles", "layer_beats",
           "winograd_work", "WINOGRAD_MODES", "DECONV_MODES"]

#: Per-layer convolution modes: ``auto`` (Winograd where the layer is eligible and the cycle
#: model says it is faster), ``direct`` (SAC lanes), ``winograd`` (multiplier lanes, F(2×2,3×3)).
WINOGRAD_MODES = ("auto", "direct", "winograd")


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
    tiles = L.out_h * L.out_w if L.pools else -(-L.out_h // 2) * -(-L.out_w // 2)
    return tiles, _popcount(L.wmask[0]) * _popcount(L.wmask[1])


def layer_cycles(L, config, winograd=None):
    """Cycle model of one layer on the engine (``hw/engine/`` schedule, memories behind
    ``SyncReadPort``s), in clock cycles.

    :param winograd: model the Winograd schedule (default: the layer's own mode).
    Per output block: biases ``m + 1`` (``m + 1`` more for PReLU slopes, and for per-channel shift
    offsets), filters ``m·T·cb/P + 1`` (``P`` = ``EngineConfig.weight_ports``)
    (direct; where ``T·cb ≤ filter_depth/2`` only block 0's: a later block's load runs in the
    other half of the filter caches beside the block before, and only what exceeds that
    block's beats, parameter load and hand-overs, less 3 cycles, stalls), beats ``pixels·max(P·T·cb, k)`` (``P = pool_kh·pool_kw`` window positions per
    output pixel, ``k = m/vc`` writer cycles per pixel), and :data:`BLOCK_CYCLES` for the
    parts' hand-overs, the memories' latency and the drain. Winograd: the weight transform
    ``16·m·cb + 12`` before block 0, later blocks' transforms overlap the previous block's beats,
    parameter load and all but 2 of its :data:`WINOGRAD_BLOCK_CYCLES` (a longer transform stalls); beats
    ``tiles·max(p·cb, 4k)`` with ``p`` the transformed positions computed (16, fewer for TDC
    phases), :data:`WINOGRAD_BLOCK_CYCLES` per block. Per layer :data:`FETCH_CYCLES` (descriptor
    fetch and checks). A residual Add holds the PE array ``k + 2`` cycles per output pixel in
    direct mode (the residual reader's reads, after the pixel's accumulation); in Winograd mode
    its ``k + 3`` cycles per output overlap the tile's beats. A grouped plan's ``cb`` is the
    ``cb_in`` blocks one output block reads. Measured against the RTL: exact for ``k = 1``
    but for 12 drain cycles of a Winograd layer with a residual (``tests/test_e2e_sim.py`` checks
    2 %); a layer bound by its writer (``P·T·cb ≤ k`` with
    ``k > 1``) runs about ``k/3`` cycles per pixel slower than modelled.

    With ``vp > 1`` output-pixel lanes (direct mode) a row is ``⌈out_w/vp⌉`` beat groups of
    ``n ≤ vp`` live pixels: each takes ``max(P·T·cb, P·n, n·k)`` cycles (the lane serializer passes
    each of the ``P`` window positions' results a lane per cycle; the writer's ``n·k`` words),
    or ``max(P·T·cb, P·n, n·k, n·(k + 3))`` with a residual Add (the lane serializer holds the result
    while the residual reader reads); the last group's other lanes and the serializer's register
    add ``(n − 1)·k + 1`` cycles of drain per block. Measured against the RTL within 1 % on the
    layer suite (``tests/test_perf_model_rtl.py``, m = 32, vp = 2; ``tests/test_pixel_lanes.py``
    checks 3 %).
    """
    c = config
    k = c.m // c.vc
    wino = L.winograd if winograd is None else winograd
    cb = L.cb_in
    nb = L.n_coblk(c.m)
    params = (c.m + 1) * L.param_arrays
    if wino:
        tiles, p = winograd_work(L)
        if not L.winograd:                    # modelling a direct layer as a plain Winograd one
            p = 16
        load = 16 * c.m * cb + 12
        run = tiles * max(p * cb, 4 * k, 4 * (k + 3) if L.res else 0)
        # the next block's weight transform runs beside this block's beats, its own parameter
        # load and all but 2 of the block's hand-over cycles; a longer transform stalls the rest
        hidden = run + params + WINOGRAD_BLOCK_CYCLES - 2
        return FETCH_CYCLES + load + nb * (params + run + WINOGRAD_BLOCK_CYCLES) + (nb - 1) * max(0, load - hidden)
    P = L.pool[0] * L.pool[1]
    beats = P * L.kh * L.kw * cb        # per group of pixels

    def group(n):          # a beat group of n live pixel lanes: the beats, or the writer's n·k words
        if c.vp == 1:      # the residual reads hold the PE array (its result register)
            return max(beats, k) + (k + 2 if L.res else 0)
        # the lane serializer holds the result: the residual reader's k + 3 cycles per pixel
        # overlap; every window position's result passes it, a lane per cycle
        return max(beats, P * n, n * k, n * (k + 3) if L.res else 0)

    full, rest = divmod(L.out_w, c.vp)
    row = full * group(c.vp) + (group(rest) if rest else 0)
    # the last group's other lanes after its first pixel, and the lane serializer's register
    drain = ((rest or c.vp) - 1) * k + (c.vp > 1)
    load = c.m // c.weight_ports * L.kh * L.kw * cb       # a filter word per port and cycle
    run = L.out_h * row + drain
    block = params + load + 1 + run + BLOCK_CYCLES
    if nb > 1 and L.kh * L.kw * cb <= c.filter_depth // 2:
        # double-buffered filter caches: a later block's load (its words and 3 cycles) runs in
        # the other half beside the block before, from that block's first beat to its own beats
        hidden = run + params + BLOCK_CYCLES - 3
        later = params + run + BLOCK_CYCLES - 2 + max(0, load + 3 - hidden)
        return FETCH_CYCLES + block + (nb - 1) * later
    return FETCH_CYCLES + nb * block


#: Cycles per layer to fetch and check a descriptor: ``DESC_WORDS`` reads, 2 of memory latency,
#: 5 of checks, 1 to hand it to the controller, and the controller's step into the first block.
FETCH_CYCLES = DESC_WORDS + 8
#: Cycles per direct-mode output block beside the loads and beats (memory latency of the
#: parameter and filter loads, the scheduler's stages, the feature reads, the PE array, output
#: stage and drain).
BLOCK_CYCLES = 18 + Scheduler.latency
#: The same for a Winograd block (the transforms' and serializers' pipeline stages).
WINOGRAD_BLOCK_CYCLES = 42 + Scheduler.latency


def layer_beats(L, config):
    """Beats the engine sends through the PE array for layer ``L`` (each ``vp`` vectors of ``vc``
    values in direct mode, one in Winograd mode): output rows × ⌈out_w/vp⌉ pixel groups × pool² ×
    taps × input blocks × output blocks (direct), or
    tiles × 16 × input blocks × output blocks (Winograd; tiles = ⌈out_h/2⌉·⌈out_w/2⌉, or
    out_h·out_w pooled pixels with pooling)."""
    if L.winograd:
        tiles, p = winograd_work(L)
        return L.n_coblk(config.m) * tiles * p * L.cb_in
    groups = L.out_h * -(-L.out_w // config.vp)
    return L.n_coblk(config.m) * groups * L.pool[0] * L.pool[1] * L.kh * L.kw * L.cb_in


def _winograd_check(L, config, bits, bias):
    """Why layer ``L`` cannot run as Winograd F(2×2,3×3), or ``""`` if it can (ARITHMETIC §2.3, §2.5)."""
    c = config
    if not c.winograd:
        return "the engine is built without the Winograd path (EngineConfig.winograd = false)"
    if (L.kh, L.kw, L.stride) != (3, 3, 1):
        return f"it is a {L.kh}x{L.kw} stride-{L.stride} layer; Winograd F(2x2,3x3) needs 3x3 stride 1"
    if L.pools and tuple(L.pool) != POOL_2X2:
        return f"its {pool_text(L.pool)} is not the 2x2 stride-2 unpadded max-pool Winograd tiles can pool"
    if 16 * L.cb_in > c.filter_depth // 2:
        return (f"its 16 x {L.cb_in} transformed-weight words per filter exceed half the filter cache "
                f"({c.filter_depth // 2} words; the other half loads the next output block)")
    if bits + 2 > c.acc_width:
        return (f"the 4x scaled accumulator needs {bits + 2} bits, the engine has {c.acc_width} "
                "(ARITHMETIC §2.5)")
    if np.abs(bias).max(initial=0) * 4 >= 1 << 31:
        return "a 4x scaled bias needs more than 32 bits"
    if L.sh_hw + 2 > SH_MAX:
        return f"the shift {L.sh_hw} + 2 = {L.sh_hw + 2} exceeds the hardware's {SH_MAX}"
    if L.res and L.res_sh_hw + 2 > RES_SH_MAX:
        return f"the residual shift {L.res_sh_hw} + 2 exceeds the hardware's {RES_SH_MAX}"
    return ""


def _bias_int(op, where):
    """``b_int = round_half_up(b · 2^(q_in − n2))`` (ARITHMETIC §4.4; ``n2 + dn2[co]`` per channel with
    per-channel weight exponents).

    :raises CompileError: naming the layer if a bias is not finite or needs more than 32 bits.
    """
    e = int(op.q_in - op.n2) - (0 if op.dn2 is None else np.asarray(op.dn2, np.int64))   # per channel
    with np.errstate(all="ignore"):
        v = np.floor(np.ldexp(np.asarray(op.b, np.float64), e) + 0.5)
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


def _field_max(name):
    """Largest value of descriptor field ``name`` (``nibble.hw.isa.DESCRIPTOR``)."""
    return (1 << descriptor_fields()[name][1]) - 1


def _check_fields(where, c, kh, kw, stride, top, left, cb_in, sizes, pool=POOL_NONE):
    """Descriptor fields and filter cache of one descriptor (:class:`CompileError` naming the layer)."""
    if top < 0 or left < 0:
        raise CompileError(f"{where}: a negative top/left padding ({top}, {left}) cannot be mapped")
    if kh * kw * cb_in > c.filter_depth:
        raise CompileError(f"{where}: a filter needs {kh * kw * cb_in} words, the filter cache "
                           f"holds {c.filter_depth}")
    k8, s16 = _field_max("kh"), _field_max("in_h")
    if max(kh, kw, stride, top, left) > k8 or max(sizes) > s16:
        raise CompileError(f"{where}: kernel, stride or padding beyond the descriptor's {k8.bit_length()}-bit fields "
                           f"(kernel {kh}x{kw}, stride {stride}, top/left padding {top}/{left}; at most {k8}) or a map "
                           f"size beyond {s16.bit_length()} bits ({max(sizes)})")
    pkh, pkw, psy, psx, ppt, _, ppl, _ = pool
    pmax = min(_field_max(f) for f in ("pool_kh", "pool_kw", "pool_sy", "pool_sx", "pool_pt", "pool_pl"))
    if max(pkh, pkw, psy, psx, ppt, ppl) > pmax:
        raise CompileError(f"{where}: its {pool_text(pool)} is beyond the descriptor's {pmax.bit_length()}-bit "
                           f"max-pool fields (window, stride and top/left padding at most {pmax})")


def _check_plan(L, where, c):
    """Descriptor-field and cache limits of one plan (:class:`CompileError` naming the layer)."""
    t, _, l, _ = L.pad
    _check_fields(where, c, L.kh, L.kw, L.stride, t, l, L.cb_in, (L.in_h, L.in_w, L.conv_h, L.conv_w, L.out_h, L.out_w),
                  L.pool)
    if not SH_MIN <= L.sh_hw <= SH_MAX:
        extra = f" (sh {L.sh} + PRELU_FRAC {PRELU_FRAC} for the PReLU)" if L.prelu else ""
        raise CompileError(f"{where}: requantization shift {L.sh_hw}{extra} outside the hardware's "
                           f"[{SH_MIN}, {SH_MAX}]")


def _check_deconv_stride(where, S):
    """A transposed convolution's stride (an int or a ``(Sy, Sx)`` pair): at most 255 per axis, as
    a convolution's (its ``Sy·Sx`` phases are listed)."""
    if max(S if isinstance(S, tuple) else (S,)) > 255:
        raise CompileError(f"{where}: stride {S} is beyond the descriptor's 8-bit fields (at most 255)")



def weight_space_error(where, plan_words, total, config, stream):
    """The :class:`CompileError` for a layer whose weights do not fit, or ``None``.

    :param plan_words: weight words of each of the layer's plans; ``total``: the words of every
        layer up to this one. On chip (``stream`` false) the total must fit the weight memory;
        streamed from external memory, each plan must fit half of it (the other half is filled
        with the next plan's weights while it computes) and the image half of external memory.
    """
    c = config
    if not stream:
        if total > c.weight_depth:
            return _memory_error(where, "weights", sum(plan_words), total, c.weight_depth)
        return None
    half = c.weight_depth // 2
    for w in plan_words:
        if w > half:
            return CompileError(f"{where}: its weights need {w} words in one descriptor; streamed weights hold one "
                                f"descriptor's in half of the weight memory ({half} words, over by {w - half})")
    if total * c.vc // 2 > c.ddr_bytes // 2:
        return CompileError(f"{where}: the weights up to it need {total * c.vc // 2} bytes; half of external "
                            f"memory ({c.ddr_bytes // 2} bytes) holds the streamed image")
    return None


def _memory_error(where, what, need, total, depth):
    return CompileError(f"{where}: its {what} need {need} words, {total} with the layers before it; the "
                        f"{'weight' if what == 'weights' else 'parameter'} memory has {depth} (over by "
                        f"{total - depth} words)")



def _shift(op):
    """``sh = q_in − n2 − q_out``, or ``q_in − n2 − q_act`` before a tanh/sigmoid table."""
    q_to = op.q_act if op.act else op.q_out
    return int(op.q_in - op.n2 - q_to)


def _clip_codes(op):
    """The int8 saturation bounds of a layer: ``INT8_CLIP``, or for a Clip ``(lo, hi)`` at the
    requantized value's exponent q (``q_act`` before a tanh/sigmoid table, else ``q_out``):
    ``(max(−128, rhu(lo·2^q)), min(127, rhu(hi·2^q)))``, rhu = round half up."""
    if op.clip is None:
        return INT8_CLIP
    q = op.q_act if op.act else op.q_out

    def code(v):
        if not np.isfinite(v):
            return -128 if v < 0 else 127
        return int(min(127, max(-128, np.floor(np.ldexp(float(v), int(q)) + 0.5))))

    lo, hi = code(op.clip[0]), code(op.clip[1])
    return (max(INT8_CLIP[0], lo), min(INT8_CLIP[1], hi))


def _epilogue_fields(op, where):
    """``(LayerPlan fields, slope codes or None)`` of a layer's epilogue (PReLU codes,
    ARITHMETIC §4.5, ``nibble.sim.golden.prelu_codes``).

    :raises CompileError: naming the layer if a slope does not fit the slope code.
    """
    slopes = None
    if op.prelu is not None:
        try:
            slopes = prelu_codes(np.broadcast_to(np.asarray(op.prelu, np.float64), (op.cout,)))
        except ValueError as e:
            raise CompileError(f"{where}: {e}") from None
    return dict(prelu=slopes is not None, clip=_clip_codes(op)), slopes


def _grouping(op, cin, c):
    """``(grp, cb)`` of a grouped plan for a layer with ``op.groups`` groups on ``cin`` input
    channels (``LayerPlan.grp``: output blocks per group, ``cb``: input blocks one output block
    reads), or ``None`` where the channel counts do not align with the engine's blocks (the layer
    then runs dense, with its zero weights outside the groups):
    ``Cg_out % m == 0 and Cg_in % vc == 0`` (a group spans whole output blocks), or
    ``m % Cg_out == 0 and (m/Cg_out)·Cg_in % vc == 0`` (a block holds whole groups; depthwise when
    ``m % vc == 0``); and ``Cout % m == 0`` (no partial last block)."""
    g = op.groups
    if g < 2 or op.kind != "Conv" or cin != op.cin or op.cout % c.m:
        return None
    cg_in, cg_out = cin // g, op.cout // g
    if cg_out % c.m == 0 and cg_in % c.vc == 0:
        return cg_out // c.m, cg_in // c.vc
    if c.m % cg_out == 0 and (c.m // cg_out) * cg_in % c.vc == 0:
        return 1, (c.m // cg_out) * cg_in // c.vc
    return None


def _grouped_codes(codes, grp, cb, c):
    """The block-diagonal filters of a grouped plan: for output channel ``o`` of block
    ``b = o // m``, the ``cb·vc`` input channels from ``(b // grp)·cb·vc`` of the dense
    (Cout, Cin, Kh, Kw) codes (zero codes beyond Cin)."""
    co, ci = codes.shape[:2]
    local = np.zeros((co, cb * c.vc) + codes.shape[2:], np.uint8)
    for b in range(-(-co // c.m)):
        off = (b // grp) * cb * c.vc
        part = codes[b * c.m:(b + 1) * c.m, off:off + cb * c.vc]
        local[b * c.m:b * c.m + len(part), :part.shape[1]] = part
    return local


def _conv_plans(op, shape, cb_in, c, modes, where, res_q=None):
    """One plan (with its codes, integer biases and slope codes) for a Conv/Gemm layer; grouped
    (``LayerPlan.grp``) where :func:`_grouping` allows; ``res_q``: the exponent of its residual."""
    default_mode, named_modes = modes
    k = c.m // c.vc
    co, ci, kh, kw = op.codes.shape
    grouping = _grouping(op, shape[0], c)
    codes = op.codes if grouping is None else _grouped_codes(op.codes, *grouping, c)
    out = op.out_shape(shape)
    if out[1] < 1 or out[2] < 1:
        raise CompileError(f"{where}: a {kh}x{kw} kernel (stride {op.stride}, pad {op.pad}, pool {op.pool}) "
                           f"on a {shape[1]}x{shape[2]} input gives an empty output")
    _, conv_h, conv_w = op.conv_shape(shape)
    bias = _bias_int(op, where)
    epi, slopes = _epilogue_fields(op, where)
    taps_in = codes.shape[1]
    bits = acc_bits(taps_in * kh * kw, DE, np.abs(bias).max(initial=0))
    if bits > c.acc_width:
        raise CompileError(f"{where}: the accumulator could overflow: {taps_in}x{kh}x{kw} taps need "
                           f"{bits} bits, the engine has {c.acc_width} (ARITHMETIC §4.4)")
    nb = -(-co // c.m)
    L = LayerPlan(name=op.name, op="conv", cin=ci, cout=co, in_h=shape[1], in_w=shape[2], kh=kh, kw=kw,
                  stride=op.stride, pad=tuple(op.pad), conv_h=conv_h, conv_w=conv_w, pool=tuple(op.pool),
                  out_h=out[1], out_w=out[2], relu=bool(op.relu), n2=int(op.n2), q_in=int(op.q_in),
                  q_out=int(op.q_out), sh=_shift(op), acc_bits=int(bits), cb_in=cb_in, cb_out=nb * k,
                  act=int(op.act), group=op.name, full_h=out[1], full_w=out[2], **epi)
    if grouping is not None:
        L.grp, L.cb_in, L.groups = grouping[0], grouping[1], op.groups
        L.mode_reason = f"grouped: {op.groups} groups, {grouping[1]} input blocks per output block"
    if op.res:
        if op.pools:
            raise CompileError(f"{where}: a residual Add and a max-pool in one layer are not supported")
        L.res, L.res_q = True, int(res_q)
        if not 0 <= L.res_sh_hw <= RES_SH_MAX:
            raise CompileError(f"{where}: the residual enters the accumulator shifted by q_in - n2 - res_q = "
                               f"{L.res_sh_hw}, outside the hardware's [0, {RES_SH_MAX}] (its exponent {res_q} is "
                               f"too far from the accumulator's {L.q_in - L.n2})")
    _check_plan(L, where, c)
    mode = named_modes.get(op.name, default_mode)
    reason = _winograd_check(L, c, bits, bias)
    if mode == "winograd" and op.name in named_modes and reason:
        raise CompileError(f"{where}: cannot run as Winograd: {reason}")
    grouped = f"{L.mode_reason}; " if L.mode_reason else ""
    if op.groups > 1 and grouping is None:
        grouped = f"dense: {op.groups} groups that do not align with the m = {c.m}, vc = {c.vc} blocks; "
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
    L.mode_reason = grouped + L.mode_reason
    return [(L, codes, bias, slopes)]


def _deconv_plans(op, shape, cb_in, c, deconv, where):
    """Plans of a ConvTranspose (ARITHMETIC §1): one NZP plan (zero-inserted input read by the
    engine, flipped kernel, §1.3), or one plan per TDC phase (§1.4; structural zero taps dropped;
    outputs written interleaved, §5), in Winograd form where the phase allows (§3: F(2×2,3×3) on
    the zero-filled 3×3 sub-kernel, or a 2×2 sub-kernel extended by a leading zero row and column;
    the structurally zero transformed positions are skipped).

    ``deconv="auto"`` takes the TDC phases (each direct or Winograd, whichever the cycle model
    says is faster) and falls back to NZP when a phase cannot be mapped; ``tdc``, ``winograd``
    and ``nzp`` are that form or a :class:`CompileError` with the reason.
    """
    if op.pools:
        raise CompileError(f"{where}: max-pool after a transposed convolution is not supported")
    if deconv == "nzp":
        return _nzp_plans(op, shape, cb_in, c, where)
    try:
        return _tdc_plans(op, shape, cb_in, c, deconv, where)
    except CompileError as tdc_error:
        if deconv != "auto":
            raise
        try:
            return _nzp_plans(op, shape, cb_in, c, where)
        except CompileError as nzp_error:
            raise CompileError(f"{where}: maps in no deconvolution form: TDC: {_reason(tdc_error, where)}; NZP: "
                               f"{_reason(nzp_error, where)}") from None


def _reason(e, where):
    """The message of ``e`` without its leading ``where: ``."""
    msg = str(e)
    return msg[len(where) + 2:] if msg.startswith(f"{where}: ") else msg


def _deconv_common(op, shape, cb_in, c, where):
    """``((S, P, OP), bias, slopes, common)`` shared by a transposed convolution's plans:
    :meth:`ConvOp.deconv_geometry`, the integer biases and slope codes, and the LayerPlan fields
    every form has (the whole output map ``full_h × full_w``).

    :raises CompileError: a stride beyond the descriptor, an empty output, a bias beyond 32 bits.
    """
    S, P, OP = op.deconv_geometry()
    _check_deconv_stride(where, S)
    ci, co = op.codes.shape[:2]
    _, Ho, Wo = op.out_shape(shape)
    if Ho < 1 or Wo < 1:
        raise CompileError(f"{where}: gives an empty output on a {shape[1]}x{shape[2]} input")
    bias = _bias_int(op, where)
    epi, slopes = _epilogue_fields(op, where)
    nb = -(-co // c.m)
    common = dict(cin=ci, cout=co, in_h=shape[1], in_w=shape[2], stride=1, pool=POOL_NONE, relu=bool(op.relu),
                  n2=int(op.n2), q_in=int(op.q_in), q_out=int(op.q_out), sh=_shift(op), cb_in=cb_in,
                  cb_out=nb * (c.m // c.vc), act=int(op.act), group=op.name, full_h=Ho, full_w=Wo, **epi)
    return (S, P, OP), bias, slopes, common


def _nzp_plans(op, shape, cb_in, c, where):
    """The NZP plan (ARITHMETIC §1.3): the engine reads the input as if zero-inserted by ``S``
    (a power of two: the descriptor's ``dil`` is a shift) and pads it by ``K − 1 − P`` (≥ 0)."""
    (S, (py_, px_), (opy, opx)), bias, slopes, common = _deconv_common(op, shape, cb_in, c, where)
    ci, co, K_h, K_w = op.codes.shape
    if isinstance(S, tuple):
        raise CompileError(f"{where}: the NZP form needs equal strides (one zero insertion for both axes), "
                           f"not {S[0]}x{S[1]}")
    if not (_pow2(S) and S <= 128):
        raise CompileError(f"{where}: the NZP form needs a power-of-two stride (≤ 128), not {S}")
    pad = (K_h - 1 - py_, K_h - 1 - py_ + opy, K_w - 1 - px_, K_w - 1 - px_ + opx)
    if pad[0] < 0 or pad[2] < 0:
        raise CompileError(f"{where}: the NZP form needs a padding P ≤ K − 1 (kernel {K_h}x{K_w}, padding "
                           f"{py_}, {px_}): a negative top/left padding ({pad[0]}, {pad[2]}) cannot be mapped")
    codes = np.ascontiguousarray(op.codes.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])
    bits = acc_bits(ci * K_h * K_w, DE, np.abs(bias).max(initial=0))
    if bits > c.acc_width:
        raise CompileError(f"{where}: the accumulator could overflow ({bits} bits needed, {c.acc_width} present)")
    Ho, Wo = common["full_h"], common["full_w"]
    L = LayerPlan(name=op.name, op="deconv_nzp", kh=K_h, kw=K_w, pad=pad, conv_h=Ho, conv_w=Wo,
                  out_h=Ho, out_w=Wo, acc_bits=int(bits), dil=S, mode_reason="nzp: zero insertion", **common)
    _check_plan(L, where, c)
    return [(L, codes, bias, slopes)]


def _cropped(pad, H, W):
    """``(crop, pad)`` of a phase whose padded input starts inside the input (a negative top or left
    offset, ARITHMETIC §1.4): those rows/columns are skipped (:attr:`LayerPlan.crop`) and the
    padding made 0; ``crop`` is ``None`` if nothing of the input is read."""
    t, b, l, r = pad
    crop = (max(0, -t), max(0, -l))
    if crop[0] >= H or crop[1] >= W:
        return None, pad
    return crop, (max(0, t), b, max(0, l), r)


def _tdc_plans(op, shape, cb_in, c, deconv, where):
    """One plan per TDC phase with outputs (ARITHMETIC §1.4): a stride-1 conv of the input
    (cropped where the phase's first tap lies inside it) with the phase's taps; a phase without
    taps (K < S) or that reads no input row or column gives ``act(bias)``: a 1×1 plan of zero
    weights."""
    from ...sim.deconv import tdc_phases, tdc_subkernels, winograd_u_mask
    (S, (py_, px_), (opy, opx)), bias, slopes, common = _deconv_common(op, shape, cb_in, c, where)
    ci, co, K_h, K_w = op.codes.shape
    _, H, W = shape
    sy, sx = op.strides
    plans = []
    sub = tdc_subkernels(op.codes, S)
    for ph in tdc_phases((K_h, K_w), S, (py_, px_), (opy, opx), (H, W)):
        if 0 in ph.n_out:
            continue
        f, _ = sub[ph.r]
        kcy, kcx = f.shape[2:]
        name = f"{op.name}/phase{ph.phi[0]}{ph.phi[1]}"
        pw = f"layer '{name}' (ConvTranspose phase)"
        geo = dict(name=name, op="deconv_phase", conv_h=ph.n_out[0], conv_w=ph.n_out[1], out_h=ph.n_out[0],
                   out_w=ph.n_out[1], phase=(ph.phi[0], ph.phi[1], sy, sx), **common)
        t, b, l, r = ph.pad
        dy, dx = kcy - ph.y.n, kcx - ph.x.n
        crop, pad = _cropped((t - dy, b, l - dx, r), H, W)
        if ph.y.n == 0 or ph.x.n == 0 or crop is None:
            bits = acc_bits(1, DE, np.abs(bias).max(initial=0))
            why = "no taps (kernel smaller than the stride)" if ph.y.n == 0 or ph.x.n == 0 else "no input read"
            L = LayerPlan(kh=1, kw=1, pad=(0, ph.n_out[0] - H, 0, ph.n_out[1] - W), acc_bits=int(bits),
                          mode_reason=f"tdc: bias only, {why}", **geo)
            _check_plan(L, pw, c)
            plans.append((L, np.zeros((co, ci, 1, 1), np.uint8), bias, slopes))
            continue
        bits = acc_bits(ci * ph.y.n * ph.x.n, DE, np.abs(bias).max(initial=0))
        if bits > c.acc_width:
            raise CompileError(f"{pw}: the accumulator could overflow ({bits} bits needed, {c.acc_width} present)")
        wino = None
        if deconv in ("winograd", "auto") and kcy in (2, 3) and kcx in (2, 3):
            ey, ex = 3 - kcy, 3 - kcx                   # leading zero rows / columns added
            f3 = np.zeros((co, ci, 3, 3), np.uint8)
            f3[:, :, ey:, ex:] = f
            my = [False] * ey + [tp is not None for tp in ph.y.taps]
            mx = [False] * ex + [tp is not None for tp in ph.x.taps]
            um = [winograd_u_mask("F2x2_3x3", mk) for mk in (my, mx)]
            wcrop, wpad = _cropped((t + ey, b, l + ex, r), H, W)
            Lw = LayerPlan(kh=3, kw=3, pad=wpad, crop=wcrop or (0, 0), acc_bits=int(bits), winograd=True,
                           wmask=tuple(int(sum(1 << i for i, v in enumerate(u) if v)) for u in um),
                           mode_reason=f"winograd-tdc: {int(um[0].sum()) * int(um[1].sum())} of 16 "
                                       "transformed positions", **geo)
            reason = _winograd_check(Lw, c, bits, bias)
            if not reason and wcrop is not None:
                Lw.acc_bits = int(bits + 2)
                wino = (Lw, f3, bias * 4, slopes)
        Ld = LayerPlan(kh=ph.y.n, kw=ph.x.n, pad=pad, crop=crop, acc_bits=int(bits),
                       mode_reason="tdc: structural zero taps dropped", **geo)
        direct = (Ld, np.ascontiguousarray(f[:, :, dy:, dx:]), bias, slopes)
        if wino is not None and deconv == "auto":
            if layer_cycles(wino[0], c) >= layer_cycles(Ld, c):
                wino = None
        if wino is None and deconv == "winograd":
            Ld.mode_reason = "tdc: Winograd needs 2x2 or 3x3 sub-kernels that fit the engine"
        pick = wino if wino is not None else direct
        _check_plan(pick[0], pw, c)
        plans.append(pick)
    return plans




def physical_channels(g, t, c):
    """Where the channels of tensor ``t`` are in its pixels: ``None`` for a dense map (channel
    ``i`` at lane ``i``); for a Concat's output the int array (C,) of the lanes (``word·vc +
    lane``) of every channel: branch ``k``'s channels from its first word (``concat_offsets``),
    so a branch whose channels are not a multiple of its ``cb·vc`` leaves zero lanes (gaps)."""
    p = g.producer(t)
    if p is None or p.op != "Concat":
        return None
    offs = concat_offsets(g, t, c)
    return np.concatenate([offs[b] * c.vc + np.arange(chw(g.tensors[b].shape)[0]) for b in p.inputs])


def _program_names(g):
    """The program's name of every tensor: a graph output's name for an output tensor, else the
    tensor's own name.

    :raises CompileError: if one tensor is two graph outputs, or two names collide.
    """
    names = {t: t for t in g.tensors}
    for o in g.outputs:
        if sum(x.tensor == o.tensor for x in g.outputs) > 1:
            both = [x.name for x in g.outputs if x.tensor == o.tensor]
            raise CompileError(f"graph outputs {', '.join(repr(n) for n in both)} are the same tensor '{o.tensor}'; "
                               "not supported")
        names[o.tensor] = o.name
    if len(set(names.values())) != len(names):
        dup = sorted({v for v in names.values() if list(names.values()).count(v) > 1})
        raise CompileError(f"tensor name(s) {', '.join(dup)} are used twice (a graph output is named like another "
                           "tensor)")
    return names


def _check_layers_only(g):
    for n in g.nodes:
        if n.op == "Concat":
            continue
        if n.conv is None:
            raise CompileError(f"{n.where}: not supported by the engine here (the passes fuse or fold it only "
                               "into the layer before it)")
        if n.conv.codes is None or n.conv.q_in is None or n.conv.q_out is None:
            raise CompileError(f"{n.layer}: not quantized (run inq and calibrate first)")


def lower(graph: Graph, config, winograd="auto", deconv="auto", stream_weights=False) -> Program:
    """Integer plans, allocation and device images for a quantized graph of layers.

    :param graph: compute nodes only, INQ codes and feature exponents set (``inq``, ``calibrate``);
        feature-memory addresses from :func:`~nibble.host.passes.allocate.allocate` (run here if
        missing).
    :param config: the :class:`~nibble.hw.config.EngineConfig`.
    :param winograd: convolution modes (:func:`parse_modes`). A Winograd layer stores ``4·b_int``
        as its biases and the descriptor carries ``sh + 2`` (ARITHMETIC §2.3); its weights are
        the same 4-bit codes as in direct mode (the engine computes ``U = G₂ g G₂ᵀ`` exactly
        while loading, the same integers as :func:`nibble.sim.winograd.weight_transform`).
        Winograd is eligible with no max-pool or the 2×2 stride-2 unpadded one.
    :param deconv: transposed convolutions as ``tdc`` (one stride-1 descriptor per output phase,
        structural zeros dropped), ``nzp`` (zero insertion, the baseline), ``winograd``
        (Winograd-TDC where a phase allows, else TDC) or ``auto`` (per phase, the faster of TDC and
        Winograd-TDC by :func:`layer_cycles`).
    :param stream_weights: the weights stay in external memory and are streamed plan by plan
        (:attr:`Program.stream_weights`): the total may exceed the weight memory, each plan must
        fit half of it.
    :returns: :class:`Program` with one :class:`TensorSpec` per graph input and output (outputs
        with their ``flatten`` and host ``tail``).
    :raises CompileError: naming the node or layer: a node that is not a layer, an unknown mode or
        layer named in the modes, input channels that do not match, a bias that is not finite or
        needs more than 32 bits, an accumulator that could overflow, descriptor fields, filter
        cache or shift out of range, a PReLU slope out of range, a layer named for Winograd that
        cannot run as Winograd, a feature, weight or parameter memory that is too small (by how
        much).
    """
    c = config
    g = graph
    modes = parse_modes(winograd)
    if deconv not in DECONV_MODES:
        raise CompileError(f"deconvolution mode '{deconv}' is not one of {', '.join(DECONV_MODES)}")
    if not g.compute_nodes():
        raise CompileError("the model has no layers")
    _check_layers_only(g)
    unknown = set(modes[1]) - {n.name for n in g.nodes}
    if unknown:
        raise CompileError(f"convolution mode given for unknown layer(s): {', '.join(sorted(unknown))} "
                           f"(layers: {', '.join(n.name for n in g.nodes)})")
    pname = _program_names(g)
    groups = []                  # per node: [(LayerPlan, codes, bias, slopes)]
    for n in g.nodes:
        if n.op == "Concat":
            continue
        op, where = n.conv, n.layer
        shape = chw(g.tensors[n.inputs[0]].shape)
        ci = op.codes.shape[0] if op.kind == "ConvTranspose" else op.codes.shape[1]
        if ci != shape[0]:
            raise CompileError(f"{where}: expects {ci} input channels, gets {shape[0]}")
        _bias_int(op, where)
        cb_in = tensor_cb(g, n.inputs[0], c)
        phys = physical_channels(g, n.inputs[0], c)
        if phys is not None:              # a concatenated map: filters scattered to its channel words
            if op.kind == "ConvTranspose":
                raise CompileError(f"{where}: a transposed convolution of a concatenated map is not supported")
            scattered = np.zeros((op.codes.shape[0], cb_in * c.vc) + op.codes.shape[2:], np.uint8)
            scattered[:, phys] = op.codes
            groups_ok = np.array_equal(phys, np.arange(len(phys)))
            op = dataclasses.replace(op, codes=scattered, groups=op.groups if groups_ok else 1)
            shape = (cb_in * c.vc, *shape[1:])
        res_q = g.tensors[n.inputs[1]].q if op.res else None
        if op.kind == "ConvTranspose":
            if op.res:
                raise CompileError(f"{where}: a residual Add after a transposed convolution is not supported")
            plans = _deconv_plans(op, shape, cb_in, c, deconv, where)
        else:
            plans = _conv_plans(op, shape, cb_in, c, modes, where, res_q)
        if op.dn2 is not None:               # per-channel weight exponents: shift sh − dn2[co]
            _per_channel_shifts(op, plans, where)
        L0 = plans[0][0]
        if (L0.cout, L0.full_h, L0.full_w) != chw(g.tensors[n.outputs[0]].shape):
            raise CompileError(f"{where}: its output {(L0.cout, L0.full_h, L0.full_w)} is not the shape "
                               f"{chw(g.tensors[n.outputs[0]].shape)} of the tensor '{n.outputs[0]}'")
        groups.append((n, plans))
    if any(g.tensors[t].base is None for t in g.tensors):
        g = allocate(g, c)
    concat_of = {b: m.outputs[0] for m in g.nodes if m.op == "Concat" for b in m.inputs}
    for n, plans in groups:
        src, dst = g.tensors[n.inputs[0]], g.tensors[n.outputs[0]]
        for L, *_ in plans:
            L.src, L.dst = pname[src.name], pname[dst.name]
            L.in_base, L.map_base = src.base, dst.base
            if L.grp:
                L.in_row, L.in_pix = src.row, src.pix
            if L.res:
                r = g.tensors[n.inputs[1]]
                if (r.row, r.pix, r.cb) != (L.out_w * L.cb_out, L.cb_out, L.cb_out):
                    raise CompileError(f"{n.layer}: its residual '{r.name}' ({r.cb} words per pixel, pitch {r.pix}) "
                                       f"is not laid out as its output ({L.cb_out} words per pixel)")
                L.res_src, L.res_base = pname[r.name], r.base
            if dst.name in concat_of:         # a Concat branch: its words of every pixel of the map
                cat = g.tensors[concat_of[dst.name]]
                if L.phase:
                    raise CompileError(f"{n.layer}: a transposed convolution as a Concat branch is not supported")
                L.dst, L.map_base = pname[cat.name], cat.base
                L.dst_off, L.dst_pix = dst.base - cat.base, cat.pix
                L.out_base, L.out_row, L.out_pix = dst.base, cat.row, cat.pix
            elif L.phase:
                py, px, sy, sx = L.phase
                L.out_base = dst.base + (py * L.full_w + px) * L.cb_out
                L.out_row, L.out_pix = sy * L.full_w * L.cb_out, sx * L.cb_out
            else:
                L.out_base = dst.base
    # weight memory and parameter memory (sizes checked before the images are built)
    w_total = p_total = 0
    for n, plans in groups:
        words = [L.n_coblk(c.m) * c.m * L.kh * L.kw * L.cb_in for L, *_ in plans]
        w_total += sum(words)
        err = weight_space_error(n.layer, words, w_total, c, stream_weights)
        if err:
            raise err
        need = sum(_param_words(L, c) for L, *_ in plans)
        p_total += need
        if p_total > c.param_depth:
            raise _memory_error(n.layer, "descriptors and biases", need, p_total, c.param_depth)
    layers, images = [], []
    for n, plans in groups:
        for L, codes, bias, slopes in plans:
            layers.append(L)
            images.append((codes, bias, slopes, n.conv.dn2))
    wblobs, w_ptr = [], 0
    p_ptr = DESC_WORDS * len(layers)
    for (codes, _, slopes, dn2), L in zip(images, layers):
        L.w_base = w_ptr
        blob = weight_words(codes, c.m, c.vc, L.cb_in)
        wblobs.append(blob)
        w_ptr += len(blob) // (c.vc // 4)
        L.bias_base = p_ptr
        p_ptr += L.n_coblk(c.m) * c.m
        if slopes is not None:
            L.slope_base = p_ptr
            p_ptr += L.n_coblk(c.m) * c.m
        if L.ch_sh:
            L.shift_base = p_ptr
            p_ptr += L.n_coblk(c.m) * c.m
    assert w_ptr == w_total and p_ptr == p_total
    params = np.zeros(p_ptr, np.uint32)
    for i, (L, (_, bias, slopes, dn2)) in enumerate(zip(layers, images)):
        try:
            params[DESC_WORDS * i:DESC_WORDS * (i + 1)] = L.descriptor(c, last=i == len(layers) - 1)
        except ValueError as e:
            raise CompileError(f"layer '{L.name}': {e}") from None
        params[L.bias_base:L.bias_base + L.cout] = bias.astype(np.int32).view(np.uint32)
        if slopes is not None:
            params[L.slope_base:L.slope_base + L.cout] = slopes.astype(np.int32).view(np.uint32)
        if L.ch_sh:
            params[L.shift_base:L.shift_base + L.cout] = np.asarray(dn2, np.uint32)
    inputs = [TensorSpec(name, chw(g.tensors[name].shape), int(g.tensors[name].q), int(g.tensors[name].base),
                         fold=tuple(int(v) for v in g.tensors[name].fold)) for name in g.inputs]
    outputs = []
    for o in g.outputs:
        t = g.tensors[o.tensor]
        outputs.append(TensorSpec(o.name, chw(t.shape), int(t.q), int(t.base), row=int(t.row), pix=int(t.pix),
                                  flatten=bool(o.flatten or len(t.shape) == 1), tail=tuple(o.tail)))
    return Program(config=c, layers=layers, params=params, weights=np.concatenate(wblobs).astype(np.uint16),
                   inputs=inputs, outputs=outputs, stream_weights=bool(stream_weights))


def _param_words(L, c):
    """Parameter-memory words of one plan: its descriptor, biases, slope codes and shift offsets."""
    return DESC_WORDS + L.n_coblk(c.m) * c.m * L.param_arrays


def _per_channel_shifts(op, plans, where):
    """Mark ``op``'s plans ``ch_sh`` (per-channel weight exponents ``op.dn2``), note it in their
    ``mode_reason``.

    :raises CompileError: a per-channel shift ``sh − dn2[co]`` below ``SH_MIN``, or a residual Add.
    """
    dmax = int(np.max(op.dn2))
    for L, *_ in plans:
        if L.res:
            raise CompileError(f"{where}: per-channel weight exponents with a fused residual Add are not supported")
        if L.sh_hw - dmax < SH_MIN:
            raise CompileError(f"{where}: its per-channel shifts reach {L.sh_hw - dmax}, below the output stage's "
                               f"{SH_MIN} (weight exponents {dmax} apart)")
        L.ch_sh = True
        snr = f" (weight SNR {op.wsnr[0]:.1f} → {op.wsnr[1]:.1f} dB)" if op.wsnr else ""
        L.mode_reason = f"{L.mode_reason}; per-channel n2{snr}" if L.mode_reason else f"per-channel n2{snr}"


def graph_from_chain(ops, in_shape, q_input=None, in_name="input", out_name="output"):
    """A chain of layers (``list[ConvOp]``) as a :class:`~nibble.host.graph.Graph`: input
    ``in_name`` of shape ``in_shape`` (C, H, W) with exponent ``q_input``, one compute node per
    layer, the last one's output the graph output ``out_name`` (flattened for a Gemm).

    :raises CompileError: for an empty chain.
    """
    if not ops:
        raise CompileError("the model has no layers")
    g = Graph()
    g.add_input(in_name, tuple(in_shape)).q = q_input
    prev, shape = in_name, tuple(in_shape)
    for i, op in enumerate(ops):
        out = out_name if i == len(ops) - 1 else f"{op.name}:out"
        shape = op.out_shape(chw(shape))
        g.add_node(Node(name=op.name, op=op.kind, inputs=[prev], outputs=[out], conv=dataclasses.replace(op)),
                   [shape])
        g.tensors[out].q = op.q_out
        prev = out
    g.add_output(out_name, prev)
    g.outputs[0].flatten = ops[-1].kind == "Gemm"
    return g


def plan_program(ops, in_shape, q_input, config, in_name="input", out_name="output", winograd="auto",
                 deconv="auto", stream_weights=False):
    """:func:`lower` of a chain of quantized layers (INQ codes and exponents set), input shape
    ``in_shape`` (C, H, W) with exponent ``q_input`` (see :func:`graph_from_chain`).

    :raises CompileError: as :func:`lower`, and naming the layer whose input channels do not
        match the layer before it.
    """
    if not ops:
        raise CompileError("the model has no layers")
    shape = tuple(in_shape)
    for op in ops:
        ci = op.w.shape[0] if op.kind == "ConvTranspose" else op.w.shape[1]
        if op.codes is not None:
            ci = op.codes.shape[0] if op.kind == "ConvTranspose" else op.codes.shape[1]
        if ci != shape[0]:
            raise CompileError(f"layer '{op.name}' ({op.kind}): expects {ci} input channels, gets {shape[0]}")
        shape = op.out_shape(shape)
    return lower(graph_from_chain(ops, in_shape, q_input, in_name, out_name), config, winograd, deconv,
                 stream_weights)
