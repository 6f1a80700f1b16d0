"""Design-space sweeps (nibble.sim.perf.sweep, ``nibble sweep``): the grid, the Pareto front, the
dense MAC count against an independent count, points evaluated by the model, and a small sweep
on a local Dask cluster through the command line."""
import csv
import dataclasses

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from nibble.cli import cli
from nibble.host.bench import load_zoo
from nibble.hw.config import EngineConfig
from nibble.sim.perf.sweep import (COLUMNS, config_grid, dense_macs, evaluate, pareto_front, parse_axis,
                                   read_table, skipped_combinations, sweep_points)


def test_parse_axis_types_and_errors():
    assert parse_axis("m=16, 32,64") == ("m", [16, 32, 64])
    assert parse_axis("winograd=true,0") == ("winograd", [True, False])
    for bad, why in [("m", "FIELD=V1"), ("lanes=4", "not an EngineConfig field"), ("m=", "no values"),
                     ("m=sixteen", "not an integer"), ("winograd=maybe", "not a boolean")]:
        with pytest.raises(ValueError, match=why):
            parse_axis(bad)


def test_config_grid_order_and_invalid_combination():
    grid = config_grid(EngineConfig(), {"m": [16, 32], "winograd": [True, False]})
    assert [(c.m, c.winograd) for c in grid] == [(16, True), (16, False), (32, True), (32, False)]
    with pytest.raises(ValueError, match=r"\{'vc': 12\}"):
        config_grid(EngineConfig(), {"vc": [16, 12]})
    # m must be a multiple of vc: skipped on request, and listed
    axes = {"m": [16, 32], "vc": [16, 32]}
    assert [(c.m, c.vc) for c in config_grid(EngineConfig(), axes, skip_invalid=True)] == [(16, 16), (32, 16),
                                                                                          (32, 32)]
    (change, why), = skipped_combinations(EngineConfig(), axes)
    assert change == {"m": 16, "vc": 32} and "multiple of vc" in why
    with pytest.raises(ValueError, match="no valid configuration"):
        config_grid(EngineConfig(), {"vc": [12]}, skip_invalid=True)
    with pytest.raises(ValueError, match="placement 'disk'"):
        sweep_points(["zoo:resnet20_cifar"], grid, placements=("disk",))


def test_pareto_front_named_cases():
    rows = [dict(compiles=True, x=1, y=1), dict(compiles=True, x=2, y=3), dict(compiles=True, x=2, y=2),
            dict(compiles=True, x=3, y=3), dict(compiles=False, x=0, y=9), dict(compiles=True, x=1, y=1)]
    # min x, max y: (1,1) twice (neither strictly better), (2,3); (2,2) and (3,3) dominated
    assert pareto_front(rows, "x", "y") == [0, 1, 5]
    # max x, min y: (3,3) has the largest x, (1,1) the smallest y, (2,2) lies between; (2,3) is
    # dominated by (2,2), the row that does not compile is left out
    assert pareto_front(rows, "x", "y", minimize_x=False, maximize_y=False) == [0, 2, 3, 5]


