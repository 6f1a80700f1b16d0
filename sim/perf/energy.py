"""Event counts of the engine's schedule and an energy estimate per descriptor, per layer and
per image.

Events of one plan (:func:`plan_events`), counted from the loop nest the scheduler runs
(``hw/engine/scheduler.py``; the beats are :func:`nibble.host.passes.lower.layer_beats`, which
the RTL's ``beats`` counter checks exactly):

* ``sac``: shift-accumulates of the PE array, ``m·vc`` per output pixel of a direct beat (every
  lane of every PE, padding and zero codes included: the array does not skip them; a dead pixel
  lane of a row's last group, ``EngineConfig.vp``, is not counted);
* ``mult``: multiplications of the Winograd multiplier lanes, ``m·vc`` per Winograd beat;
* ``filter_reads``: filter-cache words (``vc`` 4-bit codes) read, one per PE per beat (shared by
  the beat's ``vp`` pixel lanes);
* ``feature_reads``: feature-memory words (``vc`` int8) read: one per beat with its input inside
  the map (padding, inserted zeros and pool positions outside the conv output read nothing), or
  per input pixel of a Winograd tile the computed positions need (``supp(Bᵀ)`` of the masks) and
  inside the map, per input block and output block; residual reads: one word per output word;
* ``feature_writes``: output words (``cb_out`` per output pixel);
* ``weight_reads``: weight-memory words moved into the filter caches (``m·kh·kw·cb_in`` per
  output block; Winograd: the ``9·cb_in`` raw filter words per PE before the transform);
* ``param_reads``: 32-bit words of descriptor, biases and slopes.

Energy (:func:`plan_energy`): events × :data:`ENERGY_PJ`, 45 nm figures with their sources —
an estimate from published per-action energies, not a measurement (there is no board here).
DRAM traffic is not part of a plan (the maps and weights of a program without ``stream_weights``
or ``tile_features`` stay on chip); :data:`ENERGY_PJ` ``["dram_byte"]`` prices the bytes a run
with external memory moves.
"""
import math

__all__ = ["ENERGY_PJ", "ENERGY_SOURCES", "ENERGY_PARTS", "sram_pj", "plan_events", "program_events", "plan_energy",
           "program_energy"]

#: The components :func:`plan_energy` prices (pJ each, beside ``total``).
ENERGY_PARTS = ("pe_array", "filter_cache", "feature_memory", "weight_memory", "param_memory")

#: Per-action energies, pJ, 45 nm (see :data:`ENERGY_SOURCES`).
ENERGY_PJ = {
    # shift-accumulate lane: the int8 operand shifted by the 4-bit code's exponent (a 3-level
    # mux of ~12 bits, priced as an 8-bit add, 0.03 pJ) plus the accumulator's 32-bit add (0.1 pJ)
    "sac": 0.03 + 0.1,
    # Winograd multiplier lane: a ~16-bit × 16-bit integer multiply (array multipliers scale with
    # the square of the width: 0.2 pJ · (16/8)² = 0.8 pJ) plus the 32-bit add (0.1 pJ)
    "mult": 0.2 * 4 + 0.1,
    # external DDR3: 1.3–2.6 nJ per 64-bit access, the low end (1.3 nJ / 8 bytes)
    "dram_byte": 1300 / 8,
}

#: Where every figure of :data:`ENERGY_PJ` and :func:`sram_pj` comes from.
ENERGY_SOURCES = {
    "arithmetic": "M. Horowitz, 'Computing's energy problem (and what we can do about it)', ISSCC 2014, "
                  "Fig. 1.1.9 (45 nm, 0.9 V): 8-bit add 0.03 pJ, 32-bit add 0.1 pJ, 8-bit multiply 0.2 pJ, "
                  "32-bit multiply 3.1 pJ",
    "sram": "ibid.: 64-bit SRAM read 10 pJ (8 KB), 20 pJ (32 KB), 100 pJ (1 MB): sram_pj interpolates "
            "10 pJ · sqrt(size / 8 KB) per 64 bits (20 pJ at 32 KB, 113 pJ at 1 MB; extrapolated below "
            "8 KB, down to 1 KB)",
    "dram": "ibid.: DRAM 1.3–2.6 nJ per 64-bit access (the low end used)",
    "sac_derivation": "a SAC lane is a shifter and an adder, no multiplier: 0.13 pJ against 0.3 pJ for an "
                      "8-bit multiply-add and 0.9 pJ for the Winograd lanes' 16-bit multiply-add",
}


def sram_pj(size_bytes, width_bits):
    """Energy of one access of ``width_bits`` to an SRAM of ``size_bytes`` (pJ, 45 nm):
    ``10 pJ · sqrt(size / 8 KiB) · width / 64`` (:data:`ENERGY_SOURCES` ``["sram"]``); memories
    below 1 KiB are priced as 1 KiB."""
    return 10.0 * math.sqrt(max(size_bytes, 1024) / 8192) * width_bits / 64


def _axis_reads(dil, size, pad, taps, positions):
    """In-bounds (output position, tap) pairs along one axis: ``positions`` the conv-output
    coordinates the scheduler visits (``None`` for one outside the conv output: no read),
    ``taps`` the tap offsets; input coordinate ``v = o + tap − pad`` (stride folded into
    ``positions``), read if ``0 ≤ v``, ``v mod dil = 0`` and ``v / dil < size``."""
    count = 0
    for o in positions:
        if o is None:
            continue
        for t in taps:
            v = o + t - pad
            count += v >= 0 and v % dil == 0 and v // dil < size
    return count


