"""The published DCGAN layers of the split-deconvolution data (``../shared/data/split_deconv``).

Xu et al., "Split deconvolution", IEEE TC 2020, publish the weights of a DCGAN generator's last
two transposed convolutions (see the data's ``SOURCE.md``):

* ``Deconv2``: 16×16×128 → 32×32×64, K = 5, S = 2, ReLU;
* ``Deconv3``: 32×32×64 → 64×64×3, K = 5, S = 2, tanh.

Both are TF ``conv2d_transpose`` with ``padding='SAME'`` (output = 2 × input), which the data's
source reproduces exactly by split deconvolution with an input zero-pad of 1 on every side,
i.e. PyTorch ``ConvTranspose2d`` with ``P = 2``, ``output_padding = 1``. The weights are stored
``[Cout, Cin, Kh, Kw]`` (the TF filter transposed (2, 3, 0, 1)); the ``ConvTranspose2d`` /
ONNX weight is ``[Cin, Cout, Kh, Kw]``, so it is the stored array transposed (1, 0, 2, 3), not
flipped. Deconv1's weights are not published, so the inputs are seeded non-negative activations
(ReLU of a standard normal), as Deconv1's ReLU output would be.
"""
import pathlib

import numpy as np

__all__ = ["LAYERS", "default_data_dir", "layer_model", "layer_weights", "layer_inputs", "float_reference",
           "snr_db"]

#: name: (Cin, Cout, input size, activation)
LAYERS = {"Deconv2": (128, 64, 16, "Relu"), "Deconv3": (64, 3, 32, "Tanh")}
K, S, P, OP = 5, 2, 2, 1


def default_data_dir():
    """``../shared/data/split_deconv`` next to the project root."""
    return pathlib.Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "split_deconv"


def layer_weights(name, data_dir=None):
    """``(Wt, b)``: float64 ConvTranspose weight ``(Cin, Cout, 5, 5)`` and bias ``(Cout,)``.

    :raises FileNotFoundError: naming the missing file.
    """
    if name not in LAYERS:
        raise ValueError(f"unknown published layer '{name}' (known: {', '.join(LAYERS)})")
    root = pathlib.Path(data_dir or default_data_dir()) / "raw_data" / "DCGAN"
    wf, bf = root / "weight" / f"{name}_weight.npy", root / "bias" / f"{name}_bias.npy"
    for f in (wf, bf):
        if not f.exists():
            raise FileNotFoundError(f"published DCGAN data missing: {f}")
    w = np.load(wf).astype(np.float64)
    ci, co = LAYERS[name][:2]
    if w.shape != (co, ci, K, K):
        raise ValueError(f"{wf}: shape {w.shape}, expected {(co, ci, K, K)}")
    return np.ascontiguousarray(w.transpose(1, 0, 2, 3)), np.load(bf).astype(np.float64).reshape(-1)


def layer_model(name, data_dir=None):
    """The layer as an ONNX model (opset 17): input ``x`` (1, Cin, H, H) → ConvTranspose
    (K 5, S 2, pads 2, output_padding 1) → Relu or Tanh → ``y`` (1, Cout, 2H, 2H)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    ci, co, h, act = LAYERS[name]
    wt, b = layer_weights(name, data_dir)
    nodes = [helper.make_node("ConvTranspose", ["x", "w", "b"], ["d"], name=name, kernel_shape=[K, K],
                              strides=[S, S], pads=[P, P, P, P], output_padding=[OP, OP]),
             helper.make_node(act, ["d"], ["y"], name=f"{name}_{act.lower()}")]
    graph = helper.make_graph(nodes, f"dcgan_{name.lower()}",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, ci, h, h])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, co, 2 * h, 2 * h])],
                              [numpy_helper.from_array(wt.astype(np.float32), "w"),
                               numpy_helper.from_array(b.astype(np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def layer_inputs(name, n, seed):
    """Seeded non-negative activations ``relu(N(0, 1))``, float32 ``(n, Cin, H, H)``."""
    ci, _, h, _ = LAYERS[name]
    rng = np.random.default_rng(seed)
    return np.maximum(rng.standard_normal((n, ci, h, h)), 0).astype(np.float32)


def float_reference(name, x, data_dir=None):
    """Float64 output of the layer (scatter-add oracle, ARITHMETIC §1.2) for inputs ``x``."""
    from ..sim.deconv import deconv_scatter
    wt, b = layer_weights(name, data_dir)
    out = np.stack([deconv_scatter(xi.astype(np.float64), wt, S, P, OP) for xi in x]) + b[None, :, None, None]
    return np.maximum(out, 0) if LAYERS[name][3] == "Relu" else np.tanh(out)


def snr_db(ref, y):
    """Signal-to-noise ratio ``10·log10(Σ ref² / Σ (ref − y)²)`` in dB."""
    ref, y = np.asarray(ref, np.float64), np.asarray(y, np.float64)
    noise = np.sum((ref - y) ** 2)
    return float("inf") if noise == 0 else float(10 * np.log10(np.sum(ref ** 2) / noise))
