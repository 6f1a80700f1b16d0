"""PCIe board output: the ``Accelerator(phy="axi")`` in a Vivado block design with the XDMA PCIe
endpoint and the MIG DDR3 controller (VC707, KC705).

``nibble gen --board vc707|kc705 --host pcie`` writes:

* ``nibble_accel.v``: the accelerator as a Verilog module (:class:`AcceleratorBD`) with the AXI4
  slave ``s_axi_*`` (the host's window: CSRs and on-chip memories), the AXI4 master ``m_axi_*``
  (to DDR), the run-finished ``irq`` and the status outputs; IP integrator attributes
  (``X_INTERFACE_INFO``/``X_INTERFACE_PARAMETER``, UG994 "Inferring Control Signals in a RTL
  Module") name its clock, reset, AXI and interrupt interfaces, so the block design takes it as an
  RTL module reference (``create_bd_cell -type module -reference nibble_accel``).
* ``nibble_bd.tcl``: the block design (:func:`bd_tcl`): XDMA 4.1 (PCIe Gen2 x8, AXI-MM, one H2C
  and one C2H channel, an AXI-Lite user BAR of the CSR window, one user interrupt), MIG 7-series
  4.2 on the board's DDR3 SODIMM through the board files' ``ddr3_sdram`` interface, one
  SmartConnect between the three masters (XDMA ``M_AXI``, XDMA ``M_AXI_LITE``, accelerator
  ``m_axi``) and the two slaves (accelerator ``s_axi``, MIG ``S_AXI``), resets, LEDs and the
  address map (:data:`ACCEL_WINDOW` at 0, the DDR window at :data:`~nibble.hw.isa.DDR_BASE`).
* ``nibble_pcie.tcl`` (project, block design, wrapper, synthesis, implementation, bitstream),
  ``build_nibble_pcie.sh`` and ``nibble_pcie.xdc`` (PCIe, reset and LED pins; false paths).

Clocking: the accelerator runs on the MIG's ``ui_clk``, 200 MHz on both boards (DDR3-1600: the
SODIMM at 800 MHz, PHY ratio 4:1; UG586 "Clocking Architecture", ``ui_clk`` = memory clock / 4).
The DDR path (``m_axi`` → MIG) is then on one clock, without a clock converter; the XDMA's
``axi_aclk`` (250 MHz for Gen2 x8 with a 128-bit AXI, PG195 "Minimum Device Requirements") is
crossed inside the SmartConnect (two clocks, ``NUM_CLKS`` 2), and the interrupt through a
two-flop synchronizer in :class:`AcceleratorBD` (``irq_aclk``).

Sources: Xilinx UG885 (VC707 Evaluation Board User Guide: PCIe edge connector, CPU_RESET, LEDs,
DDR3 SODIMM Micron MT8JTF12864HZ-1G6, 1 GB), UG810 (KC705 Evaluation Board User Guide, the same
items; the same SODIMM), UG586 (7 Series FPGAs Memory Interface Solutions: MIG, AXI4 slave
interface), PG195 (DMA/Bridge Subsystem for PCI Express 4.1: parameters, 7 series Gen2 limits),
UG994 (IP integrator: module references, ``apply_bd_automation``, ``assign_bd_address``).
"""
import dataclasses
import pathlib

from amaranth import *
from amaranth.lib import wiring
from amaranth.hdl._ir import PortDirection

from ..hw.accelerator import Accelerator, CSRS
from ..hw.axi import AXI4Signature
from ..hw.config import EngineConfig
from ..hw.isa import DDR_BASE

__all__ = ["AcceleratorBD", "PCIE_BOARDS", "PCIeBoard", "MODULE_NAME", "BD_NAME", "ACCEL_WINDOW",
           "CLK_HZ", "XDMA_VLNV", "MIG_VLNV", "user_bar_bytes", "accel_verilog", "accel_ports",
           "bd_tcl", "project_tcl", "pcie_xdc", "build_sh", "check_config", "memory_interface"]

#: Module name of the accelerator in the block design.
MODULE_NAME = "nibble_accel"
#: Name of the block design (its wrapper: ``nibble_bd_wrapper``).
BD_NAME = "nibble_bd"
#: Bytes of the accelerator's AXI slave window at address 0: CSRs (0x0000_0000), parameter
#: (0x1000_0000), weight (0x2000_0000) and feature memory (0x3000_0000), see ``hw/accelerator.py``.
ACCEL_WINDOW = 1 << 30
#: Engine clock: the MIG's ui_clk, Hz (800 MHz DDR3 clock / 4, UG586).
CLK_HZ = 200_000_000
#: XDMA and MIG versions the block design is written for (Vivado 2020.1 and later; PG195 4.1,
#: UG586 / MIG 7 Series 4.2). Their parameter names are those of these versions.
XDMA_VLNV = "xilinx.com:ip:xdma:4.1"
MIG_VLNV = "xilinx.com:ip:mig_7series:4.2"
#: The SODIMM of both boards holds 1 GiB (UG885 / UG810, "DDR3 SODIMM Memory").
SODIMM_BYTES = 1 << 30


