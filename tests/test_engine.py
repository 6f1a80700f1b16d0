"""Whole layers and small networks on the engine (AcceleratorCore in amaranth.sim) vs the golden model.

The core is driven through its internal bus exactly as the driver does (same register map);
expected outputs come from the golden model (``golden_forward``), never from the RTL.
"""
import numpy as np

from nibble.hw.isa import descriptor_fields
import pytest

from nibble.hw.accelerator import AcceleratorCore, regmap
from nibble.hw.config import EngineConfig
from nibble.hw.isa import CTRL_ACK, CTRL_START
from nibble.host.driver import golden_forward
from nibble.host.ir import ConvOp
from nibble.host.compiler import layer_beats, plan_program
from nibble.host.program import features_to_words, words_to_features
from tests.busdrv import bus_read, bus_write, to_u32
from tests.streams import run_sim

SEED = 77


def _ops(rng, specs, cin, extreme=False):
    """Random quantized IR layers: spec = (cout, k, stride, pad, relu, pool)."""
    ops = []
    q = 5
    for i, (co, k, st, pad, relu, pool) in enumerate(specs):
        codes = rng.integers(0, 16, (co, cin, k, k)).astype(np.uint8)
        if extreme:
            codes[:] = 0b1111
        b = rng.normal(0, 0.5, co)
        ops.append(ConvOp(name=f"l{i}", w=np.zeros((co, cin, k, k)), b=b, stride=st, pad=pad, relu=relu,
                          pool=pool, codes=codes, n2=-7, q_in=q, q_out=q - 2 + int(rng.integers(0, 3))))
        q = ops[-1].q_out
        cin = co
    return ops


def _run_core(config, program, inputs, expect_error=None, reads=None):
    """Run ``inputs`` on the core: ``[(y, cycles, beats)]`` per input; ``reads`` (a list) gets
    the ``feature_reads`` CSR of every run."""
    rm = regmap(config)
    dut = AcceleratorCore(config)
    csr = lambda n: rm["regions"]["csr"]["base"] + rm["csrs"][n]["offset"]
    mem = lambda r, w: rm["regions"][r]["base"] + 4 * rm["regions"][r]["slices"] * w
    L0, Ln = program.layers[0], program.layers[-1]
    results = []

    async def tb(ctx):
        await bus_write(ctx, dut.bus, mem("param", 0), program.params)
        await bus_write(ctx, dut.bus, mem("weight", 0), to_u32(program.weights.astype("<u2").tobytes()))
        for v in inputs:
            await bus_write(ctx, dut.bus, mem("feature", L0.in_base),      # the input's own channel blocks
                            to_u32(features_to_words(v, config.vc, program.inputs[0].view(config.vc)[1])))
            await bus_write(ctx, dut.bus, csr("desc_base"), [0])
            await bus_write(ctx, dut.bus, csr("ctrl"), [CTRL_START])
            while True:
                st, = await bus_read(ctx, dut.bus, csr("status"), 1)
                if not st & 1:
                    break
            err, = await bus_read(ctx, dut.bus, csr("err_code"), 1)
            cycles, beats, f_reads = await bus_read(ctx, dut.bus, csr("cycles"), 3)
            if reads is not None:
                reads.append(f_reads)
            if expect_error is not None:
                results.append((st, err))
                return
            assert st == 0b010 and err == 0, (st, err)
            co, ho, wo = program.output_shape
            n = ho * wo * Ln.cb_out * config.vc // 4
            raw = np.array(await bus_read(ctx, dut.bus, mem("feature", program.output_base), n), "<u4").tobytes()
            results.append((words_to_features(raw, co, ho, wo, config.vc, Ln.cb_out), cycles, beats))
            await bus_write(ctx, dut.bus, csr("ctrl"), [CTRL_ACK])

    run_sim(dut, tb, deadline_cycles=400000)
    return results


SMALL = EngineConfig(m=8, vc=8, acc_width=24, filter_depth=32, feature_depth=512, weight_depth=512,
                     param_depth=256, clk_hz=1_000_000, baud=250_000)


