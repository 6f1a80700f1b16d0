"""The PCIe board build (`nibble gen --host pcie`, gen/pcie.py) and the PCIe report: text level only
(no Vivado, no synthesis). Each board's build is generated once for the module."""
import json
import re

import pytest
from amaranth import Shape
from click.testing import CliRunner

from nibble.cli import cli
from nibble.gen.boards import git_revision
from nibble.gen.pcie import CLK_HZ, PCIE_BOARDS, user_bar_bytes
from nibble.hw.accelerator import CSRS, REGION_BASE, regmap
from nibble.hw.axi import AXI4Signature
from nibble.hw.config import EngineConfig
from nibble.hw.isa import DDR_BASE
from nibble.hw.mem.axi_master import read_beat_layout

SMALL = dict(m=8, vc=8, filter_depth=64, feature_depth=1024, weight_depth=1024, param_depth=256)
FILES = {"nibble_accel.v", "nibble_bd.tcl", "nibble_pcie.tcl", "nibble_pcie.xdc", "build_nibble_pcie.sh",
         "regmap.json", "regmap.h", "config.json", "report.txt"}
# board: (part in the project TCL, lane 0 receive pin, reference clock P pin, PERST# pin) from
# UG885 (VC707) and UG810 (KC705), "PCI Express Endpoint Connectivity"
FACTS = {"vc707": ("xc7vx485tffg1761-2", "Y4", "AB8", "AV35"),
         "kc705": ("xc7k325tffg900-2", "M6", "U8", "G25")}


@pytest.fixture(scope="module")
def small_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "small.json"
    path.write_text(json.dumps(SMALL))
    return path


@pytest.fixture(scope="module", params=sorted(FACTS))
def build(request, tmp_path_factory, small_config):
    board = request.param
    out = tmp_path_factory.mktemp(f"pcie-{board}")
    r = CliRunner().invoke(cli, ["gen", "--board", board, "--host", "pcie", "--config", str(small_config),
                                 "-o", str(out)])
    assert r.exit_code == 0, r.output
    return board, out, {p.name: p.read_text() for p in out.iterdir()}


def _cfg():
    return EngineConfig(**{**SMALL, "clk_hz": CLK_HZ})


def test_files_and_stamps(build, small_config):
    board, out, files = build
    assert set(files) == FILES
    stamp = f"nibble {git_revision()}, config {_cfg().digest()}"
    for name in FILES - {"regmap.json", "config.json"}:
        assert stamp in files[name].splitlines()[1], name
        assert not re.search(r"\b20\d\d-\d\d-\d\d\b|\d\d:\d\d:\d\d", files[name]), name
    assert json.loads(files["config.json"]) == _cfg().to_dict()
    # a second run rewrites nothing
    mtimes = {f.name: f.stat().st_mtime_ns for f in out.iterdir()}
    r = CliRunner().invoke(cli, ["gen", "--board", board, "--host", "pcie", "--config", str(small_config),
                                 "-o", str(out)])
    assert r.exit_code == 0 and mtimes == {f.name: f.stat().st_mtime_ns for f in out.iterdir()}


def _ports(verilog, module):
    """{port: (width, direction)} of ``module`` in Amaranth's Verilog."""
    body = verilog[verilog.index(f"module {module}("):]
    body = body[:body.index("endmodule")]
    header = body[:body.index(");")]
    names = [n.strip() for n in header[header.index("(") + 1:].split(",")]
    decl = {m.group(3): (int(m.group(2) or 0) + 1, m.group(1))
            for m in re.finditer(r"^\s*(input|output)\s+(?:\[(\d+):0\]\s+)?(\w+);", body, re.M)}
    assert set(names) == set(decl)
    return decl, body


