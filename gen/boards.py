"""Board output: the ``Accelerator`` wrapped for a board, Verilog + XDC + Vivado TCL + build scripts.

Boards (:data:`BOARDS`): KC705 (Kintex-7 xc7k325t-ffg900-2, amaranth-boards), VC707 (Virtex-7
xc7vx485t-ffg1761-2, :mod:`nibble.gen.vc707`) and KCU105 (Kintex UltraScale xcku040-ffva1156-2-e,
amaranth-boards plus its USB-UART pins). Uses Amaranth's Xilinx build plan without running Vivado
(``platform.build(..., do_build=False)``). The engine clock is the board's default clock; the
UART runs at ``config.baud`` from it. LEDs 0/1/2 show busy/done/error.

That is the UART build (``host="uart"``, the default). ``host="pcie"`` (VC707 and KC705) is the
accelerator's PCIe device, ``Accelerator(phy="axi")``, in a Vivado block design with the XDMA
endpoint and the MIG DDR3 controller, on the MIG's 200 MHz ui_clk: :mod:`nibble.gen.pcie`;
its ``regmap.json`` has the DDR window (``regmap(config, ddr=True)``) and its ``report.txt``
names the host interface and the memory interface.

Next to the build files go ``regmap.json``, ``regmap.h`` (C header), ``config.json`` and
``report.txt`` (board, part, clock, configuration, CSR count), and the board's extra timing
constraints from ``constraints/<board>.xdc`` are read by the Vivado script after the pin
constraints. Every generated text file except ``config.json`` (kept loadable by ``--config``)
and Amaranth's ``build_*.json`` carries a stamp: the git revision of the generator and
``EngineConfig.digest()``, never a time. Files are rewritten only when their content changes.
"""
import dataclasses
import json
import pathlib
import subprocess

from amaranth import Elaboratable, Module
from amaranth.lib import io
from amaranth.lib.cdc import FFSynchronizer

from ..hw.accelerator import Accelerator, CSRS, regmap
from ..hw.config import EngineConfig

__all__ = ["BoardTop", "generate", "BOARDS", "HOSTS", "CONSTRAINTS_DIR", "git_revision", "regmap_header"]

#: Per-board extra XDC files (``<board>.xdc``).
CONSTRAINTS_DIR = pathlib.Path(__file__).resolve().parent.parent / "constraints"


def _kc705():
    from amaranth_boards.kc705 import KC705Platform
    return KC705Platform()


def _vc707():
    from .vc707 import VC707Platform
    return VC707Platform()


def _kcu105():
    # amaranth-boards' KCU105 has no UART; the CP2105 bridge's standard interface is on
    # K26 (FPGA transmit, USB_UART_TX) and G25 (FPGA receive, USB_UART_RX), LVCMOS18 (Xilinx UG917).
    from amaranth.build import Attrs
    from amaranth_boards.kcu105 import KCU105Platform
    from amaranth_boards.resources import UARTResource
    platform = KCU105Platform()
    platform.add_resources([UARTResource(0, rx="G25", tx="K26", attrs=Attrs(IOSTANDARD="LVCMOS18"))])
    return platform


#: Supported boards: name → platform factory.
BOARDS = {"kc705": _kc705, "vc707": _vc707, "kcu105": _kcu105}


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


def git_revision():
    """``git rev-parse --short HEAD`` of the generator's checkout, or ``"unknown"`` outside one."""
    try:
        r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=CONSTRAINTS_DIR.parent,
                           capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    rev = r.stdout.strip()
    return rev if r.returncode == 0 and rev else "unknown"


def _stamp_line(name, stamp):
    """The stamp as a comment in the syntax of file ``name``, or None if it takes no comment."""
    suffix = pathlib.PurePath(name).suffix
    if suffix in (".v", ".sv", ".h"):
        return f"/* {stamp} */"
    if suffix in (".tcl", ".xdc", ".sh", ".txt"):
        return f"# {stamp}"
    if suffix == ".bat":
        return f"@rem {stamp}"
    return None


