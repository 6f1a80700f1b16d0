"""Grouped and depthwise convolutions lowered to grouped plans (``LayerPlan.grp``) where the
channels align with the blocks, dense (zero weights outside the groups) where they do not."""
import numpy as np
import pytest

from new_ops_models import SMALL, check, node
from onnx_models import model

SEED = 101


@pytest.mark.parametrize("c,groups,cout,stride,grp", [(16, 16, 16, 1, 1), (16, 16, 16, 2, 1), (32, 2, 32, 1, 1),
                                                      (12, 3, 12, 1, 0)],
                         ids=["depthwise", "depthwise_s2", "two_groups", "dense_fallback"])
def test_grouped_conv(c, groups, cout, stride, grp):
    rng = np.random.default_rng(SEED + groups)
    inits = {"w": rng.normal(0, 0.4, (cout, c // groups, 3, 3)), "b": rng.normal(0, 0.1, cout)}
    m = model([node("Conv", ["x", "w", "b"], "h", "g", group=groups, pads=[1, 1, 1, 1], strides=[stride, stride]),
               node("Clip", ["h", "lo", "hi"], "y", "relu6")], {**inits, "lo": 0.0, "hi": 6.0},
              inputs={"x": ("N", c, 6, 6)})
    _, p = check(m, (c, 6, 6), config=SMALL)
    L = p.layers[0]
    assert L.grp == grp and (L.groups == groups if grp else L.groups == 1)
    if grp:
        assert L.macs() == cout * (c // groups) * 9 * L.conv_h * L.conv_w
