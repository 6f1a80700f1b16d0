"""ONNX import: a chain of Conv / ConvTranspose / BatchNormalization / activations / MaxPool /
Flatten / Gemm → IR (:mod:`nibble.host.ir`).

Supported (anything else is a :class:`CompileError` naming the node):

* ``Conv``: group 1, dilation 1, any kernel, stride (equal on both axes), explicit pads or
  ``auto_pad`` SAME_UPPER/SAME_LOWER/VALID; bias optional.
* ``ConvTranspose`` (ARITHMETIC §1, PyTorch ``ConvTranspose2d`` semantics, weights
  ``(Cin, Cout, Kh, Kw)``): group 1, dilation 1, any kernel, stride equal on both axes,
  ``output_padding < stride``; explicit pads or ``auto_pad`` VALID/SAME_UPPER/SAME_LOWER (ONNX rule:
  output = input · stride, total crop ``K + output_padding − stride`` split with the odd row at the
  end for SAME_UPPER, at the beginning for SAME_LOWER); ``output_shape`` only where its pads are
  those of the node. Asymmetric pads are stored exactly as a symmetric ``P`` (the begin pad) and
  ``output_padding + begin − end``, which must stay in ``[0, stride)``. Bias optional.
* ``BatchNormalization`` directly after a Conv, ConvTranspose or Gemm (folded into it per output
  channel, DESIGN §5).
* One activation per layer: ``Relu`` (a repeated Relu is the same function), ``Tanh`` or
  ``Sigmoid`` (ACT_TANH / ACT_SIGMOID, ``nibble.sim.golden``), after the layer, its BatchNormalization,
  a max-pool or a Flatten (element-wise and monotonic, so the order does not change the result).
* ``MaxPool`` 2×2 stride 2, no padding, floor mode (fused into the layer before).
* ``Flatten`` (axis 1) / ``Reshape`` to (N, −1), then ``Gemm`` (alpha, beta, transB; transA = 0),
  which becomes a conv whose kernel covers its whole input (so no reordering of HWC features).
* ``Identity``, ``Dropout`` (inference: pass-through).
"""
import numpy as np

from ..sim.golden import ACT_NONE, ACT_SIGMOID, ACT_TANH
from .ir import ACT_NAMES, CompileError, ConvOp

__all__ = ["import_onnx", "load_onnx"]

SUPPORTED = ("Conv, ConvTranspose, BatchNormalization, Relu, Tanh, Sigmoid, MaxPool, Flatten, Reshape, Gemm, "
             "Identity, Dropout")

#: ONNX activation operators → (``ConvOp.relu``, ``ConvOp.act``).
_ACTS = {"Relu": (True, ACT_NONE), "Tanh": (False, ACT_TANH), "Sigmoid": (False, ACT_SIGMOID)}


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


def _auto_pad(where, a):
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto not in ("NOTSET", "", "VALID", "SAME_UPPER", "SAME_LOWER"):
        raise CompileError(f"{where}: auto_pad={auto} is not supported")
    return "NOTSET" if auto == "" else auto


def _explicit_pads(where, a):
    """ONNX ``pads`` [y_begin, x_begin, y_end, x_end] → (top, bottom, left, right), or None."""
    if "pads" not in a:
        return None
    p = [int(v) for v in a["pads"]]
    if len(p) != 4:
        raise CompileError(f"{where}: pads {p} must have 4 entries (2-D layers only)")
    if min(p) < 0:
        raise CompileError(f"{where}: negative pads {p} are not supported")
    return (p[0], p[2], p[1], p[3])