def _stamped(name, content, stamp):
    """``content`` with the stamp inserted as its second line (after a shebang or the tool's banner)."""
    line = _stamp_line(name, stamp)
    if line is None or not isinstance(content, str):
        return content
    first, nl, rest = content.partition("\n")
    return f"{first}\n{line}\n{rest}" if nl else f"{line}\n{content}"


def _c_name(name):
    return name.upper().replace("-", "_")


def regmap_header(rm, stamp):
    """A C header with the CSR offsets, region bases and sizes, status bits, error codes,
    descriptor constants and configuration of register map ``rm`` (see :func:`regmap`)."""
    out = ["/* regmap.h: register map of a Nibble accelerator, generated from the gateware. */",
           f"/* {stamp} */",
           "#ifndef NIBBLE_REGMAP_H", "#define NIBBLE_REGMAP_H", "",
           f"#define NIBBLE_ID 0x{rm['id']:08X}u",
           f"#define NIBBLE_VERSION 0x{rm['version']:08X}u", "",
           "/* regions: byte base, 32-bit words, memory word bits, 32-bit slices per memory word */"]
    for name, r in rm["regions"].items():
        n = f"NIBBLE_REGION_{_c_name(name)}"
        if "words" not in r:          # external memory (ddr): a byte window and its beat
            continue
        out += [f"#define {n}_BASE 0x{r['base']:08X}u", f"#define {n}_WORDS {r['words']}u",
                f"#define {n}_WORD_BITS {r['word_bits']}u", f"#define {n}_SLICES {r['slices']}u"]
    for name, r in rm["regions"].items():
        if "words" in r:
            continue
        n = f"NIBBLE_REGION_{_c_name(name)}"
        out += [f"/* {name}: external memory, byte base, bytes, bits per AXI beat */",
                f"#define {n}_BASE 0x{r['base']:08X}u", f"#define {n}_BYTES 0x{r['bytes']:08X}u",
                f"#define {n}_BEAT_BITS {r['beat_bits']}u"]
    out += ["", "/* CSRs: byte offsets from NIBBLE_REGION_CSR_BASE */"]
    for name, c in rm["csrs"].items():
        out.append(f"#define NIBBLE_CSR_{_c_name(name)} 0x{c['offset']:02X}u  /* {c['access']}: "
                   f"{c['doc'].replace('*/', '* /')} */")
    out += ["", "/* status CSR bits */"]
    out += [f"#define NIBBLE_STATUS_{_c_name(n)} (1u << {b})" for n, b in rm["status_bits"].items()]
    out += ["", "/* ctrl CSR bits */"]
    out += [f"#define NIBBLE_CTRL_{_c_name(n)} {v}u" for n, v in rm["ctrl_bits"].items()]
    lk = rm["link"]
    out += ["", "/* host link protocol (frames: see nibble/hw/isa.py) */",
            f"#define NIBBLE_LINK_VERSION {lk['version']}u",
            f"#define NIBBLE_LINK_MAX_PAYLOAD {lk['max_payload']}u",
            f"#define NIBBLE_LINK_SEQ_BITS {lk['seq_bits']}u",
            f"#define NIBBLE_LINK_CRC_POLY 0x{lk['crc']['polynomial']:08X}u  /* {lk['crc']['name']} */"]
    out += ["", "/* err_code values */"]
    out += [f"#define NIBBLE_ERR_{_c_name(n)} {v}u" for n, v in rm["error_codes"].items()]
    d = rm["descriptor"]
    out += ["", "/* layer descriptors */", f"#define NIBBLE_DESC_WORDS {d['words']}u",
            f"#define NIBBLE_DESC_MAGIC 0x{d['magic']:04X}u"]
    out += ["/* descriptor field f: bits OFFSET .. OFFSET + WIDTH - 1 of the descriptor, bit b in word b / 32 */"]
    for n, f in d["fields"].items():
        out += [f"#define NIBBLE_DESC_{_c_name(n)}_OFFSET {f['offset']}u",
                f"#define NIBBLE_DESC_{_c_name(n)}_WIDTH {f['width']}u"
                + ("  /* signed */" if f["signed"] else "")]
    if "steps" in rm:
        st = rm["steps"]
        out += ["", "/* step lists in external memory (ctrl bit 2): step size, magic, steps per fetch */",
                f"#define NIBBLE_STEP_BYTES {st['bytes']}u", f"#define NIBBLE_STEP_MAGIC 0x{st['magic']:02X}u",
                f"#define NIBBLE_STEP_CHUNK {st['chunk']}u"]
        out += [f"#define NIBBLE_STEP_OP_{_c_name(n)} {v}u" for n, v in st["ops"].items()]
        out += [f"#define NIBBLE_STEP_REGION_{_c_name(n)} {v}u" for n, v in st["regions"].items()]
        out += ["/* step field f: bits OFFSET .. OFFSET + WIDTH - 1 of the step */"]
        for n, f in st["fields"].items():
            out += [f"#define NIBBLE_STEP_FIELD_{_c_name(n)}_OFFSET {f['offset']}u",
                    f"#define NIBBLE_STEP_FIELD_{_c_name(n)}_WIDTH {f['width']}u"]
    out += ["", "/* requantization shift range */",
            f"#define NIBBLE_SH_MIN ({rm['requant']['sh_min']})",
            f"#define NIBBLE_SH_MAX ({rm['requant']['sh_max']})",
            f"#define NIBBLE_PRELU_FRAC {rm['requant']['prelu_frac']}u", "", "/* configuration */"]
    out += [f"#define NIBBLE_CFG_{_c_name(n)} {v}u" for n, v in rm["config"].items()]
    out += ["", "#endif /* NIBBLE_REGMAP_H */", ""]
    return "\n".join(out)


