"""Transposed convolution through the compiler: NZP, TDC and Winograd-TDC plans (ARITHMETIC §1, §3, §5).

Every plan set is run by the program-level golden model (``golden_forward``: the engine's
arithmetic, descriptor by descriptor) and compared with the integer scatter-add oracle
``deconv_scatter_acc`` followed by the requantization of ARITHMETIC §4.5 — never with itself.
"""
import numpy as np
import pytest

from nibble.host.compiler import layer_beats, plan_program
from nibble.host.driver import golden_forward
from nibble.host.ir import CompileError, ConvOp
from nibble.hw.config import EngineConfig
from nibble.sim import golden
from nibble.sim.deconv import deconv_out_size, deconv_scatter_acc

CFG = EngineConfig()
SEED = 11


def deconv_op(rng, ci, co, K, S, P, OP, relu=False, act=0):
    codes = rng.integers(0, 16, (ci, co, K, K)).astype(np.uint8)
    op = ConvOp(name="up", w=np.zeros((ci, co, K, K)), b=rng.normal(0, 0.5, co), stride=S, pad=(P, P, P, P),
                relu=relu, kind="ConvTranspose", codes=codes, n2=-7, q_in=5, q_out=3)
    op.output_padding = (OP, OP)
    if act:
        op.act, op.q_act, op.q_out = act, golden.ACT_Q_IN, golden.ACT_Q_OUT
    return op


def expected(op, v):
    S, (P, _), (OP, _) = op.deconv_geometry()
    acc = deconv_scatter_acc(v, op.codes, S, P, OP)
    b = np.floor(np.ldexp(op.b, op.q_in - op.n2) + 0.5).astype(np.int64)
    q_to = op.q_act if op.act else op.q_out
    y = golden.requantize(acc + b[:, None, None], op.q_in - op.n2 - q_to, op.relu)
    return golden.activate(y, op.act) if op.act else y


# ARITHMETIC §1.6 cases: (K, S, P, OP, H, W, Cin, Cout)
CASES = [(4, 2, 1, 0, 8, 8, 3, 4), (4, 2, 1, 0, 5, 7, 2, 3), (5, 2, 2, 1, 8, 8, 3, 4), (5, 2, 2, 1, 6, 9, 2, 2),
         (3, 2, 1, 1, 8, 8, 2, 4), (3, 2, 1, 0, 7, 5, 3, 3), (3, 1, 1, 0, 8, 8, 2, 4), (3, 1, 0, 0, 6, 7, 2, 2),
         (2, 2, 0, 0, 8, 8, 3, 4), (2, 2, 0, 1, 5, 6, 2, 2), (9, 3, 3, 0, 6, 6, 2, 4), (9, 3, 0, 2, 5, 4, 2, 2),
         (9, 3, 4, 1, 5, 5, 2, 2), (7, 2, 3, 1, 6, 6, 2, 3), (4, 4, 0, 0, 4, 4, 2, 2), (6, 3, 1, 2, 5, 6, 2, 2)]


