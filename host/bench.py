"""Benchmarks on the RTL (``nibble bench``): measured cycles against the ideal, in one run.

The ideal cycle count of a layer is its multiplications ÷ (M·Vc) (every lane busy every cycle):
``Cin·Cout·9`` per output in direct form (SAC lanes), ``Cin·Cout·16`` per 2×2 tile in Winograd
F(2×2,3×3) form (multiplier lanes, ARITHMETIC §2.1). The report gives the measured engine cycles
(the cycle-counter CSR of the simulated RTL), their ratio to the ideal, PE-array beats, PE
utilization, and whether the output is bit-identical to the golden model.
"""
import time

import numpy as np

from ..hw.config import EngineConfig
from ..hw.isa import Region
from ..sim.perf.energy import ENERGY_PARTS, ENERGY_SOURCES, program_energy, program_events
from ..sim.perf.sweep import dense_macs
from ..sim.perf.traffic import run_traffic
from .compiler import layer_beats, layer_cycles, plan_program, winograd_work
from .driver import Device, golden_forward
from .ir import ConvOp
from .steps import copy_cycles

__all__ = ["random_conv_layer", "winograd_bench", "deconv_bench", "link_bench", "memory_bench", "MEMORY_CASES",
           "network_bench", "NETWORK_CASES"]


def random_conv_layer(cin, cout, size, kernel, seed, config, winograd="direct"):
    """A seeded random quantized conv layer (stride 1, 'same' padding, ReLU) planned for ``config``.

    Codes are uniform over the 15 used 4-bit values; the input exponent is 4 and the output
    exponent leaves the requantized outputs well inside int8.
    :returns: ``(program, input int8 (cin, size, size))``.
    """
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 16, (cout, cin, kernel, kernel)).astype(np.uint8)
    codes[codes == 8] = 0
    p = kernel // 2
    op = ConvOp(name=f"conv{kernel}x{kernel}_{cin}to{cout}", w=np.zeros(codes.shape), b=rng.normal(0, 1, cout),
                stride=1, pad=(p, kernel - 1 - p, p, kernel - 1 - p), relu=True, codes=codes, n2=-8, q_in=4, q_out=0)
    program = plan_program([op], (cin, size, size), 4, config, winograd=winograd)
    v = rng.integers(-128, 128, (cin, size, size))
    return program, v


def _layer_mults(L):
    """Multiplications of a plan as the engine schedules them (padding lanes excluded; NZP
    counts the products with inserted zeros, Winograd the transformed positions computed)."""
    if L.winograd:
        tiles, p = winograd_work(L)
        return tiles * p * L.cin * L.cout
    return L.macs()


def _energy(program, dram_bytes=0, per_layer=False):
    """The energy estimate of one image (:func:`nibble.sim.perf.energy.program_energy`) as bench
    fields: ``energy_uj`` (µJ, DRAM included), ``energy_dram_uj``, ``energy_parts_uj`` (µJ of the
    PE array and each on-chip memory over all plans), and with ``per_layer`` ``energy_layers``:
    every plan's name and µJ."""
    e = program_energy(program, dram_bytes)
    out = {"energy_uj": e["total"] / 1e6, "energy_dram_uj": e["dram"] / 1e6,
           "energy_parts_uj": {k: sum(x[k] for x in e["layers"]) / 1e6 for k in ENERGY_PARTS}}
    if per_layer:
        out["energy_layers"] = [{"name": x["name"], "uj": x["total"] / 1e6} for x in e["layers"]]
    return out


