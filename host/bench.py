"""Benchmarks on the RTL (``nibble bench``): measured cycles against the ideal, in one run.

The ideal cycle count of a layer is its multiplications ÷ (M·Vc) (every lane busy every cycle):
``Cin·Cout·9`` per output in direct form (SAC lanes), ``Cin·Cout·16`` per 2×2 tile in Winograd
F(2×2,3×3) form (multiplier lanes, ARITHMETIC §2.1). The report gives the measured engine cycles
(the cycle-counter CSR of the simulated RTL), their ratio to the ideal, PE-array beats, PE
utilization, and whether the output is bit-identical to the golden model.
"""
import numpy as np

from ..hw.config import EngineConfig
from .compiler import layer_cycles, plan_program
from .driver import Device, golden_forward
from .ir import ConvOp

__all__ = ["random_conv_layer", "winograd_bench"]


def random_conv_layer(cin, cout, size, kernel, seed, config, winograd="direct"):
    """A seeded random quantized conv layer (stride 1, 'same' padding, ReLU) planned for ``config``.

    Codes are uniform over the 15 used 4-bit values; the input exponent is 4 and the output
    exponent leaves the requantized outputs well inside int8.
    :returns: ``(program, input int8 (cin, size, size))``.
    """
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 16, (cout, cin, kernel, kernel)).astype(np.uint8)
    codes[codes == 8] = 0
    p = kernel // 2
    op = ConvOp(name=f"conv{kernel}x{kernel}_{cin}to{cout}", w=np.zeros(codes.shape), b=rng.normal(0, 1, cout),
                stride=1, pad=(p, kernel - 1 - p, p, kernel - 1 - p), relu=True, codes=codes, n2=-8, q_in=4, q_out=0)
    program = plan_program([op], (cin, size, size), 4, config, winograd=winograd)
    v = rng.integers(-128, 128, (cin, size, size))
    return program, v


def _layer_mults(L):
    """Multiplications of a layer as the engine schedules them (padding lanes excluded)."""
    if L.winograd:
        tiles = L.out_h * L.out_w if L.pool == 2 else -(-L.out_h // 2) * -(-L.out_w // 2)
        return tiles * 16 * L.cin * L.cout
    return L.macs()


def winograd_bench(config: EngineConfig = EngineConfig(), *, cin=64, cout=64, size=32, seed=1):
    """One 3×3 stride-1 'same' conv layer run on the RTL in direct form and in Winograd
    F(2×2,3×3) form (same weights, inputs, one simulated device); JSON-ready dict.

    Reports per form: RTL cycles, the compiler's cycle model (:func:`layer_cycles`, what ``auto``
    decides by), multiplications (total and per output per input channel and
    output channel: 9 direct, 16/4 = 4 Winograd), ideal cycles = multiplications / (m·vc), their
    ratio, PE-array beats and utilization, bit-exactness against the golden model; and the
    measured direct ÷ Winograd cycle ratio (theory 2.25 = 36/16, ARITHMETIC §2.1).
    :raises nibble.host.ir.CompileError: if the layer does not fit ``config`` or cannot run as
        Winograd (e.g. ``config.winograd`` false).
    """
    res = {"layer": {"cin": cin, "cout": cout, "h": size, "w": size, "kernel": 3, "stride": 1,
                     "relu": True},
           "config": {"m": config.m, "vc": config.vc, "acc_width": config.acc_width}}
    outs = {}
    with Device("sim", config=config) as dev:
        for form in ("direct", "winograd"):
            program, v = random_conv_layer(cin, cout, size, 3, seed, config, winograd={"*": form, f"conv3x3_{cin}to{cout}": form})
            L = program.layers[0]
            dev.load(program)
            out = dev.run_int(v[None])[0]
            cycles, beats = dev.cycles[0], dev.beats[0]
            mults = _layer_mults(L)
            ideal = mults / (config.m * config.vc)
            outs[form] = out
            res[form] = {
                "rtl_cycles": cycles,
                "model_cycles": layer_cycles(L, config),
                "multiplications": mults,
                "mults_per_output": mults / (cin * cout * L.out_h * L.out_w),
                "ideal_cycles": ideal,
                "cycles_over_ideal": cycles / ideal,
                "pe_array_beats": beats,
                "pe_utilization": mults / (cycles * config.m * config.vc),
                "bit_exact_vs_golden": bool(np.array_equal(out, golden_forward(program, v))),
            }
    res["outputs_identical"] = bool(np.array_equal(outs["direct"], outs["winograd"]))
    res["direct_over_winograd_cycles"] = res["direct"]["rtl_cycles"] / res["winograd"]["rtl_cycles"]
    res["direct_over_winograd_mults"] = res["direct"]["multiplications"] / res["winograd"]["multiplications"]
    res["theory_ratio"] = 36 / 16
    return res
