"""Timeloop input files of one descriptor as Nibble runs it (``nibble export-timeloop``).

Timeloop (Parashar et al., ISPASS 2019) with Accelergy (Wu et al., ICCAD 2019) evaluates a
layer's cycles and energy from three YAML files in its v0.3 format, the format of the fusion
seed's models (compstruct/fusion-timeloop-model, ``accelerator/*/arch.yaml`` and ``prob.yaml``):

* ``arch.yaml``: the engine of an ``EngineConfig`` as a storage hierarchy — ``DRAM`` (the DDR3
  SODIMM, 64-bit) → ``FeatureMemory`` (``feature_depth`` words of ``8·vc`` bits, int8 inputs and
  outputs) and ``WeightMemory`` (``weight_depth`` words of ``4·vc`` bits, 4-bit codes) →
  ``PE[0..m−1]``, each with its ``FilterCache`` (``filter_depth`` words of ``4·vc`` bits), its
  ``Accumulator`` (one ``acc_width``-bit output per pixel lane) and ``SAC[0..vc·vp−1]`` lanes
  (``vc`` per output-pixel lane, ``EngineConfig.vp``; ``intmac`` of 8 bits:
  Accelergy has no shift-accumulate class; nibble.sim.perf.energy prices a SAC lane at 0.13 pJ
  against an 8-bit multiply-add's 0.3 pJ);
* ``problem.yaml``: Timeloop's ``CNN-Layer`` (dimensions C, M, R, S, N, P, Q; R and P along the
  width, S and Q along the height) with the plan's channels padded to whole blocks as the
  engine computes them: ``C = cb_in·vc``, ``M = n_coblk·m``;
* ``mapping.yaml``: the scheduler's loop nest (``hw/engine/scheduler.py``): output blocks
  (``M / m``) in ``FeatureMemory``'s temporal loop, the ``m`` PEs spatial over M, each PE's
  filter held in its ``FilterCache`` over the output pixels (P/vp inner, Q outer), the ``vc``
  SAC lanes spatial over C and the ``vp`` pixel lanes over P, and the accumulation over input
  blocks, taps (kx, ky) in the ``Accumulator`` — so the product of all factors, Nibble's SAC
  operations, is ``layer_beats · m · vc · vp``. With ``vp > 1`` a plan whose output width is
  not a multiple of ``vp`` is refused (a row's last group has dead lanes).

Differences a comparison meets: the CNN-Layer has no padding (Timeloop reads an input of
``(P−1)·stride + R`` columns; the engine skips the reads of padded positions but its lanes still
compute them), and Nibble's filter loads and descriptor fetch are not in the mapping. Plans
Timeloop's CNN-Layer cannot state are refused: Winograd, NZP (input zero insertion), fused
max-pooling (windows recomputed), grouped plans. A fused residual Add's reads (one word per
output word, in the output stage) are not part of the CNN-Layer; the files say so.

With Timeloop installed: ``timeloop-model arch.yaml problem.yaml mapping.yaml`` in the folder
written (Accelergy's primitive component library gives the classes used).
"""
import pathlib

import yaml

__all__ = ["timeloop_files", "export_timeloop", "TimeloopError"]


class TimeloopError(ValueError):
    """A plan that Timeloop's CNN-Layer cannot state (naming the plan and why)."""


def _refusal(L, config):
    from ...host.ir import POOL_NONE
    if L.conv_w % config.vp:
        return (f"its output width {L.conv_w} is not a multiple of vp = {config.vp} (the dead pixel lanes of a "
                "row's last group are not a CNN-Layer mapping)")
    if L.winograd:
        return "it runs as Winograd F(2×2,3×3), which is not a CNN-Layer (compile it with --winograd direct)"
    if L.dil > 1:
        return "it is an NZP plan (input zero insertion), which is not a CNN-Layer (compile with --deconv tdc)"
    if tuple(L.pool) != tuple(POOL_NONE):
        return "it fuses max-pooling (the engine recomputes the window positions)"
    if L.grp:
        return "it is a grouped plan (each output block reads its own input blocks)"
    return ""


def _factors(**f):
    return " ".join(f"{d}={f.get(d, 1)}" for d in "CMRSNPQ")


