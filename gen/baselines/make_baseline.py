"""Write ``yosys-<version>.json``: per-block synthesis figures of the baseline blocks.

Run from the project's environment: ``python gen/baselines/make_baseline.py``. The test
``tests/test_boards.py::test_synthesis_matches_baseline`` synthesizes the same blocks and compares.
"""
import json
import pathlib

from nibble.gen.resources import synth_verilog, yosys_version
from nibble.gen.baselines import (BASELINE_BLOCKS, COMPOSITION_CONFIG, LARGE_COMPOSITION_CONFIG, baseline_verilog,
                                  report_depths, whole_verilog)
from nibble.gen.resources import estimate
from nibble.hw.config import EngineConfig

if __name__ == "__main__":
    figures = {}
    for name in BASELINE_BLOCKS:
        r = synth_verilog(baseline_verilog(name), name)
        figures[name] = {k: r[k] for k in ("LUT", "FF", "CARRY4", "DSP48E1", "depth")}
    w = synth_verilog(whole_verilog(), "whole accelerator", depth=False)
    composition = {"config": COMPOSITION_CONFIG, "whole": {k: w[k] for k in ("LUT", "FF", "CARRY4", "DSP48E1")}}
    # a 1,024-lane configuration (output-pixel lanes), whole and as the report composes it
    big = synth_verilog(whole_verilog(LARGE_COMPOSITION_CONFIG), "whole accelerator (1,024 lanes)", depth=False)
    est = estimate(EngineConfig(**LARGE_COMPOSITION_CONFIG), "xc7vx485t")["total"]
    large = {"config": LARGE_COMPOSITION_CONFIG, "whole": {k: big[k] for k in ("LUT", "FF", "CARRY4", "DSP48E1")},
             "estimate": {k: est[k] for k in ("LUT", "FF", "CARRY4", "DSP48E1")}}
    path = pathlib.Path(__file__).parent / f"yosys-{yosys_version()}.json"
    path.write_text(json.dumps({"yosys": yosys_version(), "blocks": figures, "depth": report_depths(),
                                "composition": composition, "composition_large": large}, indent=2) + "\n")
    print(path)