@dataclasses.dataclass(frozen=True)
class PCIeBoard:
    """Facts of one board for the PCIe build (pins are FPGA package pins)."""
    name: str
    board_part: str            # Vivado board part without its version (the newest installed is used)
    pcie_blk_locn: str         # the integrated PCIe block next to the edge connector's transceivers
    refclk: tuple              # (P, N): the edge connector's 100 MHz reference clock (MGTREFCLK)
    perst: tuple               # (pin, IOSTANDARD): PCIE_PERST_B, active low
    rx_p: tuple                # lanes 0..7, FPGA receive (edge connector PETp) ...
    rx_n: tuple
    tx_p: tuple
    tx_n: tuple
    cpu_reset: tuple           # (pin, IOSTANDARD): CPU_RESET push button, active high
    leds: tuple                # ((pin, IOSTANDARD), ...): GPIO_LED_0..3, active high
    sodimm: str                # the DDR3 SODIMM's memory part
    source: str                # where the pins come from


#: Boards with a PCIe build.
PCIE_BOARDS = {
    # UG885 (VC707): "PCI Express Endpoint Connectivity" (lane 0 on Y4/W2 ... lane 7 on AG6/AK4,
    # reference clock PCIE_CLK_QO on AB8/AB7, PCIE_PERST_LS on AV35 in a 1.8 V bank); the
    # integrated block at X1Y0 serves these transceivers (PCIE_BLK_LOCN of the VC707 preset
    # of Xilinx's PCIe cores, XLNX_REF_BOARD VC707).
    # CPU_RESET (SW8) on AV40 and GPIO_LED_0..3_LS on AM39 AN39 AR37 AT37, LVCMOS18 (as gen/vc707.py).
    "vc707": PCIeBoard(
        name="vc707", board_part="xilinx.com:vc707:part0", pcie_blk_locn="X1Y0",
        refclk=("AB8", "AB7"), perst=("AV35", "LVCMOS18"),
        rx_p=("Y4", "AA6", "AB4", "AC6", "AD4", "AE6", "AF4", "AG6"),
        rx_n=("Y3", "AA5", "AB3", "AC5", "AD3", "AE5", "AF3", "AG5"),
        tx_p=("W2", "AA2", "AC2", "AE2", "AG2", "AH4", "AJ2", "AK4"),
        tx_n=("W1", "AA1", "AC1", "AE1", "AG1", "AH3", "AJ1", "AK3"),
        cpu_reset=("AV40", "LVCMOS18"),
        leds=(("AM39", "LVCMOS18"), ("AN39", "LVCMOS18"), ("AR37", "LVCMOS18"), ("AT37", "LVCMOS18")),
        sodimm="Micron MT8JTF12864HZ-1G6 (1 GB DDR3-1600, 64-bit)",
        source="UG885 (VC707 Evaluation Board User Guide)"),
    # UG810 (KC705): "PCI Express Endpoint Connectivity" (lane 0 on M6/L4 = GTXE2_CHANNEL_X0Y7
    # down to lane 7 on AA4/Y2 = X0Y0, reference clock PCIE_CLK_QO on U8/U7,
    # PCIE_PERST_B_LS on G25 in a 2.5 V bank); the xc7k325t has one integrated block, X0Y0.
    # CPU_RESET (SW7) on AB7 and GPIO_LED_0..3_LS on AB8 AA8 AC9 AB9, LVCMOS15 (bank 33, 1.5 V).
    "kc705": PCIeBoard(
        name="kc705", board_part="xilinx.com:kc705:part0", pcie_blk_locn="X0Y0",
        refclk=("U8", "U7"), perst=("G25", "LVCMOS25"),
        rx_p=("M6", "P6", "R4", "T6", "V6", "W4", "Y6", "AA4"),
        rx_n=("M5", "P5", "R3", "T5", "V5", "W3", "Y5", "AA3"),
        tx_p=("L4", "M2", "N4", "P2", "T2", "U4", "V2", "Y2"),
        tx_n=("L3", "M1", "N3", "P1", "T1", "U3", "V1", "Y1"),
        cpu_reset=("AB7", "LVCMOS15"),
        leds=(("AB8", "LVCMOS15"), ("AA8", "LVCMOS15"), ("AC9", "LVCMOS15"), ("AB9", "LVCMOS15")),
        sodimm="Micron MT8JTF12864HZ-1G6 (1 GB DDR3-1600, 64-bit)",
        source="UG810 (KC705 Evaluation Board User Guide)"),
}

#: What the LEDs show.
LED_SIGNALS = ("busy", "done", "error", "ddr_ready")


def user_bar_bytes():
    """Bytes of the XDMA's AXI-Lite user BAR: the CSR window (4 bytes per CSR) rounded up to a
    power of two, at least 4 KiB (a BAR is a power of two; one page)."""
    size = 4096
    while size < 4 * len(CSRS):
        size *= 2
    return size


def _size(nbytes):
    """``nbytes`` as Vivado writes a range (``4K``, ``1M``, ``1G``)."""
    for unit, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if nbytes % scale == 0:
            return f"{nbytes // scale}{unit}"
    raise ValueError(f"{nbytes} bytes is not a whole number of KiB")


