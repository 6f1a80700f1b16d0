"""End to end on the generated RTL: the Accelerator under Verilator behind its PCIe (AXI4)
host port, and behind the UART frames.

The driver's own code (Device, its transports, the generated register map) runs against the
simulated device; expected outputs come from the golden device. The simulator is built once per design
and cached (``$NIBBLE_CACHE_DIR``).
"""
import numpy as np

from nibble.hw.isa import DESC_WORDS, decode_descriptor, encode_descriptor
import pytest

from nibble.hw.config import EngineConfig
from nibble.host.bench import random_conv_layer
from nibble.host.compiler import compile_model, layer_beats
from nibble.host.driver import Device, DeviceError, golden_forward
from faults import LINK_TEST_CONFIG

pytestmark = pytest.mark.slow
MODEL = "models/digits/digits_cnn.onnx"


@pytest.fixture(scope="module")
def sim():
    with Device("sim") as d:
        yield d


def test_digits_images_bit_exact(sim):
    """The digits CNN on the RTL equals the golden model, with every eligible layer forced to
    Winograd and with every layer direct; the two forms give bit-identical outputs."""
    calib = np.load("models/digits/calib_x.npy")
    x = np.load("models/digits/test_x.npy")[:6]
    raws = {}
    for mode in ("winograd", "direct"):
        program = compile_model(MODEL, calib, winograd=mode)
        assert any(L.winograd for L in program.layers) == (mode == "winograd")
        sim.load(program)
        y = sim.run(x)
        with Device("golden") as g:
            g.load(program)
            yg = g.run(x)
        assert np.array_equal(sim.raw, g.raw) and np.array_equal(y, yg)
        assert y.shape == (6, 10)
        beats = sum(layer_beats(L, EngineConfig()) for L in program.layers)
        assert sim.beats == [beats] * 6
        assert all(c > beats for c in sim.cycles)
        raws[mode] = sim.raw
    assert np.array_equal(raws["winograd"], raws["direct"])


@pytest.mark.parametrize("cin,cout,size,k,seed,mode", [
    (24, 40, 7, 3, 3, "direct"), (24, 40, 7, 3, 3, "winograd"),     # odd size: edge tiles
    (33, 17, 6, 3, 9, "winograd"), (5, 3, 1, 3, 10, "winograd"),     # 3 input blocks; one pixel
    (16, 16, 5, 1, 4, "direct"), (3, 20, 9, 5, 5, "direct")])
def test_random_conv_layers(sim, cin, cout, size, k, seed, mode):
    """Channel counts that are not multiples of the lanes, odd sizes (Winograd edge tiles),
    1x1 and 5x5 kernels; Winograd layers also equal the direct form."""
    program, v = random_conv_layer(cin, cout, size, k, seed, EngineConfig(), winograd=mode)
    assert program.layers[0].winograd == (mode == "winograd")
    sim.load(program)
    v[:, 0, :] = -128
    v[:, -1, :] = 127
    out = sim.run_int(v[None])[0]
    assert np.array_equal(out, golden_forward(program, v))
    if mode == "winograd":
        direct, _ = random_conv_layer(cin, cout, size, k, seed, EngineConfig(), winograd="direct")
        assert np.array_equal(out, golden_forward(direct, v))