def test_verilog_module_has_exactly_the_axi_ports(build):
    _, _, files = build
    decl, body = _ports(files["nibble_accel.v"], "nibble_accel")
    want = {}
    for prefix, sig, slave in (("s_axi", AXI4Signature(), True), ("m_axi", AXI4Signature(32, 8 * SMALL["vc"], 4), False)):
        for name, member in sig.members.items():
            out = (member.flow.name == "Out") != slave
            want[f"{prefix}_{name}"] = (Shape.cast(member.shape).width, "output" if out else "input")
    axi = {n: v for n, v in decl.items() if n.startswith(("s_axi_", "m_axi_"))}
    assert axi == want
    assert {n: v for n, v in decl.items() if n not in axi} == {
        "aclk": (1, "input"), "aresetn": (1, "input"), "irq_aclk": (1, "input"), "irq": (1, "output"),
        "busy": (1, "output"), "done": (1, "output"), "error": (1, "output")}
    # IP integrator interface attributes on every AXI port, the clock, reset and interrupt
    for port in axi:
        prefix, name = port.split("_axi_")
        assert re.search(rf'X_INTERFACE_INFO = "xilinx.com:interface:aximm:1.0 {prefix}_axi {name.upper()}" \*\)\n'
                         rf'(?:\s*\(\*[^\n]*\n)*\s*(input|output)( \[\d+:0\])? {port};', body), port
    assert 'ASSOCIATED_BUSIF s_axi:m_axi, ASSOCIATED_RESET aresetn' in body
    assert 'POLARITY ACTIVE_LOW' in body and 'SENSITIVITY LEVEL_HIGH' in body
    assert f"DATA_WIDTH {8 * SMALL['vc']}" in body and "PROTOCOL AXI4" in body
    # the interrupt crosses into irq_aclk through two ASYNC_REG flip-flops
    assert re.search(r'\(\* ASYNC_REG = "TRUE" \*\)\n\s*reg irq_meta\b', body)
    assert "always @(posedge irq_aclk)" in body


def _connections(tcl):
    intf = set(re.findall(r"^connect_bd_intf_net (\[get_bd_intf_\w+ [\w/]+\]) (\[get_bd_intf_\w+ [\w/]+\])$", tcl, re.M))
    nets = set(re.findall(r"^\s*connect_bd_net \[get_bd_\w+ ([\w/]+)\] \[get_bd_\w+ ([\w/]+)\]$", tcl, re.M))
    return {(a.split()[1].rstrip("]"), b.split()[1].rstrip("]")) for a, b in intf}, nets


def test_block_design_cells_and_connections(build):
    board, _, files = build
    tcl = files["nibble_bd.tcl"]
    assert tcl.index("create_bd_design nibble_bd") < tcl.index("create_bd_cell")
    cells = {name: vlnv or ref for vlnv, ref, name in re.findall(
        r"create_bd_cell -type (?:ip -vlnv \[nibble_\w+ ([\w.:]+)\]|module -reference (\w+)) (\w+)\]", tcl)}
    assert cells["xdma_0"] == "xilinx.com:ip:xdma:4.1"
    assert cells["mig_7series_0"] == "xilinx.com:ip:mig_7series:4.2"
    assert cells["axi_smc"] == "xilinx.com:ip:smartconnect"
    assert cells["nibble_accel_0"] == "nibble_accel"
    assert cells["refclk_buf"] == "xilinx.com:ip:util_ds_buf" and cells["rst_ui_clk"] == "xilinx.com:ip:proc_sys_reset"
    # XDMA: Gen2 x8, AXI-MM, 1 H2C + 1 C2H, 1 user interrupt, AXI-Lite user BAR of the CSR window
    xdma = dict(re.findall(r"^    CONFIG\.(\w+) \{([^}]*)\} \\$", tcl, re.M))
    assert xdma["pl_link_cap_max_link_width"] == "X8" and xdma["pl_link_cap_max_link_speed"] == "5.0_GT/s"
    assert xdma["xdma_axi_intf_mm"] == "AXI_Memory_Mapped"
    assert xdma["xdma_rnum_chnl"] == xdma["xdma_wnum_chnl"] == xdma["xdma_num_usr_irq"] == "1"
    assert xdma["axilite_master_en"] == "true" and xdma["pciebar2axibar_axil_master"] == "0x00000000"
    assert int(xdma["axilite_master_size"]) * 1024 == user_bar_bytes() >= 4 * len(CSRS)
    assert xdma["axilite_master_scale"] == "Kilobytes"
    assert f"pcie_blk_locn {PCIE_BOARDS[board].pcie_blk_locn}" in tcl
    # the MIG from the board's DDR3 SODIMM interface
    assert 'apply_bd_automation -rule xilinx.com:bd_rule:mig_7series -config {Board_Interface "ddr3_sdram"} $mig' in tcl
    assert "CONFIG.NUM_SI {3} CONFIG.NUM_MI {2} CONFIG.NUM_CLKS {2}" in tcl
    intf, nets = _connections(tcl)
    assert {("xdma_0/M_AXI", "axi_smc/S00_AXI"), ("xdma_0/M_AXI_LITE", "axi_smc/S01_AXI"),
            ("nibble_accel_0/m_axi", "axi_smc/S02_AXI"), ("axi_smc/M00_AXI", "nibble_accel_0/s_axi"),
            ("axi_smc/M01_AXI", "mig_7series_0/S_AXI"), ("xdma_0/pcie_mgt", "pcie_mgt"),
            ("pcie_refclk", "refclk_buf/CLK_IN_D")} <= intf
    assert {("mig_7series_0/ui_clk", "nibble_accel_0/aclk"), ("mig_7series_0/ui_clk", "axi_smc/aclk"),
            ("xdma_0/axi_aclk", "axi_smc/aclk1"), ("xdma_0/axi_aclk", "nibble_accel_0/irq_aclk"),
            ("nibble_accel_0/irq", "xdma_0/usr_irq_req"), ("refclk_buf/IBUF_OUT", "xdma_0/sys_clk"),
            ("pcie_perstn", "xdma_0/sys_rst_n"), ("rst_ui_clk/peripheral_aresetn", "nibble_accel_0/aresetn"),
            ("rst_ui_clk/peripheral_aresetn", "mig_7series_0/aresetn"),
            ("mig_7series_0/ui_clk_sync_rst", "rst_ui_clk/ext_reset_in"),
            ("rst_ui_clk/interconnect_aresetn", "axi_smc/aresetn")} <= nets
    assert tcl.rindex("assign_bd_address") < tcl.index("validate_bd_design") < tcl.index("save_bd_design")


