"""Write the README's benchmark tables from a ``nibble bench`` JSON file, so they cannot drift.

    python scripts/readme_figures.py bench.json [README.md]

Each block between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` is replaced by the
table :data:`BLOCKS` ``[NAME]`` makes from the JSON; a block whose bench sections are missing
from the file (a ``--only`` run) is left as it is and named on stderr. Exit status 1 with a
message for a file that is not a bench JSON or a README without the markers.
"""
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _n(x):
    return f"{round(x):,}"


def measured(b):
    """The rows of the conv3x3, deconv and networks benches."""
    c, d, nets = b["conv3x3"], b["deconv"], b["networks"]
    cd, cw = c["direct"], c["winograd"]
    lay = c["layer"]
    rows = [
        "| what | figure |", "|---|---|",
        f"| conv 3×3, Cin = {lay['cin']}, Cout = {lay['cout']}, {lay['h']}×{lay['w']}, direct (SAC lanes) | "
        f"{_n(cd['rtl_cycles'])} RTL cycles against the ideal {_n(cd['ideal_cycles'])} (ratio "
        f"{cd['cycles_over_ideal']:.3f}, PE utilization {100 * cd['pe_utilization']:.1f} %), "
        f"{'bit-exact' if cd['bit_exact_vs_golden'] else 'NOT bit-exact'} |",
        f"| same layer, Winograd F(2×2,3×3) (multiplier lanes) | {_n(cw['rtl_cycles'])} RTL cycles against the ideal "
        f"{_n(cw['ideal_cycles'])} (ratio {cw['cycles_over_ideal']:.3f}), "
        f"{'bit-exact' if cw['bit_exact_vs_golden'] else 'NOT bit-exact'}"
        f"{', outputs identical to direct' if c['outputs_identical'] else ''} |",
        f"| direct ÷ Winograd | **{c['direct_over_winograd_cycles']:.2f}×** cycles (theory {c['theory_ratio']:.2f}×: "
        "9 against 4 multiplications per output) |",
    ]
    name = d["layer"]["name"]
    n, t, w = d["nzp"], d["tdc"], d["winograd_tdc"]
    rows += [
        f"| DCGAN {name} (published weights), NZP | {_n(n['rtl_cycles'])} cycles, "
        f"{n['mults_per_output_per_cin']:.2f} multiplications per output per input channel |",
        f"| same, TDC ({t['descriptors']} phase descriptors, structural zeros dropped) | {_n(t['rtl_cycles'])} cycles, "
        f"{t['mults_per_output_per_cin']:.2f} mult./output/Cin: **NZP ÷ TDC {d['nzp_over_tdc_cycles']:.2f}×** "
        f"(theory S² = {d['theory']['nzp_over_tdc']}) |",
        f"| same, Winograd-TDC | {_n(w['rtl_cycles'])} cycles, {w['mults_per_output_per_cin']:.2f} mult./output/Cin: "
        f"**NZP ÷ Winograd-TDC {d['nzp_over_winograd_tdc_cycles']:.2f}×** (theory "
        f"{d['theory']['nzp_over_winograd_tdc']:.2f}) |",
        f"| DCGAN {name} on the RTL | "
        + ("bit-identical to the golden model in every form" if all(x["bit_exact_vs_golden"] for x in (n, t, w))
           else "NOT bit-identical to the golden model")
        + f"; SNR against the float layer {t['snr_db_vs_float']:.1f} dB |",
    ]
    clk = b["networks"]["clk_mhz"]
    for key, label in (("squeezenet11", "SqueezeNet 1.1"), ("resnet18", "ResNet-18")):
        r = nets["networks"].get(key)
        if r is None:
            continue
        if not r["compiles"]:
            rows.append(f"| {label} | does not compile: {r['reason']} |")
            continue
        mb = (r["ddr_read_bytes"] + r["ddr_write_bytes"]) / 1e6
        rows.append(
            f"| {label}, {r['size']}×{r['size']}, whole on the RTL (`--tile-features`) | {_n(r['cycles'])} cycles per "
            f"image ({r['images_per_s_at_clk']:.0f} images/s at {clk:.0f} MHz), {mb:.1f} MB of DDR traffic, "
            f"{100 * r['stall_fraction']:.1f} % of the cycles waiting for memory, {r['descriptors']} descriptors, "
            f"energy estimate {r['energy_uj'] / 1e3:.2f} mJ ({r['energy_dram_uj'] / 1e3:.2f} mJ of it DRAM); "
            + ("bit-identical to the golden model |" if r["bit_exact_vs_golden"] else "NOT bit-identical |"))
    return rows


