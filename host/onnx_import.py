"""ONNX import: a chain of Conv / BatchNormalization / Relu / MaxPool / Flatten / Gemm → IR.

Supported (anything else is a :class:`CompileError` naming the node):

* ``Conv``: group 1, dilation 1, any kernel, stride (equal on both axes), explicit pads or
  ``auto_pad`` SAME_UPPER/SAME_LOWER/VALID; bias optional.
* ``BatchNormalization`` directly after a Conv or Gemm (folded into it, DESIGN §5).
* ``Relu``; ``MaxPool`` 2×2 stride 2, no padding, floor mode (fused into the layer before).
* ``Flatten`` (axis 1) / ``Reshape`` to (N, −1), then ``Gemm`` (alpha, beta, transB; transA = 0),
  which becomes a conv whose kernel covers its whole input (so no reordering of HWC features).
* ``Identity``, ``Dropout`` (inference: pass-through).
"""
import numpy as np

from .ir import CompileError, ConvOp

__all__ = ["import_onnx", "load_onnx"]

SUPPORTED = "Conv, BatchNormalization, Relu, MaxPool, Flatten, Reshape, Gemm, Identity, Dropout"


def load_onnx(path):
    """Read and check an ONNX file. :raises CompileError: if it is missing or malformed."""
    import onnx
    try:
        model = onnx.load(str(path))
    except FileNotFoundError:
        raise CompileError(f"model file '{path}' does not exist") from None
    except Exception as e:   # protobuf DecodeError and friends: the file is not an ONNX model
        raise CompileError(f"'{path}' is not a valid ONNX model ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else 'cannot parse'})") from None
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        raise CompileError(f"'{path}' fails the ONNX checker: {str(e).splitlines()[0]}") from None
    if not model.graph.node:
        raise CompileError(f"'{path}' has an empty graph")
    return model


def _attrs(node):
    import onnx
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _dims(value_info):
    t = value_info.type.tensor_type
    return [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]