def _layer_weights(where, node, inits, a, in_c, transposed):
    """Weights, bias and stride of a Conv (``w[Cout, Cin, Kh, Kw]``) or ConvTranspose
    (``w[Cin, Cout, Kh, Kw]``) node, after checking group, dilations, strides and kernel_shape."""
    if node.input[1] not in inits:
        raise CompileError(f"{where}: the weights must be an initializer")
    w = inits[node.input[1]]
    if w.ndim != 4:
        raise CompileError(f"{where}: weights of shape {w.shape} are not 2-D kernels (4 dimensions)")
    if a.get("group", 1) != 1:
        raise CompileError(f"{where}: group={a['group']} is not supported (only group = 1)")
    if any(d != 1 for d in a.get("dilations", [1, 1])):
        raise CompileError(f"{where}: dilation {list(a['dilations'])} is not supported (only 1)")
    st = [int(v) for v in a.get("strides", [1, 1])]
    if len(st) != 2 or len(set(st)) != 1:
        raise CompileError(f"{where}: unequal strides {st} are not supported (the stride must be the same "
                           f"on both axes)")
    if st[0] < 1:
        raise CompileError(f"{where}: stride {st[0]} must be >= 1")
    if "kernel_shape" in a and tuple(a["kernel_shape"]) != tuple(w.shape[2:]):
        raise CompileError(f"{where}: kernel_shape {list(a['kernel_shape'])} does not match the "
                           f"{w.shape[2]}x{w.shape[3]} weights")
    wc, co = (w.shape[0], w.shape[1]) if transposed else (w.shape[1], w.shape[0])
    if wc != in_c:
        raise CompileError(f"{where}: weights expect {wc} input channels, the input has {in_c}")
    b = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(co)
    if b is None:
        raise CompileError(f"{where}: the bias must be an initializer")
    if b.shape != (co,):
        raise CompileError(f"{where}: bias of shape {b.shape} does not match {co} output channels")
    return w, b.copy(), st[0]