@pytest.mark.parametrize("name,config,cin,hw,specs", [
    ("conv3x3_pad_relu", SMALL, 8, (5, 6), [(8, 3, 1, (1, 1, 1, 1), True, 1)]),
    ("two_blocks_in_out_stride2", SMALL, 12, (7, 7), [(11, 3, 2, (1, 0, 1, 0), False, 1)]),
    ("pool_then_fc", SMALL, 3, (6, 7), [(8, 3, 1, (1, 1, 1, 1), True, 2), (5, 3, 1, (0, 0, 0, 0), False, 1)]),
    ("m16_vc8_k2", EngineConfig(m=16, vc=8, acc_width=24, filter_depth=32, feature_depth=512,
                                weight_depth=512, param_depth=256, clk_hz=1_000_000, baud=250_000),
     5, (4, 4), [(10, 1, 1, (0, 0, 0, 0), True, 1), (7, 2, 1, (0, 1, 0, 1), False, 2)]),
])
@pytest.mark.parametrize("mode", ["direct", "winograd"])
def test_layers_vs_golden(name, config, cin, hw, specs, mode):
    rng = np.random.default_rng(SEED)
    ops = _ops(rng, specs, cin)
    program = plan_program(ops, (cin, *hw), ops[0].q_in, config, winograd=mode)
    for L in program.layers:        # every 3×3 stride-1 layer here is eligible
        assert L.winograd == (mode == "winograd" and (L.kh, L.kw, L.stride) == (3, 3, 1)), L.mode_reason
    inputs = [rng.integers(-128, 128, (cin, *hw)) for _ in range(2)]
    inputs[0][:, 0, :] = -128          # extremes on a row
    inputs[0][:, -1, :] = 127
    got = _run_core(config, program, inputs)
    for v, (y, cycles, beats) in zip(inputs, got):
        exp = golden_forward(program, v)
        assert np.array_equal(y, exp)
        exp_beats = sum(layer_beats(L, config) for L in program.layers)
        assert beats == exp_beats
        assert cycles > beats


def test_worst_case_accumulator():
    """Every input −128 and every weight −64·2^n2: the accumulator's largest value, no wrap."""
    rng = np.random.default_rng(SEED)
    ops = _ops(rng, [(8, 3, 1, (0, 0, 0, 0), False, 1)], 8, extreme=True)
    ops[0].b[:] = 0
    program = plan_program(ops, (8, 3, 3), ops[0].q_in, SMALL)
    v = np.full((8, 3, 3), -128)
    (y, _, _), = _run_core(SMALL, program, [v])
    assert np.array_equal(y, golden_forward(program, v))


