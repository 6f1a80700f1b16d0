"""Resource baselines per Yosys version (``yosys-<version>.json``) and the blocks they describe.

Blocks: ``sac_lane`` (:class:`~nibble.hw.pe.SACLane`) and ``pe_vc8`` (:class:`~nibble.hw.pe.PE` with
8 lanes, 32-bit accumulator, 64-word filter cache), synthesized by :func:`nibble.gen.resources.synth_verilog`.

``composition``: the whole :class:`~nibble.hw.accelerator.Accelerator` of :data:`COMPOSITION_CONFIG`
synthesized in one piece, against which the per-block composition of ``nibble report``
(:func:`nibble.gen.resources.estimate`) is checked.
"""
import json
import pathlib

__all__ = ["BASELINE_BLOCKS", "COMPOSITION_CONFIG", "baseline_verilog", "whole_verilog", "load_baseline"]

BASELINE_BLOCKS = ("sac_lane", "pe_vc8")

#: The small configuration whose whole accelerator is synthesized once to check the composition.
COMPOSITION_CONFIG = dict(m=8, vc=8, filter_depth=64, feature_depth=1024, weight_depth=1024, param_depth=256)


def whole_verilog():
    """Verilog of the whole accelerator of :data:`COMPOSITION_CONFIG` (as the report converts blocks)."""
    from ...hw.accelerator import Accelerator
    from ...hw.config import EngineConfig
    from ..resources import _convert
    return _convert(Accelerator(EngineConfig(**COMPOSITION_CONFIG)))


def baseline_verilog(name):
    from ...hw.pe import PE, SACLane
    from ..resources import _convert          # the same Verilog the report synthesizes
    component = {"sac_lane": SACLane, "pe_vc8": lambda: PE(8, 32, 64)}[name]()
    return _convert(component)


def load_baseline(version):
    """The baseline for Yosys ``version``; ``FileNotFoundError`` names the missing file."""
    path = pathlib.Path(__file__).parent / f"yosys-{version}.json"
    if not path.exists():
        raise FileNotFoundError(f"no resource baseline for Yosys {version}: write {path.name} with "
                                "gen/baselines/make_baseline.py")
    return json.loads(path.read_text())
