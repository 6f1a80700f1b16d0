"""ONNX export of a compressed model and the check that the compiler quantizes it exactly.

:func:`export_onnx` uses PyTorch's TorchScript exporter (``dynamo=False``) without constant
folding, so BatchNormalization stays a separate node that the compiler's ``fold_bn`` folds with
the same float64 arithmetic INQ used; Identity nodes fed by an initializer (the exporter's
de-duplicated parameters) are replaced by copies of it. :func:`verify_inq` compiles the
exported graph's structure with the compiler's own front end and structural passes
(:func:`nibble.host.compiler.build_graph`) and checks every layer's folded weights are on the
level set training chose.
"""
from __future__ import annotations

import io
import warnings

import numpy as np

from ...sim.golden import inq_decode, inq_n1, inq_quantize

__all__ = ["export_onnx", "verify_inq", "inline_identity_initializers", "OPSET", "FOLD_RTOL"]

#: ONNX opset of exported models.
OPSET = 17
#: Relative tolerance of a folded float32 weight against its INQ level (float32 rounding of
#: ``q/s`` and of the fold: a few units of 2^-24).
FOLD_RTOL = 1e-6


def inline_identity_initializers(model_proto):
    """Replace every Identity node fed by an initializer with a copy of that initializer and
    drop unused initializers, in place (the TorchScript exporter reconnects equal-valued
    parameters through Identity nodes)."""
    import onnx
    from onnx import numpy_helper

    g = model_proto.graph
    inits = {t.name: t for t in g.initializer}
    keep = []
    for node in g.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            arr = numpy_helper.to_array(inits[node.input[0]])
            g.initializer.append(numpy_helper.from_array(arr, node.output[0]))
            inits[node.output[0]] = g.initializer[-1]
        else:
            keep.append(node)
    used = {i for n in keep for i in n.input} | {o.name for o in g.output}
    del g.node[:]
    g.node.extend(keep)
    for t in [t for t in g.initializer if t.name not in used]:
        g.initializer.remove(t)
    onnx.checker.check_model(model_proto)


def export_onnx(model, example, *, input_names=("input",), output_names=("output",), dynamic_batch=True,
                producer="nibble.host.compress"):
    """The model (eval mode) as a checked opset-17 ONNX ``ModelProto``.

    :param example: a ``torch.Tensor`` input (its shape, batch included, is the exported one; with
        ``dynamic_batch`` the batch axis is named ``N``) or a tuple of them.
    :raises ValueError: if the exporter fails (its first line).
    """
    import onnx
    import torch

    model.eval()
    args = example if isinstance(example, tuple) else (example,)
    axes = {n: {0: "N"} for n in (*input_names, *output_names)} if dynamic_batch else None
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")        # the TorchScript exporter's deprecation notice
        try:
            torch.onnx.export(model, args, buf, dynamo=False, export_params=True, opset_version=OPSET,
                              training=torch.onnx.TrainingMode.EVAL, do_constant_folding=False,
                              input_names=list(input_names), output_names=list(output_names),
                              dynamic_axes=axes)
        except Exception as e:
            raise ValueError(f"ONNX export failed: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    m = onnx.load_from_string(buf.getvalue())
    inline_identity_initializers(m)
    m.producer_name = producer
    onnx.checker.check_model(m, full_check=True)
    return m


def verify_inq(model_proto, layers, rtol=FOLD_RTOL):
    """Check that the compiler's post-training INQ of ``model_proto`` gives exactly the levels of
    the :class:`~nibble.host.compress.inq.InqLayer` list ``layers``.

    The model goes through the compiler's validation, front end and structural passes; its
    compute nodes (in order) are matched with ``layers``. For each: ``n1`` of the folded weights
    equals the layer's, the weights decode back from their INQ codes within ``rtol`` (relative),
    and the codes are those of the exact levels training chose (compared as multisets: the
    compiler may reorder a Gemm's weights, e.g. to fold a Transpose before its Flatten).

    :returns: per-layer dicts (``layer``, ``node``, ``n1``, ``n2``, ``weights``, ``zero_weights``,
        ``levels_used``, ``max_rel_error``).
    :raises ValueError: naming the layer and what differs; if the compute nodes do not match the
        layers in number or in weight count.
    """
    from ..compiler import build_graph
    from ..frontend.onnx import validate_model

    nodes = build_graph(validate_model(model_proto)).compute_nodes()
    if len(nodes) != len(layers):
        raise ValueError(f"the compiled graph has {len(nodes)} layers ({', '.join(n.name for n in nodes)}), "
                         f"INQ trained {len(layers)} ({', '.join(q.name for q in layers)})")
    report = []
    for n, q in zip(nodes, layers):
        w = n.conv.w
        if w.size != q.w_exact.size:
            raise ValueError(f"layer '{q.name}' has {q.w_exact.size} weights, compiled node '{n.name}' {w.size}")
        n1 = inq_n1(w)
        if n1 != q.n1:
            raise ValueError(f"layer '{q.name}' (node '{n.name}'): n1 of the folded weights is {n1}, training "
                             f"used {q.n1}")
        codes, n2 = inq_quantize(w, n1)
        dec = inq_decode(codes, n2)
        err = np.abs(dec - w)
        rel = np.where(w != 0, err / np.where(w != 0, np.abs(w), 1.0), err)
        if not np.all(err <= rtol * np.abs(w)):
            raise ValueError(f"layer '{q.name}' (node '{n.name}'): folded weights are off the INQ level set "
                             f"(largest relative error {rel.max():.3g} > {rtol:g})")
        exact, _ = inq_quantize(q.w_exact, q.n1)
        if np.sort(codes.ravel()).tolist() != np.sort(exact.ravel()).tolist():
            raise ValueError(f"layer '{q.name}' (node '{n.name}'): the compiled weights' levels differ from "
                             "the trained ones")
        report.append({"layer": q.name, "node": n.name, "n1": int(n1), "n2": int(n2), "weights": int(w.size),
                       "zero_weights": int(np.sum(dec == 0)), "levels_used": int(len(np.unique(dec))),
                       "max_rel_error": float(rel.max())})
    return report