def winograd_bench(config: EngineConfig = EngineConfig(), *, cin=64, cout=64, size=32, seed=1, energy=False):
    """One 3×3 stride-1 'same' conv layer run on the RTL in direct form and in Winograd
    F(2×2,3×3) form (same weights, inputs, one simulated device); JSON-ready dict.

    Reports per form: RTL cycles, the compiler's cycle model (:func:`layer_cycles`, what ``auto``
    decides by), multiplications (total and per output per input channel and
    output channel: 9 direct, 16/4 = 4 Winograd), ideal cycles = multiplications / lanes
    (``m·vc·vp`` SAC lanes direct, ``m·vc`` multiplier lanes Winograd), their ratio, PE-array beats and utilization, bit-exactness against the golden model; and the
    measured direct ÷ Winograd cycle ratio (theory 2.25 = 36/16, ARITHMETIC §2.1); the energy
    estimate per form (:func:`_energy`; ``energy``: per layer too) and the feature-memory words
    read, from the RTL's ``feature_reads`` counter and from the event model.
    An engine built without the Winograd path (``config.winograd`` false) runs the direct form
    only: ``winograd`` is then ``{"available": False, "reason": …}`` and the ratios are left out.
    :raises nibble.host.ir.CompileError: if the layer does not fit ``config``.
    """
    res = {"layer": {"cin": cin, "cout": cout, "h": size, "w": size, "kernel": 3, "stride": 1,
                     "relu": True},
           "config": {"m": config.m, "vc": config.vc, "vp": config.vp, "acc_width": config.acc_width}}
    outs = {}
    forms = ("direct", "winograd") if config.winograd else ("direct",)
    with Device("sim", config=config) as dev:
        for form in forms:
            program, v = random_conv_layer(cin, cout, size, 3, seed, config, winograd={f"conv3x3_{cin}to{cout}": form})
            L = program.layers[0]
            dev.load(program)
            out = dev.run_int(v[None])[0]
            cycles, beats = _engine_cycles(dev), dev.beats[0]
            mults = _layer_mults(L)
            # the SAC lanes of every pixel lane in direct mode, the m·vc multiplier lanes in Winograd mode
            lanes = config.peak_ops_per_cycle if form == "direct" else config.m * config.vc
            ideal = mults / lanes
            outs[form] = out
            res[form] = {
                "rtl_cycles": cycles,
                "model_cycles": layer_cycles(L, config),
                "multiplications": mults,
                "mults_per_output": mults / (cin * cout * L.out_h * L.out_w),
                "ideal_cycles": ideal,
                "cycles_over_ideal": cycles / ideal,
                "pe_array_beats": beats,
                "pe_utilization": mults / (cycles * lanes),
                "bit_exact_vs_golden": bool(np.array_equal(out, golden_forward(program, v))),
                "rtl_feature_reads": dev.feature_reads[0],
                "model_feature_reads": program_events(program)["feature_reads"],
                **_energy(program, per_layer=energy),
            }
    if not config.winograd:
        res["winograd"] = {"available": False, "reason": "the engine is built without the Winograd path "
                                                         "(EngineConfig.winograd = false)"}
        return res
    res["outputs_identical"] = bool(np.array_equal(outs["direct"], outs["winograd"]))
    res["direct_over_winograd_cycles"] = res["direct"]["rtl_cycles"] / res["winograd"]["rtl_cycles"]
    res["direct_over_winograd_mults"] = res["direct"]["multiplications"] / res["winograd"]["multiplications"]
    res["theory_ratio"] = 36 / 16
    return res


#: Published speed-ups the deconvolution bench is compared with.
PUBLISHED = {
    "split_deconvolution_xu_ieee_tc_2020": "2.41-4.34x over prior deconvolution accelerators",
    "winograd_deconvolution_chang_kang": "up to 8.38x over zero-padded deconvolution (Virtex-7)",
    "winograd_deconvolution_chang_kang_energy": "3.65x less energy than zero-padded deconvolution",
    "split_deconvolution_xu_ieee_tc_2020_energy": "27.7-54.5 % less energy",
}


