"""ONNX front end: a validated ``ModelProto`` → :class:`~nibble.host.graph.Graph` (DESIGN §6).

Before anything is imported, :func:`validate_model` checks the model the way the tools that
define ONNX do ("no wrong answer without an error"): its own structural checks (operator domain
and schema, every attribute's type, initializers stored inside the file with the types the
operators need), strict ONNX shape inference, the full ONNX checker and ONNX Runtime, which has
the last word: a model ``onnxruntime.InferenceSession`` does not accept is refused with ORT's
message. :func:`import_graph` then checks what ONNX accepts but the accelerator cannot compute
exactly; every refusal is a :class:`CompileError` naming the node (and the attribute or
initializer).

Constants: initializers and ``Constant`` nodes (``value``, ``value_float(s)``, ``value_int(s)``),
and every node whose inputs are all constants, evaluated with ONNX's reference implementation
(``onnx.reference.ReferenceEvaluator``, node by node: Identity of an initializer, Shape / Gather /
Concat / Unsqueeze / Cast / ConstantOfShape / Pad … of constants). ``Shape`` of a feature tensor
is its static shape with batch size 1 (the engine runs one image at a time). Folding refuses to
create more than :data:`FOLD_ELEMENTS` values, and does not evaluate random operators.

Operators (ai.onnx operator sets ``MIN_OPSET`` (11) and later; anything else is a
:class:`CompileError` naming the node):

* ``Conv``: dilation 1, any kernel, stride (equal on both axes), explicit pads or ``auto_pad``
  SAME_UPPER/SAME_LOWER/VALID (not both); bias optional. ``group`` > 1 (grouped, depthwise):
  the weights stored dense and block-diagonal (``ConvOp.groups``).
* ``ConvTranspose`` (ARITHMETIC §1, PyTorch ``ConvTranspose2d`` semantics, weights
  ``(Cin, Cout, Kh, Kw)``): group 1, dilation 1, any kernel, any strides (equal or not),
  ``output_padding < stride`` per axis; explicit pads or ``auto_pad`` VALID/SAME_UPPER/SAME_LOWER (ONNX rule:
  output = input · stride, total crop ``K + output_padding − stride`` split with the odd row at the
  end for SAME_UPPER, at the beginning for SAME_LOWER); ``output_shape`` only where its pads are
  those of the node. Asymmetric pads are stored exactly as a symmetric ``P`` (the begin pad) and
  ``OP = output_padding + begin − end`` (negative when the end pad is the larger, ``≥ stride``
  when the begin pad is). Bias optional.
* ``Gemm`` (alpha, beta, transB; transA = 0; bias ``C`` of shape (), (1,), (N,), (1, 1) or
  (1, N): one bias per output, as ONNX broadcasts it to (1, N)) and ``MatMul`` of a vector by a
  constant matrix: a layer on a vector input, whose weights :func:`nibble.host.passes.flatten_gemm`
  turns into a kernel covering the feature map in front of its Flatten / Reshape / Transpose.
* ``BatchNormalization`` (inference: ``training_mode`` 0, one output; ``var ≥ 0`` and
  ``var + epsilon > 0``): node with its per-channel ``scale`` and ``shift``
  (:func:`nibble.host.passes.fold_bn` folds it into the layer before it).
* Activations: ``Relu``, ``PRelu`` (constant slopes: one per channel, shape (C,) on a vector,
  (C, 1, 1) or (1, C, 1, 1) on a feature map, or a single value), ``LeakyRelu`` (``alpha``),
  ``Clip`` (constant ``min``/``max`` inputs, either optional; ReLU6 = Clip(0, 6)), ``Tanh``,
  ``Sigmoid``; ``Add`` of a constant with one value per channel (a bias).
  :func:`nibble.host.passes.fuse_epilogue` fuses them into the layer that produces their input.
* ``MaxPool``: any kernel, strides, pads, ``ceil_mode``, ``auto_pad``; dilations 1; no
  ``Indices`` output. The window becomes ``(kh, kw, sy, sx, top, bottom, left, right)`` with the
  output size ONNX Runtime gives (``ceil_mode``: a window starting in the end padding is
  dropped) and the end padding that gives it.
* ``Pad`` (mode ``constant``, value 0, spatial axes only, no negative pads): folded into the
  Conv it feeds (:func:`nibble.host.passes.fold_pad`).
* ``Flatten`` (axis 1), ``Reshape`` to (N, −1), ``Transpose`` keeping the batch axis first: only
  in front of a Gemm (:func:`nibble.host.passes.flatten_gemm`) or as a flattened graph output.
* ``Identity``, ``Dropout`` (inference: pass-through; a ``training_mode`` input must be a
  constant false).
* ``Softmax`` over the channel axis (axis 1; in operator sets before 13 only where that is the
  same as over C·H·W, a vector) and ``ArgMax`` over the channel axis: host operators, accepted
  only on a graph output and only those the program format runs on the host
  (``nibble.host.program.HOST_OPS``; :func:`nibble.host.passes.host_tail`).
* ``Add`` of two feature maps of one shape (:func:`nibble.host.passes.fuse_add`), ``Concat`` of
  feature maps over axis 1 (:func:`nibble.host.passes.place_concat`), ``GlobalAveragePool``
  (:func:`nibble.host.passes.fold_gap`, or the host op ``gap`` on an output), ``Slice``
  ``x[:, :, ::s, ::s]`` and a ``Pad`` of the channels (:func:`nibble.host.passes.fold_slice`).
  ``AveragePool``, ``GlobalMaxPool``, ``LpPool``, ``Sum``, ``Mean`` are refused by name.

Every weight, bias, slope and BatchNormalization parameter must be finite; each node's output
shape is compared with ONNX shape inference where the model carries it (as :func:`validate_model`'s
result does).
"""
import math
import warnings

import numpy as np

from ..graph import Graph, Node
from ..ir import CompileError, ConvOp

__all__ = ["import_graph", "load_onnx", "validate_model", "MIN_OPSET", "FOLD_ELEMENTS", "SUPPORTED"]

SUPPORTED = ("Conv, ConvTranspose, Gemm, MatMul, BatchNormalization, Relu, PRelu, LeakyRelu, Clip, Tanh, Sigmoid, "
             "MaxPool, Pad, Flatten, Reshape, Transpose, Identity, Dropout, Softmax, ArgMax, Add, Concat, "
             "GlobalAveragePool, Slice, Resize (nearest, integer factor), "
             "Constant and operators on constants")