def _report_text(board, platform, cfg, stamp):
    lines = [f"Nibble build report", f"# {stamp}",
             f"board: {board}",
             f"part: {platform.device}-{platform.package}-{platform.speed}",
             f"clock: {platform.default_clk} {cfg.clk_hz / 1e6:g} MHz",
             f"uart: {cfg.baud} bit/s, {cfg.uart_divisor} cycles per bit",
             f"config digest: {cfg.digest()}",
             "config: " + ", ".join(f"{k}={v}" for k, v in cfg.to_dict().items()),
             f"peak: {cfg.peak_ops_per_cycle} shift-accumulate operations per cycle",
             f"csrs: {len(CSRS)}",
             f"extra constraints: {board}.xdc", ""]
    return "\n".join(lines)


#: Host interfaces of a board build: the USB-UART bridge (every board) or PCIe (XDMA, with the
#: MIG DDR3 controller: :mod:`nibble.gen.pcie`, VC707 and KC705).
HOSTS = ("uart", "pcie")


def generate(board, config: EngineConfig, out_dir, host="uart"):
    """Write the build files for ``board`` with host interface ``host`` into ``out_dir``.

    ``host="uart"``: the configuration's ``clk_hz`` is set to the board's default clock, the
    build is Amaranth's Xilinx plan of :class:`BoardTop`. ``host="pcie"``: the Vivado block
    design of :mod:`nibble.gen.pcie` (``clk_hz`` = the MIG's 200 MHz ui_clk).
    :returns: list of the files (paths) of the build.
    :raises ValueError: for an unknown board or host, a board without a PCIe build, or a
        configuration the board cannot have (baud rate, DDR window).
    :raises OSError: when the board's extra constraints file is missing.
    """
    if board not in BOARDS:
        raise ValueError(f"unknown board '{board}' (known: {', '.join(BOARDS)})")
    if host not in HOSTS:
        raise ValueError(f"unknown host interface '{host}' (known: {', '.join(HOSTS)})")
    if host == "pcie":
        return _generate_pcie(board, config, pathlib.Path(out_dir))
    platform = BOARDS[board]()
    clk_hz = int(platform.default_clk_frequency)
    cfg = dataclasses.replace(config, clk_hz=clk_hz)
    stamp = f"nibble {git_revision()}, config {cfg.digest()}"
    xdc_path = CONSTRAINTS_DIR / f"{board}.xdc"
    platform.add_file(f"{board}.xdc", _stamped(xdc_path.name, xdc_path.read_text(), stamp))
    plan = platform.build(BoardTop(cfg), name="nibble_top", do_build=False)
    out_dir = pathlib.Path(out_dir)
    files = []
    for name, content in plan.files.items():
        if name != f"{board}.xdc":
            content = _stamped(name, content, stamp)
        _write_if_changed(out_dir / name, content)
        files.append(out_dir / name)
    rm = regmap(cfg)
    for name, text in (("regmap.json", json.dumps({**rm, "generated": stamp}, indent=2) + "\n"),
                       ("regmap.h", regmap_header(rm, stamp)),
                       ("config.json", json.dumps(cfg.to_dict(), indent=2) + "\n"),
                       ("report.txt", _report_text(board, platform, cfg, stamp))):
        _write_if_changed(out_dir / name, text)
        files.append(out_dir / name)
    return files