def timeloop_files(L, config):
    """The three files of plan ``L`` (a :class:`~nibble.host.program.LayerPlan`) on ``config``:
    ``{"arch.yaml": text, "problem.yaml": text, "mapping.yaml": text}`` (module docstring).

    :raises TimeloopError: a plan the CNN-Layer cannot state, naming it and why.
    """
    why = _refusal(L, config)
    if why:
        raise TimeloopError(f"plan '{L.name}': {why}")
    c = config
    nb = L.n_coblk(c.m)
    word = lambda name, cls, depth, width, bits, **extra: {
        "name": name, "class": cls,
        "attributes": {"depth": depth, "width": width, "word-bits": bits, "block-size": width // bits, **extra}}
    arch = {"architecture": {"version": 0.3, "subtree": [{
        "name": "system",
        "local": [{"name": "DRAM", "class": "DRAM",
                   "attributes": {"type": "DDR3", "width": 64, "block-size": 8, "word-bits": 8}}],
        "subtree": [{
            "name": "nibble", "attributes": {"technology": "45nm"},
            "local": [word("FeatureMemory", "SRAM", c.feature_depth, 8 * c.vc, 8),
                      word("WeightMemory", "SRAM", c.weight_depth, 4 * c.vc, 4)],
            "subtree": [{
                "name": f"PE[0..{c.m - 1}]",
                "local": [word("FilterCache", "SRAM", c.filter_depth, 4 * c.vc, 4),
                          word("Accumulator", "regfile", c.vp, c.acc_width, c.acc_width),
                          {"name": f"SAC[0..{c.vc * c.vp - 1}]", "class": "intmac",
                           "attributes": {"datawidth": 8}}]}]}]}]}}
    inst = {"C": L.cb_in * c.vc, "M": nb * c.m, "R": L.kw, "S": L.kh, "N": 1, "P": L.conv_w, "Q": L.conv_h,
            "Wstride": L.stride, "Hstride": L.stride, "Wdilation": 1, "Hdilation": 1}
    problem = {"problem": {
        "shape": {
            "name": "CNN-Layer", "dimensions": list("CMRSNPQ"),
            "coefficients": [{"name": n, "default": 1} for n in ("Wstride", "Hstride", "Wdilation", "Hdilation")],
            "data-spaces": [
                {"name": "Weights", "projection": [[["C"]], [["M"]], [["R"]], [["S"]]]},
                {"name": "Inputs", "projection": [[["N"]], [["C"]], [["R", "Wdilation"], ["P", "Wstride"]],
                                                  [["S", "Hdilation"], ["Q", "Hstride"]]]},
                {"name": "Outputs", "projection": [[["N"]], [["M"]], [["Q"]], [["P"]]], "read-write": True}]},
        "instance": inst}}
    mapping = {"mapping": [
        {"target": "DRAM", "type": "temporal", "factors": _factors(), "permutation": "CMRSNPQ"},
        {"target": "FeatureMemory", "type": "temporal", "factors": _factors(M=nb), "permutation": "MCRSNPQ"},
        {"target": "FeatureMemory", "type": "bypass", "keep": ["Inputs", "Outputs"], "bypass": ["Weights"]},
        {"target": "WeightMemory", "type": "temporal", "factors": _factors(), "permutation": "CMRSNPQ"},
        {"target": "WeightMemory", "type": "spatial", "factors": _factors(M=c.m), "permutation": "MCRSNPQ"},
        {"target": "WeightMemory", "type": "bypass", "keep": ["Weights"], "bypass": ["Inputs", "Outputs"]},
        {"target": "FilterCache", "type": "temporal", "factors": _factors(P=L.conv_w // c.vp, Q=L.conv_h),
         "permutation": "PQCMRSN"},
        {"target": "FilterCache", "type": "bypass", "keep": ["Weights"], "bypass": ["Inputs", "Outputs"]},
        {"target": "Accumulator", "type": "temporal", "factors": _factors(C=L.cb_in, R=L.kw, S=L.kh),
         "permutation": "CRSMNPQ"},
        {"target": "Accumulator", "type": "spatial", "factors": _factors(C=c.vc, P=c.vp), "permutation": "CPMRSNQ"},
        {"target": "Accumulator", "type": "bypass", "keep": ["Outputs"], "bypass": ["Weights", "Inputs"]}]}
    head = f"# Nibble plan '{L.name}' on m={c.m} vc={c.vc} vp={c.vp} (nibble.sim.perf.timeloop); Timeloop v0.3 format\n"
    if L.res:
        head += ("# the plan's fused residual Add reads one feature word per output word in the output stage: "
                 "not part of the CNN-Layer\n")
    dump = lambda d: head + yaml.safe_dump(d, sort_keys=False, allow_unicode=True)
    return {"arch.yaml": dump(arch), "problem.yaml": dump(problem), "mapping.yaml": dump(mapping)}


def export_timeloop(program, layer, out_dir):
    """Write :func:`timeloop_files` of the plan named ``layer`` of ``program`` into
    ``out_dir`` (created). Returns the paths written.

    :raises TimeloopError: no plan of that name (listing the names), or a plan the CNN-Layer
        cannot state.
    """
    plans = [L for L in program.layers if L.name == layer]
    if not plans:
        names = ", ".join(dict.fromkeys(L.name for L in program.layers))
        raise TimeloopError(f"the program has no plan '{layer}' (plans: {names})")
    files = timeloop_files(plans[0], program.config)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in files.items():
        (out / name).write_text(text)
        paths.append(out / name)
    return paths