def test_address_map(build):
    _, _, files = build
    tcl = files["nibble_bd.tcl"]
    segs = dict(re.findall(r"^set (seg_\w+) \[get_bd_addr_segs -of_objects \[get_bd_intf_pins ([\w/]+)\]\]$", tcl, re.M))
    spaces = dict(re.findall(r"^set (space_\w+) \[get_bd_addr_spaces -of_objects \[get_bd_intf_pins ([\w/]+)\]\]$",
                             tcl, re.M))
    assert segs == {"seg_accel": "nibble_accel_0/s_axi", "seg_ddr": "mig_7series_0/S_AXI"}
    assert spaces == {"space_dma": "xdma_0/M_AXI", "space_bar": "xdma_0/M_AXI_LITE", "space_accel": "nibble_accel_0/m_axi"}
    got = {(spaces[s], int(off, 16), rng, segs[g]) for s, off, rng, g in re.findall(
        r"^assign_bd_address -target_address_space \$(\w+) -offset (0x[0-9A-F]+) -range (\w+) \$(\w+)$", tcl, re.M)}
    assert got == {("xdma_0/M_AXI", 0, "1G", "nibble_accel_0/s_axi"), ("xdma_0/M_AXI", DDR_BASE, "1G", "mig_7series_0/S_AXI"),
                   ("xdma_0/M_AXI_LITE", 0, "1G", "nibble_accel_0/s_axi"),
                   ("nibble_accel_0/m_axi", DDR_BASE, "1G", "mig_7series_0/S_AXI")}
    # every region of the regmap is inside the accelerator's window, the DDR window is the MIG's
    rm = regmap(_cfg(), ddr=True)
    for name, r in rm["regions"].items():
        if name == "ddr":
            assert (r["base"], r["bytes"]) == (DDR_BASE, 1 << 30)
        else:
            assert r["base"] + 4 * r["words"] <= 1 << 30