#: Oldest ai.onnx operator set accepted (the attribute semantics below are those of opset 11+).
MIN_OPSET = 11

#: Constant folding creates at most this many values per node (a larger constant is an error).
FOLD_ELEMENTS = 1 << 24

#: Operators never evaluated by constant folding (their outputs are random).
_NO_FOLD = ("RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli",
            "Dropout", "If", "Loop", "Scan", "SequenceMap")

#: Operators the engine cannot run yet (refused by name, not as unknown operators).
_NOT_YET = ("GlobalMaxPool", "LpPool", "Sum", "Mean")

#: Element-wise activations (one data input, one output).
ACTIVATIONS = ("Relu", "PRelu", "LeakyRelu", "Clip", "Tanh", "Sigmoid")

# TensorProto data types (onnx.TensorProto.*) used here
_FLOAT, _INT64, _STRING, _FLOAT16, _DOUBLE, _BFLOAT16, _BOOL = 1, 7, 8, 10, 11, 16, 9
_FLOAT_TYPES = (_FLOAT, _FLOAT16, _DOUBLE, _BFLOAT16)
_INT_TYPES = (2, 3, 4, 5, 6, 7, 12, 13)
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
            from ..compiler import build_graph      # the front end and the structural passes
            build_graph(model)
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
    groups = int(a.get("group", 1))
    if groups != 1 and transposed:
        raise CompileError(f"{where}: group={groups} is not supported (only group = 1): a ConvTranspose has no groups")
    if groups != 1 and (groups < 1 or in_c % groups or w.shape[0] % groups or w.shape[1] * groups != in_c):
        raise CompileError(f"{where}: group={groups} does not divide the {in_c} input and {w.shape[0]} output "
                           f"channels of the weights {w.shape}")
    if groups > 1:                      # dense, block-diagonal (ConvOp.groups)
        co, cg_in = w.shape[0], w.shape[1]
        dense = np.zeros((co, in_c) + w.shape[2:], w.dtype)
        cg_out = co // groups
        for g in range(groups):
            dense[g * cg_out:(g + 1) * cg_out, g * cg_in:(g + 1) * cg_in] = w[g * cg_out:(g + 1) * cg_out]
        w = dense
    dil = _ints(where, a, "dilations", 2, [1, 1])
    if any(d != 1 for d in dil):
        raise CompileError(f"{where}: dilation {dil} is not supported (only 1)")
    st = [int(v) for v in a.get("strides", [1, 1])]
    if len(st) != 2:
        raise CompileError(f"{where}: strides {st} are not two ints")
    if len(set(st)) != 1 and not transposed:
        raise CompileError(f"{where}: unequal strides {st} are not supported (the stride must be the same "
                           f"on both axes)")
    if min(st) < 1:
        raise CompileError(f"{where}: stride {st} must be >= 1")
    if "kernel_shape" in a and tuple(a["kernel_shape"]) != tuple(w.shape[2:]):
        raise CompileError(f"{where}: kernel_shape {list(a['kernel_shape'])} does not match the "
                           f"{w.shape[2]}x{w.shape[3]} weights")
    wc, co = (w.shape[0], w.shape[1]) if transposed else (w.shape[1], w.shape[0])
    if wc != in_c:
        raise CompileError(f"{where}: weights expect {wc} input channels, the input has {in_c}")
    b = _float_const(where, consts, node.input[2], "bias") if _input(node, 2) else np.zeros(co)
    if b.shape != (co,):
        raise CompileError(f"{where}: bias of shape {b.shape} does not match {co} output channels")
    return w, b.copy(), st[0] if st[0] == st[1] else tuple(st)


def _deconv_pads(where, a, w, shape, stride):
    """ONNX ConvTranspose pads → ((top, bottom, left, right), (OPy, OPx)) with symmetric pads per
    axis (``P = begin``, ``OP = output_padding + begin − end``; ARITHMETIC §1.1), checked."""
    kh, kw = w.shape[2:]
    st = tuple(stride) if isinstance(stride, tuple) else (stride, stride)
    outp = [int(v) for v in a.get("output_padding", [0, 0])]
    if len(outp) != 2 or min(outp) < 0:
        raise CompileError(f"{where}: output_padding {outp} must be two non-negative ints")
    if outp[0] >= st[0] or outp[1] >= st[1]:
        shown = st[0] if st[0] == st[1] else list(st)
        raise CompileError(f"{where}: output_padding {outp} must be smaller than the stride {shown}")
    auto = _auto_pad(where, a)
    pads = _explicit_pads(where, a)
    if pads is not None and auto != "NOTSET":
        raise CompileError(f"{where}: pads and auto_pad={auto} cannot be used together")
    if auto == "VALID":
        pads = (0, 0, 0, 0)
    canvas = [(shape[1 + i] - 1) * st[i] + (kh, kw)[i] + outp[i] for i in range(2)]   # size with no crop
    if "output_shape" in a:
        # ONNX: the pads come from output_shape; the odd row is cropped at the end for SAME_UPPER,
        # at the beginning otherwise. Explicit (or VALID) pads must be the same.
        target = [int(v) for v in a["output_shape"]][-2:]
        if len(target) != 2:
            raise CompileError(f"{where}: output_shape {list(a['output_shape'])} needs the output height and width")
        # A target one row larger than the canvas (total −1) is a negative end pad: an extra output
        # row of bias only (ONNX's reference); a negative begin pad is not mapped.
        split = []
        for i in range(2):
            total = canvas[i] - target[i]
            begin = total // 2 if auto == "SAME_UPPER" else total - total // 2
            if begin < 0 or target[i] < 1:
                raise CompileError(f"{where}: output_shape {target} does not fit: the uncropped output is "
                                   f"{canvas[0]}x{canvas[1]}" + (" (a negative begin padding)" if begin < 0 else ""))
            split.append((begin, total - begin))
        derived = (split[0][0], split[0][1], split[1][0], split[1][1])
        if pads is not None and pads != derived:
            raise CompileError(f"{where}: output_shape {target} and pads {pads} (top, bottom, left, right) are "
                               f"inconsistent (output_shape gives pads {derived})")
        pads = derived
    elif auto in ("SAME_UPPER", "SAME_LOWER"):
        if any(outp):
            raise CompileError(f"{where}: auto_pad={auto} with output_padding {outp} is ambiguous (ONNX shape "
                               "inference adds the output padding to input · stride, ONNX Runtime does not); "
                               "give explicit pads")
        split = []
        for i in range(2):
            total = canvas[i] - shape[1 + i] * st[i]          # output = input · stride
            if total < 0:
                raise CompileError(f"{where}: auto_pad={auto} needs kernel + output_padding >= stride "
                                   f"(kernel {(kh, kw)[i]}, output_padding {outp[i]}, stride {st[i]})")
            begin = total // 2 if auto == "SAME_UPPER" else total - total // 2
            split.append((begin, total - begin))
        pads = (split[0][0], split[0][1], split[1][0], split[1][1])
    elif pads is None:
        pads = (0, 0, 0, 0)
    t, bo, l, r = pads
    op = (outp[0] + t - bo, outp[1] + l - r)       # any integer (ConvOp.deconv_geometry); bo, r may be < 0
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




