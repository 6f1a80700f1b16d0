"""Per-output-channel weight exponents (``exponents="auto"|"channel"``, descriptor ``ch_sh``):
the golden requantization with one shift per channel, the output stage in amaranth.sim, the INQ
pass against an independent per-channel quantization, and whole programs on the RTL (on chip
and with every map in DDR), bit-identical to the golden model, with the cycle model exact."""
import numpy as np
import pytest
from onnx import helper

from nibble.hw.config import EngineConfig
from nibble.hw.isa import DSH_MAX, SH_MIN, decode_descriptor, DESC_WORDS
from nibble.hw.output import OutputStage
from nibble.host.compiler import CompileError, compile_graph, compile_model
from nibble.host.driver import Device
from nibble.host.graph import run_outputs
from nibble.host.ir import ConvOp, inq_weights
from nibble.host.passes.inq import inq_op
from nibble.host.passes.lower import layer_cycles
from nibble.host.program import Program, ProgramError
from nibble.sim import golden
from onnx_models import model, snr_db
from tests.streams import run_sim, stream_recv, stream_send

SEED = 20261204


def _spread(rng, shape, axis=0, decades=10):
    """Normal weights whose output channels (``axis``) are scaled by 2^0 … 2^−decades: the spread
    BatchNorm folding gives, which one level set per layer cannot cover."""
    w = rng.normal(0, 0.5, shape)
    scale = np.ldexp(1.0, -rng.integers(0, decades + 1, shape[axis]))
    sh = [1] * len(shape)
    sh[axis] = -1
    return w * scale.reshape(sh)


def test_round_shift_per_channel_equals_per_channel_calls():
    acc = np.arange(-9, 10)[None].repeat(6, 0) * np.array([1, 3, 100, -7, 1 << 20, 5])[:, None]
    sh = np.array([SH_MIN, -1, 0, 1, 2, 21])
    got = golden.requantize(acc, sh, relu=False)
    for c in range(6):
        assert np.array_equal(got[c], golden.requantize(acc[c], int(sh[c])))
    a = np.array([3, 1, 4]).reshape(3, 1, 1)
    assert np.array_equal(golden.requantize(acc[:3, None, :] * 1, sh[:3] + 4, slope=a[:, 0, 0]),
                          np.stack([golden.requantize(acc[c, None, :], int(sh[c]) + 4, slope=a[c:c + 1, 0, 0])[0]
                                    for c in range(3)])[:, None, :])


@pytest.mark.parametrize("sh", [SH_MIN + DSH_MAX, 0, 5, 31])
def test_output_stage_shifts_each_lane(sh):
    """Lane k requantizes by ``sh − dsh[k]`` (the ARITHMETIC §4.5 ``sh[co]``), bit for bit."""
    rng = np.random.default_rng(SEED + sh)
    m = 4
    dsh = np.array([0, 1, 7, DSH_MAX]) if sh - DSH_MAX >= SH_MIN else np.array([0, 1, 2, 3])
    accs = rng.integers(-(1 << 24), 1 << 24, (40, m))
    accs[:4] = [[-7, 7, 1 << 6, -(1 << 6)]] * 4
    bias = rng.integers(-1000, 1000, m)
    dut = OutputStage(m=m, acc_width=32, tag_shape=8)
    got = []

    async def src(ctx):
        ctx.set(dut.bias, [int(b) for b in bias])
        ctx.set(dut.sh, sh)
        ctx.set(dut.dsh, [int(d) for d in dsh])
        await stream_send(ctx, dut.i, [{"acc": [int(v) for v in a], "pool_first": 1, "pool_last": 1, "tag": 0}
                                       for a in accs], seed=SEED)

    async def sink(ctx):
        got.extend(await stream_recv(ctx, dut.o, len(accs), seed=SEED + 1))

    run_sim(dut, src, sink)
    exp = golden.requantize((accs + bias).T, sh - dsh).T
    assert np.array_equal(np.array([list(p.v) for p in got]), exp)