def deconv_bench(config: EngineConfig = EngineConfig(), *, layer="Deconv2", data_dir=None, seed=1, energy=False):
    """A published DCGAN transposed convolution (:mod:`nibble.host.split_deconv`) on the RTL as
    NZP (zero insertion), TDC (S² phases, structural zeros dropped) and Winograd-TDC; JSON-ready.

    Per form: RTL cycles, the compiler's cycle model, multiplications (as scheduled; NZP includes
    the inserted zeros), multiplications per output per (Cin, Cout), the energy estimate per image
    (µJ, :func:`nibble.sim.perf.energy.program_energy`: event counts × 45 nm per-action energies), descriptors, bit-exactness
    against the golden model and the SNR (dB) of the dequantized RTL output against the float
    reference (float weights and activations). Ratios NZP ÷ TDC and NZP ÷ Winograd-TDC (theory
    S² = 4 and 400/49 = 8.16 for K5 S2, ARITHMETIC §1.5, §3), with the published anchors.
    :raises FileNotFoundError: if the published data is missing.
    """
    from ..sim import golden
    from . import split_deconv as sd
    from .compiler import compile_model
    model = sd.layer_model(layer, data_dir)
    x = sd.layer_inputs(layer, 1, seed)
    calib = sd.layer_inputs(layer, 16, seed + 1)
    ref = sd.float_reference(layer, x, data_dir)
    ci, co, h, act = sd.LAYERS[layer]
    res = {"layer": {"name": layer, "cin": ci, "cout": co, "h": h, "w": h, "kernel": sd.K, "stride": sd.S,
                     "pad": sd.P, "output_padding": sd.OP, "activation": act.lower()},
           "config": {"m": config.m, "vc": config.vc}}
    with Device("sim", config=config) as dev:
        for form, mode in (("nzp", "nzp"), ("tdc", "tdc"), ("winograd_tdc", "winograd")):
            program = compile_model(model, calib, config, deconv=mode)
            dev.load(program)
            y = dev.run(x)
            out = dev.raw[0]
            mults = sum(_layer_mults(L) for L in program.layers)
            n_out = co * (2 * h) * (2 * h)
            res[form] = {
                "rtl_cycles": _engine_cycles(dev),
                "model_cycles": sum(layer_cycles(L, config) for L in program.layers),
                "descriptors": len(program.layers),
                "multiplications": mults,
                "mults_per_output_per_cin": mults / (n_out * ci),
                "pe_array_beats": dev.beats[0],
                "bit_exact_vs_golden": bool(np.array_equal(out, golden_forward(program, dev.quantize(x)[0]))),
                "snr_db_vs_float": sd.snr_db(ref, y),
                "plans": [L.mode_reason for L in program.layers],
                "rtl_feature_reads": dev.feature_reads[0],
                "model_feature_reads": program_events(program)["feature_reads"],
                **_energy(program, per_layer=energy),
            }
    for form in ("tdc", "winograd_tdc"):
        res[f"nzp_over_{form}_cycles"] = res["nzp"]["rtl_cycles"] / res[form]["rtl_cycles"]
        res[f"nzp_over_{form}_mults"] = res["nzp"]["multiplications"] / res[form]["multiplications"]
        res[f"nzp_over_{form}_energy"] = res["nzp"]["energy_uj"] / res[form]["energy_uj"]
    res["energy_sources"] = ENERGY_SOURCES
    res["theory"] = {"nzp_over_tdc": sd.S ** 2, "nzp_over_winograd_tdc": 400 / 49}
    res["published"] = PUBLISHED
    return res


def _engine_cycles(dev, n=0):
    """Cycles the engine computed for input ``n`` of the last run: the ``engine_cycles`` counter
    on a device with external memory (whose run also moves the maps), else the run's cycles."""
    mem = dev.memory[n] if dev.memory else None
    return mem["engine_cycles"] if mem else dev.cycles[n]


def _sim_cycles(dev):
    """Simulated cycles so far of a ``sim`` device (either host link), all its work done."""
    link = dev.link
    if hasattr(link, "ep"):                      # XdmaTransport over SimAxiDevice
        return link.ep.cycles
    return link.stream.wait_idle()               # Link over SimDevice


