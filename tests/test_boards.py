"""Boards (KC705, VC707), extra constraints, regmap.h, stamps, resource report and baselines."""
import json
import pathlib
import re

import pytest
from click.testing import CliRunner

from nibble.cli import cli
from nibble.gen.baselines import BASELINE_BLOCKS, baseline_verilog, load_baseline
from nibble.gen.boards import BOARDS, git_revision, regmap_header
from nibble.gen.resources import DEVICES, FitError, bram36, estimate, synth_verilog, yosys_version
from nibble.hw.accelerator import CSRS, REGION_BASE, regmap
from nibble.hw.config import EngineConfig
from nibble.hw.engine import EngineError

SMALL = dict(m=8, vc=8, filter_depth=64, feature_depth=1024, weight_depth=1024, param_depth=256)

BOARD_FACTS = {
    # board: (part in the TCL, clock resource, clock period ns, rx pin, tx pin, clk_hz)
    "kc705": ("xc7k325tffg900-2", "clk156", "6.41", "M19", "K24", 156_000_000),
    "vc707": ("xc7vx485tffg1761-2", "clk200", "5.0", "AU33", "AU36", 200_000_000),
}


@pytest.fixture(scope="module")
def synth_cache(tmp_path_factory):
    """A fresh synthesis cache for this module: the figures below are synthesized, not read back."""
    return tmp_path_factory.mktemp("synth-cache")


@pytest.fixture
def small_config(tmp_path):
    path = tmp_path / "small.json"
    path.write_text(json.dumps(SMALL))
    return path


@pytest.fixture
def small_sac_config(tmp_path):
    """The small configuration without the Winograd path: the whole-accelerator baseline's, so the
    report and the composition check share their block syntheses."""
    path = tmp_path / "small_sac.json"
    path.write_text(json.dumps({**SMALL, "winograd": False}))
    return path


def test_cli_board_choices_come_from_boards():
    out = CliRunner().invoke(cli, ["gen", "--help"]).output
    assert all(name in out for name in BOARDS) and {"kc705", "vc707"} <= set(BOARDS)


@pytest.mark.parametrize("board", sorted(BOARD_FACTS))
def test_gen(board, tmp_path, small_config):
    part, clk, period, rx, tx, clk_hz = BOARD_FACTS[board]
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["gen", "--board", board, "--config", str(small_config), "-o", str(out)])
    assert r.exit_code == 0, r.output
    tcl = (out / "nibble_top.tcl").read_text()
    assert f"-part {part}" in tcl
    # the board's extra constraints are part of the build, read after the pin constraints
    assert tcl.index("read_xdc nibble_top.xdc") < tcl.index(f'read_xdc "{board}.xdc"')
    extra = (out / f"{board}.xdc").read_text()
    assert "set_false_path -from [get_ports uart_0__rx__io]" in extra
    assert "set_false_path -to [get_ports {led_*__io}]" in extra
    xdc = (out / "nibble_top.xdc").read_text()
    assert re.search(rf"create_clock -name {clk}_0__p -period {re.escape(period)}\d* ", xdc)
    assert f"LOC {rx} " in xdc and f"LOC {tx} " in xdc
    v = (out / "nibble_top.v").read_text()
    assert "module nibble_top" in v
    assert all(p in v for p in ("uart_0__rx__io", "uart_0__tx__io", f"{clk}_0__p", f"{clk}_0__n"))
    cfg = EngineConfig(**{**SMALL, "clk_hz": clk_hz})
    assert json.loads((out / "config.json").read_text()) == cfg.to_dict()

    # regmap.h carries the CSR offsets, region bases and error codes of the gateware
    h = (out / "regmap.h").read_text()
    for i, (name, _, _) in enumerate(CSRS):
        assert re.search(rf"#define NIBBLE_CSR_{name.upper()} 0x{4 * i:02X}u\b", h)
    for name, base in REGION_BASE.items():
        assert f"#define NIBBLE_REGION_{name.upper()}_BASE 0x{base:08X}u" in h
    for e in EngineError:
        assert f"#define NIBBLE_ERR_{e.name} {int(e)}u" in h
    assert h == regmap_header(regmap(cfg), f"nibble {git_revision()}, config {cfg.digest()}")

    report = (out / "report.txt").read_text()
    assert f"board: {board}" in report and f"csrs: {len(CSRS)}" in report
    assert f"clock: {clk} {clk_hz / 1e6:g} MHz" in report and f"config digest: {cfg.digest()}" in report

    # stamps: git revision and configuration digest, no time
    stamp = f"nibble {git_revision()}, config {cfg.digest()}"
    assert git_revision() != "unknown"          # the tests run in the checkout
    for name in ("nibble_top.v", "nibble_top.tcl", "nibble_top.xdc", f"{board}.xdc", "regmap.h",
                 "report.txt", "build_nibble_top.sh"):
        text = (out / name).read_text()
        assert stamp in text.splitlines()[1], name
        assert not re.search(r"\b20\d\d-\d\d-\d\d\b|\d\d:\d\d:\d\d", text), name
    assert json.loads((out / "regmap.json").read_text())["generated"] == stamp

    # a second run rewrites nothing
    mtimes = {f.name: f.stat().st_mtime_ns for f in out.iterdir()}
    r = CliRunner().invoke(cli, ["gen", "--board", board, "--config", str(small_config), "-o", str(out)])
    assert r.exit_code == 0 and mtimes == {f.name: f.stat().st_mtime_ns for f in out.iterdir()}


