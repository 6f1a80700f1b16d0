"""ONNX import: a chain of Conv / ConvTranspose / BatchNormalization / activations / MaxPool /
Flatten / Gemm → IR (:mod:`nibble.host.ir`).

Before anything is imported, :func:`validate_model` checks the model the way the tools that
define ONNX do (issue #9, "no wrong answer without an error"): its own structural checks (operator
domain and schema, every attribute's type, initializers stored inside the file with the types the
operators need), strict ONNX shape inference, the full ONNX checker and ONNX Runtime, which has
the last word: a model ``onnxruntime.InferenceSession`` does not accept is refused with ORT's
message. The importer then checks what ONNX accepts but the accelerator cannot compute exactly;
every refusal is a :class:`CompileError` naming the node (and the attribute or initializer).

Supported (anything else is a :class:`CompileError` naming the node):

* ai.onnx operator sets ``MIN_OPSET`` (11) and later; Constant nodes with ``value``,
  ``value_float(s)`` or ``value_int(s)`` are folded (their outputs are constants like initializers).
* ``Conv``: group 1, dilation 1, any kernel, stride (equal on both axes), explicit pads or
  ``auto_pad`` SAME_UPPER/SAME_LOWER/VALID (not both); bias optional.
* ``ConvTranspose`` (ARITHMETIC §1, PyTorch ``ConvTranspose2d`` semantics, weights
  ``(Cin, Cout, Kh, Kw)``): group 1, dilation 1, any kernel, stride equal on both axes,
  ``output_padding < stride``; explicit pads or ``auto_pad`` VALID/SAME_UPPER/SAME_LOWER (ONNX rule:
  output = input · stride, total crop ``K + output_padding − stride`` split with the odd row at the
  end for SAME_UPPER, at the beginning for SAME_LOWER); ``output_shape`` only where its pads are
  those of the node. Asymmetric pads are stored exactly as a symmetric ``P`` (the begin pad) and
  ``output_padding + begin − end``, which must stay in ``[0, stride)``. Bias optional.
* ``BatchNormalization`` (inference: ``training_mode`` 0, one output) directly after a Conv,
  ConvTranspose or Gemm (folded into it per output channel, DESIGN §5); ``var ≥ 0`` and
  ``var + epsilon > 0``.
* One activation per layer: ``Relu`` (a repeated Relu is the same function), ``Tanh`` or
  ``Sigmoid`` (ACT_TANH / ACT_SIGMOID, ``nibble.sim.golden``), after the layer, its BatchNormalization,
  a max-pool or a Flatten (element-wise and monotonic, so the order does not change the result).
* ``MaxPool`` 2×2 stride 2 without padding (fused into the layer before): explicit pads all zero,
  or ``auto_pad`` VALID, or SAME_UPPER/SAME_LOWER/``ceil_mode`` 1 on even map sizes (where they
  add no padding); floor mode otherwise; no ``Indices`` output.
* ``Flatten`` (axis 1) / ``Reshape`` to (N, −1), then ``Gemm`` (alpha, beta, transB; transA = 0;
  bias ``C`` of shape (), (1,), (N,), (1, 1) or (1, N): one bias per output, as ONNX broadcasts
  it to (1, N)), which becomes a conv whose kernel covers its whole input (so no reordering of
  HWC features).
* ``Identity``, ``Dropout`` (inference: pass-through; a ``training_mode`` input must be a
  constant false).

Every weight, bias and BatchNormalization parameter must be finite; each layer's output shape is
compared with ONNX shape inference where the model carries it (as :func:`validate_model`'s
result does).
"""
import warnings

import numpy as np

from ..sim.golden import ACT_NONE, ACT_SIGMOID, ACT_TANH
from .ir import ACT_NAMES, CompileError, ConvOp

__all__ = ["import_onnx", "load_onnx", "validate_model", "MIN_OPSET"]

SUPPORTED = ("Conv, ConvTranspose, BatchNormalization, Relu, Tanh, Sigmoid, MaxPool, Flatten, Reshape, Gemm, "
             "Identity, Dropout, Constant")

#: Oldest ai.onnx operator set accepted (the attribute semantics below are those of opset 11+).
MIN_OPSET = 11