def link_bench(config: EngineConfig = EngineConfig(), *, cin=64, cout=64, size=32, seed=1):
    """The simulated device's two host links measured on the same program: loading it
    (descriptors, biases, weights) and one inference's input and output transfers; JSON-ready.

    Per link (``pcie``: the host's DMA into DDR, which takes no simulated cycles, then the
    accelerator's own DMA from DDR into its memories (the load list, the inputs and outputs of
    the run list), plus the CSR accesses on the AXI4 port; ``uart``: the UART bridge's frames on
    its byte streams, a byte per cycle — on a board's serial line a byte takes
    ``10·uart_divisor`` cycles): payload bytes the host moves, simulated cycles (the engine's
    computing cycles excluded from the transfer cycles), bytes per cycle, MB/s at
    ``config.clk_hz``, and the wall time of the simulation. Ratios pcie ÷ uart of the bytes per cycle, and pcie ÷ the board's
    UART line at ``config.baud`` (``baud / 10`` bytes/s).
    """
    program, v = random_conv_layer(cin, cout, size, 3, seed, config)
    res = {"program": {"layer": program.layers[0].name, "param_bytes": int(program.params.nbytes),
                       "weight_bytes": int(program.weights.nbytes)},
           "clk_mhz": config.clk_hz / 1e6}
    outs = {}
    for link in ("pcie", "uart"):
        with Device("sim", config=config, link=link) as dev:
            t = dev.link
            c0, w0, t0 = _sim_cycles(dev), t.bytes_written, time.perf_counter()
            dev.load(program)
            c1, w1, t1 = _sim_cycles(dev), t.bytes_written, time.perf_counter()
            r1 = t.bytes_read
            outs[link] = dev.run_int(v[None])[0]
            c2, t2 = _sim_cycles(dev), time.perf_counter()
            engine = _engine_cycles(dev)
            load_bytes, io_bytes = w1 - w0, (t.bytes_written - w1) + (t.bytes_read - r1)
            res[link] = {
                "load": {"bytes": load_bytes, "cycles": c1 - c0, "bytes_per_cycle": load_bytes / (c1 - c0),
                         "mb_per_s_at_clk": load_bytes / (c1 - c0) * config.clk_hz / 1e6,
                         "wall_s": t1 - t0},
                "inference_io": {"bytes": io_bytes, "cycles": c2 - c1 - engine,
                                 "bytes_per_cycle": io_bytes / (c2 - c1 - engine),
                                 "wall_s_including_run": t2 - t1},
                "engine_cycles": engine,
                "bit_exact_vs_golden": bool(np.array_equal(outs[link], golden_forward(program, v))),
            }
    uart_line = config.baud / 10 / config.clk_hz            # bytes per cycle of a serial board
    res["uart_line_bytes_per_cycle"] = uart_line
    for part in ("load", "inference_io"):
        res[f"pcie_over_uart_stub_{part}"] = res["pcie"][part]["bytes_per_cycle"] / res["uart"][part]["bytes_per_cycle"]
        res[f"pcie_over_uart_line_{part}"] = res["pcie"][part]["bytes_per_cycle"] / uart_line
    res["pcie_over_uart_stub_load_wall"] = res["uart"]["load"]["wall_s"] / res["pcie"]["load"]["wall_s"]
    return res


#: (channels, map size, layers) of the weight-streaming benchmark: 3×3 convolutions with 64 and
#: 128 channels, from compute-heavy (16×16 maps) to load-heavy (4×4: a layer computes about as
#: long as its weights take to load).
MEMORY_CASES = ((64, 16, 4), (128, 8, 3), (128, 4, 3))


def _conv_chain(ch, size, n, seed, config, stream_weights):
    """``n`` seeded random 3×3 ``ch`` → ``ch`` conv + ReLU layers on ``size``² maps, planned."""
    rng = np.random.default_rng(seed)
    ops = []
    for i in range(n):
        codes = rng.integers(0, 16, (ch, ch, 3, 3)).astype(np.uint8)
        codes[codes == 8] = 0
        ops.append(ConvOp(name=f"conv{i}", w=np.zeros(codes.shape), b=rng.normal(0, 1, ch), stride=1,
                          pad=(1, 1, 1, 1), relu=True, codes=codes, n2=-9, q_in=2, q_out=2))
    program = plan_program(ops, (ch, size, size), 2, config, winograd="direct", stream_weights=stream_weights)
    return program, rng.integers(-128, 128, (ch, size, size))