def test_run_command_on_the_sim_device(tmp_path):
    """``nibble run … --device sim --json`` (the PCIe sim device, DDR behind its AXI4 master): the
    RTL equals the golden device on every image and the JSON line has the run's cycles, DDR bytes
    and stall cycles by cause (the ``stall_*`` counters, summing to cycles − engine cycles)."""
    import json
    import subprocess
    import sys
    from pathlib import Path
    x = np.load("models/digits/test_x.npy")[:6]
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.load("models/digits/test_y.npy")[:6])
    out = subprocess.run([str(Path(sys.executable).with_name("nibble")), "run", MODEL, "--inputs", tmp_path / "x.npy",
                          "--labels", tmp_path / "y.npy", "--calib", "models/digits/calib_x.npy", "--device", "sim",
                          "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["rtl_equals_golden"] == 6 and r["rtl_accuracy"] == r["golden_accuracy"]
    assert r["cycles_per_image"] > 0 and r["ddr_bytes_per_image"] > 0 and 0 <= r["memory_stall_fraction"] < 1
    from nibble.hw.accelerator import STALL_CSRS
    stalls = r["stall_cycles_per_image"]
    assert set(stalls) == {n.removeprefix("stall_") for n in STALL_CSRS}
    assert sum(stalls.values()) == pytest.approx(r["memory_stall_fraction"] * r["cycles_per_image"])


def test_engine_error_is_reported(sim):
    program, v = random_conv_layer(16, 16, 4, 3, 6, EngineConfig())
    d = decode_descriptor(program.params[:DESC_WORDS])      # a 64x64 kernel: larger than the filter cache
    d.pop("magic")
    program.params[:DESC_WORDS] = encode_descriptor(**{**d, "kh": 64, "kw": 64})
    sim.load(program)
    with pytest.raises(DeviceError, match="engine error 'filter_cache' in layer 0"):
        sim.run_int(v[None])


def test_program_for_another_config_is_refused(sim):
    program, _ = random_conv_layer(8, 8, 4, 3, 7, EngineConfig(m=8, vc=8))
    with pytest.raises(DeviceError, match="the program is for m = 8, the device has 16"):
        sim.load(program)


def test_bench_json():
    """The bench's figures on a 64→64 3×3 layer, direct and Winograd (8×8 here to keep the run
    short; the README's figures are the 32×32 run of ``nibble bench``)."""
    from nibble.host.bench import winograd_bench
    r = winograd_bench(EngineConfig(), cin=64, cout=64, size=8, energy=True)
    d, w = r["direct"], r["winograd"]
    for form in (d, w):      # the energy estimate: its beats are the RTL's, its layers sum to it
        layer, = form["energy_layers"]
        assert form["energy_uj"] == pytest.approx(layer["uj"]) and form["energy_dram_uj"] == 0
    assert d["pe_array_beats"] == 64 * 9 * 4 * 4 and d["energy_uj"] > w["energy_uj"] > 0
    for form in (d, w):      # the RTL's feature_reads counter against the event model, exact
        assert form["rtl_feature_reads"] == form["model_feature_reads"] > 0
    assert d["multiplications"] == 64 * 64 * 9 * 64 and d["ideal_cycles"] == d["multiplications"] / 256
    assert w["multiplications"] == 64 * 64 * 16 * 16 and w["mults_per_output"] == 4.0
    assert d["pe_array_beats"] == 64 * 9 * 4 * 4          # pixels · taps · cb · output blocks
    assert w["pe_array_beats"] == 16 * 16 * 4 * 4         # tiles · α² · cb · output blocks
    assert d["bit_exact_vs_golden"] is True and w["bit_exact_vs_golden"] is True
    assert r["outputs_identical"] is True
    # at 8×8 the filter loads weigh more than at 32×32: 1.26 and 2.07 times the ideal here
    assert 1.0 < d["cycles_over_ideal"] <= 1.3 and 1.0 < w["cycles_over_ideal"] <= 2.2
    assert d["pe_utilization"] == pytest.approx(1 / d["cycles_over_ideal"])
    for form in (d, w):      # the compiler's cycle model (used by `auto`) within 2 % of the RTL
        assert form["model_cycles"] == pytest.approx(form["rtl_cycles"], rel=0.02)
    assert r["direct_over_winograd_cycles"] == pytest.approx(d["rtl_cycles"] / w["rtl_cycles"])
    assert r["direct_over_winograd_cycles"] > 1.3


def test_uart_transport_through_pyserial():
    """The ``uart`` transport (pyserial, ``socket://`` URL) against the simulated device.

    A loopback TCP server carries the serial byte stream to the RTL, so the driver's real
    pyserial path is the one exercised, with the same frames a board receives.
    """
    import socket
    import threading

    from nibble.gen.simdev import SIM_DIVISOR, build_sim_device
    from nibble.host.driver import default_cache_dir
    from nibble.sim.verilator import SimDevice

    program, v = random_conv_layer(20, 18, 5, 3, 8, LINK_TEST_CONFIG)
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    build = build_sim_device(LINK_TEST_CONFIG, default_cache_dir(), "uart")
    dev = SimDevice(build.exe, divisor=SIM_DIVISOR)
    stop = threading.Event()

    def serve():
        conn, _ = srv.accept()
        conn.settimeout(0.05)

        def to_host():
            while not stop.is_set():
                data = dev.read(max(1, dev.in_waiting))     # returns at once when quiet
                if data:
                    conn.sendall(data)
                else:
                    stop.wait(0.002)

        t = threading.Thread(target=to_host, daemon=True)
        t.start()
        while not stop.is_set():
            try:
                data = conn.recv(65536)
            except socket.timeout:
                continue
            if not data:
                break
            dev.write(data)
        stop.set()
        t.join(5)
        conn.close()

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    try:
        with Device("uart", port=f"socket://127.0.0.1:{port}", regmap=build.regmap) as d:
            d.load(program)
            out = d.run_int(v[None])[0]
        assert np.array_equal(out, golden_forward(program, v))
        assert d.cycles[0] > d.beats[0] > 0
    finally:
        stop.set()
        th.join(5)
        srv.close()
        dev.close()


def test_link_bench():
    """Both host links of the simulated device load the same program and return the same,
    golden outputs. Over PCIe the host writes the program into DDR (with its step lists, in whole
    DDR beats) and the accelerator's DMA loads it on chip at about a beat (8 bytes at vc = 8) per
    two cycles; the UART frames move less than a byte per cycle (figures of the simulated cycles,
    which do not depend on the machine)."""
    from nibble.host.bench import link_bench
    r = link_bench(LINK_TEST_CONFIG, cin=16, cout=16, size=8)
    p, u = r["pcie"], r["uart"]
    assert p["bit_exact_vs_golden"] and u["bit_exact_vs_golden"]
    image = r["program"]["param_bytes"] + r["program"]["weight_bytes"]
    assert u["load"]["bytes"] == image and image < p["load"]["bytes"] < image + 1024
    assert p["inference_io"]["bytes"] > 16 * 8 * 8 * 2
    assert 2.0 < p["load"]["bytes_per_cycle"] <= 8.0 and u["load"]["bytes_per_cycle"] < 1.0
    assert r["pcie_over_uart_stub_load"] > 3.0
    assert r["pcie_over_uart_line_load"] > 100