def test_project_tcl_and_constraints(build):
    board, _, files = build
    part, lane0, refclk, perst = FACTS[board]
    prj = files["nibble_pcie.tcl"]
    assert f"-part {part}" in prj and f"get_board_parts -quiet xilinx.com:{board}:part0:*" in prj
    order = ["add_files -norecurse [file join $here nibble_accel.v]", "source [file join $here nibble_bd.tcl]",
             "make_wrapper -files $bd_file -top", "set_property top nibble_bd_wrapper",
             "add_files -fileset constrs_1 -norecurse [file join $here nibble_pcie.xdc]",
             "launch_runs synth_1", "launch_runs impl_1 -to_step write_bitstream"]
    assert [prj.index(s) for s in order] == sorted(prj.index(s) for s in order)
    assert "nibble_pcie.tcl" in files["build_nibble_pcie.sh"]
    xdc = files["nibble_pcie.xdc"]
    b = PCIE_BOARDS[board]
    assert f"PACKAGE_PIN {lane0} [get_ports {{pcie_mgt_rxp[0]}}]" in xdc
    assert f"PACKAGE_PIN {refclk} [get_ports {{pcie_refclk_clk_p*}}]" in xdc
    assert re.search(rf"PACKAGE_PIN {perst} IOSTANDARD LVCMOS\d\d PULLUP true\}} \[get_ports pcie_perstn\]", xdc)
    pins = re.findall(r"^set_property .*PACKAGE_PIN (\w+)", xdc, re.M)
    assert len(pins) == len(set(pins)) == 2 + 1 + 32 + 1 + 4
    assert set(b.rx_p + b.rx_n + b.tx_p + b.tx_n) <= set(pins)
    assert "create_clock -name pcie_refclk -period 10.000" in xdc
    # every constrained port is one of the block design's ports
    tcl = files["nibble_bd.tcl"]
    ports = set(re.findall(r"create_bd_port -dir \w+ (?:-type \w+ )?(\w+)", tcl))
    for name in re.findall(r"\[get_ports \{?([\w*\[\]]+?)\}?\]", xdc):
        base = re.sub(r"(\[\d+\]|\*)$", "", name)
        assert base in ports or base.startswith(("pcie_mgt_", "pcie_refclk_clk_")) or base == "led_", name


def test_regmap_and_report(build):
    board, _, files = build
    cfg = _cfg()
    rm = json.loads(files["regmap.json"])
    del rm["generated"]
    assert rm == json.loads(json.dumps(regmap(cfg, ddr=True)))
    assert rm["regions"]["ddr"] == {"base": DDR_BASE, "bytes": cfg.ddr_bytes, "beat_bits": 8 * cfg.vc}
    h = files["regmap.h"]
    assert f"#define NIBBLE_REGION_DDR_BASE 0x{DDR_BASE:08X}u" in h and "#define NIBBLE_STEP_BYTES 32u" in h
    for name, base in REGION_BASE.items():
        assert f"#define NIBBLE_REGION_{name.upper()}_BASE 0x{base:08X}u" in h
    report = files["report.txt"]
    assert f"board: {board}" in report and "host: pcie (XDMA 4.1, Gen2 x8, AXI-MM" in report
    assert f"clock: MIG ui_clk {CLK_HZ / 1e6:g} MHz" in report
    assert f"memory interface: AXI4 {8 * cfg.vc}-bit data, {cfg.vc} bytes per beat" in report
    assert f"ddr window: 0x{DDR_BASE:08X} + {cfg.ddr_bytes} bytes" in report
    assert "MT8JTF12864HZ-1G6" in report


def test_pcie_errors_are_one_line(tmp_path):
    r = CliRunner().invoke(cli, ["gen", "--board", "kcu105", "--host", "pcie", "-o", str(tmp_path)])
    assert r.exit_code == 1 and r.output.strip() == (
        "error: board 'kcu105' has no PCIe build (boards with one: vc707, kc705)")
    big = tmp_path / "big.json"
    big.write_text(json.dumps({**SMALL, "ddr_bytes": 1 << 31}))
    r = CliRunner().invoke(cli, ["gen", "--board", "vc707", "--host", "pcie", "--config", str(big), "-o", str(tmp_path)])
    assert r.exit_code == 1 and r.output.strip().startswith("error: ddr_bytes = 2147483648 is larger than the VC707's")
    assert not list(tmp_path.glob("*.tcl"))