def memory_bench(config: EngineConfig = EngineConfig(), *, seed=1, cases=MEMORY_CASES):
    """Weight streaming from DDR on the simulated PCIe device (its DDR model), measured in one run.

    Per case (:data:`MEMORY_CASES`) the same layers run twice from step lists: with their weights
    resident in weight memory (loaded once, at :meth:`Device.load`) and streamed from DDR
    descriptor by descriptor (``stream_weights``, :mod:`nibble.host.steps`). Reported: cycles per
    image of both, the engine's busy cycles, DDR bytes read and written per image, the stall
    fraction (cycles the engine waits for memory), the weight-load time (the streamed weight words
    at a DDR beat a cycle, :func:`~nibble.host.steps.copy_cycles`), the exposed part (streamed − resident cycles) and
    the hidden fraction ``1 − exposed / load time``, also counted without the first descriptor,
    whose weights nothing can hide. Both runs are bit-identical to the golden model or the case
    says so.
    """
    res = {"clk_mhz": config.clk_hz / 1e6, "cases": []}
    with Device("sim", config=config) as dev:
        for ch, size, n in cases:
            case = {"channels": ch, "size": size, "layers": n, "macs": n * size * size * ch * ch * 9}
            outs = {}
            for mode in ("resident", "streamed"):
                program, v = _conv_chain(ch, size, n, seed, config, mode == "streamed")
                dev.load(program)
                outs[mode] = dev.run_int(v[None])[0]
                mem = dev.memory[0]
                case[mode] = {"cycles": mem["cycles"], "engine_cycles": mem["engine_cycles"],
                              "ddr_read_bytes": mem["ddr_read_bytes"], "ddr_write_bytes": mem["ddr_write_bytes"],
                              "stall_fraction": 1 - mem["engine_cycles"] / mem["cycles"]}
            words = [copy_cycles(L.n_coblk(config.m) * config.m * L.kh * L.kw * L.cb_in, config, Region.WEIGHT)
                     for L in program.layers]
            exposed = case["streamed"]["cycles"] - case["resident"]["cycles"]
            case.update(weight_load_cycles=sum(words), exposed_cycles=exposed,
                        hidden_fraction=1 - exposed / sum(words),
                        hidden_fraction_after_first=1 - max(0, exposed - words[0]) / sum(words[1:]),
                        compute_cycles_per_layer=case["resident"]["engine_cycles"] / n,
                        bit_exact_vs_golden=all(bool(np.array_equal(o, golden_forward(program, v)))
                                                for o in outs.values()))
            res["cases"].append(case)
    return res


#: Networks of the whole-network benchmark: ``scripts/zoo.py`` names (224 × 224, seeded), and
#: MTCNN's RNet (24 × 24) and ONet (48 × 48) with their published weights (:data:`MTCNN_CASES`).
NETWORK_CASES = ("squeezenet11", "resnet18", "mtcnn_rnet", "mtcnn_onet")
#: MTCNN stages of the network bench: (model in ``models/mtcnn/``, calibration crops there; the
#: first crop is the measured input).
MTCNN_CASES = {"mtcnn_rnet": ("rnet.onnx", "calib24_rgb.npy"), "mtcnn_onet": ("onet.onnx", "calib48_rgb.npy")}


def _network(name, seed, rng):
    """(ModelProto, calibration float32 (N, 3, H, W), measured input float32 (1, 3, H, W) or
    ``None`` for a random int8 image) of a network bench case."""
    import pathlib

    import onnx
    if name in MTCNN_CASES:
        from .mtcnn import normalize
        folder = pathlib.Path(__file__).resolve().parents[1] / "models" / "mtcnn"
        model_file, crops = MTCNN_CASES[name]
        calib = normalize(np.load(folder / crops).transpose(0, 3, 1, 2))
        return onnx.load(folder / model_file), calib, calib[:1]
    model = load_zoo().NETWORKS[name](seed=seed)
    h = model.graph.input[0].type.tensor_type.shape.dim[2].dim_value
    return model, rng.normal(0, 1, (2, 3, h, h)), None


def load_zoo():
    """The checkout's ``scripts/zoo.py`` (published architectures with seeded weights) as a
    module, loaded by its path beside the package (from any working directory).

    :raises FileNotFoundError: ``scripts/zoo.py`` is not beside the package (not a checkout).
    """
    import importlib.util
    import pathlib
    import sys
    if "nibble_zoo" in sys.modules:
        return sys.modules["nibble_zoo"]
    path = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "zoo.py"
    if not path.is_file():
        raise FileNotFoundError(f"the published networks are built with scripts/zoo.py of the repository "
                                f"({path} is missing: run from a checkout)")
    spec = importlib.util.spec_from_file_location("nibble_zoo", path)
    zoo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(zoo)
    sys.modules["nibble_zoo"] = zoo
    return zoo