def check_config(board, config: EngineConfig):
    """The configuration of the PCIe build of ``board``: ``clk_hz`` set to :data:`CLK_HZ`.

    :raises ValueError: an unknown board, a DDR window larger than the board's SODIMM, or a
        ``vc`` the AXI4 master cannot have (``Accelerator(phy="axi")`` refuses it).
    """
    if board not in PCIE_BOARDS:
        raise ValueError(f"board '{board}' has no PCIe build (boards with one: {', '.join(PCIE_BOARDS)})")
    if config.ddr_bytes > SODIMM_BYTES:
        raise ValueError(f"ddr_bytes = {config.ddr_bytes} is larger than the {board.upper()}'s DDR3 SODIMM "
                         f"({SODIMM_BYTES} bytes)")
    cfg = dataclasses.replace(config, clk_hz=CLK_HZ)
    Accelerator(cfg, phy="axi")._MustUse__silence = True    # raises ValueError for a vc the DDR beat cannot have
    return cfg


def memory_interface(config: EngineConfig):
    """The external-memory interface of the PCIe device: ``axi_data_bits`` (``beat_bits`` = ``8·vc·beat_words``),
    ``beat_bytes``, ``burst_beats`` (longest INCR burst: 256 beats or one 4 KiB page),
    ``ddr_base``, ``ddr_bytes`` and the host window (``accel_window_bytes``, ``user_bar_bytes``)."""
    axm = _master_params(config)
    return {"axi_data_bits": axm.data_width, "beat_bytes": axm.beat_bytes, "burst_beats": axm.burst_beats,
            "max_reads": axm.max_reads, "max_writes": axm.max_writes,
            "ddr_base": DDR_BASE, "ddr_bytes": config.ddr_bytes,
            "accel_window_bytes": ACCEL_WINDOW, "user_bar_bytes": user_bar_bytes()}


def _master_params(config):
    """The accelerator's :class:`~nibble.hw.mem.axi_master.AXI4Master` (its defaults, as
    ``AcceleratorCore`` builds it), for its parameters only (never elaborated)."""
    from ..hw.mem.axi_master import AXI4Master
    axm = AXI4Master(data_width=config.beat_bits, strobes=True)
    axm._MustUse__silence = True
    return axm


def _axi_param(name, sig, max_burst, outstanding=None):
    params = [f"XIL_INTERFACENAME {name}", "PROTOCOL AXI4", f"DATA_WIDTH {sig.data_width}",
              f"ADDR_WIDTH {sig.addr_width}", f"ID_WIDTH {sig.id_width}", f"MAX_BURST_LENGTH {max_burst}",
              "HAS_LOCK 0", "HAS_CACHE 0", "HAS_PROT 0", "HAS_QOS 0", "HAS_REGION 0",
              "SUPPORTS_NARROW_BURST 0"]
    if outstanding is not None:
        params += [f"NUM_READ_OUTSTANDING {outstanding[0]}", f"NUM_WRITE_OUTSTANDING {outstanding[1]}"]
    return ", ".join(params)