def test_bram_count_from_memory_sizes():
    assert bram36(32, 256) == 0.5                 # one RAMB18 (512 × 36)
    assert bram36(64, 512) == 1                   # 512 × 72
    assert bram36(128, 8192) == 30                # 1 Mib: 4K × 9 (parity bits as data), 15 wide
    assert bram36(32, 4096) == 4                  # 4 × (1K × 36)


def test_does_not_fit_is_one_error_line(tmp_path, synth_cache, monkeypatch):
    monkeypatch.setenv("NIBBLE_CACHE_DIR", str(synth_cache))
    path = tmp_path / "huge.json"
    path.write_text(json.dumps({**SMALL, "feature_depth": 1 << 24, "weight_depth": 1 << 22}))
    r = CliRunner().invoke(cli, ["report", "--board", "kc705", "--config", str(path)])
    assert r.exit_code == 1
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: configuration does not fit xc7k325t: BRAM36")
    with pytest.raises(FitError, match="xc7vx485t"):
        estimate(EngineConfig(**{**SMALL, "feature_depth": 1 << 24}), "xc7vx485t")


@pytest.mark.slow
def test_synthesis_matches_baseline(synth_cache, monkeypatch):
    monkeypatch.setenv("NIBBLE_CACHE_DIR", str(synth_cache))
    base = load_baseline(yosys_version())["blocks"]
    assert set(base) == set(BASELINE_BLOCKS)
    for name in BASELINE_BLOCKS:
        got = synth_verilog(baseline_verilog(name), name)
        for res in ("LUT", "FF", "CARRY4", "DSP48E1"):
            want = base[name][res]
            assert abs(got[res] - want) <= max(1, 0.10 * want), (name, res, got[res], want)


