"""Pass ``fold_slice``: ResNet's option-A shortcut (Slice ::2 then a channel Pad) as one identity
1×1 stride-2 layer with zero output channels, added as the residual of the block."""
import numpy as np
import pytest
from onnx import numpy_helper

from nibble.host.frontend.onnx import import_graph
from nibble.host.ir import CompileError
from nibble.host.passes import fold_slice
from new_ops_models import SMALL, check, node
from onnx_models import conv, ints, model

SEED = 91


def _shortcut(rng):
    c0, i0 = conv(rng, "c0", "x", "h", 2, 4, pads=[1, 1, 1, 1])
    c1, i1 = conv(rng, "c1", "h", "t", 4, 8, pads=[1, 1, 1, 1], strides=[2, 2])
    raw = [ints("st", [0, 0]), ints("en", [1 << 62, 1 << 62]), ints("ax", [2, 3]), ints("sp", [2, 2]),
           ints("pads", [0, 2, 0, 0, 0, 2, 0, 0]), numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
    nodes = [c0, c1, node("Slice", ["h", "st", "en", "ax", "sp"], "s", "slice"),
             node("Pad", ["s", "pads", "zero"], "sc", "pad"), node("Add", ["t", "sc"], "a", "add"),
             node("Relu", ["a"], "y", "relu")]
    return model(nodes, {**i0, **i1}, raw=raw)


def test_option_a_shortcut():
    m = _shortcut(np.random.default_rng(SEED))
    g = fold_slice(import_graph(m))
    sl = g.node("slice")
    assert sl.op == "Conv" and sl.conv.stride == 2 and sl.conv.cout == 8 and "pad" not in [n.name for n in g.nodes]
    assert not np.any(sl.conv.w[:2]) and not np.any(sl.conv.w[6:])
    check(m, (2, 6, 6), config=SMALL)


def test_channel_pad_of_the_input_is_refused():
    c0, inits = conv(np.random.default_rng(SEED), "c0", "xp", "y", 4, 2, k=1)
    m = model([node("Pad", ["x", "pads"], "xp", "pad"), c0], inits, raw=[ints("pads", [0, 1, 0, 0, 0, 1, 0, 0])])
    with pytest.raises(CompileError, match=r"node 'pad' \(Pad\): zero channels are supported only after a Conv"):
        fold_slice(import_graph(m))