def import_onnx(model):
    """Translate an ONNX ``ModelProto`` into a list of :class:`ConvOp` plus the I/O description.

    :returns: ``(ops, input_shape (C, H, W), input_name, output_name)``.
    :raises CompileError: for branching graphs, unsupported operators or attributes, or shapes
        that do not fit, naming the node.
    """
    from onnx import numpy_helper
    g = model.graph
    inits = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in g.initializer}
    inputs = [i for i in g.input if i.name not in inits]
    if len(inputs) != 1 or len(g.output) != 1:
        raise CompileError(f"the model must have one input and one output, not {len(inputs)} and {len(g.output)}")
    dims = _dims(inputs[0])
    if len(dims) == 4 and all(d for d in dims[1:]):
        shape = tuple(int(d) for d in dims[1:])
    elif len(dims) == 2 and dims[1]:
        shape = (int(dims[1]), 1, 1)
    else:
        raise CompileError(f"input '{inputs[0].name}' must be (N, C, H, W) or (N, F) with known sizes, not {dims}")
    in_name, out_name = inputs[0].name, g.output[0].name
    in_shape = shape

    ops = []
    cur = in_name
    layer_out = None          # tensor produced by the last Conv/Gemm (through Identity/Dropout)
    flat = False
    for node in g.node:
        where = f"node '{node.name or node.output[0]}' ({node.op_type})"
        data_in = [i for i in node.input if i and i not in inits]
        if node.op_type == "Constant":
            from onnx import helper
            inits[node.output[0]] = numpy_helper.to_array(helper.get_attribute_value(node.attribute[0])).astype(np.float64)
            continue
        if data_in != [cur]:
            raise CompileError(f"{where}: only a chain of layers is supported (it reads {data_in}, "
                               f"the chain is at '{cur}')")
        a = _attrs(node)
        op = node.op_type
        last = ops[-1] if ops else None
        if op in ("Identity", "Dropout"):
            pass
        elif op == "Conv":
            if flat:
                raise CompileError(f"{where}: Conv after Flatten is not supported")
            if node.input[1] not in inits:
                raise CompileError(f"{where}: the weights must be an initializer")
            w = inits[node.input[1]]
            b = inits[node.input[2]] if len(node.input) > 2 and node.input[2] else np.zeros(w.shape[0])
            if a.get("group", 1) != 1:
                raise CompileError(f"{where}: group={a['group']} is not supported (only 1)")
            if any(d != 1 for d in a.get("dilations", [1, 1])):
                raise CompileError(f"{where}: dilation {a['dilations']} is not supported (only 1)")
            st = a.get("strides", [1, 1])
            if len(set(st)) != 1:
                raise CompileError(f"{where}: unequal strides {st} are not supported")
            if w.shape[1] != shape[0]:
                raise CompileError(f"{where}: weights expect {w.shape[1]} input channels, the input has {shape[0]}")
            kh, kw = w.shape[2:]
            auto = a.get("auto_pad", b"NOTSET")
            auto = auto.decode() if isinstance(auto, bytes) else auto
            if auto in ("NOTSET", ""):
                p = a.get("pads", [0, 0, 0, 0])
                pad = (p[0], p[2], p[1], p[3])
            elif auto == "VALID":
                pad = (0, 0, 0, 0)
            elif auto in ("SAME_UPPER", "SAME_LOWER"):
                pads = []
                for size, k in ((shape[1], kh), (shape[2], kw)):
                    out = -(-size // st[0])
                    total = max((out - 1) * st[0] + k - size, 0)
                    lo = total // 2 if auto == "SAME_UPPER" else total - total // 2
                    pads.append((lo, total - lo))
                pad = (pads[0][0], pads[0][1], pads[1][0], pads[1][1])
            else:
                raise CompileError(f"{where}: auto_pad={auto} is not supported")
            if min(pad) < 0:
                raise CompileError(f"{where}: negative padding {pad}")
            conv = ConvOp(name=node.name or node.output[0], w=w, b=b.copy(), stride=int(st[0]), pad=tuple(int(v) for v in pad),
                          names=[node.name])
            co, ho, wo = conv.out_shape(shape)
            if ho < 1 or wo < 1:
                raise CompileError(f"{where}: a {kh}x{kw} kernel does not fit the {shape[1]}x{shape[2]} input")
            ops.append(conv)
            shape = (co, ho, wo)
        elif op == "BatchNormalization":
            if last is None or last.relu or last.pool != 1 or last.bn is not None or cur != layer_out:
                raise CompileError(f"{where}: BatchNormalization must directly follow a Conv or Gemm to be folded")
            gamma, beta, mean, var = (inits.get(n) for n in node.input[1:5])
            if any(v is None for v in (gamma, beta, mean, var)):
                raise CompileError(f"{where}: scale, bias, mean and var must be initializers")
            scale = gamma / np.sqrt(var + a.get("epsilon", 1e-5))
            last.bn = (scale, beta - mean * scale)
            last.names.append(node.name)
        elif op == "Relu":
            if last is None:
                raise CompileError(f"{where}: Relu on the network input is not supported")
            last.relu = True
            last.names.append(node.name)
        elif op == "MaxPool":
            ks, stp = a.get("kernel_shape"), a.get("strides", [1, 1])
            if list(ks) != [2, 2] or list(stp) != [2, 2] or any(a.get("pads", [0] * 4)) or a.get("ceil_mode", 0) \
                    or any(d != 1 for d in a.get("dilations", [1, 1])):
                raise CompileError(f"{where}: only 2x2 max-pool with stride 2, no padding, floor mode is supported "
                                   f"(kernel {ks}, strides {stp})")
            if last is None or last.pool != 1:
                raise CompileError(f"{where}: max-pool must follow a Conv (one pool per layer)")
            if shape[1] < 2 or shape[2] < 2:
                raise CompileError(f"{where}: 2x2 max-pool of a {shape[1]}x{shape[2]} map is empty")
            last.pool = 2
            last.names.append(node.name)
            shape = (shape[0], shape[1] // 2, shape[2] // 2)
        elif op in ("Flatten", "Reshape"):
            if op == "Flatten" and a.get("axis", 1) != 1:
                raise CompileError(f"{where}: only axis=1 is supported")
            if op == "Reshape":
                target = inits.get(node.input[1])
                if target is None or len(target) != 2 or int(target[1]) not in (-1, shape[0] * shape[1] * shape[2]):
                    raise CompileError(f"{where}: only a reshape to (N, -1) is supported")
            flat = True
        elif op == "Gemm":
            if node.input[1] not in inits:
                raise CompileError(f"{where}: the weights must be an initializer")
            if a.get("transA", 0):
                raise CompileError(f"{where}: transA=1 is not supported")
            if shape[1] * shape[2] > 1 and not flat:
                raise CompileError(f"{where}: Gemm needs a Flatten before it")
            w = inits[node.input[1]] * a.get("alpha", 1.0)
            if not a.get("transB", 0):
                w = w.T
            c, h, wd = shape
            if w.shape[1] != c * h * wd:
                raise CompileError(f"{where}: weights take {w.shape[1]} inputs, the input has {c * h * wd}")
            b = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            b = np.zeros(w.shape[0]) if b is None else np.broadcast_to(b.reshape(-1), (w.shape[0],)) * a.get("beta", 1.0)
            conv = ConvOp(name=node.name or node.output[0], w=w.reshape(w.shape[0], c, h, wd), b=np.array(b, np.float64),
                          names=[node.name], kind="Gemm")
            ops.append(conv)
            shape = (w.shape[0], 1, 1)
        else:
            raise CompileError(f"{where}: unsupported operator (supported: {SUPPORTED})")
        if op in ("Conv", "Gemm") or (op in ("Identity", "Dropout") and layer_out == cur):
            layer_out = node.output[0]
        cur = node.output[0]
    if not ops:
        raise CompileError("the model has no Conv or Gemm layer")
    if cur != out_name:
        raise CompileError(f"the chain ends at '{cur}', not at the graph output '{out_name}'")
    return ops, in_shape, in_name, out_name