def test_bad_descriptor_reports_error():
    rng = np.random.default_rng(SEED)
    ops = _ops(rng, [(8, 3, 1, (1, 1, 1, 1), True, 1)], 8)
    program = plan_program(ops, (8, 4, 4), ops[0].q_in, SMALL)
    off = descriptor_fields()["magic"][0]        # break the magic
    program.params[program.desc_base + off // 32] ^= 1 << (off % 32)
    (st, err), = _run_core(SMALL, program, [np.zeros((8, 4, 4), int)], expect_error=True)
    assert st == 0b100 and err == regmap(SMALL)["error_codes"]["bad_magic"]


def test_start_needs_the_last_run_acknowledged():
    """A second start before the ack is refused (``refused`` set, ``runs`` unchanged, the
    engine does not run); after the ack the next start runs; ``done`` reads 0 once acknowledged."""
    rng = np.random.default_rng(SEED)
    ops = _ops(rng, [(8, 3, 1, (1, 1, 1, 1), True, 1)], 8)
    program = plan_program(ops, (8, 4, 4), ops[0].q_in, SMALL)
    rm = regmap(SMALL)
    bits = rm["status_bits"]
    dut = AcceleratorCore(SMALL)
    csr = lambda n: rm["regions"]["csr"]["base"] + rm["csrs"][n]["offset"]
    mem = lambda r, w: rm["regions"][r]["base"] + 4 * rm["regions"][r]["slices"] * w
    seen = []

    async def tb(ctx):
        await bus_write(ctx, dut.bus, mem("param", 0), program.params)
        await bus_write(ctx, dut.bus, mem("weight", 0), to_u32(program.weights.astype("<u2").tobytes()))

        async def run(word):
            await bus_write(ctx, dut.bus, csr("ctrl"), [word])
            while True:
                st, = await bus_read(ctx, dut.bus, csr("status"), 1)
                if not st >> bits["busy"] & 1:
                    break
            runs, = await bus_read(ctx, dut.bus, csr("runs"), 1)
            cycles, = await bus_read(ctx, dut.bus, csr("cycles"), 1)
            seen.append((st, runs, cycles))

        await run(CTRL_START)                   # runs
        await run(CTRL_START)                   # refused: not acknowledged
        await run(CTRL_ACK)                     # done cleared
        await run(CTRL_START)                   # runs again
        await run(CTRL_START | CTRL_ACK)        # start wins over ack: refused

    run_sim(dut, tb, deadline_cycles=100000)
    done, refused = 1 << bits["done"], 1 << bits["refused"]
    assert [(st, runs) for st, runs, _ in seen] == [
        (done, 1), (done | refused, 1), (refused, 1), (done, 2), (done | refused, 2)]
    assert seen[0][2] == seen[3][2] > 0         # the refused start did not restart the counter


WINO_CFG = EngineConfig(m=8, vc=8, acc_width=24, filter_depth=64, feature_depth=512, weight_depth=1024,
                        param_depth=256, clk_hz=1_000_000, baud=250_000)


def test_winograd_two_blocks_two_input_blocks():
    """Winograd with 2 input blocks and 2 output blocks: block 1's filters are transformed into
    the other half of the caches while block 0 runs; odd output size (edge tiles)."""
    rng = np.random.default_rng(SEED + 1)
    ops = _ops(rng, [(11, 3, 1, (1, 1, 1, 1), True, 1)], 12)
    program = plan_program(ops, (12, 5, 7), ops[0].q_in, WINO_CFG, winograd="winograd")
    assert program.layers[0].winograd and program.layers[0].n_coblk(8) == 2
    inputs = [rng.integers(-128, 128, (12, 5, 7))]
    (y, cycles, beats), = _run_core(WINO_CFG, program, inputs)
    assert np.array_equal(y, golden_forward(program, inputs[0]))
    assert beats == layer_beats(program.layers[0], WINO_CFG)


@pytest.mark.parametrize("mode", ["nzp", "tdc", "winograd"])
def test_deconv_forms(mode):
    """A K5 S2 P2 OP1 transposed convolution (the DCGAN layers' geometry) with a tanh head:
    NZP (zero-inserted input read by the engine), TDC phases (interleaved writes) and
    Winograd-TDC (skipped transformed positions), each equal to the golden model."""
    from nibble.sim.golden import ACT_Q_IN, ACT_Q_OUT, ACT_TANH
    rng = np.random.default_rng(SEED + 2)
    codes = rng.integers(0, 16, (6, 5, 5, 5)).astype(np.uint8)
    op = ConvOp(name="up", w=np.zeros((6, 5, 5, 5)), b=rng.normal(0, 0.5, 5), stride=2, pad=(2, 2, 2, 2),
                kind="ConvTranspose", codes=codes, n2=-7, q_in=5, q_out=ACT_Q_OUT)
    op.output_padding, op.act, op.q_act = (1, 1), ACT_TANH, ACT_Q_IN
    program = plan_program([op], (6, 5, 6), 5, SMALL, deconv=mode)
    assert program.output_shape == (5, 10, 12)
    inputs = [rng.integers(-128, 128, (6, 5, 6))]
    (y, _, _), = _run_core(SMALL, program, inputs)
    assert np.array_equal(y, golden_forward(program, inputs[0]))
    assert len(program.layers) == (1 if mode == "nzp" else 4)


# transposed convolutions whose TDC phases need a cropped input (a negative offset: K2 S2 P1, P = K),
# have no taps (K < S: bias-only phases) or read no input row (K3 S3 P1 OP2)
CROP_CASES = [(2, 2, 1, 0, "tdc"), (3, 2, 3, 1, "tdc"), (1, 3, 0, 2, "tdc"), (2, 3, 1, 1, "auto"),
              (3, 3, 1, 2, "auto"), (6, 2, 5, 1, "winograd"), (3, (1, 3), 1, 0, "auto"), (4, (2, 3), 1, 1, "auto")]


@pytest.mark.parametrize("K,S,P,OP,mode", CROP_CASES, ids=[f"K{c[0]}S{c[1]}P{c[2]}OP{c[3]}_{c[4]}".replace(" ", "") for c in CROP_CASES])
def test_deconv_cropped_and_bias_only_phases(K, S, P, OP, mode):
    rng = np.random.default_rng(SEED + 10 * K + P)
    codes = rng.integers(0, 16, (3, 5, K, K)).astype(np.uint8)
    op = ConvOp(name="up", w=np.zeros((3, 5, K, K)), b=rng.normal(0, 0.5, 5), stride=S, pad=(P, P, P, P),
                relu=True, kind="ConvTranspose", codes=codes, n2=-7, q_in=5, q_out=4)
    op.output_padding = (OP, OP)
    program = plan_program([op], (3, 4, 5), 5, WINO_CFG, deconv=mode)
    reasons = " ".join(L.mode_reason for L in program.layers)
    if isinstance(S, tuple):                  # unequal strides: Sy·Sx phases, interleaved by (Sy, Sx)
        assert len(program.layers) == S[0] * S[1] and all(L.phase[2:] == S for L in program.layers)
    else:
        assert any(any(L.crop) for L in program.layers) or "bias only" in reasons, reasons
    inputs = [rng.integers(-128, 128, (3, 4, 5))]
    (y, _, _), = _run_core(WINO_CFG, program, inputs)
    assert np.array_equal(y, golden_forward(program, inputs[0]))


def test_feature_read_counter_equals_the_event_count():
    """The ``feature_reads`` CSR (words the feature reader fetched) equals
    ``nibble.sim.perf.energy.plan_events`` summed over the plans: padded and pooled direct layers,
    Winograd, NZP zero insertion and cropped TDC phases."""
    from nibble.sim.perf.energy import plan_events
    rng = np.random.default_rng(SEED + 20)
    ops = _ops(rng, [(11, 3, 1, (1, 1, 1, 1), True, (3, 3, 2, 2, 1, 1, 1, 1)), (8, 3, 2, (2, 0, 1, 2), False, 1)], 12)
    cases = [(plan_program(ops, (12, 9, 7), ops[0].q_in, WINO_CFG, winograd="direct"), (12, 9, 7)),
             (plan_program(ops[:1], (12, 6, 6), ops[0].q_in, WINO_CFG, winograd="winograd"), (12, 6, 6))]
    for K, S, P, mode in ((4, 2, 1, "nzp"), (2, 2, 1, "tdc")):
        op = ConvOp(name="up", w=np.zeros((3, 5, K, K)), b=rng.normal(0, 0.5, 5), stride=S, pad=(P,) * 4,
                    kind="ConvTranspose", codes=rng.integers(0, 16, (3, 5, K, K)).astype(np.uint8), n2=-7, q_in=5,
                    q_out=4)
        op.output_padding = (0, 0)
        cases.append((plan_program([op], (3, 4, 5), 5, WINO_CFG, deconv=mode), (3, 4, 5)))
    for program, shape in cases:
        reads = []
        (y, _, _), = _run_core(WINO_CFG, program, [rng.integers(-128, 128, shape)], reads=reads)
        assert reads == [sum(plan_events(L, WINO_CFG)["feature_reads"] for L in program.layers)], \
            [L.name for L in program.layers]