class AcceleratorBD(Elaboratable):
    """``Accelerator(config, phy="axi")`` with the ports of an IP integrator RTL module.

    Ports (names as in the Verilog module :data:`MODULE_NAME`):

    * ``aclk`` (in): the engine clock (the MIG's ui_clk); ``aresetn`` (in): synchronous reset,
      active low (a ``proc_sys_reset``'s ``peripheral_aresetn`` on ``aclk``);
    * ``s_axi_<m>`` for every member ``m`` of ``AXI4Signature(32, 32, 4)`` (slave: the
      accelerator's host window), ``m_axi_<m>`` for every member of ``AXI4Signature(32, beat_bits, 4)``
      (master: to DDR at :data:`~nibble.hw.isa.DDR_BASE`), both on ``aclk``;
    * ``irq_aclk`` (in): the XDMA's ``axi_aclk``; ``irq`` (out): the accelerator's run-finished
      level, through two flip-flops (``ASYNC_REG``) on ``irq_aclk``: the XDMA's ``usr_irq_req[0]``;
    * ``busy``, ``done``, ``error`` (out, on ``aclk``): for LEDs.
    """

    def __init__(self, config: EngineConfig):
        self.config = config
        axm = _master_params(config)
        self.s_sig = AXI4Signature()
        self.m_sig = AXI4Signature(32, config.beat_bits, 4)
        # IP integrator attributes of the ports (written into the Verilog by accel_verilog: as
        # Signal attributes Yosys could move them between ports driven by the same constant)
        self.port_attrs = {
            "aclk": {"X_INTERFACE_INFO": "xilinx.com:signal:clock:1.0 aclk CLK",
                     "X_INTERFACE_PARAMETER": "XIL_INTERFACENAME aclk, ASSOCIATED_BUSIF s_axi:m_axi, "
                                              "ASSOCIATED_RESET aresetn"},
            "aresetn": {"X_INTERFACE_INFO": "xilinx.com:signal:reset:1.0 aresetn RST",
                        "X_INTERFACE_PARAMETER": "XIL_INTERFACENAME aresetn, POLARITY ACTIVE_LOW"},
            "irq_aclk": {"X_INTERFACE_INFO": "xilinx.com:signal:clock:1.0 irq_aclk CLK",
                         "X_INTERFACE_PARAMETER": "XIL_INTERFACENAME irq_aclk"},
            "irq": {"X_INTERFACE_INFO": "xilinx.com:signal:interrupt:1.0 irq INTERRUPT",
                    "X_INTERFACE_PARAMETER": "XIL_INTERFACENAME irq, SENSITIVITY LEVEL_HIGH, PortWidth 1"},
        }
        self.aclk, self.aresetn, self.irq_aclk = Signal(name="aclk"), Signal(name="aresetn"), Signal(name="irq_aclk")
        self.irq = Signal(name="irq")
        self.busy, self.done, self.error = Signal(name="busy"), Signal(name="done"), Signal(name="error")
        # the AXI ports: (port name, signal, direction seen from the module)
        self.axi_ports = []
        for prefix, sig, slave, burst, outst in (
                ("s_axi", self.s_sig, True, 256, None),
                ("m_axi", self.m_sig, False, axm.burst_beats, (axm.max_reads, axm.max_writes))):
            first = True
            for name, member in sig.members.items():
                port = f"{prefix}_{name}"
                attrs = {"X_INTERFACE_INFO": f"xilinx.com:interface:aximm:1.0 {prefix} {name.upper()}"}
                if first:
                    attrs["X_INTERFACE_PARAMETER"] = _axi_param(prefix, sig, burst, outst)
                    first = False
                self.port_attrs[port] = attrs
                # a member Out of the master signature is an output of the master
                out = (member.flow == wiring.Flow.Out) != slave
                self.axi_ports.append((port, Signal(member.shape, name=port),
                                       PortDirection.Output if out else PortDirection.Input))

    def ports(self):
        """The module's ports as ``verilog.convert``'s ``ports`` argument: name → (signal, direction)."""
        i, o = PortDirection.Input, PortDirection.Output
        ports = {"aclk": (self.aclk, i), "aresetn": (self.aresetn, i), "irq_aclk": (self.irq_aclk, i)}
        ports.update({name: (sig, d) for name, sig, d in self.axi_ports})
        ports.update({"irq": (self.irq, o), "busy": (self.busy, o), "done": (self.done, o), "error": (self.error, o)})
        return ports

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = sync = ClockDomain("sync")
        m.domains.irq = irq_cd = ClockDomain("irq", reset_less=True)
        m.d.comb += [sync.clk.eq(self.aclk), sync.rst.eq(~self.aresetn), irq_cd.clk.eq(self.irq_aclk)]
        m.submodules.accel = acc = Accelerator(self.config, phy="axi")
        for name, sig, d in self.axi_ports:
            inner = getattr(acc, name)
            m.d.comb += sig.eq(inner) if d == PortDirection.Output else inner.eq(sig)
        # irq into the XDMA's clock domain (the level changes at most once per run)
        meta = Signal(name="irq_meta", attrs={"ASYNC_REG": "TRUE"})
        sync2 = Signal(name="irq_sync", attrs={"ASYNC_REG": "TRUE"})
        m.d.irq += [meta.eq(acc.irq), sync2.eq(meta)]
        m.d.comb += [self.irq.eq(sync2), self.busy.eq(acc.busy), self.done.eq(acc.done),
                     self.error.eq(acc.error)]
        return m


def accel_ports(config: EngineConfig):
    """Names of the AXI ports of :class:`AcceleratorBD`: {name: (width, "input"|"output")}."""
    top = AcceleratorBD(config)
    top._MustUse__silence = True         # only its port list is wanted
    return {name: (len(sig), d.value) for name, sig, d in top.axi_ports}


def accel_verilog(config: EngineConfig):
    """Verilog of :class:`AcceleratorBD` for ``config``, module :data:`MODULE_NAME`."""
    from amaranth.back import verilog
    top = AcceleratorBD(config)
    text = verilog.convert(top, name=MODULE_NAME, ports=top.ports(), emit_src=False)
    return _with_port_attrs(text, MODULE_NAME, top.port_attrs)


def _with_port_attrs(text, module, port_attrs):
    """``text`` with the attributes ``port_attrs`` (port → {name: value}) written before each
    port declaration of ``module``.

    :raises ValueError: a port of ``port_attrs`` is not declared once in the module.
    """
    import re
    start = text.index(f"module {module}(")
    end = text.index("endmodule", start)
    body = text[start:end]
    for port, attrs in port_attrs.items():
        pattern = re.compile(rf"^([ \t]*)((?:input|output)(?:\s+\[\d+:0\])?\s+{re.escape(port)};)$", re.M)
        found = pattern.findall(body)
        if len(found) != 1:
            raise ValueError(f"port {port} of {module} is declared {len(found)} times in the Verilog")
        body = pattern.sub(lambda m: "".join(f'{m.group(1)}(* {k} = "{v}" *)\n' for k, v in attrs.items())
                           + m.group(1) + m.group(2), body)
    return text[:start] + body + text[end:]