def test_pcie_buffers_and_memory_interface():
    """The PCIe device's buffers from the gateware's parameters, counted without synthesis."""
    from nibble.gen.pcie import memory_interface
    from nibble.gen.resources import memory_table
    cfg = EngineConfig()
    rows = {r["name"]: r for r in memory_table(cfg, "pcie")}
    uart = {r["name"]: r for r in memory_table(cfg, "uart")}
    assert "bridge buffer" in uart and "bridge buffer" not in rows
    for name in ("filter cache", "parameter", "feature"):
        assert rows[name] == uart[name] and rows[name]["kind"] == "BRAM"
    # with DDR the weight memory is 2·beat_words banks (a DMA beat of weight words a cycle),
    # the feature memory beat_words: the same block RAMs, split
    w, wu = rows["weight"], uart["weight"]
    assert (w["count"], w["depth"], w["BRAM36"]) == (2 * wu["count"], wu["depth"] // 2, wu["BRAM36"])
    wide = {r["name"]: r for r in memory_table(EngineConfig(beat_words=4), "pcie")}
    assert (wide["feature"]["count"], wide["feature"]["depth"]) == (4 * uart["feature"]["count"], uart["feature"]["depth"] // 4)
    assert wide["feature"]["BRAM36"] == uart["feature"]["BRAM36"]
    rb = rows["AXI4 master read buffer"]
    # 4 bursts of 256 beats (a 4 KiB page is 256 beats of 16 bytes), 128 data bits + last + error
    assert (rb["width"], rb["depth"], rb["BRAM36"], rb["kind"]) == (read_beat_layout(128).size, 1024, 4, "BRAM")
    assert rb["width"] == 130
    for name in ("AXI slave read FIFO", "step FIFO", "DMA store buffer"):
        assert rows[name]["kind"] == "LUTRAM" and rows[name]["BRAM36"] == 0 and rows[name]["LUTRAM"] > 0
    mi = memory_interface(cfg)
    assert (mi["axi_data_bits"], mi["beat_bytes"], mi["burst_beats"]) == (128, 16, 256)
    assert (mi["ddr_base"], mi["ddr_bytes"]) == (DDR_BASE, 1 << 30)
    assert memory_interface(EngineConfig(m=32, vc=32))["burst_beats"] == 128    # 4 KiB of 32-byte beats


def test_report_pcie_command(monkeypatch):
    """``nibble report --host pcie``: the AXI bridge instead of the UART bridge, the buffer table and
    the memory interface (block figures stubbed here; tests/test_boards.py synthesizes them)."""
    from nibble.gen import resources
    fake = {"LUT": 10, "FF": 20, "CARRY4": 1, "DSP48E1": 0, "depth": 5}
    seen = []
    monkeypatch.setattr(resources, "_synth_block", lambda name, config, host="uart": seen.append((name, host)) or fake)
    r = CliRunner().invoke(cli, ["report", "--board", "kc705", "--host", "pcie", "--json"])
    assert r.exit_code == 0, r.output
    est = json.loads(r.output)
    assert est["host"] == "pcie" and "axi_bridge" in est["blocks"] and "uart_bridge" not in est["blocks"]
    assert {h for _, h in seen} == {"pcie"}
    assert est["memory_interface"]["axi_data_bits"] == 128
    assert est["total"]["BRAM36"] == sum(m["BRAM36"] for m in est["memories"])
    r = CliRunner().invoke(cli, ["report", "--board", "vc707", "--host", "pcie"])
    assert r.exit_code == 0, r.output
    assert "| AXI4 master read buffer | 1 | 130 | 1,024 |" in r.output
    assert "memory interface: AXI4 128-bit data (16 bytes per beat" in r.output
    r = CliRunner().invoke(cli, ["report", "--board", "vc707"])
    assert r.exit_code == 0 and "| bridge buffer |" in r.output and "memory interface" not in r.output


def test_bench_resources(monkeypatch):
    """``nibble bench --report BOARD``: the PCIe estimate of the configuration on the board's device
    (block figures stubbed), its deepest path; and a configuration whose block RAM alone exceeds
    the device reported as not fitting, with the reason, without synthesis."""
    from nibble import cli as cli_module
    from nibble.gen import resources
    fake = {"LUT": 10, "FF": 20, "CARRY4": 1, "DSP48E1": 0, "depth": 5, "path": ["hw/pe.py:1"]}
    monkeypatch.setattr(resources, "_synth_block", lambda name, config, host="uart": fake)
    cfg = EngineConfig(**SMALL)
    r = cli_module._bench_resources("vc707", cfg)
    assert (r["board"], r["device"], r["host"], r["fits"]) == ("vc707", "xc7vx485t", "pcie", True)
    est = resources.estimate(cfg, "xc7vx485t", host="pcie")
    assert r["total"] == est["total"] and r["percent"] == est["percent"]
    assert r["depth"] == 5 and r["depth_path"] == ["hw/pe.py:1"]
    huge = EngineConfig(**{**SMALL, "feature_depth": 1 << 22})
    r = cli_module._bench_resources("kc705", huge)
    assert r["fits"] is False and "BRAM36" in r["reason"]