def _deconv_model():
    rng = np.random.default_rng(3)
    w = numpy_helper.from_array(rng.normal(0, 0.1, (8, 4, 4, 4)).astype(np.float32), "w")
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1])
    g = helper.make_graph([node], "d", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 5, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 10, 12])], [w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def test_dense_macs_against_independent_counts():
    zoo = load_zoo()
    for name in ("resnet20_cifar", "mobilenetv2_cifar"):
        m = zoo.NETWORKS[name]()
        assert dense_macs(m) == zoo.macs(m)
    # a transposed convolution: every input pixel × every tap × the output channels
    assert dense_macs(_deconv_model()) == 8 * 5 * 6 * 4 * 4 * 4


def test_evaluate_points(tmp_path):
    path = tmp_path / "deconv.onnx"
    onnx.save(_deconv_model(), path)
    cfg = EngineConfig()
    ok, fails = sweep_points([str(path), "zoo:squeezenet11@224"], [cfg], placements=("chip",))
    r = evaluate(ok)
    assert set(r) == set(COLUMNS)
    assert r["compiles"] and r["placement"] == "chip" and r["network"] == "deconv" and r["size"] == 5
    assert r["images_per_s"] == pytest.approx(cfg.clk_hz / r["cycles"])
    assert r["ideal_cycles"] == pytest.approx(r["macs"] / (cfg.m * cfg.vc))
    assert r["dram_read_bytes"] == r["dram_write_bytes"] == 0 and r["energy_dram_uj"] == 0
    assert r["energy_uj"] == pytest.approx(r["uj_per_image_on_chip"]) and r["energy_uj"] > 0
    assert r["bram36_fits_vc707"] and r["lut"] is None
    # SqueezeNet 1.1 at 224² does not fit on chip: a row with the compiler's reason
    f = evaluate(fails)
    assert f["compiles"] is False and f["cycles"] is None and "chip:" in f["reason"]
    # transposed convolutions are not banded for maps in DDR: the reason is the compiler's
    t = evaluate(dataclasses.replace(ok, placement="ddr"))
    assert t["compiles"] is False and t["reason"].startswith("ddr: ")
    # maps in DDR: the step list's traffic is counted and priced
    on_chip = evaluate(dataclasses.replace(ok, network="zoo:resnet20_cifar"))
    d = evaluate(dataclasses.replace(ok, network="zoo:resnet20_cifar", placement="ddr"))
    assert d["compiles"] and d["placement"] == "ddr" and d["dram_read_bytes"] > 0 and d["dram_write_bytes"] > 0
    assert d["energy_dram_uj"] > 0 and d["energy_uj"] > on_chip["energy_uj"]
    with pytest.raises(ValueError, match="no zoo network 'lenet'"):
        evaluate(dataclasses.replace(ok, network="zoo:lenet"))
    with pytest.raises(FileNotFoundError, match="no such file"):
        evaluate(dataclasses.replace(ok, network=str(tmp_path / "none.onnx")))


def test_sweep_command_on_a_local_dask_cluster(tmp_path):
    out, png = tmp_path / "sweep.csv", tmp_path / "pareto.png"
    res = CliRunner().invoke(cli, ["sweep", "zoo:resnet20_cifar", "--set", "m=16,32", "--winograd", "auto,direct",
                                   "--workers", "2", "--no-progress", "-o", str(out), "--plot", str(png)])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(out.open()))
    typed = read_table(out)
    assert typed[0]["compiles"] is True and isinstance(typed[0]["cycles"], int) and typed[0]["lut"] is None
    assert [(r["m"], r["conv_mode"]) for r in rows] == [("16", "auto"), ("16", "direct"), ("32", "auto"),
                                                         ("32", "direct")]
    assert all(r["compiles"] == "True" and int(r["cycles"]) > 0 for r in rows)
    # Winograd where it pays: auto is faster than direct on ResNet-20's 3×3 layers
    assert int(rows[0]["cycles"]) < int(rows[1]["cycles"]) and int(rows[0]["winograd_layers"]) > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert res.output.count("images/s") == 4


def test_sweep_command_errors():
    runner = CliRunner()
    for args, why in [(["--set", "lanes=2"], "not an EngineConfig field"), (["--set", "m=16", "--set", "m=32"],
                                                                            "given twice"),
                      (["--deconv", "zero"], "--deconv 'zero'"), (["--winograd", "fast"], "fast"),
                      (["-o", "x.txt"], "write .csv or .json")]:
        res = runner.invoke(cli, ["sweep", "zoo:resnet20_cifar", "--no-progress", "--workers", "1", *args])
        assert res.exit_code == 1 and why in res.output, (args, res.output)


def _synthetic_bench():
    net = {"compiles": True, "size": 224, "macs": 350_000_000, "cycles": 2_400_000, "stall_fraction": 0.13,
           "ddr_read_bytes": 6_000_000, "ddr_write_bytes": 3_000_000,
           "layers": [{"name": f"l{i}", "model_cycles": 1000 + 100 * i, "beats": 900} for i in range(5)]}
    form = lambda c, e: {"rtl_cycles": c, "energy_uj": e}
    deconv = {"nzp": form(832_173, 136.2), "tdc": form(218_292, 46.2), "winograd_tdc": form(109_592, 43.0),
              "layer": {"name": "Deconv2", "cin": 128, "cout": 64, "kernel": 5, "stride": 2}}
    for f in ("tdc", "winograd_tdc"):
        deconv[f"nzp_over_{f}_cycles"] = deconv["nzp"]["rtl_cycles"] / deconv[f]["rtl_cycles"]
        deconv[f"nzp_over_{f}_energy"] = deconv["nzp"]["energy_uj"] / deconv[f]["energy_uj"]
    return {"networks": {"networks": {"squeezenet11": net, "resnet18": {"compiles": False, "reason": "x"}}},
            "memory": {"cases": [{"channels": 64, "size": 16, "layers": 4, "macs": 4 * 16 * 16 * 64 * 64 * 9,
                                  "streamed": {"cycles": 600_000, "ddr_read_bytes": 200_000,
                                               "ddr_write_bytes": 0}}]},
            "conv3x3": {"layer": {"cin": 64, "cout": 64, "h": 32}, "direct": {"pe_utilization": 0.98},
                        "winograd": {"pe_utilization": 0.99}},
            "deconv": deconv}


def test_bench_plots_are_written(tmp_path):
    from nibble.sim.perf.plots import PLOTS, bench_plots
    paths = bench_plots(_synthetic_bench(), EngineConfig(), tmp_path / "plots")
    assert sorted(p.name for p in paths) == sorted(PLOTS)
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # one part only: only its plot
    assert [p.name for p in bench_plots({"deconv": _synthetic_bench()["deconv"]}, EngineConfig(), tmp_path)] == \
        ["deconv.png"]


