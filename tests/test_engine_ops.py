"""Engine operations from hand-built programs (no compiler): PReLU, clipping, general max-pool
windows (3×3 stride 2 ``ceil_mode``, padded windows), input views, and branching plans with
several outputs — AcceleratorCore in amaranth.sim against the golden device (``golden_outputs``).

Each program is assembled here from :class:`LayerPlan` s with random codes, biases and slopes,
checked by :meth:`Program.validate` (the same checks as a program file), and run on the core
through its bus as the driver does; expected values come from the golden model only.
"""
import numpy as np
import pytest

from nibble.hw.accelerator import AcceleratorCore, regmap
from nibble.hw.config import EngineConfig
from nibble.hw.isa import CTRL_ACK, CTRL_START, DESC_WORDS, PRELU_FRAC, EngineError, descriptor_fields
from nibble.host.driver import golden_outputs, read_view
from nibble.host.program import LayerPlan, Program, ProgramError, TensorSpec, features_to_words, weight_words
from nibble.sim.golden import DE, INT8_CLIP, POOL_NONE, acc_bits, pool_out_size, prelu_codes, requantize
from tests.busdrv import bus_read, bus_write, to_u32
from tests.streams import run_sim

SEED = 2024
CFG = EngineConfig(m=8, vc=8, acc_width=24, filter_depth=64, feature_depth=1024, weight_depth=1024,
                   param_depth=512, clk_hz=1_000_000, baud=250_000)


