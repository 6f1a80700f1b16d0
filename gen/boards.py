"""Board output: the ``Accelerator`` wrapped for a board, Verilog + XDC + Vivado TCL + build scripts.

Uses the amaranth-boards platforms (KC705: Kintex-7 xc7k325t-ffg900-2) and Amaranth's Xilinx
build plan without running Vivado (``platform.build(..., do_build=False)``). The engine clock is
the board's default clock; the UART runs at ``config.baud`` from it. LEDs 0/1/2 show
busy/done/error. Next to the build files go ``regmap.json`` and ``config.json``.
Files are rewritten only when their content changes.
"""
import dataclasses
import json
import pathlib

from amaranth import Elaboratable, Module
from amaranth.lib import io
from amaranth.lib.cdc import FFSynchronizer

from ..hw.accelerator import Accelerator, regmap
from ..hw.config import EngineConfig

__all__ = ["BoardTop", "generate", "BOARDS"]


def _kc705():
    from amaranth_boards.kc705 import KC705Platform
    return KC705Platform()


#: Supported boards: name → platform factory.
BOARDS = {"kc705": _kc705}


class BoardTop(Elaboratable):
    """The accelerator on a board: UART 0 to the host bridge, LEDs 0–2 = busy, done, error."""

    def __init__(self, config: EngineConfig):
        self.config = config

    def elaborate(self, platform):
        m = Module()
        m.submodules.accel = acc = Accelerator(self.config)
        uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx = rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx = tx = io.Buffer("o", uart.tx)
        # the serial input is asynchronous to the engine clock
        m.submodules.rx_sync = FFSynchronizer(rx.i, acc.uart_rx, init=1)
        m.d.comb += tx.o.eq(acc.uart_tx)
        for i, sig in enumerate((acc.busy, acc.done, acc.error)):
            m.submodules[f"led{i}"] = led = io.Buffer("o", platform.request("led", i, dir="-"))
            m.d.comb += led.o.eq(sig)
        return m


def _write_if_changed(path, content):
    path = pathlib.Path(path)
    data = content.encode() if isinstance(content, str) else content
    if path.exists() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return True


def generate(board, config: EngineConfig, out_dir):
    """Write the build files for ``board`` into ``out_dir``.

    The configuration's ``clk_hz`` is set to the board's default clock.
    :returns: list of the files (paths) of the build.
    :raises ValueError: for an unknown board, or a baud rate the board clock cannot make.
    """
    if board not in BOARDS:
        raise ValueError(f"unknown board '{board}' (known: {', '.join(BOARDS)})")
    platform = BOARDS[board]()
    clk_hz = int(platform.default_clk_frequency)
    cfg = dataclasses.replace(config, clk_hz=clk_hz)
    plan = platform.build(BoardTop(cfg), name="nibble_top", do_build=False)
    out_dir = pathlib.Path(out_dir)
    files = []
    for name, content in plan.files.items():
        _write_if_changed(out_dir / name, content)
        files.append(out_dir / name)
    for name, obj in (("regmap.json", regmap(cfg)), ("config.json", cfg.to_dict())):
        _write_if_changed(out_dir / name, json.dumps(obj, indent=2) + "\n")
        files.append(out_dir / name)
    return files