@pytest.mark.parametrize("kind, axis", [("Conv", 0), ("ConvTranspose", 1), ("Gemm", 0)])
def test_inq_pass_per_channel_is_each_channel_quantized_alone(kind, axis):
    rng = np.random.default_rng(SEED)
    shape = (12, 5, 3, 3) if kind != "ConvTranspose" else (5, 12, 3, 3)
    w = _spread(rng, shape, axis)
    op = ConvOp("L", w, np.zeros(12), kind=kind)
    q = inq_op(op, "channel")
    want = np.stack([golden.inq_decode(*golden.inq_quantize(c)) for c in np.moveaxis(w, axis, 0)])
    assert np.array_equal(inq_weights(q), np.moveaxis(want, 0, axis))
    assert q.dn2.min() == 0 and q.dn2.max() >= 6 and q.wsnr[1] > q.wsnr[0] + 5
    assert inq_op(op, "auto").dn2 is not None and inq_op(op, "layer").dn2 is None
    same = ConvOp("L", np.ones(shape) * 0.5, np.zeros(12), kind=kind)       # nothing to gain
    assert inq_op(same, "auto").dn2 is None and inq_op(same, "channel").dn2 is None
    assert inq_op(ConvOp("L", w, np.zeros(12), kind=kind, res=True), "channel").dn2 is None


def _net(rng, deconv=True):
    """Conv 3×3 + ReLU + 2×2 pool (Winograd-eligible), PReLU conv, ConvTranspose (TDC; without
    ``deconv`` a 1×1 Conv instead), Gemm; every layer's output channels at scales 2^0 … 2^−10."""
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="c1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="r1"),
             helper.make_node("MaxPool", ["r1"], ["p1"], name="p1", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], name="c2", pads=[1, 1, 1, 1]),
             helper.make_node("PRelu", ["c2", "s2"], ["r2"], name="r2"),
             helper.make_node("ConvTranspose", ["r2", "w3", "b3"], ["c3"], name="c3", strides=[2, 2],
                              pads=[1, 1, 1, 1], output_padding=[1, 1]) if deconv else
             helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], name="c3"),
             helper.make_node("Relu", ["c3"], ["r3"], name="r3"),
             helper.make_node("Flatten", ["r3"], ["f"], name="f"),
             helper.make_node("Gemm", ["f", "w4", "b4"], ["y"], name="fc", transB=1)]
    inits = {"w1": _spread(rng, (20, 3, 3, 3)), "b1": rng.normal(0, 0.05, 20),
             "w2": _spread(rng, (18, 20, 3, 3)), "b2": rng.normal(0, 0.05, 18),
             "s2": rng.uniform(0.05, 0.5, (18, 1, 1)),
             "w3": _spread(rng, (18, 8, 3, 3), axis=1) if deconv else _spread(rng, (8, 18, 1, 1)),
             "b3": rng.normal(0, 0.05, 8),
             "w4": _spread(rng, (10, 8 * (8 if deconv else 4) ** 2)), "b4": rng.normal(0, 0.05, 10)}
    return model(nodes, inits, inputs={"x": ("N", 3, 8, 8)})


@pytest.fixture(scope="module")
def net():
    rng = np.random.default_rng(SEED)
    m = _net(rng)
    x = rng.standard_normal((6, 3, 8, 8))
    return m, x


def test_programs_with_per_channel_shifts_on_the_golden_device(net, tmp_path):
    """Per-channel exponents: every layer gets ``ch_sh``, its descriptor and shift words say so;
    the golden device is as close to the float graph with its INQ weights as a per-layer
    program is to its own; the program file keeps and checks the shift words."""
    m, x = net
    # the first layer unfolded (fold_input=False): it is the one that runs as Winograd here
    g, p = compile_graph(m, x[:4], exponents="channel", fold_input=False)
    assert all(L.ch_sh for L in p.layers) and all("per-channel n2" in L.mode_reason for L in p.layers)
    assert any(L.winograd for L in p.layers) and any(L.phase for L in p.layers)
    for i, L in enumerate(p.layers):
        d = decode_descriptor(p.params[p.desc_base + DESC_WORDS * i:p.desc_base + DESC_WORDS * (i + 1)])
        assert d["ch_sh"] == 1 and d["shift_base"] == L.shift_base
        d = p.layer_shifts(i)
        assert d.min() == 0 and 1 <= d.max() <= DSH_MAX and len(d) == L.cout
    with Device("golden") as dev:
        dev.load(p)
        y = dev.run(x)
    g_layer, p_layer = compile_graph(m, x[:4], exponents="layer")
    with Device("golden") as dev:
        dev.load(p_layer)
        y_layer = dev.run(x)
    # against the float graph with the program's own INQ weights: as close as with one exponent per
    # layer (a bias or shift off by a channel's 2^dn2 would cost tens of dB); the int8 features,
    # one exponent per tensor, are what limits both
    inq_ch = snr_db(y, next(iter(run_outputs(g, x, weights="inq").values())))
    inq_layer = snr_db(y_layer, next(iter(run_outputs(g_layer, x, weights="inq").values())))
    assert inq_ch > 12 and inq_ch > inq_layer - 3, (inq_ch, inq_layer)
    p.save(tmp_path / "p.npz")                        # the file keeps the shifts, and checks them
    q = Program.load(tmp_path / "p.npz")
    assert [L.ch_sh for L in q.layers] == [True] * len(p.layers)
    q.params[q.layers[0].shift_base] = DSH_MAX + 1
    with pytest.raises(ProgramError, match="shift_base"):
        q.validate()


