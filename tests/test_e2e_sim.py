"""End to end on the generated RTL: the Accelerator under Verilator behind the UART stub.

The driver's own code (Device, Link, the generated register map) runs against the simulated
device; expected outputs come from the golden device. The simulator is built once per design
and cached (``$NIBBLE_CACHE_DIR``).
"""
import numpy as np
import pytest

from nibble.hw.config import EngineConfig
from nibble.host.bench import random_conv_layer
from nibble.host.compiler import compile_model
from nibble.host.driver import Device, DeviceError, golden_forward

pytestmark = pytest.mark.slow
MODEL = "models/digits/digits_cnn.onnx"


@pytest.fixture(scope="module")
def sim():
    with Device("sim") as d:
        yield d


def test_digits_images_bit_exact(sim):
    calib = np.load("models/digits/calib_x.npy")
    x = np.load("models/digits/test_x.npy")[:6]
    program = compile_model(MODEL, calib)
    sim.load(program)
    y = sim.run(x)
    with Device("golden") as g:
        g.load(program)
        yg = g.run(x)
    assert np.array_equal(sim.raw, g.raw) and np.array_equal(y, yg)
    assert y.shape == (6, 10)
    beats = sum(L.n_coblk(16) * L.out_h * L.out_w * L.pool ** 2 * L.kh * L.kw * L.cb_in for L in program.layers)
    assert sim.beats == [beats] * 6
    assert all(c > beats for c in sim.cycles)


@pytest.mark.parametrize("cin,cout,size,k,seed", [(24, 40, 7, 3, 3), (16, 16, 5, 1, 4), (3, 20, 9, 5, 5)])
def test_random_conv_layers(sim, cin, cout, size, k, seed):
    """Channel counts that are not multiples of the lanes, odd sizes, 1x1 and 5x5 kernels."""
    program, v = random_conv_layer(cin, cout, size, k, seed, EngineConfig())
    sim.load(program)
    v[:, 0, :] = -128
    v[:, -1, :] = 127
    out = sim.run_int(v[None])[0]
    assert np.array_equal(out, golden_forward(program, v))


def test_engine_error_is_reported(sim):
    program, v = random_conv_layer(16, 16, 4, 3, 6, EngineConfig())
    program.params[5] = 64 | 64 << 8 | 1 << 16        # a 64x64 kernel: larger than the filter cache
    sim.load(program)
    with pytest.raises(DeviceError, match="engine error 'filter_cache' in layer 0"):
        sim.run_int(v[None])


def test_program_for_another_config_is_refused(sim):
    program, _ = random_conv_layer(8, 8, 4, 3, 7, EngineConfig(m=8, vc=8))
    with pytest.raises(DeviceError, match="the program is for m = 8, the device has 16"):
        sim.load(program)


def test_bench_json():
    """The bench's figures on a 64→64 3×3 layer (8×8 here to keep the run short)."""
    from nibble.host.bench import conv_layer_bench
    r = conv_layer_bench(EngineConfig(), cin=64, cout=64, size=8, kernel=3)
    assert r["macs"] == 64 * 64 * 9 * 64 and r["ideal_cycles"] == r["macs"] / 256
    assert r["pe_array_beats"] == 64 * 9 * 4 * 4
    assert r["bit_exact_vs_golden"] is True
    assert 1.0 < r["cycles_over_ideal"] <= 1.5
    assert r["pe_utilization"] == pytest.approx(1 / r["cycles_over_ideal"])


def test_uart_transport_through_pyserial():
    """The ``uart`` transport (pyserial, ``socket://`` URL) against the simulated device.

    A loopback TCP server carries the serial byte stream to the RTL, so the driver's real
    pyserial path is the one exercised, with the same frames a board receives.
    """
    import socket
    import threading

    from nibble.host.driver import SIM_DIVISOR, build_sim_device
    from nibble.sim.verilator import SimDevice

    program, v = random_conv_layer(20, 18, 5, 3, 8, EngineConfig())
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    dev = SimDevice(build_sim_device(EngineConfig()), divisor=SIM_DIVISOR, timeout=0.05)
    stop = threading.Event()

    def serve():
        conn, _ = srv.accept()
        conn.settimeout(0.05)

        def to_host():
            while not stop.is_set():
                data = dev.read(max(1, dev.in_waiting))
                if data:
                    conn.sendall(data)

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
        with Device("uart", port=f"socket://127.0.0.1:{port}") as d:
            d.load(program)
            out = d.run_int(v[None])[0]
        assert np.array_equal(out, golden_forward(program, v))
        assert d.cycles[0] > d.beats[0] > 0
    finally:
        stop.set()
        th.join(5)
        srv.close()
        dev.close()
