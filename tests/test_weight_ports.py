"""The filter loader's second weight port (``EngineConfig.weight_ports = 2``) in amaranth.sim.

With two ports the weight memory is built twice and the loader fills two filter caches a cycle
(the lower half of the PEs from the first port, the upper half from the second), so a block's
filter load takes half the cycles. Every case is bit-identical to the golden model, its
PE-array beats and feature reads equal the event model, and its cycles equal the cycle model
(within the pixel lanes' tolerance at ``vp > 1``); the load is measured to halve against the
same layer on one port. Cases: several output blocks with double-buffered filter caches, a block
whose filters exceed half of the cache (loaded before its beats), a grouped layer, pixel lanes,
and a Winograd layer (whose weight transform reads the first port only) on a build with both.
"""
import dataclasses

import numpy as np
import pytest

from nibble.host.compiler import layer_cycles, plan_program
from nibble.hw.config import EngineConfig
from tests.test_engine import SMALL, WINO_CFG, _ops
from tests.test_pixel_lanes import _check

SEED = 77
K2 = dataclasses.replace(SMALL, m=16, filter_depth=32, weight_depth=4096)
#: k = m/vc = 1: the cycle model is exact there with pooling
W16 = dataclasses.replace(K2, vc=16)


CASES = [
    # name, config, cin, (H, W), [(cout, k, stride, pad, relu, pool)], mode
    ("four_blocks_double_buffered", K2, 16, (4, 5), [(64, 3, 1, (1, 1, 1, 1), True, 1)], "direct"),
    ("filters_over_half_the_cache", K2, 24, (3, 4), [(32, 3, 1, (1, 1, 1, 1), False, 1)], "direct"),
    ("1x1_then_pool", W16, 16, (6, 6), [(32, 1, 1, (0, 0, 0, 0), True, 2)], "direct"),
    ("pixel_lanes_vp2", dataclasses.replace(K2, vp=2), 16, (4, 7), [(48, 3, 1, (1, 1, 1, 1), True, 1)], "direct"),
    ("winograd_build", dataclasses.replace(WINO_CFG, m=16), 16, (5, 6), [(32, 3, 1, (1, 1, 1, 1), True, 1)],
     "winograd"),
]


@pytest.mark.parametrize("name,config,cin,hw,specs,mode", CASES, ids=[c[0] for c in CASES])
def test_two_weight_ports(name, config, cin, hw, specs, mode):
    two = dataclasses.replace(config, weight_ports=2)
    rng = np.random.default_rng(SEED)
    ops = _ops(rng, specs, cin)
    program = plan_program(ops, (cin, *hw), ops[0].q_in, two, winograd=mode)
    assert any(L.winograd for L in program.layers) == (mode == "winograd")
    x = rng.integers(-128, 128, (cin, *hw))
    cycles, _ = _check(two, program, x)
    if mode == "direct":
        one = dataclasses.replace(two, weight_ports=1)
        half = sum(L.n_coblk(two.m) * two.m // 2 * L.kh * L.kw * L.cb_in for L in program.layers)
        # the model's saving is at most the halved words, and all of them where no block hides its load
        saved = sum(layer_cycles(L, one) - layer_cycles(L, two) for L in program.layers)
        assert 0 < saved <= half
        if name == "filters_over_half_the_cache":
            assert saved == half
        one_cycles, _ = _check(one, plan_program(ops, (cin, *hw), ops[0].q_in, one, winograd=mode), x)
        assert one_cycles - cycles == saved


def test_weight_ports_are_checked():
    for bad in (0, 3, True, 1.5):
        with pytest.raises(ValueError, match="weight_ports must be 1 or 2"):
            EngineConfig(weight_ports=bad)