@pytest.mark.slow
def test_per_channel_shifts_on_the_rtl(net):
    """The same programs on the simulated PCIe device — on chip, and with every map in DDR (the
    step list's LOAD/RUN/STORE, parameter blobs with the shift words): bit-identical to the
    golden device. The shift words cost
    each output block up to ``m + 1`` cycles, as the cycle model says: per descriptor, the RTL's
    cycles are the model's, and so are its extra cycles over the per-layer program."""
    m, x = net
    cfg = EngineConfig()
    chain = _net(np.random.default_rng(SEED), deconv=False)     # transposed convolutions are not banded
    with Device("sim", config=cfg) as d:
        for mod, tile in ((m, False), (chain, True)):
            p = compile_model(mod, x[:4], cfg, exponents="channel", tile_features=tile)
            assert all(L.ch_sh for L in p.layers)
            with Device("golden") as g:
                g.load(p)
                g.run(x[:2])
                want = g.raw
            d.load(p)
            d.run(x[:2])
            assert np.array_equal(d.raw, want)
            if tile:
                assert d._be.ddr.runs and d.memory[0]["ddr_read_bytes"] > 0     # run from DDR
        p = compile_model(m, x[:4], cfg, exponents="channel")
        d.load(p)
        d.run(x[:1])
        rtl = d.descriptor_cycles()
        p1 = compile_model(m, x[:4], cfg, exponents="layer")
        d.load(p1)
        d.run(x[:1])
        rtl1 = d.descriptor_cycles()
    model = [layer_cycles(L, cfg) for L in p.layers]
    model1 = [layer_cycles(L, cfg) for L in p1.layers]
    assert [L.winograd for L in p.layers] == [L.winograd for L in p1.layers]
    # m + 1 cycles per output block, but where a Winograd layer's next weight transform outlasts
    # a block: there the longer parameter load hides that much of the transform
    assert [a - b for a, b in zip(rtl, rtl1)] == [a - b for a, b in zip(model, model1)]
    assert all(0 < a - b <= (cfg.m + 1) * L.n_coblk(cfg.m) for a, b, L in zip(rtl, rtl1, p.layers))
    assert rtl == model


def test_refusals():
    rng = np.random.default_rng(SEED)
    m = _net(rng)
    with pytest.raises(CompileError, match="weight exponents 'some' are not one of layer, auto, channel"):
        compile_model(m, rng.standard_normal((2, 3, 8, 8)), exponents="some")


def test_compile_command_lists_the_per_channel_layers(net, tmp_path):
    """``nibble compile --weight-exponents auto`` picks the spread layers and lists both SNRs; a
    compiled program cannot take the option."""
    import onnx
    from click.testing import CliRunner

    from nibble.cli import cli
    m, x = net
    onnx.save(m, tmp_path / "m.onnx")
    np.save(tmp_path / "c.npy", x[:4])
    r = CliRunner().invoke(cli, ["compile", str(tmp_path / "m.onnx"), "--calib", str(tmp_path / "c.npy"),
                                 "-o", str(tmp_path / "p.npz"), "--weight-exponents", "auto"])
    assert r.exit_code == 0, r.output
    assert r.output.count("per-channel n2 (weight SNR") >= 3
    assert sum(L.ch_sh for L in Program.load(tmp_path / "p.npz").layers) >= 3
    r = CliRunner().invoke(cli, ["run", "--program", str(tmp_path / "p.npz"), "--inputs", str(tmp_path / "c.npy"),
                                 "--device", "golden", "--weight-exponents", "channel"])
    assert r.exit_code == 1 and "--weight-exponents applies to compiling a MODEL" in r.output