def _deconv_pads(where, a, w, shape, s):
    """ONNX ConvTranspose pads → ((top, bottom, left, right), (OPy, OPx)) with symmetric pads per
    axis (``P = begin``, ``OP = output_padding + begin − end``; ARITHMETIC §1.1), checked."""
    kh, kw = w.shape[2:]
    outp = [int(v) for v in a.get("output_padding", [0, 0])]
    if len(outp) != 2 or min(outp) < 0:
        raise CompileError(f"{where}: output_padding {outp} must be two non-negative ints")
    if max(outp) >= s:
        raise CompileError(f"{where}: output_padding {outp} must be smaller than the stride {s}")
    auto = _auto_pad(where, a)
    pads = _explicit_pads(where, a)
    if pads is not None and auto != "NOTSET":
        raise CompileError(f"{where}: pads and auto_pad={auto} cannot be used together")
    if auto == "VALID":
        pads = (0, 0, 0, 0)
    canvas = [(shape[1 + i] - 1) * s + (kh, kw)[i] + outp[i] for i in range(2)]   # size with no crop
    if "output_shape" in a:
        # ONNX: the pads come from output_shape; the odd row is cropped at the end for SAME_UPPER,
        # at the beginning otherwise. Explicit (or VALID) pads must be the same.
        target = [int(v) for v in a["output_shape"]][-2:]
        if len(target) != 2:
            raise CompileError(f"{where}: output_shape {list(a['output_shape'])} needs the output height and width")
        split = []
        for i in range(2):
            total = canvas[i] - target[i]
            if total < 0 or target[i] < 1:
                raise CompileError(f"{where}: output_shape {target} does not fit: the uncropped output is "
                                   f"{canvas[0]}x{canvas[1]}")
            begin = total // 2 if auto == "SAME_UPPER" else total - total // 2
            split.append((begin, total - begin))
        derived = (split[0][0], split[0][1], split[1][0], split[1][1])
        if pads is not None and pads != derived:
            raise CompileError(f"{where}: output_shape {target} and pads {pads} (top, bottom, left, right) are "
                               f"inconsistent (output_shape gives pads {derived})")
        pads = derived
    elif auto in ("SAME_UPPER", "SAME_LOWER"):
        split = []
        for i in range(2):
            total = canvas[i] - shape[1 + i] * s          # output = input · stride
            if total < 0:
                raise CompileError(f"{where}: auto_pad={auto} needs kernel + output_padding >= stride "
                                   f"(kernel {(kh, kw)[i]}, output_padding {outp[i]}, stride {s})")
            begin = total // 2 if auto == "SAME_UPPER" else total - total // 2
            split.append((begin, total - begin))
        pads = (split[0][0], split[0][1], split[1][0], split[1][1])
    elif pads is None:
        pads = (0, 0, 0, 0)
    t, bo, l, r = pads
    op = (outp[0] + t - bo, outp[1] + l - r)
    if not all(0 <= v < s for v in op):
        raise CompileError(f"{where}: pads {pads} (top, bottom, left, right) with output_padding {outp} are not "
                           f"supported: the equivalent symmetric form P = begin pad, OP = output_padding + "
                           f"begin - end = {list(op)} needs 0 <= OP < stride {s}")
    if min(canvas[0] - t - bo, canvas[1] - l - r) < 1:
        raise CompileError(f"{where}: the pads {pads} crop the whole {canvas[0]}x{canvas[1]} output")
    return (t, t, l, l), op


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
            w, b, stride = _layer_weights(where, node, inits, a, shape[0], transposed=False)
            kh, kw = w.shape[2:]
            auto = _auto_pad(where, a)
            if auto == "NOTSET":
                pad = _explicit_pads(where, a) or (0, 0, 0, 0)
            elif auto == "VALID":
                pad = (0, 0, 0, 0)
            else:
                pads = []
                for size, k in ((shape[1], kh), (shape[2], kw)):
                    out = -(-size // stride)
                    total = max((out - 1) * stride + k - size, 0)
                    lo = total // 2 if auto == "SAME_UPPER" else total - total // 2
                    pads.append((lo, total - lo))
                pad = (pads[0][0], pads[0][1], pads[1][0], pads[1][1])
            conv = ConvOp(name=node.name or node.output[0], w=w, b=b, stride=stride, pad=tuple(int(v) for v in pad),
                          names=[node.name])
            co, ho, wo = conv.out_shape(shape)
            if ho < 1 or wo < 1:
                raise CompileError(f"{where}: a {kh}x{kw} kernel does not fit the {shape[1]}x{shape[2]} input")
            ops.append(conv)
            shape = (co, ho, wo)
        elif op == "ConvTranspose":
            if flat:
                raise CompileError(f"{where}: ConvTranspose after Flatten is not supported")
            w, b, stride = _layer_weights(where, node, inits, a, shape[0], transposed=True)
            pad, outp = _deconv_pads(where, a, w, shape, stride)
            conv = ConvOp(name=node.name or node.output[0], w=w, b=b, stride=stride, pad=pad, output_padding=outp,
                          names=[node.name], kind="ConvTranspose")
            conv.deconv_geometry()                    # the invariants of the IR (checked above)
            ops.append(conv)
            shape = conv.out_shape(shape)
        elif op == "BatchNormalization":
            if last is None or last.relu or last.act != ACT_NONE or last.pool != 1 or last.bn is not None \
                    or cur != layer_out:
                raise CompileError(f"{where}: BatchNormalization must directly follow a Conv, ConvTranspose or Gemm "
                                   f"to be folded")
            gamma, beta, mean, var = (inits.get(n) for n in node.input[1:5])
            if any(v is None for v in (gamma, beta, mean, var)):
                raise CompileError(f"{where}: scale, bias, mean and var must be initializers")
            if any(v.shape != (last.cout,) for v in (gamma, beta, mean, var)):
                raise CompileError(f"{where}: scale, bias, mean and var must have {last.cout} entries (the output "
                                   f"channels of layer '{last.name}')")
            scale = gamma / np.sqrt(var + a.get("epsilon", 1e-5))
            last.bn = (scale, beta - mean * scale)
            last.names.append(node.name)
        elif op in _ACTS:
            if last is None:
                raise CompileError(f"{where}: {op} on the network input is not supported")
            relu, act = _ACTS[op]
            prev = "Relu" if last.relu else ACT_NAMES[last.act].capitalize() if last.act != ACT_NONE else None
            if prev is not None and not (relu and last.relu):
                raise CompileError(f"{where}: layer '{last.name}' already has the activation {prev}; only one "
                                   f"activation per layer is supported")
            last.relu, last.act = relu, act
            last.names.append(node.name)
        elif op == "MaxPool":
            ks, stp = a.get("kernel_shape"), a.get("strides", [1, 1])
            if list(ks) != [2, 2] or list(stp) != [2, 2] or any(a.get("pads", [0] * 4)) or a.get("ceil_mode", 0) \
                    or any(d != 1 for d in a.get("dilations", [1, 1])):
                raise CompileError(f"{where}: only 2x2 max-pool with stride 2, no padding, floor mode is supported "
                                   f"(kernel {ks}, strides {stp})")
            if last is None or last.pool != 1:
                raise CompileError(f"{where}: max-pool must follow a Conv or ConvTranspose (one pool per layer)")
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
        if op in ("Conv", "ConvTranspose", "Gemm") or (op in ("Identity", "Dropout") and layer_out == cur):
            layer_out = node.output[0]
        cur = node.output[0]
    if not ops:
        raise CompileError("the model has no Conv, ConvTranspose or Gemm layer")
    if cur != out_name:
        raise CompileError(f"the chain ends at '{cur}', not at the graph output '{out_name}'")
    return ops, in_shape, in_name, out_name
