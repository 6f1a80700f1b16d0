"""A program in external memory: its DDR image and step lists (DESIGN §4, §6; memory system).

On a device with DDR (the PCIe device: the regmap has ``regions["ddr"]``), the host puts the
program and each input into DDR (XDMA h2c) and the accelerator does the rest from a step list
(:data:`nibble.hw.isa.STEP`): its DMA loads the images into the on-chip memories, the engine runs
the descriptors, the DMA stores the outputs back, and the host reads them from DDR (c2h) — the
data path of a board, where the XDMA endpoint writes DDR behind the MIG.

:func:`plan_ddr` lays the program out and writes two lists:

* the **load list**, run once by :meth:`nibble.host.driver.Device.load`: LOAD the parameter image
  (descriptors, biases, slopes) and, for a program whose weights fit, the weight image;
* the **run list**, run for every input: LOAD each input map into feature memory, RUN, STORE
  each output map, END.

**Weight streaming** (``Program.stream_weights``, TF2's double-buffered filter loading): the
weight image stays in DDR; descriptor ``i`` runs alone (its ``last`` flag set) with its weights
in half ``i mod 2`` of weight memory (its ``w_base`` rewritten), and the LOAD of descriptor
``i + 1``'s weights into the other half is issued right after RUN ``i``, so it proceeds while
``i`` computes; RUN ``i + 1`` waits for both (``wait``). The engine is then stalled on memory
only where a descriptor's weights take longer to load than the one before takes to compute —
the ``engine_cycles`` CSR measures it.

Layout in DDR, from the window's base, each part at a 4 KiB boundary: load list, run list,
parameter image, weight image (each streamed descriptor's weights at a beat boundary), inputs,
outputs. Feature maps in DDR have their on-chip layout (HWC, ``vc`` int8 a word, ``beat_words``
words a DDR beat), so a map is one chunk, starting at any word.

**Feature maps in DDR** (``Program.feature_space`` > 0: the compiler allocated the maps in a
space larger than feature memory): every tensor stays in DDR, at its word in that space, and each
descriptor runs in **parts** of output blocks (:func:`parts`) and **row bands** (:func:`bands`): the
largest runs of output rows whose input rows (the kernel's halo and the pooling window included),
output rows and residual rows fit feature memory together — all of it, or half of it
(**double-buffered**); :func:`tiling` chooses the part size and the depth with the fewest modelled
cycles. Per band: LOAD its input rows (one chunk: the rows are contiguous in HWC), LOAD its
residual rows, RUN a descriptor rewritten for the band (input view, top padding, conv and pooled
rows, on-chip addresses; its output and residual rows dense on chip), STORE its output rows (a
chunk per pixel for a Concat branch or a part, which writes only its channel words of each
pixel). A double-buffered band's copies run beside the engine: the bands alternate between the
two halves of feature memory, the next band's LOADs and the band before's STORE are issued after
each RUN, and only where a band's words on chip meet the band before's or its LOADs read what
that band stores does that STORE come first and wait (:func:`check_overlaps` checks every list).
The weights of each part go to half ``i mod 2`` of weight memory and its biases, slopes and band
descriptors to half ``i mod 2`` of parameter memory; both LOADs of part ``i + 1`` are issued after
the RUN of part ``i``'s first band. Transposed-convolution plans (TDC phases, zero insertion) are
not banded.
"""
import dataclasses
import math
from fractions import Fraction

import numpy as np

from ..hw.isa import (DESC_WORDS, STEP_BYTES, STEP_CHUNK, Region, StepOp, decode_descriptor, encode_descriptor,
                      encode_step)
from ..hw.mem.dma import BANKED, word_bytes, words_per_beat
from ..sim.ddr import DDR_BYTES_PER_CYCLE, DDR_READ_LATENCY
from .program import Program

__all__ = ["DdrPlan", "plan_ddr", "parts", "part_sizes", "bands", "band_view", "Band", "PART_ALIGN", "Tiling",
           "tiling", "tiling_cost", "check_overlaps", "param_words", "copy_cycles", "COPY_CYCLES",
           "CHUNK_LOAD_CYCLES", "CHUNK_STORE_CYCLES"]

CHUNK_STEPS = STEP_CHUNK
#: Alignment of each part of the DDR layout, bytes.
PART_ALIGN = 4096