#: ONNX activation operators → (``ConvOp.relu``, ``ConvOp.act``).
_ACTS = {"Relu": (True, ACT_NONE), "Tanh": (False, ACT_TANH), "Sigmoid": (False, ACT_SIGMOID)}

# TensorProto data types (onnx.TensorProto.*) used here
_FLOAT, _INT64, _STRING, _FLOAT16, _DOUBLE, _BFLOAT16 = 1, 7, 8, 10, 11, 16
_FLOAT_TYPES = (_FLOAT, _FLOAT16, _DOUBLE, _BFLOAT16)
#: Operators with ``auto_pad`` (checked before ONNX Runtime, which does not name the node).
_POOL_CONV = ("Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool")
#: Operators whose constant inputs must have the type of their data input (ONNX type ``T``).
_SAME_TYPE_OPS = ("Conv", "ConvTranspose", "Gemm")
_EXTERNAL = 1           # TensorProto.EXTERNAL


def _first_line(e):
    text = str(e).strip()
    return text.splitlines()[0].strip() if text else type(e).__name__


def _one_line(e, limit=400):
    """An ONNX checker / shape inference message on one line (they print the node on the next
    lines), shortened to ``limit`` characters."""
    text = " ".join(str(e).split())
    text = text or type(e).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _type_name(t):
    import onnx
    try:
        return onnx.TensorProto.DataType.Name(t)
    except ValueError:
        return f"type {t}"


def _attr_type_name(t):
    import onnx
    try:
        return onnx.AttributeProto.AttributeType.Name(t)
    except ValueError:
        return f"type {t}"


def load_onnx(path):
    """Read an ONNX file and validate it (:func:`validate_model`).

    External data (tensors kept in other files) is not read.

    :returns: the validated ``ModelProto`` (with the shapes ONNX inference adds).
    :raises CompileError: if the file is missing or unreadable, is not an ONNX model, or fails
        validation.
    """
    import onnx
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise CompileError(f"model file '{path}' does not exist") from None
    except OSError as e:
        raise CompileError(f"cannot read model file '{path}': {e.strerror or e}") from None
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as e:   # protobuf DecodeError and friends: the file is not an ONNX model
        raise CompileError(f"'{path}' is not a valid ONNX model ({type(e).__name__}: "
                           f"{_first_line(e) if str(e) else 'cannot parse'})") from None
    if not model.HasField("graph"):
        raise CompileError(f"'{path}' is not a valid ONNX model (it has no graph)")
    return validate_model(model, f"'{path}'")


def _default_opset(model, name):
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if not versions:
        raise CompileError(f"{name} does not import the ONNX operator set (ai.onnx)")
    if len(versions) > 1:
        raise CompileError(f"{name} imports the ONNX operator set {len(versions)} times")
    v = int(versions[0])
    import onnx.defs
    if not MIN_OPSET <= v <= onnx.defs.onnx_opset_version():
        raise CompileError(f"{name}: ONNX operator set {v} is not supported (only {MIN_OPSET} to "
                           f"{onnx.defs.onnx_opset_version()})")
    return v


def _schema(op_type, opset):
    import onnx.defs
    try:
        return onnx.defs.get_schema(op_type, opset, "")
    except Exception:   # onnx.defs.SchemaError: no such operator in the operator set
        return None


def _text(s):
    """A protobuf string field as text (ONNX is proto2: a name may hold bytes that are not UTF-8)."""
    return s.decode("utf-8", "replace") if isinstance(s, bytes) else str(s)


def _label(node, i=None):
    """The node's name, or its first output's, as text (IR layer names, messages)."""
    if node.name:
        return _text(node.name)
    return _text(node.output[0]) if len(node.output) and node.output[0] else f"#{i}"


def _where(node, i):
    return f"node '{_label(node, i)}' ({_text(node.op_type)})"


def _check_attributes(node, where, schema, opset):
    """Every attribute known to the operator's schema, given once, with its type."""
    seen = set()
    for a in node.attribute:
        if a.name in seen:
            raise CompileError(f"{where}: attribute '{a.name}' is given more than once")
        seen.add(a.name)
        if a.ref_attr_name:
            raise CompileError(f"{where}: attribute '{a.name}' refers to a function attribute")
        if schema is None:
            continue
        spec = schema.attributes.get(a.name)
        if spec is None:
            raise CompileError(f"{where}: unknown attribute '{a.name}' ({node.op_type} in operator set {opset} has "
                               f"{', '.join(sorted(schema.attributes)) or 'no attributes'})")
        want = int(spec.type)
        if a.type != want:
            raise CompileError(f"{where}: attribute '{a.name}' must be {_attr_type_name(want)}, not "
                               f"{_attr_type_name(a.type)}")