def _maxpool_window(where, a, node, shape):
    """The window ``(kh, kw, sy, sx, top, bottom, left, right)`` of a MaxPool node on a (C, H, W)
    map, with the output size ONNX Runtime computes (``ceil_mode``: a window that would start in
    the end padding is dropped; ``auto_pad`` SAME: ``⌈size/stride⌉`` outputs, the odd padding row
    at the end for SAME_UPPER) and the smallest end padding giving that size:
    ``out = (size + top + bottom − k) // s + 1``."""
    ks = [int(v) for v in a.get("kernel_shape", [])]
    if len(ks) != 2:
        raise CompileError(f"{where}: kernel_shape {ks} must have 2 entries (2-D pooling only)")
    st = _ints(where, a, "strides", 2, [1, 1])
    if any(d != 1 for d in _ints(where, a, "dilations", 2, [1, 1])):
        raise CompileError(f"{where}: attribute 'dilations' {list(a['dilations'])} is not supported (only 1)")
    if min(ks) < 1 or min(st) < 1:
        raise CompileError(f"{where}: kernel {ks} and strides {st} must be positive")
    if len(node.output) > 1 and node.output[1]:
        raise CompileError(f"{where}: the Indices output '{node.output[1]}' is not supported")
    auto = _auto_pad(where, a)
    pads = _explicit_pads(where, a)
    ceil = bool(a.get("ceil_mode", 0))
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        heads, tails, outs = [], [], []
        for size, k, s in zip(shape[1:], ks, st):
            need = (-(-size // s) - 1) * s + k - size
            if need < 0:
                raise CompileError(f"{where}: auto_pad={auto} with kernel {k} smaller than stride {s} crops the map; "
                                   "not supported")
            head = (need + 1) // 2 if auto == "SAME_LOWER" else need // 2
            heads.append(head)
            tails.append(need - head)
        begin, end = heads, tails
    elif auto == "VALID":
        begin, end = [0, 0], [0, 0]
    else:
        p = pads or (0, 0, 0, 0)
        begin, end = [p[0], p[2]], [p[1], p[3]]
    window = []
    for size, k, s, b, e in zip(shape[1:], ks, st, begin, end):
        if max(b, e) >= k:
            raise CompileError(f"{where}: padding {b}/{e} is not smaller than the {k}-wide window")
        span = size + b + e - k
        if span < 0:
            raise CompileError(f"{where}: a {ks[0]}x{ks[1]} max-pool of the {shape[1]}x{shape[2]} map is empty")
        out = -(-span // s) + 1 if ceil and auto not in ("SAME_UPPER", "SAME_LOWER") else span // s + 1
        if ceil and (out - 1) * s >= size + b:
            out -= 1                     # the last window would start in the end padding
        end_pad = max(0, (out - 1) * s + k - size - b)
        assert (size + b + end_pad - k) // s + 1 == out
        window.append((b, end_pad))
    (t, bo), (l, r) = window
    return (ks[0], ks[1], st[0], st[1], t, bo, l, r)


def _check_shape(where, dims, shape):
    """The front end's per-image output shape against ONNX shape inference (unknown dimensions
    match)."""
    if dims is None:
        return
    want = [None, *shape]
    if len(dims) != len(want) or any(d is not None and w is not None and d != w for d, w in zip(dims, want)):
        raise CompileError(f"{where}: the output shape {dims} given by ONNX shape inference differs from the "
                           f"{want[1:]} computed here")


def _gemm(where, node, consts, a, shape):
    """A Gemm node on a vector (F,) as a layer with weights (N, F, 1, 1) and bias (N,)."""
    if a.get("transA", 0):
        raise CompileError(f"{where}: transA=1 is not supported")
    if len(shape) != 1:
        raise CompileError(f"{where}: Gemm needs a Flatten before it")
    b_name = _input(node, 1)
    w = _float_const(where, consts, b_name, "weights")
    if w.ndim != 2:
        raise CompileError(f"{where}: the weights '{b_name}' of shape {w.shape} must be 2-D")
    w = w * _finite_float(where, a, "alpha", 1.0)
    if not a.get("transB", 0):
        w = w.T
    if w.shape[1] != shape[0]:
        raise CompileError(f"{where}: weights take {w.shape[1]} inputs, the input has {shape[0]}")
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
    return ConvOp(name=_label(node), w=np.ascontiguousarray(w).reshape(n, shape[0], 1, 1),
                  b=np.array(b, np.float64), names=[_text(node.name)], kind="Gemm")


def _per_channel(where, what, name, v, shape):
    """A constant ``v`` that ONNX broadcasts against the (N, *shape) data as one value per channel
    (axis 1), as float64 (C,) — or (1,) for a single value.

    :raises CompileError: naming the node and the constant if it broadcasts any other way.
    """
    if v.size == 1:
        return v.reshape(1)
    full = (1, *shape)
    if v.ndim > len(full):
        raise CompileError(f"{where}: the {what} '{name}' of shape {v.shape} has more dimensions than the input")
    aligned = (1,) * (len(full) - v.ndim) + tuple(v.shape)
    c = shape[0]
    if aligned[1] == c and all(d == 1 for i, d in enumerate(aligned) if i != 1):
        return v.reshape(c)
    hint = " (PyTorch exports (C, 1, 1))" if len(shape) == 3 else ""
    raise CompileError(f"{where}: the {what} '{name}' of shape {v.shape} is not one value per channel of the "
                       f"(N, {', '.join(str(s) for s in shape)}) input (ONNX aligns it to {aligned}){hint}")


def _scalar_const(where, consts, name, what):
    v = consts.get(name)
    if v is None:
        raise CompileError(f"{where}: the {what} '{name}' must be a constant")
    arr, dtype = v
    if dtype not in _FLOAT_TYPES or arr.size != 1:
        raise CompileError(f"{where}: the {what} '{name}' must be one float value, not {arr.shape} "
                           f"{_type_name(dtype)}")
    f = float(np.asarray(arr, np.float64).reshape(-1)[0])
    if math.isnan(f):
        raise CompileError(f"{where}: the {what} '{name}' is NaN")
    return f


def _const_ints(where, consts, name, what):
    v = consts.get(name) if name else None
    if v is None:
        raise CompileError(f"{where}: the {what} '{name}' must be a constant")
    arr, dtype = v
    if dtype not in _INT_TYPES:
        raise CompileError(f"{where}: the {what} '{name}' has data type {_type_name(dtype)}, not an integer type")
    return [int(x) for x in np.asarray(arr).reshape(-1)]


def _np_type(arr):
    import onnx
    try:
        return int(onnx.helper.np_dtype_to_tensor_dtype(np.asarray(arr).dtype))
    except Exception:     # noqa: BLE001 — object arrays and the like: not a number type
        return _STRING


def _fold_size(node, vals):
    """Values a folded node would create, for the operators whose output size depends on their
    inputs' values (``None`` if it cannot be told before evaluating)."""
    op = node.op_type
    try:
        if op == "ConstantOfShape":
            return int(np.prod([max(int(v), 0) for v in vals[0].reshape(-1)], dtype=object))
        if op == "Expand":
            return int(np.prod(np.broadcast_shapes(vals[0].shape, tuple(int(v) for v in vals[1].reshape(-1))),
                               dtype=object))
        if op == "Tile":
            return int(np.prod([d * max(int(r), 0) for d, r in zip(vals[0].shape, vals[1].reshape(-1))], dtype=object))
        if op == "Range":
            start, limit, delta = (float(np.asarray(v).reshape(-1)[0]) for v in vals[:3])
            return max(0, math.ceil((limit - start) / delta)) if delta else None
        if op == "Pad":
            p = [int(v) for v in vals[1].reshape(-1)]
            r = vals[0].ndim
            if len(p) == 2 * r:
                return int(np.prod([d + p[i] + p[i + r] for i, d in enumerate(vals[0].shape)], dtype=object))
    except Exception:      # noqa: BLE001 — malformed values: the evaluator reports them
        return None
    if op in ("Resize", "Upsample", "OneHot", "CenterCropPad", "Col2Im"):
        return FOLD_ELEMENTS + 1       # not folded: the output size is not checked beforehand
    return sum(int(v.size) for v in vals)


def _fold(where, node, ins, consts, opset):
    """Evaluate ``node`` on constant inputs with ``onnx.reference.ReferenceEvaluator``; returns
    ``[(array, onnx data type)]`` per output."""
    from onnx.reference import ReferenceEvaluator
    vals = [consts.get(i)[0] if i else None for i in ins]
    size = _fold_size(node, [v for v in vals if v is not None])
    if size is not None and size > FOLD_ELEMENTS:
        raise CompileError(f"{where}: folding it on its constant inputs would create {size} values (more than "
                           f"{FOLD_ELEMENTS}); not supported")
    import onnx
    n = onnx.NodeProto()
    n.CopyFrom(node)
    del n.input[:]
    n.input.extend(ins)
    feeds = {i: v for i, v in zip(ins, vals) if i}
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            outs = ReferenceEvaluator(n, opsets={"": opset}).run(None, feeds)
    except Exception as e:       # noqa: BLE001 — the evaluator's refusal, named
        raise CompileError(f"{where}: its constant inputs cannot be evaluated ({type(e).__name__}: "
                           f"{_first_line(e)[:300]})") from None
    res = []
    for o in outs:
        arr = np.asarray(o)
        if arr.size > FOLD_ELEMENTS:
            raise CompileError(f"{where}: folding it gives {arr.size} values (more than {FOLD_ELEMENTS})")
        res.append((arr, _np_type(arr)))
    return res


class _Importer:
    """State of one import: the graph being built, constants, aliases (Identity, Dropout)."""

    def __init__(self, model, name):
        self.model, self.name = model, name
        g = model.graph
        versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
        self.opset = int(versions[0]) if len(versions) == 1 else None
        self.consts = _Constants(g)
        self.alias = {}
        self.known = {v.name: _dims(v) for v in (*g.value_info, *g.output) if v.type.tensor_type.HasField("shape")}
        self.graph = Graph(_text(g.name) or "model")

    def resolve(self, t):
        return self.alias.get(t, t)

    def data(self, where, node, t, what="input"):
        """The feature tensor ``t`` a node reads (not a constant)."""
        t = self.resolve(t)
        if not t:
            raise CompileError(f"{where}: its {what} is missing")
        if t in self.consts:
            raise CompileError(f"{where}: its {what} '{_text(t)}' is a constant where a feature map is expected")
        if t not in self.graph.tensors:
            raise CompileError(f"{where}: reads tensor '{_text(t)}', which no node writes")
        return t

    def shape(self, t):
        return self.graph.tensors[t].shape

    def add(self, where, node, op, x, out_shape, attrs=None, conv=None, name=None):
        out = node.output[0]
        n = Node(name=name or _label(node), op=op, inputs=list(x) if isinstance(x, list) else [x], outputs=[out],
                 attrs=attrs or {}, conv=conv)
        if any(m.name == n.name for m in self.graph.nodes):
            n.name = f"{n.name}#{len(self.graph.nodes)}"
            if n.conv is not None:
                n.conv.name = n.name
        if out in self.graph.tensors or out in self.consts:
            raise CompileError(f"{where}: its output '{_text(out)}' is written twice")
        self.graph.add_node(n, [out_shape])
        _check_shape(where, self.known.get(out), out_shape)
        for extra in node.output[1:]:
            if extra:
                raise CompileError(f"{where}: the output '{_text(extra)}' is not supported (one output only)")

    # ------------------------------------------------------------------------- the model
    def run(self):
        g = self.model.graph
        consts = self.consts
        inputs = [i for i in g.input if i.name not in consts]
        if not inputs:
            raise CompileError("the model has no input (every graph input is an initializer)")
        if not g.output:
            raise CompileError("the model has no output")
        for inp in inputs:
            self.add_input(inp)
        for idx, node in enumerate(g.node):
            self.node(idx, node)
        self.finish()
        return self.graph

    def add_input(self, inp):
        name = _text(inp.name)
        if inp.type.tensor_type.elem_type not in _FLOAT_TYPES:
            raise CompileError(f"input '{name}' has data type {_type_name(inp.type.tensor_type.elem_type)}, "
                               "not a float type")
        dims = _dims(inp)
        if len(dims) in (2, 4) and dims[0] is not None and dims[0] < 1:
            raise CompileError(f"input '{name}' has batch size {dims[0]}")
        if len(dims) == 4 and all(d is not None and d >= 1 for d in dims[1:]):
            shape = tuple(int(d) for d in dims[1:])
        elif len(dims) == 2 and dims[1] is not None and dims[1] >= 1:
            shape = (int(dims[1]),)
        else:
            raise CompileError(f"input '{name}' must be (N, C, H, W) or (N, F) with known sizes, not {dims}")
        if name in self.graph.tensors:
            raise CompileError(f"input '{name}' is listed twice")
        self.graph.add_input(inp.name, shape)

    def node(self, idx, node):
        where = _where(node, idx)
        consts, opset = self.consts, self.opset
        if node.domain not in ("", "ai.onnx"):
            raise CompileError(f"{where}: operator domain '{node.domain}' is not supported (only ai.onnx)")
        if len(node.output) < 1 or not node.output[0]:
            raise CompileError(f"{where}: the node has no output")
        _check_attributes(node, where, _schema(node.op_type, opset) if opset else None, opset)
        op = node.op_type
        if op == "Constant":
            consts.add(node.output[0], *_constant(node, where))
            return
        ins = [self.resolve(i) for i in node.input]
        present = [i for i in ins if i]
        a = _attrs(node, where)
        if op == "Dropout":
            if _input(node, 2):
                mode = consts.get(ins[2])
                if mode is None:
                    raise CompileError(f"{where}: training_mode '{node.input[2]}' must be a constant")
                mode = mode[0]
                if mode.size != 1 or bool(mode.reshape(-1)[0]):
                    raise CompileError(f"{where}: training_mode '{node.input[2]}' is not false (random dropout "
                                       f"is not supported)")
            if len(node.output) > 1 and node.output[1]:
                raise CompileError(f"{where}: the mask output '{node.output[1]}' is not supported")
            if ins and ins[0] in consts:
                consts.add(node.output[0], *consts.get(ins[0]))
                return
        if present and all(i in consts for i in present) and op not in _NO_FOLD:
            for o, v in zip(node.output, _fold(where, node, ins, consts, opset)):
                if o:
                    consts.add(o, *v)
            return
        if op == "Shape" and ins and ins[0] in self.graph.tensors:
            full = np.array([1, *self.shape(ins[0])], np.int64)
            r = len(full)
            start, end = int(a.get("start", 0)), int(a.get("end", r))
            start, end = (start + r if start < 0 else start), (end + r if end < 0 else end)
            consts.add(node.output[0], full[max(0, min(r, start)):max(0, min(r, end))].copy(), _INT64)
            return
        if op == "Size" and ins and ins[0] in self.graph.tensors:
            consts.add(node.output[0], np.array(int(np.prod(self.shape(ins[0]))), np.int64), _INT64)
            return
        handler = getattr(self, f"op_{op}", None)
        if handler is None:
            if op in _NOT_YET:
                raise CompileError(f"{where}: {op} is not supported by the engine yet")
            raise CompileError(f"{where}: unsupported operator (supported: {SUPPORTED})")
        handler(where, node, ins, a)

    # ------------------------------------------------------------------------- operators
    def op_Identity(self, where, node, ins, a):
        self.alias[node.output[0]] = self.data(where, node, ins[0] if ins else "")

    op_Dropout = op_Identity

    def op_Conv(self, where, node, ins, a):
        x = self.data(where, node, _input(node, 0))
        shape = self.shape(x)
        if len(shape) != 3:
            raise CompileError(f"{where}: Conv after Flatten is not supported")
        w, b, stride = _layer_weights(where, node, self.consts, a, shape[0], transposed=False)
        kh, kw = w.shape[2:]
        pad = _conv_pads(where, a, shape, kh, kw, stride)
        conv = ConvOp(name=_label(node), w=w, b=b, stride=stride, pad=tuple(int(v) for v in pad),
                      names=[_text(node.name)], groups=int(a.get("group", 1)))
        co, ho, wo = conv.out_shape(shape)
        if ho < 1 or wo < 1:
            raise CompileError(f"{where}: a {kh}x{kw} kernel does not fit the {shape[1]}x{shape[2]} input")
        self.add(where, node, "Conv", x, (co, ho, wo), conv=conv)

    def op_ConvTranspose(self, where, node, ins, a):
        x = self.data(where, node, _input(node, 0))
        shape = self.shape(x)
        if len(shape) != 3:
            raise CompileError(f"{where}: ConvTranspose after Flatten is not supported")
        w, b, stride = _layer_weights(where, node, self.consts, a, shape[0], transposed=True)
        pad, outp = _deconv_pads(where, a, w, shape, stride)
        conv = ConvOp(name=_label(node), w=w, b=b, stride=stride, pad=pad, output_padding=outp,
                      names=[_text(node.name)], kind="ConvTranspose")
        conv.deconv_geometry()                    # the invariants of the IR (checked above)
        self.add(where, node, "ConvTranspose", x, conv.out_shape(shape), conv=conv)

    def op_Resize(self, where, node, ins, a):
        """Nearest-neighbour upsampling by an integer factor ``s`` on both image axes (FPN and
        U-Net heads): a ConvTranspose with an ``s×s`` kernel of ones per channel, stride ``s``, no
        padding, which the deconvolution lowering runs as ``s²`` phase copies (weight 1 and bias 0
        are exact on the engine; the output keeps its input's exponent, see
        :mod:`nibble.host.passes.identity`). The node's own semantics (scales or sizes,
        ``coordinate_transformation_mode``, ``nearest_mode``, ``axes``) are checked with ONNX's
        reference evaluator on a ramp input: only a node that replicates every pixel ``s×s``
        times is accepted; any other (linear or cubic modes, fractional or unequal factors,
        ``align_corners`` …) is a :class:`CompileError` naming the node."""
        x = self.data(where, node, _input(node, 0))
        shape = self.shape(x)
        if len(shape) != 3:
            raise CompileError(f"{where}: Resize after Flatten is not supported")
        mode = a.get("mode", b"nearest")
        mode = mode.decode() if isinstance(mode, bytes) else str(mode)
        if mode != "nearest":
            raise CompileError(f"{where}: mode '{mode}' is not supported (only 'nearest' upsampling by an "
                               f"integer factor)")
        consts = {}
        for i, t in enumerate(ins[1:], start=1):
            if t:
                got = self.consts.get(t)
                if got is None:
                    raise CompileError(f"{where}: input {i} ('{_text(t)}') must be a constant")
                consts[i] = got[0]
        out = self._resize_reference(where, node, ins, consts, shape)
        c, h, w = shape
        if out.shape[2] % h or out.shape[3] % w or out.shape[2] // h != out.shape[3] // w or out.shape[1] != c:
            raise CompileError(f"{where}: a {h}x{w} input resized to {out.shape[2]}x{out.shape[3]} is not "
                               f"supported (only the same integer factor on both image axes)")
        s = out.shape[2] // h
        ramp = np.arange(h * w, dtype=np.float32).reshape(1, 1, h, w)
        if not np.array_equal(out[:, :1], np.repeat(np.repeat(ramp, s, 2), s, 3)):
            cm = a.get("coordinate_transformation_mode", b"half_pixel")
            nm = a.get("nearest_mode", b"round_prefer_floor")
            raise CompileError(f"{where}: coordinate_transformation_mode '{_text(cm)}' with nearest_mode "
                               f"'{_text(nm)}' does not replicate each pixel {s}x{s} times: not supported")
        if s == 1:
            self.alias[node.output[0]] = x
            return
        wt = np.zeros((c, c, s, s))
        wt[np.arange(c), np.arange(c)] = 1.0
        conv = ConvOp(name=_label(node), w=wt, b=np.zeros(c), stride=s, pad=(0, 0, 0, 0), output_padding=(0, 0),
                      names=[_text(node.name)], kind="ConvTranspose")
        conv.deconv_geometry()
        self.add(where, node, "ConvTranspose", x, (c, h * s, w * s), conv=conv)

    def _resize_reference(self, where, node, ins, consts, shape):
        """ONNX's reference evaluator on ``node`` with a (B, C, H, W) ramp (every channel the pixel
        index; B the model's fixed batch size, else 2) and its constant inputs → the float32
        output of the first image."""
        import onnx
        from onnx import helper
        from onnx.reference import ReferenceEvaluator
        c, h, w = shape
        # the model's batch size where it is fixed, else two images: a node that resizes the batch
        # axis (``sizes`` with an N of its own) is caught
        dims = {v.name: _dims(v) for v in self.model.graph.input if v.type.tensor_type.HasField("shape")}
        dims.update(self.known)
        b = (dims.get(_input(node, 0)) or [None])[0]
        b = b if isinstance(b, int) and b >= 1 else 2
        ramp = np.broadcast_to(np.arange(h * w, dtype=np.float32).reshape(1, 1, h, w), (b, c, h, w)).copy()
        n = onnx.NodeProto()
        n.CopyFrom(node)
        names = ["x"] + [f"in{i}" if i in consts else "" for i in range(1, len(ins))]
        del n.input[:]
        n.input.extend(names)
        del n.output[1:]
        n.output[0] = "y"
        feeds = {"x": ramp}
        feeds.update({f"in{i}": v for i, v in consts.items()})
        try:
            out = ReferenceEvaluator(n).run(None, feeds)[0]
        except Exception as e:      # noqa: BLE001 — the evaluator's message names the problem
            raise CompileError(f"{where}: cannot evaluate the Resize: {_first_line(e)}") from e
        if out.ndim != 4 or out.shape[0] != b:
            raise CompileError(f"{where}: the Resize changes the batch size or the rank (a ({b}, {c}, {h}, {w}) "
                               f"input gives {tuple(out.shape)}): not supported")
        return out[:1]

    def op_Gemm(self, where, node, ins, a):
        x = self.data(where, node, _input(node, 0))
        conv = _gemm(where, node, self.consts, a, self.shape(x))
        self.add(where, node, "Gemm", x, (conv.cout,), conv=conv)

    def op_MatMul(self, where, node, ins, a):
        x = self.data(where, node, _input(node, 0))
        shape = self.shape(x)
        got = self.consts.get(ins[1]) if len(ins) > 1 else None
        if len(shape) != 1 or got is None or got[0].ndim != 2:
            raise CompileError(f"{where}: only a vector (N, F) times a constant (F, M) matrix is supported (a fully "
                               "connected layer)")
        w = _float_const(where, self.consts, ins[1], "weights")
        if w.shape[0] != shape[0] or w.shape[1] < 1:
            raise CompileError(f"{where}: weights of shape {w.shape} do not take the {shape[0]} inputs")
        conv = ConvOp(name=_label(node), w=np.ascontiguousarray(w.T).reshape(w.shape[1], shape[0], 1, 1),
                      b=np.zeros(w.shape[1]), names=[_text(node.name)], kind="Gemm")
        self.add(where, node, "Gemm", x, (conv.cout,), conv=conv)

    def op_BatchNormalization(self, where, node, ins, a):
        x = self.data(where, node, _input(node, 0))
        shape = self.shape(x)
        if a.get("training_mode", 0):
            raise CompileError(f"{where}: attribute 'training_mode' {a['training_mode']}: BatchNormalization in "
                               f"training mode (batch statistics) is not supported")
        if any(o for o in node.output[1:]):
            raise CompileError(f"{where}: the running mean/var outputs {[o for o in node.output[1:] if o]} "
                               f"(training mode) are not supported")
        if len(node.input) < 5 or not all(node.input[1:5]):
            raise CompileError(f"{where}: scale, bias, mean and var must be initializers")
        gamma, beta, mean, var = (_float_const(where, self.consts, n, what) for n, what in
                                  zip(ins[1:5], ("scale", "bias", "mean", "var")))
        c = shape[0]
        p = self.graph.tensors[x].producer
        if any(v.shape != (c,) for v in (gamma, beta, mean, var)):
            of = f"the output channels of layer '{p}'" if p else f"the channels of input '{x}'"
            raise CompileError(f"{where}: scale, bias, mean and var must have {c} entries ({of})")
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
        self.add(where, node, "BatchNormalization", x, shape, attrs={"scale": scale, "shift": shift})

    def _activation(self, where, node, ins, attrs):
        x = self.data(where, node, _input(node, 0))
        self.add(where, node, node.op_type, x, self.shape(x), attrs=attrs)

    def op_Relu(self, where, node, ins, a):
        self._activation(where, node, ins, {})

    op_Tanh = op_Sigmoid = op_Relu

    def op_LeakyRelu(self, where, node, ins, a):
        self._activation(where, node, ins, {"slope": np.array([_finite_float(where, a, "alpha", 0.01)])})

    def op_PRelu(self, where, node, ins, a):
        x = self.data(where, node, _input(node, 0))
        s = _float_const(where, self.consts, _input(node, 1) and ins[1], "slope")
        self._activation(where, node, ins, {"slope": _per_channel(where, "slope", ins[1], s, self.shape(x))})

    def op_Clip(self, where, node, ins, a):
        lo, hi = float(a.get("min", -np.inf)), float(a.get("max", np.inf))
        if len(ins) > 1 and ins[1]:
            lo = _scalar_const(where, self.consts, ins[1], "min")
        if len(ins) > 2 and ins[2]:
            hi = _scalar_const(where, self.consts, ins[2], "max")
        if math.isnan(lo) or math.isnan(hi):
            raise CompileError(f"{where}: a Clip bound is NaN")
        if lo > hi:
            raise CompileError(f"{where}: min {lo:g} is larger than max {hi:g}")
        self._activation(where, node, ins, {"lo": lo, "hi": hi})

    def op_Add(self, where, node, ins, a):
        data = [i for i in ins if i and i not in self.consts]
        if len(data) == 2:              # a residual connection (nibble.host.passes.fuse_add)
            x, y = (self.data(where, node, t) for t in data)
            if self.shape(x) != self.shape(y):
                raise CompileError(f"{where}: Add of tensors of shapes {self.shape(x)} and {self.shape(y)} (no "
                                   "broadcasting between feature tensors)")
            if len(self.shape(x)) != 3:
                raise CompileError(f"{where}: Add of two vectors is not supported (only of feature maps)")
            self.add(where, node, "Add", [x, y], self.shape(x))
            return
        if len(data) != 1:
            raise CompileError(f"{where}: Add of more than two tensors, or of constants only, is not supported")
        x = self.data(where, node, data[0])
        k = ins[1] if ins[0] == x else ins[0]
        v = _float_const(where, self.consts, k, "addend")
        bias = _per_channel(where, "addend", k, v, self.shape(x))
        self.add(where, node, "Add", x, self.shape(x), attrs={"bias": bias})

    def op_Concat(self, where, node, ins, a):
        xs = [self.data(where, node, t) for t in ins]
        shapes = [self.shape(x) for x in xs]
        axis = int(a.get("axis", 1))
        if any(len(sh) != 3 for sh in shapes) or axis not in (1, -3):
            raise CompileError(f"{where}: only a Concat of feature maps over the channel axis 1 is supported (axis "
                               f"{axis}, shapes {shapes})")
        if len({sh[1:] for sh in shapes}) != 1:
            raise CompileError(f"{where}: the inputs have different map sizes {[sh[1:] for sh in shapes]}")
        self.add(where, node, "Concat", xs, (sum(sh[0] for sh in shapes), *shapes[0][1:]))

    def op_GlobalAveragePool(self, where, node, ins, a):
        x = self.data(where, node, _input(node, 0))
        shape = self.shape(x)
        if len(shape) != 3:
            raise CompileError(f"{where}: GlobalAveragePool of a vector is not supported")
        self.add(where, node, "GlobalAveragePool", x, (shape[0], 1, 1))

    def op_AveragePool(self, where, node, ins, a):
        raise CompileError(f"{where}: AveragePool is not supported by the engine (only a GlobalAveragePool at a "
                           "graph output or in front of a Gemm)")

    def op_Slice(self, where, node, ins, a):
        x = self.data(where, node, _input(node, 0))
        shape = self.shape(x)
        vals = [_const_ints(where, self.consts, ins[k], what) if len(ins) > k and ins[k] else None
                for k, what in ((1, "starts"), (2, "ends"), (3, "axes"), (4, "steps"))]
        starts, ends, axes, steps = vals
        r = len(shape) + 1
        axes = list(range(len(starts))) if axes is None else [v + r if v < 0 else v for v in axes]
        steps = [1] * len(axes) if steps is None else steps
        spec = {ax: (st, en, sp) for ax, st, en, sp in zip(axes, starts, ends, steps)}
        ok = r == 4 and sorted(spec) == [2, 3] and len({spec[2][2], spec[3][2]}) == 1 and spec[2][2] >= 1 \
            and all(spec[ax][0] == 0 and spec[ax][1] >= shape[ax - 1] for ax in (2, 3))
        if not ok:
            raise CompileError(f"{where}: only a Slice x[:, :, ::s, ::s] of a feature map (rows and columns from 0 "
                               f"to the end with one step s) is supported (starts {starts}, ends {ends}, axes {axes}, "
                               f"steps {steps})")
        s = int(spec[2][2])
        self.add(where, node, "Slice", x, (shape[0], -(-shape[1] // s), -(-shape[2] // s)), attrs={"step": s})

    def op_MaxPool(self, where, node, ins, a):
        x = self.data(where, node, _input(node, 0))
        shape = self.shape(x)
        if len(shape) != 3:
            raise CompileError(f"{where}: MaxPool after Flatten is not supported")
        pool = _maxpool_window(where, a, node, shape)
        from ...sim.golden import pool_out_size
        ho, wo = pool_out_size(shape[1], shape[2], pool)
        if ho < 1 or wo < 1:
            raise CompileError(f"{where}: the max-pool of the {shape[1]}x{shape[2]} map is empty")
        if len(node.output) > 1 and node.output[1]:
            raise CompileError(f"{where}: the Indices output '{node.output[1]}' is not supported")
        self.add(where, node, "MaxPool", x, (shape[0], ho, wo), attrs={"pool": pool})

    def op_Pad(self, where, node, ins, a):
        x = self.data(where, node, _input(node, 0))
        shape = self.shape(x)
        mode = a.get("mode", b"constant")
        mode = mode.decode(errors="replace") if isinstance(mode, bytes) else str(mode)
        if mode != "constant":
            raise CompileError(f"{where}: mode '{mode}' is not supported (only constant zero padding)")
        if "pads" in a:
            pads = [int(v) for v in a["pads"]]
        else:
            pads = _const_ints(where, self.consts, ins[1] if len(ins) > 1 else "", "pads")
        value = float(a.get("value", 0.0))
        if len(ins) > 2 and ins[2]:
            got = self.consts.get(ins[2])
            if got is None:
                raise CompileError(f"{where}: the constant_value '{ins[2]}' must be a constant")
            value = float(np.asarray(got[0], np.float64).reshape(-1)[0]) if got[0].size else 0.0
        if value != 0.0:
            raise CompileError(f"{where}: padding with {value:g} is not supported (only zeros)")
        r = len(shape) + 1
        axes = list(range(r))
        if len(ins) > 3 and ins[3]:
            axes = [v + r if v < 0 else v for v in _const_ints(where, self.consts, ins[3], "axes")]
        if len(pads) != 2 * len(axes) or any(not 0 <= v < r for v in axes):
            raise CompileError(f"{where}: pads {pads} do not match the axes {axes} of the rank-{r} input")
        begin, end = [0] * r, [0] * r
        for i, ax in enumerate(axes):
            begin[ax], end[ax] = pads[i], pads[i + len(axes)]
        if r != 4 or begin[0] or end[0]:
            raise CompileError(f"{where}: only padding of the channels, rows and columns of a feature map is "
                               f"supported (pads {pads})")
        if min(begin + end) < 0:
            raise CompileError(f"{where}: negative pads {pads} (cropping) are not supported")
        t, b, l, rr = begin[2], end[2], begin[3], end[3]
        self.add(where, node, "Pad", x, (shape[0] + begin[1] + end[1], shape[1] + t + b, shape[2] + l + rr),
                 attrs={"pads": (t, b, l, rr), "channels": (begin[1], end[1])})

    def op_Flatten(self, where, node, ins, a):
        x = self.data(where, node, _input(node, 0))
        if a.get("axis", 1) != 1:
            raise CompileError(f"{where}: only axis=1 is supported")
        self.add(where, node, "Flatten", x, (int(np.prod(self.shape(x))),))

    def op_Reshape(self, where, node, ins, a):
        x = self.data(where, node, _input(node, 0))
        got = self.consts.get(ins[1]) if len(ins) > 1 and ins[1] else None
        target = got[0].reshape(-1) if got is not None and got[1] == _INT64 else None
        size = int(np.prod(self.shape(x)))
        batch_ok = (-1, 1) if a.get("allowzero", 0) else (-1, 0, 1)
        if target is None or len(target) != 2 or int(target[1]) not in (-1, size) \
                or int(target[0]) not in batch_ok or (int(target[0]), int(target[1])) == (-1, -1):
            raise CompileError(f"{where}: only a reshape to (N, -1) is supported"
                               + (f" (shape {target.tolist()})" if target is not None else ""))
        self.add(where, node, "Reshape", x, (size,))

    def op_Transpose(self, where, node, ins, a):
        x = self.data(where, node, _input(node, 0))
        shape = self.shape(x)
        r = len(shape) + 1
        perm = [int(v) for v in a.get("perm", list(range(r))[::-1])]
        if sorted(perm) != list(range(r)):
            raise CompileError(f"{where}: perm {perm} is not a permutation of the {r} axes")
        if perm[0] != 0:
            raise CompileError(f"{where}: perm {perm} moves the batch axis; not supported")
        p = tuple(v - 1 for v in perm[1:])
        self.add(where, node, "Transpose", x, tuple(shape[i] for i in p), attrs={"perm": p})

    def op_Softmax(self, where, node, ins, a):
        x = self.data(where, node, _input(node, 0))
        shape = self.shape(x)
        r = len(shape) + 1
        given = int(a.get("axis", -1 if (self.opset or 13) >= 13 else 1))
        axis = given + r if given < 0 else given
        spatial = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        if (self.opset or 13) < 13 and axis == 1 and spatial > 1:
            raise CompileError(f"{where}: Softmax(axis=1) in operator set {self.opset} runs over all C x H x W "
                               "values of an image, not over the channels; not supported")
        if axis != 1:
            raise CompileError(f"{where}: Softmax over axis {given} of the rank-{r} input is not supported (only "
                               "over the channel axis 1)")
        self.add(where, node, "Softmax", x, shape)

    def op_ArgMax(self, where, node, ins, a):
        x = self.data(where, node, _input(node, 0))
        shape = self.shape(x)
        r = len(shape) + 1
        axis = int(a.get("axis", 0))
        axis = axis + r if axis < 0 else axis
        if axis != 1 or not a.get("keepdims", 1) or a.get("select_last_index", 0):
            raise CompileError(f"{where}: only ArgMax over the channel axis 1 with keepdims=1 and "
                               "select_last_index=0 is supported")
        self.add(where, node, "ArgMax", x, (1, *shape[1:]))

    # ------------------------------------------------------------------------- the outputs
    def finish(self):
        g, graph = self.model.graph, self.graph
        for o in g.output:
            name = _text(o.name)
            t = self.resolve(o.name)
            if t in self.consts:
                raise CompileError(f"graph output '{name}' is a constant")
            if t not in graph.tensors:
                raise CompileError(f"graph output '{name}' is not written by any node")
            if any(out.name == name for out in graph.outputs):
                raise CompileError(f"graph output '{name}' is listed twice")
            if t in graph.inputs:
                raise CompileError(f"graph output '{name}' is the graph input '{t}' (nothing to compute)")
            graph.add_output(name, t)
        # an output written through Identity / Dropout: the tensor takes the output's name
        for out in graph.outputs:
            if out.tensor != out.name and out.name not in graph.tensors and \
                    sum(x.tensor == out.tensor for x in graph.outputs) == 1:
                graph.rename_tensor(out.tensor, out.name)
        graph.prune()
        graph.validate()


def import_graph(model, name="the model"):
    """Translate a validated ONNX ``ModelProto`` into a :class:`~nibble.host.graph.Graph`.

    One node per ONNX operator (see the module docstring), constants folded, Identity and
    Dropout removed, nodes no output depends on dropped. The model is not validated here (see
    :func:`validate_model`, which ``compile_model`` runs first), but every field read is checked.
    Where the model carries the shapes ONNX inference gives (``value_info``), each node's output
    shape must equal them.

    :returns: the graph (``Graph.validate`` holds).
    :raises CompileError: for unsupported operators or attributes, attributes of the wrong type,
        non-finite or non-float weights, biases, slopes and BatchNormalization parameters,
        constants that cannot be folded, or shapes that do not fit, naming the node (and
        attribute or initializer).
    """
    return _Importer(model, name).run()
