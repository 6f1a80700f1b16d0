"""ONNX import as a chain of layers (``list[ConvOp]``), and the model checks
(:func:`validate_model`, :func:`load_onnx`), from the ONNX front end
(:mod:`nibble.host.frontend.onnx`, which has the list of supported operators).

:func:`import_onnx` runs the front end and the structural passes that keep BatchNormalization
pending (``ConvOp.bn``, folded by ``nibble.host.passes.fold_bn``) and returns the layers of a
model that is a chain: one input, one output, each layer reading the one before it.
"""
from .frontend.onnx import MIN_OPSET, SUPPORTED, import_graph, load_onnx, validate_model
from .graph import chw
from .ir import CompileError

__all__ = ["import_onnx", "import_graph", "load_onnx", "validate_model", "MIN_OPSET", "SUPPORTED"]


def import_onnx(model):
    """Translate an ONNX ``ModelProto`` that is a chain of layers into a list of :class:`ConvOp`.

    The model is not validated here (see :func:`validate_model`), but every field read is
    checked (:func:`~nibble.host.frontend.onnx.import_graph`); Pad, activations, max-pools and the
    layout in front of a Gemm are fused (``nibble.host.passes``); BatchNormalization stays pending
    in ``ConvOp.bn``.

    :returns: ``(ops, input_shape (C, H, W), input_name, output_name)``.
    :raises CompileError: naming the node, as the front end and the passes do; for a model that
        is not a chain (several inputs or outputs, a branch, a host tail op at the output).
    """
    from .passes import flatten_gemm, fold_bn, fold_pad, fuse_epilogue
    g = flatten_gemm(fuse_epilogue(fold_bn(fold_pad(import_graph(model)), pending=True)))
    if not g.compute_nodes():
        raise CompileError("the model has no Conv, ConvTranspose or Gemm layer")
    if len(g.inputs) != 1 or len(g.outputs) != 1:
        raise CompileError(f"the model must have one input and one output, not {len(g.inputs)} and {len(g.outputs)}")
    cur, ops = g.inputs[0], []
    for n in g.nodes:
        if n.conv is None:
            raise CompileError(f"{n.where}: not supported in a chain of layers (unsupported operator here)")
        if n.inputs != [cur]:
            raise CompileError(f"{n.where}: only a chain of layers is supported (it reads {n.inputs}, "
                               f"the chain is at '{cur}')")
        ops.append(n.conv)
        cur = n.outputs[0]
    out = g.outputs[0]
    if out.tail:
        raise CompileError(f"graph output '{out.name}': the host operators {', '.join(out.tail)} are not part of a "
                           "chain of layers (compile the graph instead)")
    if out.tensor != cur:
        raise CompileError(f"the chain ends at '{cur}', not at the graph output '{out.name}'")
    return ops, chw(g.tensors[g.inputs[0]].shape), g.inputs[0], out.name
