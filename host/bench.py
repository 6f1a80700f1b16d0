"""Benchmarks on the RTL (``nibble bench``): measured cycles against the ideal, in one run.

The ideal cycle count of a layer is its useful MACs ÷ (M·Vc) (every SAC lane busy every cycle);
the report gives the measured engine cycles (the cycle-counter CSR of the simulated RTL), their
ratio to the ideal, PE-array beats and PE utilization, and whether the output is bit-identical
to the golden model.
"""
import numpy as np

from ..hw.config import EngineConfig
from .compiler import plan_program
from .driver import Device, golden_forward
from .ir import ConvOp

__all__ = ["conv_layer_bench", "random_conv_layer"]


def random_conv_layer(cin, cout, size, kernel, seed, config):
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
    program = plan_program([op], (cin, size, size), 4, config)
    v = rng.integers(-128, 128, (cin, size, size))
    return program, v


def conv_layer_bench(config: EngineConfig = EngineConfig(), *, cin=64, cout=64, size=16, kernel=3, seed=1):
    """Run one conv layer on the simulated RTL and report its cycles (JSON-ready dict)."""
    program, v = random_conv_layer(cin, cout, size, kernel, seed, config)
    L = program.layers[0]
    with Device("sim", config=config) as dev:
        dev.load(program)
        out = dev.run_int(v[None])[0]
        cycles, beats = dev.cycles[0], dev.beats[0]
    macs = L.macs()
    ideal = macs / (config.m * config.vc)
    return {
        "layer": {"cin": cin, "cout": cout, "h": size, "w": size, "kernel": kernel, "stride": 1, "relu": True},
        "config": {"m": config.m, "vc": config.vc},
        "macs": macs,
        "ideal_cycles": ideal,
        "rtl_cycles": cycles,
        "cycles_over_ideal": cycles / ideal,
        "pe_array_beats": beats,
        "pe_utilization": macs / (cycles * config.m * config.vc),
        "bit_exact_vs_golden": bool(np.array_equal(out, golden_forward(program, v))),
    }