def _constant_types(g):
    """ONNX data type of every initializer and Constant output: ``{name: data_type}``."""
    types = {t.name: t.data_type for t in g.initializer}
    for node in g.node:
        if node.op_type == "Constant" and len(node.output) and len(node.attribute) == 1:
            a = node.attribute[0]
            t = {"value": a.t.data_type, "value_float": _FLOAT, "value_floats": _FLOAT, "value_int": _INT64,
                 "value_ints": _INT64}.get(a.name, _STRING)
            types[node.output[0]] = t
    return types


def _check_structure(model, name):
    """Checks made before ONNX's own (so that the message names the node, attribute or initializer)."""
    g = model.graph
    if not g.node:
        raise CompileError(f"{name} has an empty graph")
    opset = _default_opset(model, name)
    for t in g.initializer:
        if t.data_location == _EXTERNAL or len(t.external_data):
            raise CompileError(f"{name}: initializer '{t.name}' keeps its data in an external file "
                               "(external data is not supported)")
    consts = _constant_types(g)
    in_types = {i.name: i.type.tensor_type.elem_type for i in g.input if i.name not in consts}
    for i, node in enumerate(g.node):
        where = _where(node, i)
        if node.domain not in ("", "ai.onnx"):
            raise CompileError(f"{where}: operator domain '{node.domain}' is not supported (only ai.onnx)")
        schema = _schema(node.op_type, opset)
        if schema is None:
            raise CompileError(f"{where}: unknown operator (ONNX operator set {opset} has no "
                               f"'{node.op_type}')")
        _check_attributes(node, where, schema, opset)
        names = {a.name for a in node.attribute}
        if node.op_type in _POOL_CONV and ("pads" in names or "auto_pad" in names or "storage_order" in names):
            # ONNX Runtime checks these when it creates the kernel, without naming the node
            a = _attrs(node, where)
            auto = _auto_pad(where, a)
            if auto != "NOTSET" and "pads" in names:
                raise CompileError(f"{where}: pads and auto_pad={auto} cannot be used together")
            if a.get("storage_order", 0) not in (0, 1):
                raise CompileError(f"{where}: attribute 'storage_order' {a['storage_order']} must be 0 or 1")
        if node.op_type in _SAME_TYPE_OPS and len(node.input) and node.input[0] in in_types:
            t_in = in_types[node.input[0]]
            for inp in node.input[1:]:
                if inp in consts and consts[inp] != t_in:
                    raise CompileError(f"{where}: initializer '{inp}' has data type {_type_name(consts[inp])}, "
                                       f"the node's input is {_type_name(t_in)} (ONNX needs the same type)")
        for o in node.output:
            if o and len(node.input) and node.input[0] in in_types and node.op_type not in ("Constant",):
                in_types[o] = in_types[node.input[0]]


