"""PNG plots of a ``nibble bench`` result (``nibble bench --plot DIR``), drawn with matplotlib (Agg).

* ``utilization.png``: PE-array occupancy per plan (beats ÷ engine cycles, measured from the
  descriptor cycle log, beside the model's ``layer_beats`` ÷ ``layer_cycles``) of every network
  the bench ran, and the measured PE utilization of the conv3x3 layer in both forms;
* ``roofline.png``: MACs per cycle against MACs per DDR byte for every run that moved its data
  through DDR (the networks with every map in DDR, the weight-streaming cases), measured on the
  RTL, under the configuration's ceilings — compute ``m·vc·vp`` MAC/cycle (dense SAC lanes) and
  memory ``min(beat bytes, DDR_BYTES_PER_CYCLE)`` bytes/cycle (one ``beat_bits`` AXI beat per cycle, the
  DDR3-1600 model of :mod:`nibble.sim.ddr`);
* ``deconv.png``: the DCGAN Deconv2 layer as NZP, TDC and Winograd-TDC — RTL cycles and energy
  estimate, with NZP ÷ form ratios against the published anchors.

Each plot is drawn only when the bench result holds its part (``--only`` runs one).
"""
import pathlib

__all__ = ["bench_plots", "PLOTS"]

#: File names of the plots, by the bench parts they need.
PLOTS = {"utilization.png": ("networks", "conv3x3"), "roofline.png": ("networks", "memory"),
         "deconv.png": ("deconv",)}


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _utilization(res, config, path):
    plt = _plt()
    nets = {n: r for n, r in res.get("networks", {}).get("networks", {}).items() if r.get("compiles")}
    panels = len(nets) + ("conv3x3" in res)
    fig, axes = plt.subplots(panels, 1, figsize=(11, 2.6 * panels), squeeze=False)
    axes = [a[0] for a in axes]
    for ax, (name, r) in zip(axes, nets.items()):
        occ = [L["beats"] / L["model_cycles"] for L in r["layers"]]
        measured = all(L.get("rtl_engine_cycles") for L in r["layers"])
        if measured:        # the descriptor cycle log, summed over each plan's row bands
            ax.bar(range(len(occ)), [L["beats"] / L["rtl_engine_cycles"] for L in r["layers"]], color="C0",
                   width=0.85, label="RTL (descriptor cycle log)")
        ax.bar(range(len(occ)), occ, width=0.85, fill=False, edgecolor="C1", label="model (whole plan)")
        ax.legend(fontsize=7, loc="lower left")
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("beats / engine cycle")
        dense = r["macs"] / (r["cycles"] * config.peak_ops_per_cycle)
        ax.set_title(f"{name} {r['size']}²: PE-array occupancy per plan; whole network on the RTL: "
                     f"{dense:.0%} dense utilization, {r['stall_fraction']:.1%} of cycles stalled on DDR", fontsize=9)
        ax.set_xlabel("descriptor (layer order)")
    if "conv3x3" in res:
        ax = axes[-1]
        c = res["conv3x3"]
        forms = [f for f in ("direct", "winograd") if "pe_utilization" in c.get(f, {})]
        ax.barh(forms, [c[f]["pe_utilization"] for f in forms], color=["C0", "C1"][:len(forms)])
        for i, f in enumerate(forms):
            ax.text(c[f]["pe_utilization"], i, f" {c[f]['pe_utilization']:.1%}", va="center", fontsize=8)
        ax.set_xlim(0, 1.15)
        ax.set_xlabel("PE utilization (multiplications as scheduled ÷ (cycles · lanes), RTL)")
        lay = c.get("layer", {})
        ax.set_title(f"conv3x3 {lay.get('cin', '')}→{lay.get('cout', '')} {lay.get('h', '')}²", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _roofline(res, config, path):
    from ..ddr import DDR_BYTES_PER_CYCLE
    plt = _plt()
    pts = []
    for name, r in res.get("networks", {}).get("networks", {}).items():
        if r.get("compiles"):
            pts.append((f"{name} {r['size']}²", r["macs"], r["ddr_read_bytes"] + r["ddr_write_bytes"], r["cycles"]))
    for case in res.get("memory", {}).get("cases", []):
        s = case["streamed"]
        pts.append((f"3×3 {case['channels']}ch {case['size']}² streamed", case["macs"],
                    s["ddr_read_bytes"] + s["ddr_write_bytes"], s["cycles"]))
    peak = config.peak_ops_per_cycle
    bw = min(float(config.beat_bits // 8), float(DDR_BYTES_PER_CYCLE))
    xs = [p[1] / p[2] for p in pts]
    lo, hi = min(xs + [1.0]) / 4, max(xs + [peak / bw]) * 4
    fig, ax = plt.subplots(figsize=(7.5, 5))
    grid = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    ax.plot(grid, [min(peak, bw * x) for x in grid], color="k", lw=1.5,
            label=f"ceilings: {peak} MAC/cycle, {bw:g} bytes/cycle")
    for k, (label, macs, nbytes, cycles) in enumerate(pts):
        ax.scatter([macs / nbytes], [macs / cycles], color=f"C{k % 10}", s=30, label=label, zorder=3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("operational intensity, MACs per DDR byte")
    ax.set_ylabel("MACs per cycle (RTL)")
    ax.set_title(f"roofline, m={config.m} vc={config.vc} (dense MACs; Winograd layers may exceed the SAC ceiling)",
                 fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _deconv(res, path):
    plt = _plt()
    d = res["deconv"]
    forms = [("nzp", "NZP"), ("tdc", "TDC"), ("winograd_tdc", "Winograd-TDC")]
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, unit, ratio in ((a0, "rtl_cycles", "cycles (RTL)", "cycles"),
                                 (a1, "energy_uj", "energy, µJ (45 nm estimate)", "energy")):
        vals = [d[f][key] for f, _ in forms]
        ax.bar([n for _, n in forms], vals, color=["C3", "C0", "C2"])
        for i, (f, _) in enumerate(forms):
            txt = f"{vals[i]:,.0f}" if key == "rtl_cycles" else f"{vals[i]:.1f}"
            if f != "nzp":
                txt += f"\n{d[f'nzp_over_{f}_{ratio}']:.2f}× less"
            ax.text(i, vals[i], txt, ha="center", va="bottom", fontsize=8)
        ax.set_ylabel(unit)
        ax.set_ylim(0, max(vals) * 1.25)
    lay = d.get("layer", {})
    a0.set_title(f"DCGAN {lay.get('name', '')}: {lay.get('cin', '')}→{lay.get('cout', '')}, "
                 f"K{lay.get('kernel', '')} S{lay.get('stride', '')}", fontsize=9)
    a1.set_title("published: 3.65× less (Chang & Kang), 27.7–54.5 % less (Xu et al.)",
                 fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def bench_plots(res, config, out_dir):
    """Draw the plots of :data:`PLOTS` that the bench result ``res`` (``nibble bench``'s JSON as
    a dict) has data for, into ``out_dir`` (created); ``config`` the ``EngineConfig`` it ran
    with. Returns the paths written."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    has = lambda parts: any(p in res for p in parts)
    if has(PLOTS["utilization.png"]):
        _utilization(res, config, out / "utilization.png")
        written.append(out / "utilization.png")
    if has(PLOTS["roofline.png"]):
        _roofline(res, config, out / "roofline.png")
        written.append(out / "roofline.png")
    if "deconv" in res:
        _deconv(res, out / "deconv.png")
        written.append(out / "deconv.png")
    return written
