"""The simulated device over its PCIe host port: the driver's :class:`XdmaTransport` against the
Verilated accelerator's AXI4 slave (``sim/harness_axi.cpp`` as the endpoint's AXI master).

Registers and the three memories read back what was written (the multi-slice memory words
included); an unmapped address and a memory access while the engine runs are refused with
SLVERR and reported naming the address; a whole network runs bit-identical to the golden model.
"""
import numpy as np
import pytest

from nibble.hw.config import EngineConfig
from nibble.host.bench import random_conv_layer
from nibble.host.driver import Device, golden_forward
from nibble.host.transport import TransportError

pytestmark = pytest.mark.slow
SEED = 2027


@pytest.fixture(scope="module")
def sim():
    with Device("sim") as d:             # the default host link: pcie
        yield d


def _addr(sim, region, word=0, csr=None):
    rm = sim._be.rm
    if csr is not None:
        return rm["regions"]["csr"]["base"] + rm["csrs"][csr]["offset"]
    r = rm["regions"][region]
    return r["base"] + 4 * r["slices"] * word


def test_registers_and_memories_round_trip(sim):
    t, rm = sim.link, sim._be.rm
    assert t.read_u32(_addr(sim, None, csr="id")) == rm["id"]
    t.write_u32(_addr(sim, None, csr="scratch"), 0xA5C3_0F1E)
    assert t.read_u32(_addr(sim, None, csr="scratch")) == 0xA5C3_0F1E
    rng = np.random.default_rng(SEED)
    for region in ("param", "weight", "feature"):
        r = rm["regions"][region]
        # one word, > 256 beats, the end, the whole memory (256 KiB of weights: one pipe write)
        for words, start in ((1, 0), (300, 5), (1500, r["depth"] - 1500), (r["depth"], 0)):
            n = 4 * r["slices"] * words
            data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
            t.write(_addr(sim, region, start), data)
            assert t.read(_addr(sim, region, start), n) == data, (region, words, start)


def test_unmapped_address_is_refused(sim):
    t, rm = sim.link, sim._be.rm
    r = rm["regions"]["feature"]
    end = r["base"] + 4 * r["words"]
    with pytest.raises(TransportError, match=rf"DMA write of 16 bytes at 0x{end - 8:08x}: SLVERR"):
        t.write(end - 8, bytes(16))                     # the last two words are mapped, two are not
    with pytest.raises(TransportError, match="SLVERR"):
        t.read(end, 4)
    csr_end = rm["regions"]["csr"]["base"] + 4 * rm["regions"]["csr"]["words"]
    with pytest.raises(TransportError, match=f"at 0x{csr_end:08x}: SLVERR"):
        t.read(csr_end, 4)


def test_memories_refused_while_the_engine_runs(sim):
    """Started by hand, the engine's memories answer SLVERR until the run ends; the registers
    stay reachable; the driver's next inference then runs normally."""
    cfg = EngineConfig()
    program, v = random_conv_layer(32, 32, 16, 3, 5, cfg)
    sim.load(program)
    want = golden_forward(program, v)
    out = sim.run_int(v[None])[0]
    assert np.array_equal(out, want)
    t, rm = sim.link, sim._be.rm
    t.write_u32(_addr(sim, None, csr="ctrl"), rm["ctrl_bits"]["start"])
    with pytest.raises(TransportError, match="SLVERR"):
        t.write(_addr(sim, "weight", 0), bytes(4 * rm["regions"]["weight"]["slices"]))
    busy = 1 << rm["status_bits"]["busy"]
    assert t.read_u32(_addr(sim, None, csr="status")) & busy
    t.wait()
    assert not t.read_u32(_addr(sim, None, csr="status")) & busy
    assert np.array_equal(sim.run_int(v[None])[0], want)      # acknowledges the manual run first


def test_network_bit_exact_over_pcie(sim):
    from nibble.host.compiler import compile_model
    calib = np.load("models/digits/calib_x.npy")
    x = np.load("models/digits/test_x.npy")[:4]
    program = compile_model("models/digits/digits_cnn.onnx", calib)
    sim.load(program)
    y = sim.run_int(sim.quantize(x))
    for i in range(len(x)):
        assert np.array_equal(y[i], golden_forward(program, sim.quantize(x)[i]))
    assert sim.cycles[0] > sim.beats[0] > 0


def test_ddr_window(sim):
    """The DDR as the regmap states it: without a ``ddr`` region the device has no DDR port and
    DMA at the DDR's address answers DECERR; with one, the host's DMA round-trips through the
    DDR model at memory speed (no design cycles) and its counters are readable."""
    from nibble.sim.ddr import DDR_BASE
    t, rm = sim.link, sim._be.rm
    ddr = rm["regions"].get("ddr")
    if ddr is None:
        with pytest.raises(TransportError, match=f"DMA write of 16 bytes at 0x{DDR_BASE:08x}: DECERR"):
            t.write(DDR_BASE, bytes(16))
        with pytest.raises(TransportError, match="DDR statistics at 0x00000000: DECERR"):
            t.ddr_stats()
        return
    data = np.random.default_rng(SEED).integers(0, 256, 3 << 20, dtype=np.uint8).tobytes()
    before = t.ep.cycles
    t.write(ddr["base"] + 4096, data)
    assert t.read(ddr["base"] + 4096, len(data)) == data
    assert t.ep.cycles == before
    assert set(t.ddr_stats()) >= {"bytes_read", "bytes_written", "busy_cycles"}