def _ort_check(data, name, model):
    """Create an ONNX Runtime session; its refusal is a CompileError quoting ORT's first line. Where
    that line names no node (ORT checks some attributes when it creates a kernel), the importer's
    own error for the model, if it has one, comes first."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 4                 # fatal only: the refusal is reported as a CompileError
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    except Exception as e:
        line = _first_line(e)
    else:
        return
    msg = f"ONNX Runtime refuses {name}: {line}"
    if not any(n.name and _text(n.name) in line for n in model.graph.node):
        try:
            import_onnx(model)
        except CompileError as inner:
            msg = f"{inner} ({msg})"
        except Exception:   # noqa: BLE001 — the importer is not meant for refused models
            pass
    raise CompileError(msg)


def validate_model(model, name="the model"):
    """Validate an ONNX model before it is imported.

    In turn: the structural checks of this module (ai.onnx operator set ``MIN_OPSET`` or later,
    known operators in the ai.onnx domain, every attribute known to the operator's schema and of its
    type, initializers inside the file, a Conv/ConvTranspose/Gemm's constant inputs of its data
    type, no ``pads`` together with ``auto_pad``); ONNX shape inference
    (``infer_shapes(check_type=True, strict_mode=True)``); the full ONNX checker on the inferred
    model; and creating an ONNX Runtime session (CPU) from the serialized model.

    :param name: how messages name the model (e.g. its path).
    :returns: the model with the shapes inferred by ONNX (``value_info`` filled).
    :raises CompileError: naming the node and attribute or initializer for the structural checks,
        with the first line of the message of ONNX shape inference, the checker or ONNX Runtime
        otherwise.
    """
    import onnx
    if not isinstance(model, onnx.ModelProto):
        raise CompileError(f"{name} is not an onnx.ModelProto but {type(model).__name__}")
    if not model.HasField("graph"):
        raise CompileError(f"{name} is not a valid ONNX model (it has no graph)")
    _check_structure(model, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # library warnings must not turn into other exceptions
        try:
            data = model.SerializeToString()
        except Exception as e:
            raise CompileError(f"{name} cannot be serialized: {_first_line(e)}") from None
        try:
            inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
        except Exception as e:
            raise CompileError(f"{name} fails ONNX shape inference: {_one_line(e)}") from None
        try:
            onnx.checker.check_model(inferred, full_check=True)
        except Exception as e:
            raise CompileError(f"{name} fails the ONNX checker: {_one_line(e)}") from None
        _ort_check(data, name, inferred)
    return inferred


def _attrs(node, where):
    import onnx
    out = {}
    for a in node.attribute:
        try:
            out[a.name] = onnx.helper.get_attribute_value(a)
        except Exception as e:
            raise CompileError(f"{where}: attribute '{a.name}' cannot be read ({_first_line(e)})") from None
    return out


def _dims(value_info):
    t = value_info.type.tensor_type
    return [int(d.dim_value) if d.HasField("dim_value") else None for d in t.shape.dim]


def _auto_pad(where, a):
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode(errors="replace") if isinstance(auto, bytes) else str(auto)
    if auto not in ("NOTSET", "", "VALID", "SAME_UPPER", "SAME_LOWER"):
        raise CompileError(f"{where}: auto_pad={auto} is not supported")
    return "NOTSET" if auto == "" else auto


def _ints(where, a, key, n, default):
    """An INTS attribute with ``n`` entries (``default`` when absent)."""
    if key not in a:
        return list(default)
    v = [int(x) for x in a[key]]
    if len(v) != n:
        raise CompileError(f"{where}: attribute '{key}' {v} must have {n} entries (2-D layers only)")
    return v


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


class _Constants:
    """Initializers and Constant outputs by name, read on first use: ``(array, onnx data type)``."""

    def __init__(self, g):
        self._protos = {t.name: t for t in g.initializer}
        self._arrays = {}

    def __contains__(self, name):
        return name in self._arrays or name in self._protos

    def add(self, name, arr, dtype):
        self._arrays[name] = (arr, dtype)

    def get(self, name):
        """``(array, data type)`` or None if ``name`` is not a constant."""
        if name in self._arrays:
            return self._arrays[name]
        t = self._protos.get(name)
        if t is None:
            return None
        self._arrays[name] = (_tensor(t, f"initializer '{name}'"), t.data_type)
        return self._arrays[name]


def _tensor(t, what):
    from onnx import numpy_helper
    if t.data_location == _EXTERNAL or len(t.external_data):
        raise CompileError(f"{what} keeps its data in an external file (not supported)")
    if t.data_type == _STRING:
        raise CompileError(f"{what} holds strings, not numbers")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(numpy_helper.to_array(t))
    except Exception as e:
        raise CompileError(f"{what} cannot be read ({type(e).__name__}: {_first_line(e)})") from None


def _constant(node, where):
    """The value of a Constant node: ``(array, onnx data type)``."""
    if len(node.attribute) != 1:
        raise CompileError(f"{where}: a Constant needs exactly one value attribute, not "
                           f"{[a.name for a in node.attribute]}")
    a = node.attribute[0]
    if a.name == "value":
        return _tensor(a.t, f"{where}: attribute 'value'"), a.t.data_type
    if a.name == "value_float":
        return np.array(a.f, np.float32), _FLOAT
    if a.name == "value_floats":
        return np.array(list(a.floats), np.float32), _FLOAT
    if a.name == "value_int":
        return np.array(a.i, np.int64), _INT64
    if a.name == "value_ints":
        return np.array(list(a.ints), np.int64), _INT64
    raise CompileError(f"{where}: a Constant with attribute '{a.name}' is not supported (numbers only)")


def _float_const(where, consts, name, what):
    """A float constant input (initializer or Constant output) as float64, checked finite.

    :raises CompileError: naming the node and the constant if it is missing (not a constant),
        not of a float type or not finite.
    """
    got = consts.get(name) if name else None
    if got is None:
        raise CompileError(f"{where}: the {what} must be an initializer")
    arr, dtype = got
    if dtype not in _FLOAT_TYPES:
        raise CompileError(f"{where}: the {what} '{name}' has data type {_type_name(dtype)}, not a float type")
    with np.errstate(all="ignore"):
        a = arr.astype(np.float64)
    if not np.all(np.isfinite(a)):
        nan, inf = int(np.isnan(a).sum()), int(np.isinf(a).sum())
        raise CompileError(f"{where}: the {what} '{name}' holds non-finite values ({nan} NaN, {inf} infinite)")
    return a


def _finite_float(where, a, key, default):
    v = float(a.get(key, default))
    if not np.isfinite(v):
        raise CompileError(f"{where}: attribute '{key}' = {v} is not finite")
    return v


def _input(node, i):
    return node.input[i] if len(node.input) > i else ""


def _layer_weights(where, node, consts, a, in_c, transposed):
    """Weights, bias and stride of a Conv (``w[Cout, Cin, Kh, Kw]``) or ConvTranspose
    (``w[Cin, Cout, Kh, Kw]``) node, after checking group, dilations, strides and kernel_shape."""
    w = _float_const(where, consts, _input(node, 1), "weights")
    if w.ndim != 4:
        raise CompileError(f"{where}: weights of shape {w.shape} are not 2-D kernels (4 dimensions)")
    if w.size == 0:
        raise CompileError(f"{where}: the weights '{node.input[1]}' of shape {w.shape} are empty")
    if a.get("group", 1) != 1:
        raise CompileError(f"{where}: group={a['group']} is not supported (only group = 1)")
    dil = _ints(where, a, "dilations", 2, [1, 1])
    if any(d != 1 for d in dil):
        raise CompileError(f"{where}: dilation {dil} is not supported (only 1)")
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
    b = _float_const(where, consts, node.input[2], "bias") if _input(node, 2) else np.zeros(co)
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


def _conv_pads(where, a, shape, kh, kw, stride):
    auto = _auto_pad(where, a)
    pads = _explicit_pads(where, a)
    if pads is not None and auto != "NOTSET":
        raise CompileError(f"{where}: pads and auto_pad={auto} cannot be used together")
    if auto == "NOTSET":
        return pads or (0, 0, 0, 0)
    if auto == "VALID":
        return (0, 0, 0, 0)
    out = []
    for size, k in ((shape[1], kh), (shape[2], kw)):
        total = max((-(-size // stride) - 1) * stride + k - size, 0)
        lo = total // 2 if auto == "SAME_UPPER" else total - total // 2
        out.append((lo, total - lo))
    return (out[0][0], out[0][1], out[1][0], out[1][1])


def _maxpool(where, a, node, shape):
    """Check a MaxPool node: 2×2, stride 2, no padding (explicit, SAME or ceil_mode on odd sizes)."""
    ks = [int(v) for v in a.get("kernel_shape", [])]
    stp = [int(v) for v in a.get("strides", [1] * max(len(ks), 2))]
    if ks != [2, 2] or stp != [2, 2]:
        raise CompileError(f"{where}: only 2x2 max-pool with stride 2, no padding, floor mode is supported "
                           f"(kernel {ks}, strides {stp})")
    if any(d != 1 for d in _ints(where, a, "dilations", 2, [1, 1])):
        raise CompileError(f"{where}: attribute 'dilations' {list(a['dilations'])} is not supported (only 1)")
    if "pads" in a and any(int(v) for v in a["pads"]):
        raise CompileError(f"{where}: attribute 'pads' {list(a['pads'])}: max-pool with padding is not supported")
    odd = shape[1] % 2 or shape[2] % 2
    auto = _auto_pad(where, a)
    if auto in ("SAME_UPPER", "SAME_LOWER") and odd:
        raise CompileError(f"{where}: attribute 'auto_pad' {auto} pads the odd {shape[1]}x{shape[2]} map; "
                           f"max-pool with padding is not supported")
    if a.get("ceil_mode", 0) and odd:
        raise CompileError(f"{where}: attribute 'ceil_mode' 1 on the odd {shape[1]}x{shape[2]} map is not "
                           f"supported (floor mode only)")
    if len(node.output) > 1 and node.output[1]:
        raise CompileError(f"{where}: the Indices output '{node.output[1]}' is not supported")


def import_onnx(model):
    """Translate an ONNX ``ModelProto`` into a list of :class:`ConvOp` plus the I/O description.

    The model is not validated here (see :func:`validate_model`, which ``compile_model`` runs
    first), but every field read is checked. Where the model carries the shapes ONNX inference
    gives (``value_info``), each layer's output shape must equal them.

    :returns: ``(ops, input_shape (C, H, W), input_name, output_name)``.
    :raises CompileError: for branching graphs, unsupported operators or attributes, attributes of
        the wrong type, non-finite or non-float weights, biases and BatchNormalization parameters,
        or shapes that do not fit, naming the node (and attribute or initializer).
    """
    g = model.graph
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    opset = int(versions[0]) if len(versions) == 1 else None
    consts = _Constants(g)
    inputs = [i for i in g.input if i.name not in consts]
    if len(inputs) != 1 or len(g.output) != 1:
        raise CompileError(f"the model must have one input and one output, not {len(inputs)} and {len(g.output)}")
    if inputs[0].type.tensor_type.elem_type not in _FLOAT_TYPES:
        raise CompileError(f"input '{inputs[0].name}' has data type "
                           f"{_type_name(inputs[0].type.tensor_type.elem_type)}, not a float type")
    dims = _dims(inputs[0])
    if len(dims) in (2, 4) and dims[0] is not None and dims[0] < 1:
        raise CompileError(f"input '{inputs[0].name}' has batch size {dims[0]}")
    if len(dims) == 4 and all(d is not None and d >= 1 for d in dims[1:]):
        shape, rank = tuple(int(d) for d in dims[1:]), 4
    elif len(dims) == 2 and dims[1] is not None and dims[1] >= 1:
        shape, rank = (int(dims[1]), 1, 1), 2
    else:
        raise CompileError(f"input '{inputs[0].name}' must be (N, C, H, W) or (N, F) with known sizes, not {dims}")
    in_name, out_name = _text(inputs[0].name), _text(g.output[0].name)
    in_shape = shape
    known = {v.name: _dims(v) for v in (*g.value_info, *g.output) if v.type.tensor_type.HasField("shape")}

    ops = []
    cur = inputs[0].name
    layer_out = None          # tensor produced by the last Conv/Gemm (through Identity/Dropout)
    flat = rank == 2          # a vector input is already flat
    for idx, node in enumerate(g.node):
        where = _where(node, idx)
        if node.domain not in ("", "ai.onnx"):
            raise CompileError(f"{where}: operator domain '{node.domain}' is not supported (only ai.onnx)")
        if len(node.output) < 1 or not node.output[0]:
            raise CompileError(f"{where}: the node has no output")
        _check_attributes(node, where, _schema(node.op_type, opset) if opset else None, opset)
        if node.op_type == "Constant":
            consts.add(node.output[0], *_constant(node, where))
            continue
        data_in = [i for i in node.input if i and i not in consts]
        if data_in != [cur] or _input(node, 0) != cur:
            raise CompileError(f"{where}: only a chain of layers is supported (it reads {data_in}, "
                               f"the chain is at '{cur}')")
        a = _attrs(node, where)
        op = node.op_type
        last = ops[-1] if ops else None
        if op in ("Identity", "Dropout"):
            if op == "Dropout" and _input(node, 2):
                mode = consts.get(node.input[2])[0]
                if mode.size != 1 or bool(mode.reshape(-1)[0]):
                    raise CompileError(f"{where}: training_mode '{node.input[2]}' is not false (random dropout "
                                       f"is not supported)")
        elif op == "Conv":
            if flat:
                raise CompileError(f"{where}: Conv after Flatten is not supported")
            w, b, stride = _layer_weights(where, node, consts, a, shape[0], transposed=False)
            kh, kw = w.shape[2:]
            pad = _conv_pads(where, a, shape, kh, kw, stride)
            conv = ConvOp(name=_label(node), w=w, b=b, stride=stride, pad=tuple(int(v) for v in pad),
                          names=[_text(node.name)])
            co, ho, wo = conv.out_shape(shape)
            if ho < 1 or wo < 1:
                raise CompileError(f"{where}: a {kh}x{kw} kernel does not fit the {shape[1]}x{shape[2]} input")
            ops.append(conv)
            shape = (co, ho, wo)
        elif op == "ConvTranspose":
            if flat:
                raise CompileError(f"{where}: ConvTranspose after Flatten is not supported")
            w, b, stride = _layer_weights(where, node, consts, a, shape[0], transposed=True)
            pad, outp = _deconv_pads(where, a, w, shape, stride)
            conv = ConvOp(name=_label(node), w=w, b=b, stride=stride, pad=pad, output_padding=outp,
                          names=[_text(node.name)], kind="ConvTranspose")
            conv.deconv_geometry()                    # the invariants of the IR (checked above)
            ops.append(conv)
            shape = conv.out_shape(shape)
        elif op == "BatchNormalization":
            if last is None or last.relu or last.act != ACT_NONE or last.pool != 1 or last.bn is not None \
                    or cur != layer_out:
                raise CompileError(f"{where}: BatchNormalization must directly follow a Conv, ConvTranspose or Gemm "
                                   f"to be folded")
            if a.get("training_mode", 0):
                raise CompileError(f"{where}: attribute 'training_mode' {a['training_mode']}: BatchNormalization in "
                                   f"training mode (batch statistics) is not supported")
            if any(o for o in node.output[1:]):
                raise CompileError(f"{where}: the running mean/var outputs {[o for o in node.output[1:] if o]} "
                                   f"(training mode) are not supported")
            if len(node.input) < 5 or not all(node.input[1:5]):
                raise CompileError(f"{where}: scale, bias, mean and var must be initializers")
            gamma, beta, mean, var = (_float_const(where, consts, n, what) for n, what in
                                      zip(node.input[1:5], ("scale", "bias", "mean", "var")))
            if any(v.shape != (last.cout,) for v in (gamma, beta, mean, var)):
                raise CompileError(f"{where}: scale, bias, mean and var must have {last.cout} entries (the output "
                                   f"channels of layer '{last.name}')")
            eps = _finite_float(where, a, "epsilon", 1e-5)
            if var.min() < 0:
                raise CompileError(f"{where}: the var '{node.input[4]}' has a negative entry ({var.min():g})")
            if (var + eps).min() <= 0:
                raise CompileError(f"{where}: var + epsilon ({(var + eps).min():g}) is not positive")
            with np.errstate(all="ignore"):
                scale = gamma / np.sqrt(var + eps)
                shift = beta - mean * scale
            if not (np.all(np.isfinite(scale)) and np.all(np.isfinite(shift))):
                raise CompileError(f"{where}: the folded scale gamma/sqrt(var + epsilon) or shift overflows")
            last.bn = (scale, shift)
            last.names.append(_text(node.name))
        elif op in _ACTS:
            if last is None:
                raise CompileError(f"{where}: {op} on the network input is not supported")
            relu, act = _ACTS[op]
            prev = "Relu" if last.relu else ACT_NAMES[last.act].capitalize() if last.act != ACT_NONE else None
            if prev is not None and not (relu and last.relu):
                raise CompileError(f"{where}: layer '{last.name}' already has the activation {prev}; only one "
                                   f"activation per layer is supported")
            last.relu, last.act = relu, act
            last.names.append(_text(node.name))
        elif op == "MaxPool":
            if flat:
                raise CompileError(f"{where}: MaxPool after Flatten is not supported")
            _maxpool(where, a, node, shape)
            if last is None or last.pool != 1:
                raise CompileError(f"{where}: max-pool must follow a Conv or ConvTranspose (one pool per layer)")
            if shape[1] < 2 or shape[2] < 2:
                raise CompileError(f"{where}: 2x2 max-pool of a {shape[1]}x{shape[2]} map is empty")
            last.pool = 2
            last.names.append(_text(node.name))
            shape = (shape[0], shape[1] // 2, shape[2] // 2)
        elif op in ("Flatten", "Reshape"):
            if op == "Flatten" and a.get("axis", 1) != 1:
                raise CompileError(f"{where}: only axis=1 is supported")
            if op == "Reshape":
                got = consts.get(_input(node, 1)) if _input(node, 1) else None
                target = got[0].reshape(-1) if got is not None and got[1] == _INT64 else None
                size = shape[0] * shape[1] * shape[2]
                batch_ok = (-1, 1) if a.get("allowzero", 0) else (-1, 0, 1)
                if target is None or len(target) != 2 or int(target[1]) not in (-1, size) \
                        or int(target[0]) not in batch_ok or (int(target[0]), int(target[1])) == (-1, -1):
                    raise CompileError(f"{where}: only a reshape to (N, -1) is supported"
                                       + (f" (shape {target.tolist()})" if target is not None else ""))
            flat, rank = True, 2
        elif op == "Gemm":
            layer = _gemm(where, node, consts, a, shape, flat or rank == 2)
            ops.append(layer)
            shape, flat, rank = (layer.cout, 1, 1), True, 2
        else:
            raise CompileError(f"{where}: unsupported operator (supported: {SUPPORTED})")
        if op in ("Conv", "ConvTranspose", "Gemm") or (op in ("Identity", "Dropout") and layer_out == cur):
            layer_out = node.output[0]
        cur = node.output[0]
        _check_shape(where, known.get(cur), shape, rank)
    if not ops:
        raise CompileError("the model has no Conv, ConvTranspose or Gemm layer")
    if cur != g.output[0].name:
        raise CompileError(f"the chain ends at '{_text(cur)}', not at the graph output '{out_name}'")
    return ops, in_shape, in_name, out_name


def _check_shape(where, dims, shape, rank):
    """The importer's output shape against ONNX shape inference (unknown dimensions match)."""
    if dims is None:
        return
    want = [None, *shape] if rank == 4 else [None, shape[0] * shape[1] * shape[2]]
    if len(dims) != len(want) or any(d is not None and w is not None and d != w for d, w in zip(dims, want)):
        raise CompileError(f"{where}: the output shape {dims} given by ONNX shape inference differs from the "
                           f"{want[1:]} computed here")