class Builder:
    """Assembles a :class:`Program` from plans: feature addresses given by the test, weights,
    biases and slopes random (seeded), parameter memory = descriptors, then biases and slopes."""

    def __init__(self, config, rng):
        self.c, self.rng = config, rng
        self.plans, self.data = [], []

    def layer(self, name, src, dst, in_shape, in_base, out_base, cout, k=3, stride=1, pad=(1, 1, 1, 1),
              pool=POOL_NONE, relu=False, prelu=False, clip=INT8_CLIP, q_in=5, q_out=4, in_view=(0, 0),
              winograd=False, slopes=None, res_src="", res_base=0, res_q=0):
        c = self.c
        cin, h, w = in_shape
        conv_h = (h + pad[0] + pad[1] - k) // stride + 1
        conv_w = (w + pad[2] + pad[3] - k) // stride + 1
        out_h, out_w = pool_out_size(conv_h, conv_w, pool)
        codes = self.rng.integers(0, 16, (cout, cin, k, k)).astype(np.uint8)
        bias = self.rng.integers(-3000, 3000, cout)
        n2 = -7
        sh = q_in - n2 - q_out
        nb = -(-cout // c.m)
        L = LayerPlan(name=name, op="conv", cin=cin, cout=cout, in_h=h, in_w=w, kh=k, kw=k, stride=stride,
                      pad=tuple(pad), conv_h=conv_h, conv_w=conv_w, pool=tuple(pool), out_h=out_h, out_w=out_w,
                      relu=relu, n2=n2, q_in=q_in, q_out=q_out, sh=sh,
                      acc_bits=acc_bits(cin * k * k, DE, int(np.abs(bias).max()) * (4 if winograd else 1))
                      + (2 if winograd else 0),
                      cb_in=-(-cin // c.vc), cb_out=nb * c.m // c.vc, in_base=in_base, out_base=out_base,
                      map_base=out_base, full_h=out_h, full_w=out_w, prelu=prelu, clip=tuple(clip),
                      in_row=in_view[0], in_pix=in_view[1], src=src, dst=dst, group=name, winograd=winograd,
                      res=bool(res_src), res_src=res_src, res_base=res_base, res_q=res_q)
        if slopes is None and prelu:
            slopes = prelu_codes(self.rng.uniform(-1.5, 1.5, cout))
        self.plans.append(L)
        self.data.append((codes, bias * (4 if winograd else 1), slopes))
        return L

    def program(self, inputs, outputs):
        c, n = self.c, len(self.plans)
        p_ptr, w_ptr, blobs = DESC_WORDS * n, 0, []
        for L, (codes, bias, slopes) in zip(self.plans, self.data):
            L.w_base = w_ptr
            blob = weight_words(codes, c.m, c.vc, L.cb_in)
            blobs.append(blob)
            w_ptr += len(blob) // (c.vc // 4)
            L.bias_base = p_ptr
            p_ptr += L.n_coblk(c.m) * c.m
            if L.prelu:
                L.slope_base = p_ptr
                p_ptr += L.n_coblk(c.m) * c.m
        params = np.zeros(p_ptr, np.uint32)
        for i, (L, (codes, bias, slopes)) in enumerate(zip(self.plans, self.data)):
            params[DESC_WORDS * i:DESC_WORDS * (i + 1)] = L.descriptor(c, last=i == n - 1)
            params[L.bias_base:L.bias_base + L.cout] = np.asarray(bias, np.int32).view(np.uint32)
            if L.prelu:
                params[L.slope_base:L.slope_base + L.cout] = np.asarray(slopes, np.int32).view(np.uint32)
        p = Program(config=c, layers=self.plans, params=params, weights=np.concatenate(blobs).astype(np.uint16),
                    inputs=inputs, outputs=outputs)
        p.validate()
        return p


def run_core(program, inputs, expect_error=False):
    """Each input through the core: ``[(outputs, cycles, beats)]``, or ``[(status, err_code)]``."""
    c = program.config
    rm = regmap(c)
    dut = AcceleratorCore(c)
    csr = lambda n: rm["regions"]["csr"]["base"] + rm["csrs"][n]["offset"]  # noqa: E731
    mem = lambda r, w: rm["regions"][r]["base"] + 4 * rm["regions"][r]["slices"] * w  # noqa: E731
    results = []

    async def tb(ctx):
        await bus_write(ctx, dut.bus, mem("param", 0), program.params)
        await bus_write(ctx, dut.bus, mem("weight", 0), to_u32(program.weights.astype("<u2").tobytes()))
        for v in inputs:
            spec = program.inputs[0]
            await bus_write(ctx, dut.bus, mem("feature", spec.base),
                            to_u32(features_to_words(v, c.vc, spec.view(c.vc)[2])))
            await bus_write(ctx, dut.bus, csr("ctrl"), [CTRL_START])
            while True:
                st, = await bus_read(ctx, dut.bus, csr("status"), 1)
                if not st & 1:
                    break
            err, = await bus_read(ctx, dut.bus, csr("err_code"), 1)
            cycles, beats = await bus_read(ctx, dut.bus, csr("cycles"), 2)
            if expect_error:
                results.append((st, err))
                return
            assert st == 0b010 and err == 0, (st, err)
            outs = []
            for o in program.outputs:
                row, pix, cb = o.view(c.vc)
                raw = await bus_read(ctx, dut.bus, mem("feature", o.base), o.words(c.vc) * c.vc // 4)
                words = np.frombuffer(np.array(raw, "<u4").tobytes(), np.int8).reshape(-1, c.vc)
                outs.append(read_view(words, 0, o.shape[1], o.shape[2], row, pix, cb)[:o.shape[0]])
            results.append((outs, cycles, beats))
            await bus_write(ctx, dut.bus, csr("ctrl"), [CTRL_ACK])

    run_sim(dut, tb, deadline_cycles=600000)
    return results


def _inputs(rng, shape, n=1):
    vs = [rng.integers(-128, 128, shape) for _ in range(n)]
    vs[0][:, 0, :] = -128
    vs[0][:, -1, :] = 127
    return vs


RTL = EngineConfig()        # the configuration of the shared Verilator build


@pytest.fixture(scope="module")
def rtl():
    """The generated Verilog of the default configuration under Verilator, over the host link."""
    from nibble.host.driver import Device
    with Device("sim") as d:
        yield d


def _check(program, inputs, device=None):
    """Outputs of the core (``amaranth.sim``) or, with ``device``, of the RTL equal the golden device's."""
    if device is None:
        got = [(outs, cycles, beats) for outs, cycles, beats in run_core(program, inputs)]
    else:
        device.load(program)
        raw = device.run_int(np.stack(inputs))
        raw = raw if isinstance(raw, list) else [raw]
        got = [([r[k] for r in raw], device.cycles[k], device.beats[k]) for k in range(len(inputs))]
    for v, (outs, cycles, beats) in zip(inputs, got):
        want = golden_outputs(program, v)
        assert len(outs) == len(want)
        for a, b in zip(outs, want):
            assert np.array_equal(a, b)
        assert cycles > beats > 0


def _backend(request, where):
    """``(config, device)`` for a case run in ``amaranth.sim`` (``"amaranth"``) or on the RTL."""
    return (CFG, None) if where == "amaranth" else (RTL, request.getfixturevalue("rtl"))


@pytest.mark.parametrize("name,where,shape,pool,relu,prelu,clip", [
    ("prelu_pool3s2_ceil", "amaranth", (9, 5, 5), (3, 3, 2, 2, 0, 1, 0, 1), False, True, INT8_CLIP),
    ("relu6_pool2s2_ceil", "amaranth", (9, 5, 3), (2, 2, 2, 2, 0, 1, 0, 1), True, False, (0, 96)),
    ("prelu_pool3s2_ceil_rtl", "rtl", (19, 9, 7), (3, 3, 2, 2, 0, 1, 0, 1), False, True, INT8_CLIP),
    ("prelu_clip_pool3s1_same", "rtl", (6, 6, 5), (3, 3, 1, 1, 1, 1, 1, 1), False, True, (-40, 50)),
    ("pool2s1_no_pad", "rtl", (5, 4, 3), (2, 2, 1, 1, 0, 0, 0, 0), False, False, INT8_CLIP),
])
def test_epilogue_and_pool(request, name, where, shape, pool, relu, prelu, clip):
    """Two output blocks (11 channels at m = 8; 20 on the RTL, m = 16); odd maps, one or two
    input blocks."""
    rng = np.random.default_rng(SEED + len(name))
    config, device = _backend(request, where)
    b = Builder(config, rng)
    cout = 11 if device is None else 20
    L = b.layer(name, "x", "y", shape, 0, 200, cout, pool=pool, relu=relu, prelu=prelu, clip=clip)
    spec_in = TensorSpec("x", shape, 5, 0)
    p = b.program([spec_in], [TensorSpec("y", (cout, L.out_h, L.out_w), 4, 200, pix=L.cb_out)])
    _check(p, _inputs(rng, shape, n=1 if device is None else 2), device)


def test_prelu_slope_extremes():
    """Slopes at the ends of the code range, 0, one (= identity) and negative; large biases."""
    rng = np.random.default_rng(SEED)
    b = Builder(CFG, rng)
    lim = 1 << 15
    slopes = np.array([-lim, lim - 1, 0, 1 << PRELU_FRAC, -(1 << PRELU_FRAC), 1, -1, 3000])
    L = b.layer("extremes", "x", "y", (8, 4, 4), 0, 100, 8, prelu=True, slopes=slopes, q_out=1)
    p = b.program([TensorSpec("x", (8, 4, 4), 5, 0)], [TensorSpec("y", (8, 4, 4), 1, 100)])
    _check(p, _inputs(rng, (8, 4, 4)))


def test_winograd_with_prelu_and_pool():
    """Winograd F(2×2,3×3) with PReLU and the 2×2 pooled tile."""
    rng = np.random.default_rng(SEED + 5)
    b = Builder(CFG, rng)
    L = b.layer("w", "x", "y", (8, 6, 6), 0, 300, 8, pool=(2, 2, 2, 2, 0, 0, 0, 0), prelu=True, winograd=True)
    p = b.program([TensorSpec("x", (8, 6, 6), 5, 0)], [TensorSpec("y", (8, 3, 3), 4, 300)])
    _check(p, _inputs(rng, (8, 6, 6)))


def test_branching_heads(rtl):
    """A trunk and two heads reading the same tensor (several outputs, MTCNN-style), on the RTL."""
    rng = np.random.default_rng(SEED + 7)
    b = Builder(RTL, rng)
    trunk = b.layer("trunk", "x", "t", (3, 6, 6), 0, 100, 16, pool=(2, 2, 2, 2, 0, 0, 0, 0), prelu=True)
    h1 = b.layer("head1", "t", "o1", (16, 3, 3), 100, 200, 2, k=1, pad=(0, 0, 0, 0), q_in=4, q_out=3)
    h2 = b.layer("head2", "t", "o2", (16, 3, 3), 100, 220, 5, k=3, pad=(1, 1, 1, 1), q_in=4, q_out=2)
    p = b.program([TensorSpec("x", (3, 6, 6), 5, 0)],
                  [TensorSpec("o1", (2, 3, 3), 3, 200), TensorSpec("o2", (5, 3, 3), 2, 220)])
    assert [L.src for L in p.layers] == ["x", "t", "t"] and trunk.out_h == 3 and h1.cout == 2 and h2.cout == 5
    _check(p, _inputs(rng, (3, 6, 6), n=2), rtl)


def test_overwriting_a_live_tensor_is_refused():
    """A second layer's output placed over the first one's, which a third layer still reads."""
    rng = np.random.default_rng(SEED + 8)
    b = Builder(CFG, rng)
    b.layer("a", "x", "t", (3, 4, 4), 0, 100, 8)
    b.layer("b", "x", "u", (3, 4, 4), 0, 108, 2, k=1, pad=(0, 0, 0, 0), q_out=3)
    b.layer("c", "t", "o", (8, 4, 4), 100, 300, 2, k=1, pad=(0, 0, 0, 0), q_in=4, q_out=3)
    with pytest.raises(ProgramError, match="overwrites the tensor 't'"):
        b.program([TensorSpec("x", (3, 4, 4), 5, 0)],
                  [TensorSpec("u", (2, 4, 4), 3, 108), TensorSpec("o", (2, 4, 4), 3, 300)])


def _corrupt(program, field, value):
    off, width, signed = descriptor_fields()[field]
    bits = sum(int(w) << (32 * i) for i, w in enumerate(program.params[:DESC_WORDS]))
    bits = bits & ~(((1 << width) - 1) << off) | ((value & ((1 << width) - 1)) << off)
    program.params[:DESC_WORDS] = [(bits >> (32 * i)) & 0xFFFF_FFFF for i in range(DESC_WORDS)]


@pytest.mark.parametrize("field,value,error", [
    ("pool_pt", 3, EngineError.POOL),            # padding not smaller than the 3×3 window
    ("pool_sy", 0, EngineError.ZERO_SIZE),
    ("clip_lo", 100, EngineError.SHIFT_RANGE),   # clip_lo > clip_hi
    ("slope_base", 509, EngineError.PARAM_RANGE),   # 509 + 8 slopes > 512 words
])
def test_descriptor_errors(field, value, error):
    rng = np.random.default_rng(SEED)
    b = Builder(CFG, rng)
    b.layer("l", "x", "y", (8, 5, 5), 0, 100, 8, pool=(3, 3, 2, 2, 0, 1, 0, 1), prelu=True, clip=(0, 90))
    p = b.program([TensorSpec("x", (8, 5, 5), 5, 0)], [TensorSpec("y", (8, 2, 2), 4, 100)])
    _corrupt(p, field, value)
    (st, err), = run_core(p, [np.zeros((8, 5, 5), int)], expect_error=True)
    assert st == 0b100 and err == error
    assert regmap(CFG)["error_codes"][error.name.lower()] == int(error)


def test_golden_prelu_matches_float():
    """The PReLU requantization is one rounding of the float ``slope·t`` (ties up), checked
    against an exact rational computation."""
    from fractions import Fraction
    rng = np.random.default_rng(SEED)
    acc = rng.integers(-5000, 5000, (6, 7, 7))
    a = prelu_codes(rng.uniform(-2, 2, 6))
    sh = 6
    got = requantize(acc, sh + PRELU_FRAC, slope=a)
    for (ch, y, x), t in np.ndenumerate(acc):
        v = Fraction(int(t)) * (Fraction(int(a[ch]), 1 << PRELU_FRAC) if t < 0 else 1) / (1 << sh)
        want = min(127, max(-128, (v + Fraction(1, 2)).__floor__()))
        assert got[ch, y, x] == want


CFG_K2 = EngineConfig(m=16, vc=8, acc_width=24, filter_depth=64, feature_depth=1024, weight_depth=2048,
                      param_depth=512, clk_hz=1_000_000, baud=250_000)


@pytest.mark.parametrize("where,winograd,relu", [("rtl", False, True), ("rtl", True, False), ("amaranth", False, True)],
                         ids=["direct_relu", "winograd", "two_words_per_pixel"])
def test_residual_add(request, where, winograd, relu):
    """ResNet's basic block tail: ``relu(conv(h) + bias + x)`` with the shortcut x read by the
    residual reader (its own exponent); ``k = m/vc = 2`` words per pixel in the last case."""
    rng = np.random.default_rng(SEED + 11)
    config, device = _backend(request, where)
    config = CFG_K2 if device is None else config
    b = Builder(config, rng)
    c, h, w = (10, 3, 4) if device is None else (24, 5, 6)
    b.layer("conv1", "x", "h", (c, h, w), 0, 200, c, k=1, pad=(0, 0, 0, 0), relu=True, q_in=5, q_out=4)
    L = b.layer("conv2", "h", "y", (c, h, w), 200, 400, c, relu=relu, q_in=4, q_out=3, winograd=winograd,
                res_src="x", res_base=0, res_q=5)
    assert L.res_sh_hw == 4 - (-7) - 5 + (2 if winograd else 0)
    p = b.program([TensorSpec("x", (c, h, w), 5, 0, pix=L.cb_out)], [TensorSpec("y", (c, h, w), 3, 400, pix=L.cb_out)])
    _check(p, _inputs(rng, (c, h, w)), device)


def test_residual_layout_must_match_the_output():
    rng = np.random.default_rng(SEED)
    b = Builder(CFG, rng)
    b.layer("a", "x", "h", (8, 4, 4), 0, 100, 8, q_out=4)
    b.layer("b", "h", "y", (8, 4, 4), 100, 200, 8, q_in=4, q_out=3, res_src="x", res_base=0, res_q=4)
    with pytest.raises(ProgramError, match="residual 'x'.*is not laid out as the output"):
        b.program([TensorSpec("x", (8, 4, 4), 5, 0)], [TensorSpec("y", (8, 4, 4), 3, 200)])


@pytest.mark.slow
def test_new_operations_on_the_rtl(rtl):
    """The generated Verilog under Verilator (default configuration, through the host link):
    a PReLU trunk with a 3×3 stride-2 ``ceil_mode`` pool, a residual block, and three heads (one
    Winograd with ReLU6-style clipping, one depthwise) as several outputs — bit-identical to the
    golden device."""
    rng = np.random.default_rng(SEED + 21)
    cfg = EngineConfig()
    b = Builder(cfg, rng)
    t = b.layer("trunk", "x", "t", (3, 10, 10), 0, 200, 20, pool=(3, 3, 2, 2, 0, 1, 0, 1), prelu=True)
    assert (t.out_h, t.out_w) == (5, 5)
    b.layer("conv", "t", "h", (20, 5, 5), 200, 300, 20, relu=True, q_in=4, q_out=4)
    r = b.layer("block", "h", "u", (20, 5, 5), 300, 400, 20, relu=True, q_in=4, q_out=3, res_src="t",
                res_base=200, res_q=4)
    b.layer("head1", "u", "o1", (20, 5, 5), 400, 500, 2, k=1, pad=(0, 0, 0, 0), q_in=3, q_out=3)
    b.layer("head2", "u", "o2", (20, 5, 5), 400, 600, 5, q_in=3, q_out=2, winograd=True, clip=(0, 96))
    dw = _grouped(b, "depthwise", "u", "o3", (20, 5, 5), 400, 700, 20, 20, q_in=3, q_out=2)
    p = b.program([TensorSpec("x", (3, 10, 10), 5, 0)],
                  [TensorSpec("o1", (2, 5, 5), 3, 500), TensorSpec("o2", (5, 5, 5), 2, 600),
                   TensorSpec("o3", (20, 5, 5), 2, 700, pix=dw.cb_out)])
    assert r.res and p.layers[-2].winograd and p.layers[-1].grp == 1
    vs = np.stack(_inputs(rng, (3, 10, 10), n=3))
    rtl.load(p)
    got = rtl.run_int(vs)
    for k, v in enumerate(vs):
        want = golden_outputs(p, v)
        assert all(np.array_equal(g[k], w) for g, w in zip(got, want))


def _grouped(b, name, src, dst, shape, in_base, out_base, groups, cout, **kw):
    """A grouped conv plan: dense per-group filters expanded block-diagonally into the ``cb_in·vc``
    input channels each output block reads (what the compiler's lowering does)."""
    c = b.c
    cin = shape[0]
    cg_in, cg_out = cin // groups, cout // groups
    if cg_out >= c.m:
        grp, cb = cg_out // c.m, cg_in // c.vc
    else:
        grp, cb = 1, c.m // cg_out * cg_in // c.vc
    L = b.layer(name, src, dst, (cb * c.vc, *shape[1:]), in_base, out_base, cout, **kw)
    codes, bias, slopes = b.data[-1]
    local = np.zeros_like(codes)
    for co in range(cout):
        g = co // cg_out
        first = g * cg_in - ((co // c.m) // grp) * cb * c.vc       # the group's first channel in the block
        local[co, first:first + cg_in] = codes[co, first:first + cg_in]
    b.data[-1] = (local, bias, slopes)
    L.cin, L.groups, L.grp, L.in_pix = cin, groups, grp, -(-cin // c.vc)
    L.in_row = shape[2] * L.in_pix
    return L


@pytest.mark.parametrize("where,groups,cin,cout", [("amaranth", 16, 16, 16), ("rtl", 2, 32, 64), ("rtl", 8, 32, 32),
                                                  ("rtl", 40, 40, 40)],
                         ids=["depthwise", "two_groups", "eight_groups", "depthwise_rtl"])
def test_grouped_conv(request, where, groups, cin, cout):
    """Depthwise (group = C) and grouped 3×3 convs: every output block reads only its group's
    input blocks; bit-identical to the golden device, which runs each group's dense conv."""
    rng = np.random.default_rng(SEED + groups)
    config, device = _backend(request, where)
    b = Builder(config, rng)
    L = _grouped(b, "g", "x", "y", (cin, 4, 3), 0, 300, groups, cout, relu=True)
    p = b.program([TensorSpec("x", (cin, 4, 3), 5, 0)], [TensorSpec("y", (cout, 4, 3), 4, 300)])
    assert L.macs() == cout * (cin // groups) * 9 * 12
    _check(p, _inputs(rng, (cin, 4, 3)), device)
    # the golden device against a dense conv with the block-diagonal weights written out
    from nibble.sim.golden import conv_acc
    codes = p.layer_codes(0)
    v = _inputs(rng, (cin, 4, 3))[0]
    dense = np.zeros((cout, cin, 3, 3), np.uint8)
    for co in range(cout):
        g = co // (cout // groups)
        off = ((co // config.m) // L.grp) * L.cb_in * config.vc
        dense[co, off:off + L.cb_in * config.vc] = codes[co, :min(L.cb_in * config.vc, cin - off)]
        assert not np.any(dense[co, :g * (cin // groups)]) and not np.any(dense[co, (g + 1) * (cin // groups):])
    acc = conv_acc(v, dense, 1, (1, 1, 1, 1)) + p.layer_bias(0)[:, None, None]
    assert np.array_equal(golden_outputs(p, v)[0], requantize(acc, L.sh_hw, True))


def test_concat_placement():
    """SqueezeNet's fire module: two expand branches write their channel words of one
    concatenated map (``dst_off``, ``dst_pix``), which the next layer reads whole."""
    rng = np.random.default_rng(SEED + 31)
    b = Builder(CFG, rng)
    b.layer("squeeze", "x", "s", (8, 4, 4), 0, 100, 8, k=1, pad=(0, 0, 0, 0), relu=True, q_out=4)
    e1 = b.layer("expand1", "s", "cat", (8, 4, 4), 100, 200, 8, k=1, pad=(0, 0, 0, 0), relu=True, q_in=4, q_out=3)
    e3 = b.layer("expand3", "s", "cat", (8, 4, 4), 100, 200, 16, relu=True, q_in=4, q_out=3)
    e1.dst_off, e1.dst_pix, e1.out_pix, e1.out_row = 0, 3, 3, 12
    e3.dst_off, e3.dst_pix, e3.out_pix, e3.out_row = 1, 3, 3, 12
    e3.out_base = 201
    b.layer("next", "cat", "y", (24, 4, 4), 200, 300, 8, k=1, pad=(0, 0, 0, 0), q_in=3, q_out=3)
    p = b.program([TensorSpec("x", (8, 4, 4), 5, 0)], [TensorSpec("y", (8, 4, 4), 3, 300)])
    _check(p, _inputs(rng, (8, 4, 4)))
    e3.dst_off, e3.out_base = 0, 200                # both branches on the same words
    with pytest.raises(ProgramError, match="written by two layers"):
        b.program([TensorSpec("x", (8, 4, 4), 5, 0)], [TensorSpec("y", (8, 4, 4), 3, 300)])
