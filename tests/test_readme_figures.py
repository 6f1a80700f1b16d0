"""``scripts/readme_figures.py``: the README's bench tables written from a bench JSON, and the
energy table checked against the estimate computed now (it needs no RTL run)."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import readme_figures  # noqa: E402

from nibble.host.bench import _energy  # noqa: E402
from nibble.hw.config import EngineConfig  # noqa: E402


def _deconv_energy():
    """The deconv bench's energy fields, from the compiled published layer (no RTL)."""
    from nibble.host import split_deconv as sd
    from nibble.host.compiler import compile_model
    model, calib = sd.layer_model("Deconv2"), sd.layer_inputs("Deconv2", 16, 2)
    d = {form: _energy(compile_model(model, calib, EngineConfig(), deconv=mode))
         for form, mode in (("nzp", "nzp"), ("tdc", "tdc"), ("winograd_tdc", "winograd"))}
    for form in ("tdc", "winograd_tdc"):
        d[f"nzp_over_{form}_energy"] = d["nzp"]["energy_uj"] / d[form]["energy_uj"]
    return d


def test_readme_energy_table_is_the_estimate():
    text = (ROOT / "README.md").read_text()
    new, done, skipped = readme_figures.update(text, {"deconv": _deconv_energy()})
    assert done == ["energy"] and skipped == ["measured", "link"]
    assert new == text, "README's energy table is stale: run scripts/readme_figures.py on a bench JSON"


def _synthetic_deconv():
    parts = {"pe_array": 1.0, "filter_cache": 2.0, "feature_memory": 3.0, "weight_memory": 0.5, "param_memory": 0.0}
    d = {form: {"energy_uj": e, "energy_parts_uj": parts} for form, e in (("nzp", 9.0), ("tdc", 4.5), ("winograd_tdc", 3.0))}
    d.update(nzp_over_tdc_energy=2.0, nzp_over_winograd_tdc_energy=3.0)
    return d


def test_update_replaces_only_the_blocks():
    text = ("a\n<!-- bench:measured -->\nold\n<!-- /bench:measured -->\nb\n<!-- bench:link -->\n<!-- /bench:link -->\n"
            "<!-- bench:energy -->\nx\n<!-- /bench:energy -->\n")
    new, done, skipped = readme_figures.update(text, {"deconv": _synthetic_deconv()})
    assert "| TDC | 4.5 µJ | 1.0 µJ | 2.0 µJ | 3.0 µJ | 2.00× less (−50.0 %) |" in new
    assert new.startswith("a\n<!-- bench:measured -->\nold\n<!-- /bench:measured -->\nb\n<!-- bench:link -->\n"
                          "<!-- /bench:link -->\n<!-- bench:energy -->\n| form |")
    assert new.endswith("<!-- /bench:energy -->\n") and "\nx\n" not in new and "Winograd-TDC" in new
    with pytest.raises(ValueError, match="0 '<!-- bench:energy -->'"):
        readme_figures.update("<!-- bench:measured -->\n<!-- /bench:measured -->\n", {})


def test_command_errors(tmp_path):
    bad = tmp_path / "b.json"
    bad.write_text("[1]")
    assert readme_figures.main(["x", str(bad), str(tmp_path / "missing.md")]) == 1
    assert readme_figures.main(["x"]) == 2


def test_readme_compression_table_is_the_measured_json():
    """README's compression table is scripts/compression_table.py's rendering of docs/compression.json
    (the figures are written once, in the JSON)."""
    import json

    import compression_table
    res = json.loads((ROOT / "docs" / "compression.json").read_text())
    assert {"digits", "sr", "rnet", "onet"} <= set(res)
    text = (ROOT / "README.md").read_text()
    assert compression_table.update_readme(text, res) == text, \
        "README's compression table is stale: run scripts/compression_table.py --readme-only"
    for net in ("digits", "sr", "rnet", "onet"):
        rows = res[net]["rows"]
        assert set(rows) >= {"float", "post_training_inq", "incremental_inq", "channels_pruned_0.5"}
        # channel pruning never costs cycles; weights were compiled from the pruned models
        assert rows["channels_pruned_0.5"]["rtl_cycles_per_image"] <= rows["float"]["rtl_cycles_per_image"]
        assert rows["channels_pruned_0.5"]["weight_words"] <= rows["float"]["weight_words"]