def bd_tcl(board, config: EngineConfig):
    """The block design TCL for ``board`` (a :data:`PCIE_BOARDS` key) and ``config`` (its
    ``clk_hz`` must be :data:`CLK_HZ`, see :func:`check_config`); sourced by the project TCL with
    ``nibble_accel.v`` already in the project."""
    b = PCIE_BOARDS[board]
    mi = memory_interface(config)
    bar = user_bar_bytes()
    ddr = _size(config.ddr_bytes)
    xdma_params = [
        # PG195 4.1, "Customizing and Generating the Subsystem" (Basic and PCIe:BARs tabs);
        # the parameter names are the IP's CONFIG.* names in Vivado 2020.1+.
        ("mode_selection", "Advanced"),
        ("pl_link_cap_max_link_width", "X8"),           # x8 edge connector
        ("pl_link_cap_max_link_speed", "5.0_GT/s"),     # Gen2: the 7 series integrated block
        ("ref_clk_freq", "100_MHz"),                    # the edge connector's REFCLK
        ("axi_data_width", "128_bit"),                  # 7 series Gen2: 64 or 128 bits (PG195 Features)
        ("axisten_freq", "250"),                        # axi_aclk, MHz, for Gen2 x8 at 128 bits
        ("xdma_axi_intf_mm", "AXI_Memory_Mapped"),      # DMA at the AXI address (/dev/xdma0_h2c_0, _c2h_0)
        ("xdma_rnum_chnl", "1"),                        # H2C channels
        ("xdma_wnum_chnl", "1"),                        # C2H channels
        ("xdma_num_usr_irq", "1"),                      # usr_irq_req[0] -> /dev/xdma0_events_0
        ("axilite_master_en", "true"),                  # the user BAR (/dev/xdma0_user) ...
        ("axilite_master_scale", "Kilobytes"),
        ("axilite_master_size", str(bar // 1024)),      # ... of the CSR window
        ("pciebar2axibar_axil_master", "0x00000000"),   # BAR offset 0 = AXI 0x0 = the csr region
        ("pf0_device_id", "7028"),                      # 7 series Gen2 x8: in the XDMA driver's pci_ids
    ]
    lines = [
        f"# {BD_NAME}.tcl: the {board.upper()} PCIe block design of the Nibble accelerator.",
        "# Sourced by nibble_pcie.tcl (project mode, board part set, nibble_accel.v in sources_1).",
        "",
        "proc nibble_latest_ip {vlnv_prefix} {",
        "    # the newest version of an IP (e.g. xilinx.com:ip:smartconnect) in this Vivado",
        "    set defs [lsort -dictionary [get_ipdefs -all ${vlnv_prefix}:*]]",
        "    if {[llength $defs] == 0} { error \"nibble: IP ${vlnv_prefix} is not in this Vivado's catalog\" }",
        "    return [get_property VLNV [lindex $defs end]]",
        "}",
        "proc nibble_require_ip {vlnv} {",
        "    if {[llength [get_ipdefs -all $vlnv]] == 0} {",
        "        error \"nibble: this block design is written for $vlnv (parameter names of that version); \\",
        "               it is not in this Vivado's catalog\"",
        "    }",
        "    return $vlnv",
        "}",
        "proc nibble_set_if_present {cell name value} {",
        "    # a parameter some versions of an IP do not have (the build goes on without it)",
        "    if {[lsearch -exact [list_property $cell] CONFIG.$name] >= 0} {",
        "        set_property CONFIG.$name $value $cell",
        "    } else {",
        "        common::send_msg_id NIBBLE-1 WARNING \"[get_property NAME $cell] has no CONFIG.$name\"",
        "    }",
        "}",
        "",
        f"create_bd_design {BD_NAME}",
        f"current_bd_design {BD_NAME}",
        "",
        "# ---- external ports",
        "# PCIe edge connector: 100 MHz reference clock, PERST# (active low), 8 lanes",
        "set pcie_refclk [create_bd_intf_port -mode Slave -vlnv xilinx.com:interface:diff_clock_rtl:1.0 pcie_refclk]",
        "set_property CONFIG.FREQ_HZ 100000000 $pcie_refclk",
        "set pcie_perstn [create_bd_port -dir I -type rst pcie_perstn]",
        "set_property CONFIG.POLARITY ACTIVE_LOW $pcie_perstn",
        "create_bd_intf_port -mode Master -vlnv xilinx.com:interface:pcie_7x_mgt_rtl:1.0 pcie_mgt",
        "# CPU_RESET push button (active high): resets the MIG",
        "set cpu_reset [create_bd_port -dir I -type rst cpu_reset]",
        "set_property CONFIG.POLARITY ACTIVE_HIGH $cpu_reset",
        "# LEDs 0..3: busy, done, error, DDR calibrated",
    ]
    lines += [f"create_bd_port -dir O led_{s}" for s in LED_SIGNALS]
    lines += [
        "",
        "# ---- XDMA: PCIe Gen2 x8 endpoint, AXI-MM DMA (PG195)",
        f"set xdma [create_bd_cell -type ip -vlnv [nibble_require_ip {XDMA_VLNV}] xdma_0]",
        "set_property -dict [list \\",
    ]
    lines += [f"    CONFIG.{k} {{{v}}} \\" for k, v in xdma_params]
    lines += [
        "] $xdma",
        "# pins from nibble_pcie.xdc, not from a board interface",
        "nibble_set_if_present $xdma PCIE_BOARD_INTERFACE Custom",
        "nibble_set_if_present $xdma SYS_RST_N_BOARD_INTERFACE Custom",
        f"# the integrated block next to the edge connector's transceivers ({b.source})",
        f"nibble_set_if_present $xdma pcie_blk_locn {b.pcie_blk_locn}",
        "# reference clock: IBUFDS_GTE2 (util_ds_buf IBUFDSGTE) -> sys_clk (7 series: one sys_clk)",
        "set refclk_buf [create_bd_cell -type ip -vlnv [nibble_latest_ip xilinx.com:ip:util_ds_buf] refclk_buf]",
        "set_property CONFIG.C_BUF_TYPE IBUFDSGTE $refclk_buf",
        "connect_bd_intf_net [get_bd_intf_ports pcie_refclk] [get_bd_intf_pins refclk_buf/CLK_IN_D]",
        "connect_bd_net [get_bd_pins refclk_buf/IBUF_OUT] [get_bd_pins xdma_0/sys_clk]",
        "connect_bd_net [get_bd_ports pcie_perstn] [get_bd_pins xdma_0/sys_rst_n]",
        "connect_bd_intf_net [get_bd_intf_pins xdma_0/pcie_mgt] [get_bd_intf_ports pcie_mgt]",
        "",
        f"# ---- MIG 7 series: the board's DDR3 SODIMM ({b.sodimm}; {b.source}), UG586",
        "# The board files' ddr3_sdram interface gives the MIG project (memory part, timing, the",
        "# SODIMM's pin out, the 200 MHz system clock sys_diff_clock); the automation writes its .prj.",
        f"set mig [create_bd_cell -type ip -vlnv [nibble_require_ip {MIG_VLNV}] mig_7series_0]",
        "apply_bd_automation -rule xilinx.com:bd_rule:mig_7series -config {Board_Interface \"ddr3_sdram\"} $mig",
        "if {[get_bd_intf_ports -quiet ddr3_sdram] eq \"\"} {",
        "    error \"nibble: the MIG board automation made no ddr3_sdram port (are the board files installed?)\"",
        "}",
        "if {[llength [get_bd_nets -quiet -of_objects [get_bd_pins mig_7series_0/sys_rst]]]} {",
        "    error \"nibble: the MIG board automation connected sys_rst; this script connects it to cpu_reset\"",
        "}",
        "if {[get_property CONFIG.POLARITY [get_bd_pins mig_7series_0/sys_rst]] eq \"ACTIVE_LOW\"} {",
        "    set rst_inv [create_bd_cell -type ip -vlnv [nibble_latest_ip xilinx.com:ip:util_vector_logic] cpu_reset_inv]",
        "    set_property -dict [list CONFIG.C_OPERATION {not} CONFIG.C_SIZE {1}] $rst_inv",
        "    connect_bd_net [get_bd_ports cpu_reset] [get_bd_pins cpu_reset_inv/Op1]",
        "    connect_bd_net [get_bd_pins cpu_reset_inv/Res] [get_bd_pins mig_7series_0/sys_rst]",
        "} else {",
        "    connect_bd_net [get_bd_ports cpu_reset] [get_bd_pins mig_7series_0/sys_rst]",
        "}",
        "",
        f"# ---- reset of the ui_clk domain ({CLK_HZ // 1_000_000} MHz): MIG ui_clk_sync_rst and mmcm_locked",
        "set rst_ui [create_bd_cell -type ip -vlnv [nibble_latest_ip xilinx.com:ip:proc_sys_reset] rst_ui_clk]",
        "connect_bd_net [get_bd_pins mig_7series_0/ui_clk] [get_bd_pins rst_ui_clk/slowest_sync_clk]",
        "connect_bd_net [get_bd_pins mig_7series_0/ui_clk_sync_rst] [get_bd_pins rst_ui_clk/ext_reset_in]",
        "connect_bd_net [get_bd_pins mig_7series_0/mmcm_locked] [get_bd_pins rst_ui_clk/dcm_locked]",
        "connect_bd_net [get_bd_pins rst_ui_clk/peripheral_aresetn] [get_bd_pins mig_7series_0/aresetn]",
        "",
        f"# ---- the accelerator: RTL module {MODULE_NAME} (nibble_accel.v), on ui_clk",
        f"set accel [create_bd_cell -type module -reference {MODULE_NAME} {MODULE_NAME}_0]",
        f"connect_bd_net [get_bd_pins mig_7series_0/ui_clk] [get_bd_pins {MODULE_NAME}_0/aclk]",
        f"connect_bd_net [get_bd_pins rst_ui_clk/peripheral_aresetn] [get_bd_pins {MODULE_NAME}_0/aresetn]",
        "# the interrupt level, synchronized to axi_aclk inside the module, is user interrupt 0",
        f"connect_bd_net [get_bd_pins xdma_0/axi_aclk] [get_bd_pins {MODULE_NAME}_0/irq_aclk]",
        f"connect_bd_net [get_bd_pins {MODULE_NAME}_0/irq] [get_bd_pins xdma_0/usr_irq_req]",
        f"connect_bd_net [get_bd_pins {MODULE_NAME}_0/busy] [get_bd_ports led_busy]",
        f"connect_bd_net [get_bd_pins {MODULE_NAME}_0/done] [get_bd_ports led_done]",
        f"connect_bd_net [get_bd_pins {MODULE_NAME}_0/error] [get_bd_ports led_error]",
        "connect_bd_net [get_bd_pins mig_7series_0/init_calib_complete] [get_bd_ports led_ddr_ready]",
        "",
        "# ---- interconnect: masters XDMA M_AXI (S00), XDMA M_AXI_LITE (S01), accelerator m_axi (S02);",
        "# slaves accelerator s_axi (M00), MIG S_AXI (M01). Clocks: aclk = ui_clk, aclk1 = axi_aclk;",
        "# widths: 128-bit XDMA and 32-bit AXI-Lite to the 32-bit s_axi, "
        f"{mi['axi_data_bits']}-bit m_axi and 128-bit XDMA to the MIG.",
        "set smc [create_bd_cell -type ip -vlnv [nibble_latest_ip xilinx.com:ip:smartconnect] axi_smc]",
        "set_property -dict [list CONFIG.NUM_SI {3} CONFIG.NUM_MI {2} CONFIG.NUM_CLKS {2}] $smc",
        "connect_bd_net [get_bd_pins mig_7series_0/ui_clk] [get_bd_pins axi_smc/aclk]",
        "connect_bd_net [get_bd_pins xdma_0/axi_aclk] [get_bd_pins axi_smc/aclk1]",
        "connect_bd_net [get_bd_pins rst_ui_clk/interconnect_aresetn] [get_bd_pins axi_smc/aresetn]",
        "connect_bd_intf_net [get_bd_intf_pins xdma_0/M_AXI] [get_bd_intf_pins axi_smc/S00_AXI]",
        "connect_bd_intf_net [get_bd_intf_pins xdma_0/M_AXI_LITE] [get_bd_intf_pins axi_smc/S01_AXI]",
        f"connect_bd_intf_net [get_bd_intf_pins {MODULE_NAME}_0/m_axi] [get_bd_intf_pins axi_smc/S02_AXI]",
        f"connect_bd_intf_net [get_bd_intf_pins axi_smc/M00_AXI] [get_bd_intf_pins {MODULE_NAME}_0/s_axi]",
        "connect_bd_intf_net [get_bd_intf_pins axi_smc/M01_AXI] [get_bd_intf_pins mig_7series_0/S_AXI]",
        "",
        "# ---- address map (UG994 assign_bd_address): the regmap's byte addresses",
        f"set seg_accel [get_bd_addr_segs -of_objects [get_bd_intf_pins {MODULE_NAME}_0/s_axi]]",
        "set seg_ddr [get_bd_addr_segs -of_objects [get_bd_intf_pins mig_7series_0/S_AXI]]",
        "if {[llength $seg_accel] != 1 || [llength $seg_ddr] != 1} {",
        "    error \"nibble: expected one address segment on each slave, got '$seg_accel' and '$seg_ddr'\"",
        "}",
        "set space_dma [get_bd_addr_spaces -of_objects [get_bd_intf_pins xdma_0/M_AXI]]",
        "set space_bar [get_bd_addr_spaces -of_objects [get_bd_intf_pins xdma_0/M_AXI_LITE]]",
        f"set space_accel [get_bd_addr_spaces -of_objects [get_bd_intf_pins {MODULE_NAME}_0/m_axi]]",
        "# DMA (H2C/C2H at the AXI address): on-chip memories and CSRs below 0x4000_0000, DDR above",
        f"assign_bd_address -target_address_space $space_dma -offset 0x00000000 -range {_size(ACCEL_WINDOW)} $seg_accel",
        f"assign_bd_address -target_address_space $space_dma -offset 0x{DDR_BASE:08X} -range {ddr} $seg_ddr",
        f"# the user BAR ({_size(bar)}, offset 0 = the csr region) reaches the accelerator only",
        f"assign_bd_address -target_address_space $space_bar -offset 0x00000000 -range {_size(ACCEL_WINDOW)} $seg_accel",
        "# the accelerator's m_axi reaches the DDR only (not its own s_axi)",
        f"assign_bd_address -target_address_space $space_accel -offset 0x{DDR_BASE:08X} -range {ddr} $seg_ddr",
        "",
        "validate_bd_design",
        "save_bd_design",
        "",
    ]
    return "\n".join(lines)


def project_tcl(board, platform, jobs=2):
    """The Vivado project TCL: project with the board part, the accelerator's Verilog, the block
    design, its wrapper as top, the constraints, synthesis, implementation and the bitstream
    ``nibble_pcie.bit`` (with utilization and timing reports) in the build folder."""
    b = PCIE_BOARDS[board]
    part = f"{platform.device}{platform.package}-{platform.speed}"
    return "\n".join([
        f"# nibble_pcie.tcl: Vivado build of the {board.upper()} PCIe accelerator (vivado -mode batch -source nibble_pcie.tcl).",
        "set here [file normalize [file dirname [info script]]]",
        f"create_project -force nibble_pcie [file join $here vivado] -part {part}",
        f"set board_parts [lsort -dictionary [get_board_parts -quiet {b.board_part}:*]]",
        "if {[llength $board_parts] == 0} {",
        f"    error \"nibble: Vivado has no board files for {b.board_part} (the MIG takes the DDR3 SODIMM from them)\"",
        "}",
        "set_property board_part [lindex $board_parts end] [current_project]",
        "set_property target_language Verilog [current_project]",
        f"add_files -norecurse [file join $here {MODULE_NAME}.v]",
        "update_compile_order -fileset sources_1",
        f"source [file join $here {BD_NAME}.tcl]",
        f"set bd_file [get_files {BD_NAME}.bd]",
        "generate_target all $bd_file",
        "set wrapper [make_wrapper -files $bd_file -top]",
        "add_files -norecurse $wrapper",
        f"set_property top {BD_NAME}_wrapper [current_fileset]",
        "update_compile_order -fileset sources_1",
        "add_files -fileset constrs_1 -norecurse [file join $here nibble_pcie.xdc]",
        f"launch_runs synth_1 -jobs {jobs}",
        "wait_on_run synth_1",
        "if {[get_property PROGRESS [get_runs synth_1]] ne \"100%\"} { error \"nibble: synthesis failed\" }",
        f"launch_runs impl_1 -to_step write_bitstream -jobs {jobs}",
        "wait_on_run impl_1",
        "if {[get_property PROGRESS [get_runs impl_1]] ne \"100%\"} { error \"nibble: implementation failed\" }",
        "open_run impl_1",
        "report_utilization -file [file join $here nibble_pcie_utilization.rpt]",
        "report_timing_summary -file [file join $here nibble_pcie_timing.rpt]",
        "if {[get_property SLACK [get_timing_paths -max_paths 1 -nworst 1 -setup]] < 0} {",
        "    common::send_msg_id NIBBLE-2 {CRITICAL WARNING} \"timing not met: see nibble_pcie_timing.rpt\"",
        "}",
        f"file copy -force [glob [file join $here vivado nibble_pcie.runs impl_1 {BD_NAME}_wrapper.bit]] "
        "[file join $here nibble_pcie.bit]",
        "",
    ])


def pcie_xdc(board):
    """Pin and timing constraints of the PCIe build (the MIG's pins and clocks come from the board
    files through the block design, the PCIe block's from the XDMA core)."""
    b = PCIE_BOARDS[board]
    out = [f"# nibble_pcie.xdc: {board.upper()} PCIe build; pins from {b.source}.",
           "",
           "# PCIe edge connector: 100 MHz reference clock (an MGTREFCLK pair: no IOSTANDARD)",
           f"set_property PACKAGE_PIN {b.refclk[0]} [get_ports {{pcie_refclk_clk_p*}}]",
           f"set_property PACKAGE_PIN {b.refclk[1]} [get_ports {{pcie_refclk_clk_n*}}]",
           "create_clock -name pcie_refclk -period 10.000 [get_ports {pcie_refclk_clk_p*}]",
           "# PERST#: asynchronous, active low, pulled up on the board",
           f"set_property -dict {{PACKAGE_PIN {b.perst[0]} IOSTANDARD {b.perst[1]} PULLUP true}} [get_ports pcie_perstn]",
           "set_false_path -from [get_ports pcie_perstn]",
           "# lanes 0..7 (transceiver pins: the PACKAGE_PIN places the GTXE2 channel)"]
    for i in range(8):
        for name, pins in (("rxp", b.rx_p), ("rxn", b.rx_n), ("txp", b.tx_p), ("txn", b.tx_n)):
            out.append(f"set_property PACKAGE_PIN {pins[i]} [get_ports {{pcie_mgt_{name}[{i}]}}]")
    out += ["",
            "# CPU_RESET push button: resets the MIG (asynchronous; the MIG synchronizes it)",
            f"set_property -dict {{PACKAGE_PIN {b.cpu_reset[0]} IOSTANDARD {b.cpu_reset[1]}}} [get_ports cpu_reset]",
            "set_false_path -from [get_ports cpu_reset]",
            "",
            "# LEDs 0..3: " + ", ".join(LED_SIGNALS) + " (seen by eye, not timed)"]
    for (pin, std), sig in zip(b.leds, LED_SIGNALS):
        out.append(f"set_property -dict {{PACKAGE_PIN {pin} IOSTANDARD {std}}} [get_ports led_{sig}]")
    out += ["set_false_path -to [get_ports {led_*}]",
            "",
            "# irq: the ui_clk level into the first synchronizer flop on axi_aclk (ASYNC_REG pair)",
            "set_false_path -to [get_cells -hierarchical -filter {NAME =~ *irq_meta_reg}]",
            ""]
    return "\n".join(out)


def build_sh():
    """The build script: Vivado in batch mode on ``nibble_pcie.tcl`` (``$VIVADO`` or ``vivado``)."""
    return "\n".join([
        "#!/bin/sh",
        "# Build the PCIe bitstream (nibble_pcie.bit) with Vivado 2020.1 or later.",
        "set -e",
        "cd \"$(dirname \"$0\")\"",
        "exec \"${VIVADO:-vivado}\" -mode batch -nolog -nojournal -source nibble_pcie.tcl",
        "",
    ])
