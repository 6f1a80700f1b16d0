"""The simulated device's build: the ``Accelerator`` Verilog for a configuration and host link,
compiled with a harness by Verilator (``sim/verilator.py``), cached, with its ``regmap.json``.

Two host links, the same accelerator core behind them:

* ``pcie`` — the AXI4 slave port a board's XDMA endpoint drives (``Accelerator(phy="axi")``),
  driven by ``sim/harness_axi.cpp``: the transport the driver uses on a PCIe board
  (:class:`nibble.host.transport.XdmaTransport`), a 32-bit beat per cycle.
* ``uart`` — the UART bridge's frame protocol on its byte streams (``phy="stream"``), driven by
  ``sim/harness.cpp``: the frames a serial board receives, a byte per cycle.

:func:`build_sim_device` finds a built device again without elaborating the design:
``cache_dir/index/<key>`` names the executable built for the hash of the gateware sources
(``hw/`` and its subpackages), the configuration, the link and the Amaranth version (the
executable's own cache key, over the Verilog, the harness, the Verilator version and flags, is
checked by :func:`nibble.sim.verilator.build_device`).
"""
import dataclasses
import hashlib
import json
import os
import pathlib

from ..hw.config import EngineConfig

__all__ = ["LINKS", "SIM_DIVISOR", "sim_config", "build_sim_device", "SimBuild"]

#: Host links of the simulated device → (``Accelerator`` phy, harness C preprocessor defines).
LINKS = {"pcie": ("axi", ()), "uart": ("stream", ("NIBBLE_BYTE_PHY",))}
#: UART clock cycles per bit of the simulated UART device (the fastest the bridge accepts; it
#: sets the bridge's inter-byte timeout).
SIM_DIVISOR = 4


@dataclasses.dataclass(frozen=True)
class SimBuild:
    """A built simulated device: ``exe`` (the simulator), ``regmap`` (path of its
    ``regmap.json``), ``link`` (``"pcie"`` or ``"uart"``)."""
    exe: pathlib.Path
    regmap: pathlib.Path
    link: str


def sim_config(config: EngineConfig):
    """The configuration of the simulated device: ``config`` with a fast simulated UART."""
    return dataclasses.replace(config, baud=config.clk_hz // SIM_DIVISOR)


def _source_key(config: EngineConfig, link):
    from importlib.metadata import version
    h = hashlib.sha256()
    hw_dir = pathlib.Path(__file__).resolve().parent.parent / "hw"
    parts = [json.dumps(sim_config(config).to_dict(), sort_keys=True), version("amaranth"), link,
             pathlib.Path(__file__).read_text()]
    parts += [f"{f.relative_to(hw_dir)}\0{f.read_text()}" for f in sorted(hw_dir.rglob("*.py"))]
    for part in parts:
        data = part.encode()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def _harness(link):
    from ..sim.axi_device import HARNESS_AXI
    from ..sim.verilator import HARNESS
    return HARNESS_AXI if link == "pcie" else HARNESS


def _ddr_defines(acc):
    """The harness define for an accelerator with an AXI4 master port ``m_axi_*`` (its DDR): the
    beat bytes of ``m_axi_wdata`` (``nibble.sim.axi_device.beat_define``); none without one."""
    from amaranth.hdl import Shape
    from ..sim.axi_device import beat_define
    members = acc.signature.members
    if "m_axi_wdata" not in members:
        return ()
    return (beat_define(Shape.cast(members["m_axi_wdata"].shape).width),)


def _write_regmap(exe, config, link):
    from ..hw.accelerator import regmap
    path = pathlib.Path(exe).parent / "regmap.json"
    if not path.is_file():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(regmap(sim_config(config), ddr=LINKS[link][0] == "axi"), indent=2) + "\n")
        os.replace(tmp, path)
    return path


def build_sim_device(config: EngineConfig, cache_dir, link="pcie"):
    """Generate the Verilog of an ``Accelerator`` for ``config`` with host link ``link`` and
    build (or reuse) its simulator; write its ``regmap.json`` next to it.

    :returns: :class:`SimBuild`.
    :raises ValueError: an unknown ``link``. ``RuntimeError`` from the build (its log's end).
    """
    from ..sim.verilator import build_device, build_key_current
    if link not in LINKS:
        raise ValueError(f"unknown host link '{link}' of the simulated device ({', '.join(LINKS)})")
    phy, defines = LINKS[link]
    harness = _harness(link)
    cache = pathlib.Path(cache_dir)
    index = cache / "index" / _source_key(config, link)[:32]
    if index.is_file():
        exe = cache / index.read_text().strip()
        if exe.is_file() and build_key_current(exe, harness):
            return SimBuild(exe, _write_regmap(exe, config, link), link)
    from amaranth.back import verilog
    from ..hw.accelerator import Accelerator
    acc = Accelerator(sim_config(config), phy=phy)
    text = verilog.convert(acc, name="top")
    exe = build_device(text, cache, defines=defines + _ddr_defines(acc), harness=harness)
    index.parent.mkdir(parents=True, exist_ok=True)
    tmp = index.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(str(exe.relative_to(cache)) + "\n")
    os.replace(tmp, index)
    return SimBuild(exe, _write_regmap(exe, config, link), link)