def _pcie_report_text(board, platform, cfg, stamp):
    from . import pcie
    b = pcie.PCIE_BOARDS[board]
    mi = pcie.memory_interface(cfg)
    lines = ["Nibble build report", f"# {stamp}",
             f"board: {board}",
             f"part: {platform.device}-{platform.package}-{platform.speed}",
             f"host: pcie (XDMA {pcie.XDMA_VLNV.rsplit(':', 1)[1]}, Gen2 x8, AXI-MM; user BAR "
             f"{mi['user_bar_bytes']} bytes = the csr region; 1 H2C + 1 C2H channel; user interrupt 0 = irq)",
             f"clock: MIG ui_clk {cfg.clk_hz / 1e6:g} MHz (engine, m_axi, s_axi); XDMA axi_aclk 250 MHz",
             f"memory: DDR3 SODIMM {b.sodimm}, MIG {pcie.MIG_VLNV.rsplit(':', 1)[1]} from the board files' ddr3_sdram",
             f"memory interface: AXI4 {mi['axi_data_bits']}-bit data, {mi['beat_bytes']} bytes per beat, "
             f"INCR bursts of up to {mi['burst_beats']} beats, {mi['max_reads']} reads and "
             f"{mi['max_writes']} writes in flight",
             f"ddr window: 0x{mi['ddr_base']:08X} + {mi['ddr_bytes']} bytes",
             f"accelerator window: 0x00000000 + {mi['accel_window_bytes']} bytes (csr, param, weight, feature)",
             f"config digest: {cfg.digest()}",
             "config: " + ", ".join(f"{k}={v}" for k, v in cfg.to_dict().items()),
             f"peak: {cfg.peak_ops_per_cycle} shift-accumulate operations per cycle",
             f"csrs: {len(CSRS)}",
             f"module: {pcie.MODULE_NAME} ({pcie.MODULE_NAME}.v), block design {pcie.BD_NAME} ({pcie.BD_NAME}.tcl)",
             "constraints: nibble_pcie.xdc", ""]
    return "\n".join(lines)


def _generate_pcie(board, config, out_dir):
    from . import pcie
    cfg = pcie.check_config(board, config)
    platform = BOARDS[board]()
    stamp = f"nibble {git_revision()}, config {cfg.digest()}"
    rm = regmap(cfg, ddr=True)
    texts = [(f"{pcie.MODULE_NAME}.v", pcie.accel_verilog(cfg)),
             (f"{pcie.BD_NAME}.tcl", pcie.bd_tcl(board, cfg)),
             ("nibble_pcie.tcl", pcie.project_tcl(board, platform)),
             ("nibble_pcie.xdc", pcie.pcie_xdc(board)),
             ("build_nibble_pcie.sh", pcie.build_sh()),
             ("regmap.json", json.dumps({**rm, "generated": stamp}, indent=2) + "\n"),
             ("regmap.h", regmap_header(rm, stamp)),
             ("config.json", json.dumps(cfg.to_dict(), indent=2) + "\n"),
             ("report.txt", _pcie_report_text(board, platform, cfg, stamp))]
    files = []
    for name, text in texts:
        if name not in ("regmap.json", "regmap.h", "config.json", "report.txt"):
            text = _stamped(name, text, stamp)
        _write_if_changed(out_dir / name, text)
        files.append(out_dir / name)
    return files
