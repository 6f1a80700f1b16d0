"""Board output (KC705) and the generated register map."""
import json

from nibble.gen.boards import generate
from nibble.hw.accelerator import CSRS, REGION_BASE, regmap
from nibble.hw.config import EngineConfig


SMALL = EngineConfig(m=8, vc=8, filter_depth=64, feature_depth=1024, weight_depth=1024, param_depth=256)


def test_kc705_build_files(tmp_path):
    files = {f.name for f in generate("kc705", SMALL, tmp_path)}
    assert {"nibble_top.v", "nibble_top.xdc", "nibble_top.tcl", "build_nibble_top.sh", "regmap.json"} <= files
    tcl = (tmp_path / "nibble_top.tcl").read_text()
    assert "-part xc7k325tffg900-2" in tcl
    xdc = (tmp_path / "nibble_top.xdc").read_text()
    assert "create_clock" in xdc and "clk156" in xdc
    assert "LOC M19" in xdc and "LOC K24" in xdc        # UART rx / tx pins of the KC705
    v = (tmp_path / "nibble_top.v").read_text()
    assert "module nibble_top" in v and "uart_0__rx__io" in v and "uart_0__tx__io" in v
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["clk_hz"] == 156_000_000 and cfg["m"] == 8
    # written only when it changes
    mtime = (tmp_path / "nibble_top.v").stat().st_mtime_ns
    generate("kc705", SMALL, tmp_path)
    assert (tmp_path / "nibble_top.v").stat().st_mtime_ns == mtime


def test_regmap_is_generated_from_the_tables():
    rm = regmap(EngineConfig(m=32, vc=16, feature_depth=1024))
    assert list(rm["csrs"]) == [name for name, _, _ in CSRS]
    assert rm["csrs"]["ctrl"]["offset"] == 4 * [n for n, _, _ in CSRS].index("ctrl")
    assert rm["regions"]["feature"] == {"base": REGION_BASE["feature"], "words": 4096, "word_bits": 128,
                                        "slices": 4, "depth": 1024}
    assert rm["regions"]["weight"]["slices"] == 2 and rm["config"]["m"] == 32
    assert json.loads(json.dumps(rm)) == rm