def energy(b):
    """The deconvolution forms' energy estimate, by component."""
    d = b["deconv"]
    rows = ["| form | energy / image | PE array | filter caches | feature memory | vs NZP |", "|---|---|---|---|---|---|"]
    for key, label in (("nzp", "NZP (zero insertion)"), ("tdc", "TDC"), ("winograd_tdc", "Winograd-TDC")):
        f, p = d[key], d[key]["energy_parts_uj"]
        vs = "1" if key == "nzp" else (f"{d[f'nzp_over_{key}_energy']:.2f}× less "
                                       f"(−{100 * (1 - 1 / d[f'nzp_over_{key}_energy']):.1f} %)")
        rows.append(f"| {label} | {f['energy_uj']:.1f} µJ | {p['pe_array']:.1f} µJ | {p['filter_cache']:.1f} µJ | "
                    f"{p['feature_memory']:.1f} µJ | {vs} |")
    return rows


def link(b):
    """The host links: bytes per simulated cycle of the program load and of one inference's I/O."""
    k = b["link"]
    p, u = k["pcie"], k["uart"]
    clk = k["clk_mhz"]
    return ["| host link of the simulated device | bytes per cycle, program load | per inference I/O | load, wall time |",
            "|---|---:|---:|---:|",
            f"| PCIe (AXI4 port) | {p['load']['bytes_per_cycle']:.2f} ({p['load']['mb_per_s_at_clk']:.0f} MB/s at "
            f"{clk:.0f} MHz) | {p['inference_io']['bytes_per_cycle']:.2f} | {p['load']['wall_s']:.2f} s |",
            f"| UART frames on the byte streams | {u['load']['bytes_per_cycle']:.2f} | "
            f"{u['inference_io']['bytes_per_cycle']:.2f} | {u['load']['wall_s']:.2f} s |",
            f"| **PCIe ÷ UART stub** | **{k['pcie_over_uart_stub_load']:.1f}×** | "
            f"**{k['pcie_over_uart_stub_inference_io']:.1f}×** | {k['pcie_over_uart_stub_load_wall']:.1f}× |",
            "",
            f"Against the serial line itself, PCIe moves **{k['pcie_over_uart_line_load']:.0f}×** the bytes per cycle "
            f"of a 1 Mbaud UART ({k['uart_line_bytes_per_cycle']:.5f} bytes per cycle at {clk:.0f} MHz). A whole "
            f"inference of the layer over PCIe: {_n(p['engine_cycles'])} engine cycles and "
            f"{_n(p['inference_io']['cycles'])} transfer cycles."]


#: Block name → (bench sections it needs, the function making its lines).
BLOCKS = {"measured": (("conv3x3", "deconv", "networks"), measured), "energy": (("deconv",), energy),
          "link": (("link",), link)}


def update(text, bench):
    """``(new text, updated block names, skipped block names)``.

    :raises ValueError: a block's markers are missing or appear twice.
    """
    done, skipped = [], []
    for name, (needs, make) in BLOCKS.items():
        pat = re.compile(rf"(<!-- bench:{name} -->\n)(.*?)(<!-- /bench:{name} -->)", re.S)
        found = pat.findall(text)
        if len(found) != 1:
            raise ValueError(f"the README has {len(found)} '<!-- bench:{name} -->' … '<!-- /bench:{name} -->' "
                             "blocks, expected 1")
        if not all(s in bench for s in needs):
            skipped.append(name)
            continue
        lines = "\n".join(make(bench)) + "\n"
        text = pat.sub(lambda m: m.group(1) + lines + m.group(3), text)
        done.append(name)
    return text, done, skipped


def main(argv):
    if len(argv) not in (2, 3):
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    readme = Path(argv[2]) if len(argv) == 3 else ROOT / "README.md"
    try:
        bench = json.loads(Path(argv[1]).read_text())
        if not isinstance(bench, dict):
            raise ValueError("not a JSON object")
        text, done, skipped = update(readme.read_text(), bench)
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"error: {argv[1]}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    readme.write_text(text)
    print(f"{readme}: updated {', '.join(done) or 'nothing'}" + (f"; left {', '.join(skipped)} (not in the bench "
                                                                 "file)" if skipped else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