@dataclasses.dataclass
class DdrPlan:
    """Where a program lives in DDR and the lists that run it (AXI byte addresses).

    ``image``: ``[(addr, bytes)]`` the host writes at load; ``load_list``, ``run_list``: byte
    addresses of the lists; ``inputs``: ``[(addr, nbytes)]`` per program input, ``outputs`` the
    same per output; ``run_steps``: the steps of the run list, END included (the ``steps`` CSR
    after a good run); ``runs``: ``{step index: descriptor index}`` of the RUN steps; ``end``: the
    first byte after the layout; ``run``: the run list's steps as ``(StepOp, fields)`` (the fields
    :func:`nibble.hw.isa.encode_step` takes), END included — what
    :func:`nibble.sim.perf.traffic.run_traffic` counts.
    """
    image: list
    load_list: int
    run_list: int
    inputs: list
    outputs: list
    run_steps: int
    load_steps: int
    runs: dict
    end: int
    run: list = dataclasses.field(default_factory=list)


def _align(n, a=PART_ALIGN):
    return -(-n // a) * a


def _list(steps):
    raw = b"".join(encode_step(op, **f) for op, f in steps)
    return raw + encode_step(StepOp.END) * (-len(steps) % CHUNK_STEPS)


@dataclasses.dataclass(frozen=True)
class Band:
    """One row band of a plan: input rows ``a … b − 1``, conv output rows ``r0 … r1 − 1``, stored
    (pooled) output rows ``q0 … q1 − 1``; ``words``: feature-memory words of its input, output
    and residual rows on chip (the output and residual rows dense there, ``cb_out`` words a
    pixel, also for a Concat branch or a part, whose pixels in DDR are wider)."""
    a: int
    b: int
    r0: int
    r1: int
    q0: int
    q1: int
    in_words: int
    out_words: int
    res_words: int


def _band(L, q0, q1):
    pkh, pkw, psy, psx, ppt, ppb, ppl, ppr = L.pool
    if L.pools:
        r0, r1 = max(0, q0 * psy - ppt), min(L.conv_h, (q1 - 1) * psy - ppt + pkh)
    else:
        r0, r1 = q0, q1
    s, pt = L.stride, L.pad[0]
    a, b = max(0, r0 * s - pt), min(L.in_h, (r1 - 1) * s - pt + L.kh)
    in_row, in_pix = L.in_view
    width = in_pix if L.grp else L.cb_in
    w_in = (b - a - 1) * in_row + (L.in_w - 1) * in_pix + width if b > a else 0
    w_out = (q1 - q0) * L.out_w * L.cb_out          # on chip dense, whatever the pitch in DDR
    return Band(a, b, r0, r1, q0, q1, w_in, w_out, w_out if L.res else 0)


def bands(L, depth):
    """The row bands of plan ``L`` for a feature memory of ``depth`` words: from the top, each
    the most output rows whose input, output and residual rows fit ``depth`` together (a
    Winograd plan without pooling: an even number of rows, so every band starts at a 2×2 tile).

    :returns: list of :class:`Band`, covering ``0 … out_h − 1``.
    :raises ValueError: naming the plan: a TDC phase or zero-insertion plan, an output view
        whose rows are not whole pixel rows, or one output row that does not fit.
    """
    if L.phase or L.dil != 1:
        raise ValueError(f"plan '{L.name}': a transposed convolution (TDC phase or zero insertion) with its maps "
                         "in external memory is not tiled into row bands")
    out_row, out_pix = L.out_view
    if out_row != L.out_w * out_pix:
        raise ValueError(f"plan '{L.name}': its output rows ({out_row} words) are not whole pixel rows "
                         f"({L.out_w} × {out_pix})")
    step = 2 if L.winograd and not L.pools else 1
    chunked = out_pix != L.cb_out       # stored a chunk per pixel: at most 65,535 pixels a band
    fits = lambda q0, q1: ((lambda bd: bd.in_words + bd.out_words + bd.res_words <= depth)(_band(L, q0, q1))
                           and not (chunked and (q1 - q0) * L.out_w >= 1 << 16))
    out, q = [], 0
    while q < L.out_h:
        lo, hi = 0, -(-(L.out_h - q) // step)         # bands of k·step rows: the largest k that fits
        while lo < hi:
            k = (lo + hi + 1) // 2
            if fits(q, min(L.out_h, q + k * step)):
                lo = k
            else:
                hi = k - 1
        if lo == 0:
            bd = _band(L, q, min(L.out_h, q + step))
            raise ValueError(f"plan '{L.name}': {step} output row(s) need {bd.in_words + bd.out_words + bd.res_words} "
                             f"words of feature memory (input {bd.in_words}, output {bd.out_words}, residual "
                             f"{bd.res_words}), it has {depth}")
        q1 = min(L.out_h, q + lo * step)
        out.append(_band(L, q, q1))
        q = q1
    return out


def part_sizes(L, config):
    """The output blocks per part that :func:`parts` may use for plan ``L``: every multiple of
    the plan's group (1 without groups) whose weights fit half of weight memory, largest first.

    :raises ValueError: naming the plan, when one output block (or group) alone exceeds half.
    """
    c = config
    half = c.weight_depth // 2
    per_block = c.m * L.kh * L.kw * L.cb_in
    n = L.n_coblk(c.m)
    unit = L.grp or 1
    fits = lambda k: -(-k * per_block // 2) * 2 <= half
    if not fits(unit):
        raise ValueError(f"plan '{L.name}': {unit} output block(s) of {c.m} channels need {unit * per_block} weight "
                         f"words, half of the weight memory has {half}")
    top = n if fits(n) else (half // per_block) // unit * unit
    return [k for k in range(top, 0, -unit) if fits(k)]


def parts(L, config, blocks=None):
    """Plan ``L`` as parts whose weights fit half of weight memory: ``[L]``, or views of ``L``
    computing consecutive runs of its output blocks (``m`` channels each; a grouped plan's parts
    are whole groups): ``cout``, ``cb_out``, the output, residual and input offsets, and the
    weight, bias and slope addresses of those blocks; the output and residual keep the pixel
    pitch of the whole map (each part writes its words of every pixel).

    :param blocks: output blocks per part (one of :func:`part_sizes`); default the largest.
    :raises ValueError: naming the plan, when one output block (or group) alone exceeds half.
    """
    c = config
    per_block = c.m * L.kh * L.kw * L.cb_in
    n = L.n_coblk(c.m)
    k = part_sizes(L, c)[0] if blocks is None else blocks
    if k >= n:
        return [L]
    out_row, out_pix = L.out_view
    in_row, in_pix = L.in_view
    words = c.m // c.vc
    out = []
    for b0 in range(0, n, k):
        b1 = min(n, b0 + k)
        off = b0 * words
        out.append(dataclasses.replace(
            L, name=f"{L.name}[{b0 * c.m}:{min(L.cout, b1 * c.m)}]", cout=min(L.cout, b1 * c.m) - b0 * c.m,
            cb_out=(b1 - b0) * words, out_base=L.out_base + off, out_row=out_row, out_pix=out_pix,
            map_base=L.map_base + off, dst_off=L.dst_off + off, dst_pix=out_pix,
            res_base=L.res_base + off if L.res else 0,
            in_base=L.in_base + (b0 // L.grp) * L.cb_in if L.grp else L.in_base, in_row=in_row, in_pix=in_pix,
            w_base=L.w_base + b0 * per_block, bias_base=L.bias_base + b0 * c.m,
            slope_base=L.slope_base + b0 * c.m if L.prelu else L.slope_base,
            shift_base=L.shift_base + b0 * c.m if L.ch_sh else L.shift_base))
    return out


def band_view(L, bd, base=0):
    """Plan ``L`` restricted to band ``bd`` on chip: its input rows at feature word ``base``, its
    output rows after them (dense: ``cb_out`` words a pixel), its residual rows after those (the
    same); the top padding, conv rows, pool top padding and stored rows of the band. Weights and
    parameters as ``L``'s."""
    pkh, pkw, psy, psx, ppt, ppb, ppl, ppr = L.pool
    in_row, in_pix = L.in_view
    in_h, conv_h, out_h = bd.b - bd.a, bd.r1 - bd.r0, bd.q1 - bd.q0
    pt = bd.a - (bd.r0 * L.stride - L.pad[0])
    # the bottom paddings that make exactly these rows (the engine implies them from the bounds)
    pb = (conv_h - 1) * L.stride + L.kh - in_h - pt
    pool = L.pool
    if L.pools:
        p_t = bd.r0 - (bd.q0 * psy - ppt)
        pool = (pkh, pkw, psy, psx, p_t, (out_h - 1) * psy + pkh - conv_h - p_t, ppl, ppr)
    return dataclasses.replace(
        L, in_base=base, in_h=in_h, in_row=in_row, in_pix=in_pix, pad=(pt, pb, L.pad[2], L.pad[3]),
        conv_h=conv_h, out_h=out_h, full_h=out_h, out_base=base + bd.in_words, map_base=base + bd.in_words,
        out_row=L.out_w * L.cb_out, out_pix=L.cb_out, pool=pool,
        res_base=base + bd.in_words + bd.out_words if L.res else 0)


#: Cycles a copy takes beside its words, in the tiling cost model: the DDR's read latency
#: (:data:`nibble.sim.ddr.DDR_READ_LATENCY`) and the step's fetch, check and issue.
COPY_CYCLES = DDR_READ_LATENCY + 10
#: Cycles per chunk of a copy a chunk per pixel (a Concat branch's or a part's rows), at least,
#: in the same model: a LOAD's chunks wait for the DDR's read latency, 4 bursts in flight
#: (:class:`nibble.hw.mem.axi_master.AXI4Master`); a STORE's take their address and data beats.
CHUNK_LOAD_CYCLES, CHUNK_STORE_CYCLES = -(-DDR_READ_LATENCY // 4), 2


@dataclasses.dataclass(frozen=True)
class Tiling:
    """How a plan runs with its maps in DDR (:func:`tiling`): ``parts``, ``[(part plan, [Band])]``
    in order; ``depth``, the feature-memory words one band may use — all of it (each band's
    copies wait for the band before), or half (**double-buffered**: a band's input LOAD and the
    band before's output STORE run beside the engine while it computes a band in the other
    half, ``double_buffered``); ``cost``, the modelled cycles (engine and copies)."""
    parts: list
    depth: int
    cost: int
    double_buffered: bool


def param_words(L, n_bands, config):
    """32-bit words of parameter memory a part's biases, slopes, per-channel shifts and ``n_bands``
    band descriptors take, padded to whole DDR beats."""
    c = config
    nb = L.n_coblk(c.m) * c.m
    n = nb * (1 + bool(L.prelu) + bool(L.ch_sh)) + DESC_WORDS * n_bands
    pw_beat = words_per_beat(c, Region.PARAM)
    return -(-n // pw_beat) * pw_beat


def copy_cycles(words, config, region=Region.FEATURE):
    """Modelled cycles of a copy of ``words`` words of ``region`` (one chunk): a beat a cycle for
    feature and weight memory, a word a cycle for parameter memory
    (:class:`nibble.hw.mem.dma.TileDMA`), at most the DDR's sustained bytes per cycle
    (:data:`nibble.sim.ddr.DDR_BYTES_PER_CYCLE`)."""
    per = words_per_beat(config, region) if region in BANKED else 1
    rate = min(Fraction(per), Fraction(DDR_BYTES_PER_CYCLE) / word_bytes(config, region))
    return math.ceil(words / rate)


def _copy_cycles(L, bd, config):
    """Modelled cycles of a band's copies (:func:`tiling`): its input rows in one chunk, its output
    and residual rows in one, or a chunk per pixel where the DDR's pixels are wider (each chunk
    its beats, one more where it does not start on a beat)."""
    pixels = (bd.q1 - bd.q0) * L.out_w
    B = config.beat_words
    if L.out_view[1] == L.cb_out:
        out, res = copy_cycles(bd.out_words, config), copy_cycles(bd.res_words, config)
    else:
        beats = -(-L.cb_out // B) + (B > 1)
        out = pixels * max(beats, CHUNK_STORE_CYCLES)
        res = pixels * max(beats, CHUNK_LOAD_CYCLES) if L.res else 0
    return copy_cycles(bd.in_words, config) + out + res + (2 + bool(L.res)) * COPY_CYCLES


def tiling_cost(pb, double_buffered, config):
    """Modelled cycles of a plan run as ``pb`` (``[(part plan, [Band])]``), see :func:`tiling`."""
    from .passes.lower import layer_cycles
    e = [layer_cycles(band_view(Lp, bd), config) for Lp, bl in pb for bd in bl]
    d = [_copy_cycles(Lp, bd, config) for Lp, bl in pb for bd in bl]
    return sum(map(max, e, d)) + d[0] if double_buffered else sum(e) + sum(d)


def tiling(L, config):
    """The parts and row bands plan ``L`` runs in with its maps in DDR: of every part size
    (:func:`part_sizes`) and band depth (all of feature memory, or half of it, double-buffered),
    the one with the fewest modelled cycles — per band the engine's (:func:`layer_cycles` of its
    :func:`band_view`) and the copies' (its input, residual and output words at one word per
    cycle, plus :data:`COPY_CYCLES` per copy; a chunk per pixel costs at least
    :data:`CHUNK_LOAD_CYCLES` or :data:`CHUNK_STORE_CYCLES`), added when the copies wait for the band before,
    their maximum when double-buffered (but for the first band's LOAD). More parts load the
    input again; fewer, larger parts need more bands, and each band loads the filters of every
    output block again. A candidate whose descriptors and biases exceed half of parameter
    memory is not taken.

    :returns: :class:`Tiling`.
    :raises ValueError: naming the plan, when no candidate can be banded (the error of the
        largest part at full depth) or split.
    """
    c = config
    best, first_err = None, None
    for k in part_sizes(L, c):
        ps = parts(L, c, k)
        for depth in (c.feature_depth, c.feature_depth // 2):
            try:
                pb = [(Lp, bands(Lp, depth)) for Lp in ps]
            except ValueError as e:
                first_err = first_err or e
                continue
            if any(param_words(Lp, len(bl), c) > c.param_depth // 2 for Lp, bl in pb):
                continue
            cost = tiling_cost(pb, depth < c.feature_depth, c)
            if best is None or cost < best.cost:
                best = Tiling(pb, depth, cost, depth < c.feature_depth)
    if best is None:
        raise first_err
    return best


def check_overlaps(run, footprints):
    """Check that no copy of a step list can run beside a RUN whose on-chip words it touches.

    A copy runs beside RUN ``r`` (the sequencer's rules, :mod:`nibble.hw.sequencer`) when it comes
    after ``r`` with no step with ``wait`` between them (itself included), or before it with no
    such step after it up to ``r``.

    :param run: the list, ``[(StepOp, fields)]``.
    :param footprints: ``{index of a RUN step: [(Region, first word, end word)]}``, the words of the
        on-chip memories that RUN reads or writes.
    :raises ValueError: naming both steps and the region.
    """
    def span(f):
        return f["mem_addr"], f["mem_addr"] + (f["count"] - 1) * f["mem_stride"] + f["words"]

    def clash(r, j):
        op, f = run[j]
        if op not in (StepOp.LOAD, StepOp.STORE):
            return
        lo, hi = span(f)
        for region, a, b in footprints[r]:
            if Region(f["region"]) == region and lo < b and a < hi:
                raise ValueError(f"step {j} ({op.name} of {region.name} words {lo}..{hi - 1}) can run beside "
                                 f"step {r} (RUN), which uses words {a}..{b - 1}")

    for r in footprints:
        j = r + 1
        while j < len(run) and not run[j][1].get("wait"):
            clash(r, j)
            j += 1
        j = r
        while j > 0 and not run[j][1].get("wait"):
            j -= 1
            clash(r, j)


def plan_ddr(program: Program, regmap) -> DdrPlan:
    """Lay ``program`` out in the DDR window of ``regmap`` and write its lists (module docstring).

    :raises ValueError: the regmap has no DDR window; the layout does not fit it; a map or image
        that cannot be copied in whole beats within its memory (naming it); with the maps in DDR,
        a plan that cannot be banded (:func:`bands`) or whose band descriptors and biases exceed
        half of the parameter memory.
    """
    if "ddr" not in regmap["regions"]:
        raise ValueError("the device has no external memory (its regmap has no 'ddr' region)")
    base, size, beat = _window(program, regmap)
    if program.feature_space:
        return _plan_tiled(program, base, size, beat)
    c = program.config
    vc = c.vc
    pw_beat = beat // 4                 # parameter words per beat
    ww_bytes = vc // 2                  # bytes per weight word (vc 4-bit codes)
    n_desc = len(program.layers)

    params = program.params.astype("<u4").copy()
    if program.stream_weights:
        half = c.weight_depth // 2
        for i in range(n_desc):
            at = program.desc_base + DESC_WORDS * i
            d = decode_descriptor(params[at:at + DESC_WORDS])
            d.pop("magic")
            d.update(w_base=(i % 2) * half, last=1)
            params[at:at + DESC_WORDS] = encode_descriptor(**d)
    n_params = -(-len(params) // pw_beat) * pw_beat
    if n_params > c.param_depth:
        raise ValueError(f"the parameter image ({len(params)} words) padded to whole DDR beats ({n_params}) "
                         f"exceeds the parameter memory ({c.param_depth} words)")
    params = np.concatenate([params, np.zeros(n_params - len(params), "<u4")])
    weights = program.weights.astype("<u2").tobytes()

    # sizes of the parts, then addresses
    wbytes_per = lambda L: L.n_coblk(c.m) * c.m * L.kh * L.kw * L.cb_in * ww_bytes
    if program.stream_weights:
        blobs, off = [], 0
        for L in program.layers:
            n = wbytes_per(L)
            blobs.append((off, weights[L.w_base * ww_bytes:L.w_base * ww_bytes + n]))
            off += _align(n, beat)
        w_image_bytes = off
    else:
        w_image_bytes = _align(len(weights), beat)
        if w_image_bytes // ww_bytes > c.weight_depth:
            raise ValueError(f"the weight image ({len(weights) // ww_bytes} words) padded to whole DDR beats "
                             f"exceeds the weight memory ({c.weight_depth} words)")
    in_bytes = [spec.words(vc) * vc for spec in program.inputs]
    out_bytes = [spec.words(vc) * vc for spec in program.outputs]
    n_run = len(program.inputs) + len(program.outputs) + 1 + (2 * n_desc if program.stream_weights else 1)
    list_bytes = lambda n: _align(n, CHUNK_STEPS) * STEP_BYTES

    at = base
    load_list = at
    at += _align(list_bytes(3))
    run_list = at
    at += _align(list_bytes(n_run))
    params_at = at
    at += _align(n_params * 4)
    weights_at = at
    at += _align(w_image_bytes)
    inputs = []
    for n in in_bytes:
        inputs.append((at, n))
        at += _align(n)
    outputs = []
    for n in out_bytes:
        outputs.append((at, n))
        at += _align(n)
    if at > base + size:
        raise ValueError(f"the program and its maps need {at - base} bytes of DDR, the window has {size}")

    copy = lambda op, region, mem_addr, words, ddr_addr, wait=0: (op, dict(
        region=region, mem_addr=mem_addr, count=1, words=words, mem_stride=0, ddr_addr=ddr_addr, ddr_stride=0,
        wait=wait))
    load = [copy(StepOp.LOAD, Region.PARAM, 0, n_params, params_at)]
    image = [(params_at, params.tobytes())]
    if program.stream_weights:
        image += [(weights_at + off, blob) for off, blob in blobs]
    else:
        load.append(copy(StepOp.LOAD, Region.WEIGHT, 0, w_image_bytes // ww_bytes, weights_at))
        image.append((weights_at, weights + bytes(w_image_bytes - len(weights))))
    load.append((StepOp.END, {}))

    run = []
    for spec, (addr, n) in zip(program.inputs, inputs):
        run.append(copy(StepOp.LOAD, Region.FEATURE, spec.base, n // vc, addr))
    runs = {}
    if program.stream_weights:
        half = c.weight_depth // 2
        words = [-(-wbytes_per(L) // beat) * beat // ww_bytes for L in program.layers]
        for i in range(n_desc):
            if words[i] > half:
                raise ValueError(f"descriptor {i} ('{program.layers[i].name}'): its weights padded to whole "
                                 f"DDR beats ({words[i]} words) exceed half of the weight memory ({half})")
        run.append(copy(StepOp.LOAD, Region.WEIGHT, 0, words[0], weights_at + blobs[0][0]))
        for i in range(n_desc):
            runs[len(run)] = i
            run.append((StepOp.RUN, dict(mem_addr=program.desc_base + DESC_WORDS * i, wait=1)))
            if i + 1 < n_desc:
                run.append(copy(StepOp.LOAD, Region.WEIGHT, ((i + 1) % 2) * half, words[i + 1],
                                weights_at + blobs[i + 1][0]))
    else:
        runs[len(run)] = 0
        run.append((StepOp.RUN, dict(mem_addr=program.desc_base, wait=1)))
    for spec, (addr, n) in zip(program.outputs, outputs):
        run.append(copy(StepOp.STORE, Region.FEATURE, spec.base, n // vc, addr, wait=1))
    run.append((StepOp.END, {}))
    assert len(run) == n_run
    image += [(load_list, _list(load)), (run_list, _list(run))]
    return DdrPlan(image=image, load_list=load_list, run_list=run_list, inputs=inputs, outputs=outputs,
                   run_steps=len(run), load_steps=len(load), runs=runs, end=at, run=run)


def _window(program, regmap):
    """``(base, bytes, beat bytes)`` of the regmap's DDR window, checked against the program."""
    ddr = regmap["regions"]["ddr"]
    beat = ddr["beat_bits"] // 8
    if beat != program.config.beat_bits // 8:
        raise ValueError(f"the device's DDR beat is {beat} bytes, the program's configuration has "
                         f"{program.config.beat_bits // 8} (8·vc·beat_words bits)")
    return ddr["base"], ddr["bytes"], beat


def _plan_tiled(program, base, size, beat):
    """:func:`plan_ddr` of a program whose feature maps live in DDR (module docstring)."""
    c = program.config
    vc = c.vc
    ww_bytes = vc // 2
    half_w, half_p = c.weight_depth // 2, c.param_depth // 2
    weights = program.weights.astype("<u2").tobytes()
    params = program.params.view("<u4") if program.params.dtype.itemsize == 4 else program.params.astype("<u4")

    # per part (a plan, or the output blocks of a plan whose weights exceed half of weight
    # memory): its bands, its parameter blob (biases, slopes, band descriptors), its weight blob
    plans = []
    half_f = c.feature_depth // 2
    chip = half_f                       # on-chip base of the band before (a double-buffered band takes the other half)
    for i, L in enumerate(program.layers):
        t = tiling(L, c)
        for Lp, bl in t.parts:
            j = len(plans)
            nb = Lp.n_coblk(c.m) * c.m
            slot = (j % 2) * half_p
            bias = params[Lp.bias_base:Lp.bias_base + nb]
            slopes = params[Lp.slope_base:Lp.slope_base + nb] if Lp.prelu else np.zeros(0, "<u4")
            shifts = params[Lp.shift_base:Lp.shift_base + nb] if Lp.ch_sh else np.zeros(0, "<u4")
            d0 = slot + nb + len(slopes) + len(shifts)
            n_words = param_words(Lp, len(bl), c)
            if n_words > half_p:
                raise ValueError(f"plan {i} ('{L.name}'): its {len(bl)} row bands' descriptors and its biases need "
                                 f"{n_words} words, half of the parameter memory has {half_p}")
            blob = np.zeros(n_words, "<u4")
            blob[:nb] = bias
            blob[nb:nb + len(slopes)] = slopes
            blob[nb + len(slopes):nb + len(slopes) + len(shifts)] = shifts
            w_n = Lp.n_coblk(c.m) * c.m * Lp.kh * Lp.kw * Lp.cb_in
            per_w = words_per_beat(c, Region.WEIGHT)
            w_words = -(-w_n // per_w) * per_w
            descs, bases = [], []
            for k, bd in enumerate(bl):
                chip = (half_f - chip if t.double_buffered else 0)
                Lb = dataclasses.replace(band_view(Lp, bd, chip), w_base=(j % 2) * half_w, bias_base=slot,
                                         slope_base=slot + nb if Lp.prelu else 0,
                                         shift_base=slot + nb + len(slopes) if Lp.ch_sh else 0)
                at = d0 - slot + DESC_WORDS * k
                blob[at:at + DESC_WORDS] = Lb.descriptor(c, last=True)
                descs.append(d0 + DESC_WORDS * k)
                bases.append(chip)
            wblob = weights[Lp.w_base * ww_bytes:(Lp.w_base + w_n) * ww_bytes]
            plans.append(dict(L=Lp, layer=i, bands=bl, bases=bases, slot=slot, pblob=blob, descs=descs,
                              wblob=wblob + bytes(w_words * ww_bytes - len(wblob)), w_words=w_words))

    n_run = 1 + sum(2 + len(p["bands"]) * (3 + p["L"].res) for p in plans)
    list_bytes = lambda n: -(-n // CHUNK_STEPS) * CHUNK_STEPS * STEP_BYTES
    at = base
    load_list = at
    at += _align(list_bytes(1))
    run_list = at
    at += _align(list_bytes(n_run))
    for p in plans:
        p["p_at"] = at
        at += _align(len(p["pblob"]) * 4, beat)
        p["w_at"] = at
        at += _align(len(p["wblob"]), beat)
    at = _align(at)
    feat_at = at
    at += _align(program.feature_space * vc)
    if at > base + size:
        raise ValueError(f"the program and its maps need {at - base} bytes of DDR, the window has {size}")
    fa = lambda word: feat_at + word * vc

    copy = lambda op, region, mem_addr, words, ddr_addr, count=1, mem_stride=0, ddr_stride=0, wait=0: (op, dict(
        region=region, mem_addr=mem_addr, count=count, words=words, mem_stride=mem_stride, ddr_addr=ddr_addr,
        ddr_stride=ddr_stride, wait=wait))
    prefetch = lambda i: [copy(StepOp.LOAD, Region.WEIGHT, (i % 2) * half_w, plans[i]["w_words"], plans[i]["w_at"]),
                          copy(StepOp.LOAD, Region.PARAM, plans[i]["slot"], len(plans[i]["pblob"]), plans[i]["p_at"])]
    # Per band: its LOADs, its RUN (waiting for them), then the STORE of the band before — which
    # runs beside this RUN in the other half of feature memory. Where the band's words on chip
    # meet the band before's, or its LOADs read DDR bytes that band stores, that STORE comes
    # first and waits for its RUN.
    def ddr_span(f):
        return f["ddr_addr"], f["ddr_addr"] + (f["count"] - 1) * f["ddr_stride"] + f["words"] * vc

    def waiting(step):
        return step[0], dict(step[1], wait=1)

    run, runs, feet = prefetch(0), {}, {}
    prev = None                                    # (store step, on-chip words) of the band not yet stored
    for i, p in enumerate(plans):
        L = p["L"]
        in_row, in_pix = L.in_view
        out_row, out_pix = L.out_view
        w_half = ((i % 2) * half_w, (i % 2) * half_w + p["w_words"])
        p_half = (p["slot"], p["slot"] + len(p["pblob"]))
        for k, (bd, b0) in enumerate(zip(p["bands"], p["bases"])):
            pixels = (bd.q1 - bd.q0) * L.out_w
            if out_pix != L.cb_out and pixels >= 1 << 16:
                raise ValueError(f"plan {i} ('{L.name}'): a band of {pixels} pixels of a Concat branch or part")

            def rows(op, on_chip, word):
                """The band's output-shaped rows at DDR word ``word``: one chunk, or one a pixel."""
                if out_pix == L.cb_out:            # a map of its own: its rows are one chunk
                    return copy(op, Region.FEATURE, on_chip, pixels * L.cb_out, fa(word))
                return copy(op, Region.FEATURE, on_chip, L.cb_out, fa(word), count=pixels, mem_stride=L.cb_out,
                            ddr_stride=out_pix * vc)
            loads = [copy(StepOp.LOAD, Region.FEATURE, b0, bd.in_words, fa(L.in_base + bd.a * in_row))]
            if L.res:
                loads.append(rows(StepOp.LOAD, b0 + bd.in_words + bd.out_words, L.res_base + bd.q0 * out_row))
            words = (b0, b0 + bd.in_words + bd.out_words + bd.res_words)
            if prev is not None:
                (_, sf), (a, b) = prev
                s_lo, s_hi = ddr_span(sf)
                if (words[0] < b and a < words[1]) or any(
                        lo < s_hi and s_lo < hi for lo, hi in (ddr_span(f) for _, f in loads)):
                    run.append(waiting(prev[0]))
                    prev = None
            run += loads
            runs[len(run)] = p["layer"]
            feet[len(run)] = [(Region.FEATURE, *words), (Region.WEIGHT, *w_half), (Region.PARAM, *p_half)]
            run.append((StepOp.RUN, dict(mem_addr=p["descs"][k], wait=1)))
            if k == 0 and i + 1 < len(plans):
                run += prefetch(i + 1)
            if prev is not None:
                run.append(prev[0])
            prev = (rows(StepOp.STORE, b0 + bd.in_words, L.out_base + bd.q0 * out_row), words)
    run.append(waiting(prev[0]))
    run.append((StepOp.END, {}))
    assert len(run) == n_run, (len(run), n_run)
    check_overlaps(run, feet)
    load = [(StepOp.END, {})]
    image = [(p["p_at"], p["pblob"].tobytes()) for p in plans] + [(p["w_at"], p["wblob"]) for p in plans]
    image += [(load_list, _list(load)), (run_list, _list(run))]
    inputs = [(fa(spec.base), spec.words(vc) * vc) for spec in program.inputs]
    outputs = [(fa(spec.base), spec.words(vc) * vc) for spec in program.outputs]
    return DdrPlan(image=image, load_list=load_list, run_list=run_list, inputs=inputs, outputs=outputs,
                   run_steps=len(run), load_steps=len(load), runs=runs, end=at, run=run)