@pytest.mark.parametrize("mode", ["tdc", "winograd", "nzp"])
@pytest.mark.parametrize("K,S,P,OP,H,W,ci,co", CASES)
def test_plans_equal_scatter(mode, K, S, P, OP, H, W, ci, co):
    rng = np.random.default_rng(SEED + K * 100 + S * 10 + P)
    op = deconv_op(rng, ci, co, K, S, P, OP, relu=bool(P % 2))
    v = rng.integers(-128, 128, (ci, H, W))
    v[:, 0, :] = -128
    if mode == "nzp" and S & (S - 1):
        with pytest.raises(CompileError, match="layer 'up' .*power-of-two stride"):
            plan_program([op], (ci, H, W), op.q_in, CFG, deconv=mode)
        return
    program = plan_program([op], (ci, H, W), op.q_in, CFG, deconv=mode)
    assert program.output_shape == (co, deconv_out_size(H, K, S, P, OP), deconv_out_size(W, K, S, P, OP))
    assert np.array_equal(golden_forward(program, v), expected(op, v))
    L = program.layers
    if mode == "nzp":
        assert len(L) == 1 and L[0].dil == S and (L[0].kh, L[0].kw) == (K, K)
    else:
        assert len(L) == sum(1 for _ in L) <= S * S and all(p.phase[2:] == (S, S) for p in L)
        # structural zeros dropped: the direct phases' taps sum to K² (per channel pair)
        if mode == "tdc" and K >= S:
            assert sum(p.kh * p.kw for p in L) == K * K or len(L) < S * S
        if mode == "winograd":
            assert all(p.winograd == ((-(-K // S)) in (2, 3)) for p in L), [p.mode_reason for p in L]


def test_random_cases():
    """Random (K, S, P, OP, H, W, Cin, Cout), P up to K: the TDC, Winograd-TDC and auto forms map
    every layer (a negative phase offset by cropping the input, a phase without taps or input as
    its bias); NZP maps exactly the power-of-two strides with P ≤ K − 1; each equals the oracle."""
    rng = np.random.default_rng(SEED)
    cases = 0
    while cases < 60:
        K, S = int(rng.integers(1, 8)), int(rng.integers(1, 5))
        P, OP = int(rng.integers(0, K + 1)), int(rng.integers(0, S))
        H, W = (int(x) for x in rng.integers(1, 8, 2))
        ci, co = (int(x) for x in rng.integers(1, 20, 2))
        if min((H - 1) * S, (W - 1) * S) - 2 * P + K + OP < 1:
            continue
        cases += 1
        op = deconv_op(rng, ci, co, K, S, P, OP)
        v = rng.integers(-128, 128, (ci, H, W))
        for mode in ("auto", "tdc", "winograd", "nzp"):
            if mode == "nzp" and (S & (S - 1) or P > K - 1):
                with pytest.raises(CompileError, match="layer 'up'.*NZP form needs"):
                    plan_program([op], (ci, H, W), op.q_in, CFG, deconv=mode)
                continue
            program = plan_program([op], (ci, H, W), op.q_in, CFG, deconv=mode)
            assert np.array_equal(golden_forward(program, v), expected(op, v)), (K, S, P, OP, H, W, mode)


@pytest.mark.parametrize("K,S,P,OP,what", [(2, 2, 1, 0, "crop"), (1, 3, 0, 2, "bias only"), (2, 4, 0, 3, "bias only"),
                                           (3, 3, 1, 2, "crop"), (2, 2, 2, 1, "crop")])
def test_named_edge_cases(K, S, P, OP, what):
    """Layers that compiled in no form before: a negative TDC phase offset (K2 S2 P1, P = K) read
    from a cropped input; phases without taps (K < S) written as act(bias)."""
    rng = np.random.default_rng(SEED + K + S)
    op = deconv_op(rng, 5, 7, K, S, P, OP, relu=True)
    v = rng.integers(-128, 128, (5, 6, 5))
    program = plan_program([op], (5, 6, 5), op.q_in, CFG, deconv="auto")
    assert np.array_equal(golden_forward(program, v), expected(op, v))
    if what == "crop":
        assert any(any(L.crop) for L in program.layers)
    else:
        bias_only = [L for L in program.layers if "bias only" in L.mode_reason]
        assert bias_only and all((L.kh, L.kw) == (1, 1) for L in bias_only)
        assert len(program.layers) == S * S


def test_no_form_names_both_reasons():
    """A layer no form can map: the error names the layer and why TDC and NZP each fail."""
    rng = np.random.default_rng(SEED)
    op = deconv_op(rng, 300, 2, 3, 3, 1, 0)
    small = EngineConfig(acc_width=20)
    with pytest.raises(CompileError, match=r"layer 'up'.*no deconvolution form: TDC: .*overflow.*; NZP: .*power-of-two"):
        plan_program([op], (300, 4, 4), op.q_in, small, deconv="auto")


def test_tanh_head_and_counts():
    """A K4 S2 P1 tanh head (the DCGAN generator's last layer) in every form; Winograd-TDC uses
    9 of 16 transformed positions per phase (F(2×2,2×2)'s count), so 4·9 = 36 multiplications per
    2×2 tile group against 4·4·4 = 64 for TDC and 16·16 for NZP."""
    rng = np.random.default_rng(SEED)
    op = deconv_op(rng, 16, 3, 4, 2, 1, 0, act=golden.ACT_TANH)
    v = rng.integers(-128, 128, (16, 8, 8))
    beats = {}
    for mode in ("tdc", "winograd", "nzp"):
        program = plan_program([op], (16, 8, 8), op.q_in, CFG, deconv=mode)
        y = golden_forward(program, v)
        assert np.array_equal(y, expected(op, v))
        assert program.output_q == golden.ACT_Q_OUT and all(L.act == golden.ACT_TANH for L in program.layers)
        beats[mode] = sum(layer_beats(L, CFG) for L in program.layers)
    assert beats == {"nzp": 16 * 16 * 16, "tdc": 4 * 8 * 8 * 4, "winograd": 4 * 4 * 4 * 9}


def test_negative_padding_is_a_clear_error():
    rng = np.random.default_rng(SEED)
    op = deconv_op(rng, 2, 2, 3, 1, 3, 0)          # P = K: the NZP padding K − 1 − P is negative
    with pytest.raises(CompileError, match="layer 'up.*negative top/left padding"):
        plan_program([op], (2, 8, 8), op.q_in, CFG, deconv="nzp")