def network_bench(config: EngineConfig = EngineConfig(), *, names=NETWORK_CASES, seed=1, energy=False):
    """Whole published networks on the simulated PCIe device, every map in DDR
    (``tile_features``): per network, cycles per image, the engine's busy cycles, the fraction of
    cycles waiting for memory and those cycles by cause (``stall_cycles``: the ``stall_*``
    counters), DDR bytes read and written per image, the compiler's compute-only
    cycle model (:func:`layer_cycles` of every plan; ``layers``: each plan's model cycles,
    PE-array beats and measured engine cycles — its row bands' entries of the descriptor cycle log,
    :meth:`Device.descriptor_cycles`), the DDR bytes of the traffic model (:func:`run_traffic` of the run list),
    dense MACs (:func:`dense_macs`), row bands and parts, images/s at the clock,
    bit-exactness against the golden model, the energy estimate per image with the DDR bytes
    priced (:func:`_energy`; ``energy``: per layer too); or, for a network that does not compile for
    ``config``, the compiler's reason. The models come from the checkout: ``scripts/zoo.py``
    (seeded weights, calibration on 2 N(0, 1) images, a random int8 input) and ``models/mtcnn/``
    (:data:`MTCNN_CASES`: published weights, calibration on the 32 crops, the first one measured;
    images/s there are crops/s of one stage).

    :raises FileNotFoundError: ``scripts/zoo.py`` or ``models/mtcnn/`` is not beside the package
        (not a checkout).
    """
    from .compiler import CompileError, compile_model
    from .steps import tiling
    res = {"clk_mhz": config.clk_hz / 1e6, "networks": {}}
    rng = np.random.default_rng(seed)
    with Device("sim", config=config) as dev:
        for name in names:
            model, calib, real = _network(name, seed, rng)
            h = calib.shape[2]
            try:
                program = compile_model(model, calib, config, tile_features=True)
            except CompileError as e:
                res["networks"][name] = {"compiles": False, "reason": str(e)}
                continue
            dev.load(program)
            x = rng.integers(-128, 128, (1, 3, h, h)) if real is None else dev.quantize(real)
            y = dev.run_int(x)
            want = golden_forward(program, x[0])
            exact = (all(np.array_equal(a[0], b) for a, b in zip(y, want)) if isinstance(y, list)
                     else np.array_equal(y[0], want))
            mem = dev.memory[0]
            traffic = run_traffic(dev._be.ddr, config)
            rtl_layers = [0] * len(program.layers)    # the descriptor cycle log, by plan (its row bands)
            for (_, layer), cyc in zip(sorted(dev._be.ddr.runs.items()), dev.descriptor_cycles()):
                rtl_layers[layer] += cyc
            res["networks"][name] = {
                "compiles": True, "size": h, "descriptors": len(program.layers),
                "parts": sum(len(tiling(L, config).parts) for L in program.layers), "bands": len(dev._be.ddr.runs),
                "cycles": mem["cycles"], "engine_cycles": mem["engine_cycles"],
                "stall_fraction": 1 - mem["engine_cycles"] / mem["cycles"],
                "stall_cycles": mem["stalls"],
                "ddr_read_bytes": mem["ddr_read_bytes"], "ddr_write_bytes": mem["ddr_write_bytes"],
                "model_compute_cycles": sum(layer_cycles(L, config) for L in program.layers),
                "model_ddr_read_bytes": traffic["read_bytes"], "model_ddr_write_bytes": traffic["write_bytes"],
                "macs": dense_macs(model),
                "layers": [{"name": L.name, "model_cycles": layer_cycles(L, config), "beats": layer_beats(L, config),
                            "rtl_engine_cycles": r} for L, r in zip(program.layers, rtl_layers)],
                "images_per_s_at_clk": config.clk_hz / mem["cycles"],
                "bit_exact_vs_golden": bool(exact),
                **_energy(program, mem["ddr_read_bytes"] + mem["ddr_write_bytes"], energy),
            }
    return res