def test_export_timeloop_files_state_the_schedule(tmp_path):
    """The exported mapping's factors multiply to each dimension of the problem, respect the
    fan-outs (m PEs, vc lanes, vp pixel lanes), and their product — the SAC operations Timeloop
    counts — is the engine's beats × m·vc·vp (layer_beats, which the RTL's beats counter checks);
    on the default configuration and with 4 pixel lanes."""
    import yaml
    from nibble.host.compiler import compile_model, layer_beats
    from nibble.sim.perf.timeloop import TimeloopError, timeloop_files
    zoo = load_zoo()
    for cfg in (EngineConfig(), EngineConfig(vp=4)):
        _check_timeloop(zoo, cfg, yaml, layer_beats, timeloop_files, TimeloopError, compile_model)


def _check_timeloop(zoo, cfg, yaml, layer_beats, timeloop_files, TimeloopError, compile_model):
    p = compile_model(zoo.NETWORKS["resnet20_projection"](), np.random.default_rng(0).normal(0, 1, (2, 3, 32, 32)),
                      cfg, winograd="direct")
    strided = [L for L in p.layers if L.stride == 2]
    assert strided
    layers = [p.layers[0], p.layers[1], strided[0], p.layers[-1]]
    if cfg.vp > 1:             # the classifier's 1-pixel row leaves dead lanes: refused
        assert p.layers[-1].conv_w % cfg.vp
        with pytest.raises(TimeloopError, match=f"not a multiple of vp = {cfg.vp}"):
            timeloop_files(p.layers[-1], cfg)
        layers.pop()
    for L in layers:
        f = {k: yaml.safe_load(v) for k, v in timeloop_files(L, cfg).items()}
        inst = f["problem.yaml"]["problem"]["instance"]
        prod = dict.fromkeys("CMRSNPQ", 1)
        for level in f["mapping.yaml"]["mapping"]:
            if level["type"] == "bypass":
                continue
            fac = dict(kv.split("=") for kv in level["factors"].split())
            assert sorted(fac) == sorted("CMRSNPQ") and sorted(level["permutation"]) == sorted("CMRSNPQ")
            for d, v in fac.items():
                prod[d] *= int(v)
            if level["type"] == "spatial":
                assert int(fac["M"]) * int(fac["C"]) * int(fac["P"]) in (cfg.m, cfg.vc * cfg.vp)
        assert prod == {d: inst[d] for d in "CMRSNPQ"}
        assert inst["Wstride"] == L.stride
        assert np.prod(list(prod.values())) == layer_beats(L, cfg) * cfg.peak_ops_per_cycle
        pe = f["arch.yaml"]["architecture"]["subtree"][0]["subtree"][0]["subtree"][0]
        assert pe["name"] == f"PE[0..{cfg.m - 1}]" and pe["local"][-1]["name"] == f"SAC[0..{cfg.vc * cfg.vp - 1}]"
    # a Winograd plan and a pooled one are refused by name
    pw = compile_model(zoo.NETWORKS["resnet20_cifar"](), np.random.default_rng(0).normal(0, 1, (2, 3, 32, 32)), cfg,
                       winograd="winograd")
    wino = next(L for L in pw.layers if L.winograd)
    with pytest.raises(TimeloopError, match=f"plan '{wino.name}'.*Winograd"):
        timeloop_files(wino, cfg)
    with pytest.raises(TimeloopError, match="max-pooling"):
        timeloop_files(dataclasses.replace(p.layers[1], pool=(2, 2, 2, 2, 0, 0, 0, 0)), cfg)


def test_export_timeloop_command(tmp_path):
    path = tmp_path / "deconv.onnx"
    onnx.save(_deconv_model(), path)
    runner = CliRunner()
    res = runner.invoke(cli, ["export-timeloop", str(path), "--layer", "nope", "-o", str(tmp_path / "t")])
    assert res.exit_code == 1 and "has no plan 'nope' (plans: " in res.output
    name = res.output.split("(plans: ")[1].split(",")[0].rstrip(")\n")
    res = runner.invoke(cli, ["export-timeloop", str(path), "--layer", name, "-o", str(tmp_path / "t")])
    assert res.exit_code == 0, res.output
    assert sorted(q.name for q in (tmp_path / "t").iterdir()) == ["arch.yaml", "mapping.yaml", "problem.yaml"]
    assert name.startswith("y/phase")              # a TDC phase, an ordinary convolution
    res = runner.invoke(cli, ["export-timeloop", str(path), "--layer", "y", "--deconv", "nzp", "-o", str(tmp_path)])
    assert res.exit_code == 1 and "plan 'y': it is an NZP plan" in res.output