@pytest.mark.slow
def test_blocks_command(synth_cache, monkeypatch):
    """``nibble blocks``: the SAC lane, the multiplier lane (one DSP48E1, no LUT multiplier), the
    pre-PE and the post-PE, as synthesized, within the baseline's tolerance; a table and JSON."""
    from nibble.gen.baselines import LANE_BLOCKS
    monkeypatch.setenv("NIBBLE_CACHE_DIR", str(synth_cache))
    base = load_baseline(yosys_version())["blocks"]
    r = CliRunner().invoke(cli, ["blocks", "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)["blocks"]
    assert list(got) == list(LANE_BLOCKS)
    for name in LANE_BLOCKS:
        for res in ("LUT", "FF", "CARRY4", "DSP48E1"):
            assert abs(got[name][res] - base[name][res]) <= max(1, 0.10 * base[name][res]), (name, res)
    assert got["mult_lane"]["DSP48E1"] == 1 and got["mult_lane"]["LUT"] <= 4
    assert got["sac_lane"]["DSP48E1"] == 0 and got["pre_pe"]["DSP48E1"] == got["post_pe"]["DSP48E1"] == 0
    r = CliRunner().invoke(cli, ["blocks"])
    assert r.exit_code == 0 and "| mult_lane | " in r.output and "36 SAC lane operations" in r.output


def test_winograd_blocks_and_memories_counted():
    """With the Winograd path the report counts vc pre-PEs, m post-PEs and m transformed-weight
    caches (88 bits x 64 words: 1.5 RAMB36 each, UG473 aspect ratios)."""
    from nibble.gen.resources import BLOCKS, bram36, memories
    cfg = EngineConfig(**SMALL)
    assert cfg.winograd and BLOCKS["pre_pe"](cfg) == cfg.vc and BLOCKS["post_pe"](cfg) == cfg.m
    mems = {name: (n, w, d) for name, n, w, d in memories(cfg)}
    n, w, d = mems["transformed-weight cache"]
    assert n == 8 and bram36(w, d) == 1.5
    assert mems["feature"][0] == 2 and "transformed-weight cache" not in {
        name for name, *_ in memories(EngineConfig(**SMALL, winograd=False))}


@pytest.mark.slow
def test_report_small_config(small_sac_config, synth_cache, monkeypatch):
    small_config = small_sac_config
    monkeypatch.setenv("NIBBLE_CACHE_DIR", str(synth_cache))
    r = CliRunner().invoke(cli, ["report", "--board", "vc707", "--config", str(small_config), "--json"])
    assert r.exit_code == 0, r.output
    est = json.loads(r.output)
    assert est["device"] == "xc7vx485t" and est["fits"] and est["capacity"] == DEVICES["xc7vx485t"]
    blocks = est["blocks"]
    assert blocks["pe"]["count"] == 8 and blocks["controller"]["count"] == 1
    assert est["total"]["LUT"] == sum(b["count"] * b["LUT"] for b in blocks.values())
    # filter caches, param, weight, feature (two copies: two read ports), descriptor cycle log, bridge
    assert est["total"]["BRAM36"] == 8 * 0.5 + 0.5 + 1 + 2 * 2 + 1 + 0.5
    assert blocks["pre_pe"]["count"] == 0 and blocks["post_pe"]["count"] == 0
    assert blocks["pe"]["DSP48E1"] == 0        # SAC lanes only: no multiplier
    assert blocks["pe"]["LUT"] > 8 * blocks["sac_lane"]["LUT"] > 0
    assert est["depth"] == max(b["depth"] for b in blocks.values()) > 0
    # the table; a second report comes from the cache
    r = CliRunner().invoke(cli, ["report", "--board", "kc705", "--config", str(small_config)])
    assert r.exit_code == 0, r.output
    assert "| LUT |" in r.output and "| 203,800 |" in r.output and "| BRAM36 | 11 |" in r.output
    assert re.search(r"logic depth \(cells between registers\): \d+, in \w+", r.output)


@pytest.mark.slow
def test_depth_matches_baseline(synth_cache, monkeypatch):
    """Every block the report composes, with either host interface, is no deeper than its recorded
    logic depth (at most 10 % or 1 cell more): a longer combinational path shows here. The depth
    is measured between registers (flip-flops, block RAMs and registered DSP48E1s cut a path)."""
    from nibble.gen.baselines import report_depths
    monkeypatch.setenv("NIBBLE_CACHE_DIR", str(synth_cache))
    base = load_baseline(yosys_version())["depth"]
    got = report_depths()
    assert set(got) == set(base) == {"uart", "pcie"}
    for host in got:
        assert set(got[host]) == set(base[host]), host
        for name, d in got[host].items():
            assert 0 < d <= base[host][name] + max(1, base[host][name] // 10), (host, name, d, base[host][name])


def test_depth_cuts_at_registers():
    """The depth script deletes flip-flops, shift registers, block RAMs and DSP48E1s with pipeline
    registers before ``ltp``, so a path ends at a register: two 32-bit adders with a register
    between them are half as deep as the same adders in series."""
    from amaranth import Module, Signal
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    class Adders(wiring.Component):
        a: In(32)
        b: In(32)
        y: Out(34)

        def __init__(self, registered):
            self.registered = registered
            super().__init__()

        def elaborate(self, platform):
            m = Module()
            t = Signal(33)
            first = t.eq(self.a + (self.b << 1))
            if self.registered:
                m.d.sync += first
            else:
                m.d.comb += first
            m.d.sync += self.y.eq(t + self.a + (self.b >> 3))
            return m

    from nibble.gen.resources import _convert
    comb = synth_verilog(_convert(Adders(False)), "adders")
    reg = synth_verilog(_convert(Adders(True)), "adders (registered)")
    assert reg["FF"] > comb["FF"] and 0 < reg["depth"] < comb["depth"]
    # the path's source lines: from the Verilog line a Yosys cell keeps, to Amaranth's src attribute
    from nibble.gen.resources import _path_sources
    here = pathlib.Path(__file__).resolve()
    verilog = (f'module top;\n  assign \\$1 = a < (* src = "{here}:7" *) b;\n'
               '  assign \\$2 = c + (* src = "/elsewhere/x.py:9" *) d;\n')
    ltp = ("Longest topological path in top (length=3):\n    0: \\a [0]\n"
           "    1: $n1 (via $lt$top.v:2$5.genblk1.slice[0].genblk1.carry4)\n"
           "    2: $n2 (via $lt$top.v:2$5.genblk1.slice[1].genblk1.carry4)\n"
           "    3: $n3 (via $abc$1$lut$o7)\n    4: $n4 (via $add$top.v:3$6)\n")
    assert _path_sources(ltp, verilog) == ["tests/test_boards.py:7", "x.py:9"]


@pytest.mark.slow
def test_composition_matches_whole_accelerator(synth_cache, monkeypatch):
    """The per-block composition of the report against the whole small accelerator synthesized in
    one piece (recorded in the baseline): LUT, CARRY4 and DSP48E1 within 10 %; FF within 25 % (a
    PE's tag registers and pipeline valid bits are shared in the array, so the blocks over-count
    them, while registers at the black-box boundaries are counted once on either side)."""
    from nibble.gen.baselines import COMPOSITION_CONFIG
    monkeypatch.setenv("NIBBLE_CACHE_DIR", str(synth_cache))
    whole = load_baseline(yosys_version())["composition"]
    assert whole["config"] == COMPOSITION_CONFIG == {**SMALL, "winograd": False}
    total = estimate(EngineConfig(**COMPOSITION_CONFIG), "xc7vx485t")["total"]
    for res in ("LUT", "CARRY4", "DSP48E1"):
        assert abs(total[res] - whole["whole"][res]) <= max(1, 0.10 * whole["whole"][res]), res
    assert abs(total["FF"] - whole["whole"]["FF"]) <= 0.25 * whole["whole"]["FF"]


def test_large_composition_recorded():
    """The 1,024-lane configuration synthesized whole (``make_baseline.py``, about 4 minutes, not
    rerun here) against the report's composition recorded with it: LUT, CARRY4 and DSP48E1 within
    10 %, FF within 25 %, as for the small configuration; and it is the configuration named."""
    from nibble.gen.baselines import LARGE_COMPOSITION_CONFIG
    rec = load_baseline(yosys_version())["composition_large"]
    cfg = EngineConfig(**rec["config"])
    assert rec["config"] == LARGE_COMPOSITION_CONFIG and cfg.peak_ops_per_cycle >= 1000
    whole, est = rec["whole"], rec["estimate"]
    for res in ("LUT", "CARRY4", "DSP48E1"):
        assert abs(est[res] - whole[res]) <= max(1, 0.10 * whole[res]), res
    assert abs(est["FF"] - whole["FF"]) <= 0.25 * whole["FF"]