def _feature_reads(L, config):
    """Feature-memory words the reader fetches for plan ``L`` (beats with ``inb``, as
    ``hw/engine/scheduler.py`` computes it: padding, inserted zeros and pool-window positions
    outside the conv output read nothing)."""
    nb = L.n_coblk(config.m)
    _, in_h, in_w = L.read_area
    t, _, l, _ = L.pad
    if L.winograd:
        from ...hw.engine.weight_transform import WINOGRAD_VARIANT
        from ...hw.winograd import WINOGRAD_VARIANTS
        bt = WINOGRAD_VARIANTS[WINOGRAD_VARIANT][1]

        def support(mask):          # the tile pixels supp(Bᵀ[ξ]) of the positions ξ in the mask
            return [j for j in range(4) if any(mask >> a & 1 and bt[a][j] for a in range(4))]
        rows, cols = support(L.wmask[0]), support(L.wmask[1])
        th, tw = (L.out_h, L.out_w) if L.pools else (-(-L.out_h // 2), -(-L.out_w // 2))
        ry = _axis_reads(1, in_h, t, rows, [2 * p for p in range(th)])
        rx = _axis_reads(1, in_w, l, cols, [2 * p for p in range(tw)])
        return nb * ry * rx * L.cb_in
    pkh, pkw, psy, psx, ppt, _, ppl, _ = L.pool

    def positions(n_pool, k, s, p, conv):
        out = []
        for q in range(n_pool):
            for d in range(k):
                o = q * s + d - p
                out.append(o * L.stride if 0 <= o < conv else None)
        return out
    ry = _axis_reads(L.dil, in_h, t, range(L.kh), positions(L.out_h, pkh, psy, ppt, L.conv_h))
    rx = _axis_reads(L.dil, in_w, l, range(L.kw), positions(L.out_w, pkw, psx, ppl, L.conv_w))
    return nb * ry * rx * L.cb_in


def plan_events(L, config):
    """Event counts of one plan (:class:`~nibble.host.program.LayerPlan`) on ``config``: a dict
    of ints (see the module docstring), plus ``beats``."""
    from ...host.passes.lower import _param_words, layer_beats
    c = config
    nb = L.n_coblk(c.m)
    beats = layer_beats(L, c)
    out_words = L.out_h * L.out_w * L.cb_out
    ev = {"beats": beats, "sac": 0, "mult": 0, "filter_reads": beats * c.m}
    if L.winograd:
        ev["mult"] = beats * c.m * c.vc
        ev["weight_reads"] = nb * c.m * 9 * L.cb_in
    else:
        # the live pixel lanes' SAC operations; the vp lanes share each beat's filter-cache read
        pixel_beats = nb * L.out_h * L.out_w * L.pool[0] * L.pool[1] * L.kh * L.kw * L.cb_in
        ev["sac"] = pixel_beats * c.m * c.vc
        ev["weight_reads"] = nb * c.m * L.kh * L.kw * L.cb_in
    ev["feature_reads"] = _feature_reads(L, c)
    if L.res:
        ev["feature_reads"] += out_words
    ev["feature_writes"] = out_words
    ev["param_reads"] = _param_words(L, c)
    return ev


def program_events(program):
    """:func:`plan_events` summed over the plans of ``program`` (one image): ``{event: int}``."""
    total = {}
    for L in program.layers:
        for k, v in plan_events(L, program.config).items():
            total[k] = total.get(k, 0) + v
    return total


def plan_energy(L, config):
    """Energy of one plan by component, pJ: ``{"pe_array", "filter_cache", "feature_memory",
    "weight_memory", "param_memory", "total"}`` (:func:`plan_events` × :data:`ENERGY_PJ` and
    :func:`sram_pj` at the configuration's memory sizes)."""
    c = config
    ev = plan_events(L, c)
    feat = sram_pj(c.feature_depth * c.vc, 8 * c.vc)
    e = {                           # the ENERGY_PARTS
        "pe_array": ev["sac"] * ENERGY_PJ["sac"] + ev["mult"] * ENERGY_PJ["mult"],
        "filter_cache": ev["filter_reads"] * sram_pj(c.filter_depth * c.vc // 2, 4 * c.vc),
        "feature_memory": (ev["feature_reads"] + ev["feature_writes"]) * feat,
        "weight_memory": ev["weight_reads"] * sram_pj(c.weight_depth * c.vc // 2, 4 * c.vc),
        "param_memory": ev["param_reads"] * sram_pj(c.param_depth * 4, 32),
    }
    assert tuple(e) == ENERGY_PARTS
    e["total"] = sum(e.values())
    return e


def program_energy(program, dram_bytes=0):
    """Energy of one image of ``program``, pJ: ``{"layers": [per-plan plan_energy], "dram",
    "total"}``; ``dram_bytes`` the external-memory bytes the run moved (0 on chip)."""
    layers = [dict(plan_energy(L, program.config), name=L.name) for L in program.layers]
    dram = dram_bytes * ENERGY_PJ["dram_byte"]
    return {"layers": layers, "dram": dram, "total": sum(x["total"] for x in layers) + dram}
