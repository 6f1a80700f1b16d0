"""Faults on the link to the RTL: the driver's own Device and Link against the Verilated
accelerator, with a FaultyStream (tests/faults.py) between them.

Every inference either returns outputs bit-identical to the golden device or raises an error
naming the operation — never a wrong answer; the lost reply to the start write runs the engine
once and returns the right answer.
"""
import numpy as np
import pytest

from faults import LINK_TEST_CONFIG, FaultyStream
from nibble.host.compiler import compile_model
from nibble.host.driver import Device, DeviceError, golden_forward
from nibble.host.link import LinkError, RESPONSE_OVERHEAD, decode_request, Cmd

pytestmark = pytest.mark.slow
MODEL = "models/digits/digits_cnn.onnx"
SEED = 99
RATES = (1e-4, 1e-3, 5e-3, 1e-2, 2e-2)
PER_RATE = 20


@pytest.fixture(scope="module")
def sim():
    with Device("sim", link="uart", config=LINK_TEST_CONFIG) as dev:
        yield dev


@pytest.fixture
def digits(sim):
    calib = np.load("models/digits/calib_x.npy")
    x = np.load("models/digits/test_x.npy")[:PER_RATE * len(RATES)]
    program = compile_model(MODEL, calib, LINK_TEST_CONFIG, winograd="direct")
    sim.load(program)
    return sim, program, sim.quantize(x)


class DropReply:
    """Loses the reply to the ``n``-th WRITE of ``value`` at byte address ``addr``."""

    def __init__(self, stream, addr, value, n=1):
        self.stream, self.addr, self.value, self.n = stream, addr, value, n
        self.drop = False
        self.dropped = 0

    def write(self, data):
        r = decode_request(data)
        if r.cmd == Cmd.WRITE and r.addr == self.addr and r.payload == self.value.to_bytes(4, "little"):
            self.n -= 1
            self.drop = self.n == 0
        return self.stream.write(data)

    def read(self, n):
        data = self.stream.read(n)
        if self.drop:
            while len(data) < RESPONSE_OVERHEAD:           # swallow the whole reply
                more = self.stream.read(RESPONSE_OVERHEAD - len(data))
                if not more:
                    break
                data += more
            self.drop = False
            self.dropped += 1
            return b""
        return data

    def __getattr__(self, name):
        return getattr(self.stream, name)


def test_lost_start_reply_runs_once(digits):
    dev, program, v = digits
    v = v[:1]
    link = dev.link
    rm = dev._be.rm
    ctrl = rm["regions"]["csr"]["base"] + rm["csrs"]["ctrl"]["offset"]
    runs = rm["regions"]["csr"]["base"] + rm["csrs"]["runs"]["offset"]
    inner = link.stream
    before = link.read_u32(runs)
    link.stream = DropReply(inner, ctrl, rm["ctrl_bits"]["start"])
    try:
        out = dev.run_int(v[:1])[0]
    finally:
        dropped = link.stream.dropped
        link.stream = inner
    assert dropped == 1 and link.retried >= 1
    assert link.read_u32(runs) == before + 1
    assert np.array_equal(out, golden_forward(program, v[0]))


def test_fault_injection_whole_inferences(digits):
    """100 digits-CNN inferences on the RTL (20 held-out images per rate) across rates
    1e-4 … 2e-2 (faults per byte, both directions): zero wrong outputs returned."""
    dev, program, v = digits
    link = dev.link
    inner = link.stream
    expected = [golden_forward(program, v[i]) for i in range(len(v))]
    tally = {}
    frames0 = link.frames
    try:
        for r, rate in enumerate(RATES):
            faulty = FaultyStream(inner, rate, SEED + r)
            link.stream = faulty
            ok = failed = wrong = 0
            for i in range(r * PER_RATE, (r + 1) * PER_RATE):
                try:
                    out = dev.run_int(v[i:i + 1])[0]
                except (LinkError, DeviceError) as e:
                    assert " at 0x" in str(e) or str(e).startswith("ping"), e
                    failed += 1
                    continue
                if np.array_equal(out, expected[i]):
                    ok += 1
                else:
                    wrong += 1
            tally[rate] = (ok, failed, wrong, dict(faulty.counts))
    finally:
        link.stream = inner
    print(tally, "frames", link.frames - frames0, "retried", link.retried, "stale", link.stale)
    assert all(w == 0 for _, _, w, _ in tally.values())
    assert sum(ok for ok, _, _, _ in tally.values()) >= 60
    # The device is still usable afterwards, bit-exact.
    assert np.array_equal(dev.run_int(v[:1])[0], expected[0])


def test_inference_after_one_that_failed_mid_run(sim):
    """An inference whose wait for the engine fails (a link error) leaves the engine running; the
    next one waits for it to end before writing its input (the memories answer "bad address"
    while the engine runs) and is bit-identical to the golden model."""
    from onnx_models import conv, model
    rng = np.random.default_rng(SEED)
    n, inits = conv(rng, "c", "x", "y", 32, 64, k=3, pads=[1, 1, 1, 1])      # ~70,000 engine cycles
    m = model([n], inits, inputs={"x": ("N", 32, 16, 16)})
    program = compile_model(m, rng.normal(0, 1, (2, 32, 16, 16)), LINK_TEST_CONFIG)
    sim.load(program)
    v = sim.quantize(rng.normal(0, 1, (2, 32, 16, 16)))
    be = sim._be
    real, calls = be._wait_idle, []

    def fail_after_start():
        calls.append(1)
        if len(calls) == 2:                      # the wait after the start write
            raise LinkError("injected: no answer while waiting for the engine")
        return real()
    be._wait_idle = fail_after_start
    try:
        with pytest.raises(LinkError, match="injected"):
            sim.run_int(v[:1])
    finally:
        be._wait_idle = real
    assert sim.link.read_u32(be._csr("status")) >> be.rm["status_bits"]["busy"] & 1     # still running
    assert np.array_equal(sim.run_int(v[1:])[0], golden_forward(program, v[1]))