def _gemm(where, node, consts, a, shape, flat):
    """A Gemm node as a conv layer whose kernel covers its whole (C, H, W) input."""
    if a.get("transA", 0):
        raise CompileError(f"{where}: transA=1 is not supported")
    if shape[1] * shape[2] > 1 and not flat:
        raise CompileError(f"{where}: Gemm needs a Flatten before it")
    b_name = _input(node, 1)
    w = _float_const(where, consts, b_name, "weights")
    if w.ndim != 2:
        raise CompileError(f"{where}: the weights '{b_name}' of shape {w.shape} must be 2-D")
    w = w * _finite_float(where, a, "alpha", 1.0)
    if not a.get("transB", 0):
        w = w.T
    c, h, wd = shape
    if w.shape[1] != c * h * wd:
        raise CompileError(f"{where}: weights take {w.shape[1]} inputs, the input has {c * h * wd}")
    n = w.shape[0]
    if n < 1:
        raise CompileError(f"{where}: the weights '{b_name}' have no outputs")
    if _input(node, 2):
        cb = _float_const(where, consts, node.input[2], "bias")
        if cb.shape not in ((), (1,), (n,), (1, 1), (1, n)):
            raise CompileError(f"{where}: the bias '{node.input[2]}' of shape {cb.shape} is not one value per "
                               f"output: ONNX broadcasts C to the (1, {n}) output, so it must be (), (1,), "
                               f"({n},), (1, 1) or (1, {n})")
        b = np.broadcast_to(cb.reshape(-1), (n,)) * _finite_float(where, a, "beta", 1.0)
    else:
        b = np.zeros(n)
    if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
        raise CompileError(f"{where}: alpha times the weights or beta times the bias overflows")
    return ConvOp(name=_label(node), w=w.reshape(n, c, h, wd), b=np.array(b, np.float64),
                  names=[_text(node.name)], kind="Gemm")
