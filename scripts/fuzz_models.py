#!/usr/bin/env python3
"""Fuzz corpus for the compiler (issue #9, "no wrong answer without an error").

Usage:
    python scripts/fuzz_models.py [--seed S] [-n N] -o DIR        # write the cases as DIR/<name>.onnx
    python scripts/fuzz_models.py [--seed S] [-n N] --run [--start I] [--count K] [--time-limit T]
                                                                # compile them; one JSON line per case

Every case is a mutation of one of the shipped models (``models/digits/digits_cnn.onnx``,
``models/sr/fsrcnn_x2.onnx``, ``models/dcgan/dcgan_k4s2.onnx``), taken in turn:

* byte level (about 40 %) on the serialized model: bit flips, truncation, inserted, deleted,
  duplicated and overwritten bytes;
* structured (1 to 3 stacked): attributes given the wrong type, odd values (negative, zero,
  huge, NaN/inf, wrong length), added or removed; node inputs dropped, duplicated or renamed;
  node outputs and graph outputs renamed, added or removed; initializer data types and shapes
  changed (converted or only relabelled), NaN/inf/1e30/1e-30/zero values inserted; nodes
  swapped, deleted, duplicated, given other or unknown operator types or domains; nodes inserted
  into the chain (Identity, Dropout, activations, MaxPool variants, Flatten, Reshape,
  BatchNormalization, unsupported operators); initializers turned into Constant nodes; negative,
  zero or huge pads, strides, kernel shapes, dilations, output padding; graph input shapes with
  zero, negative, unknown or huge dimensions or another rank or type; Gemm biases of shape
  (N, 1); BatchNormalization training mode and negative variances; other operator sets and IR
  versions.

Case ``i`` depends only on ``(seed, i)`` (its own ``numpy.random.default_rng([seed, i])``), so
any range of cases can be regenerated alone. :func:`cases` yields ``(name, model_bytes)``;
:func:`check_case` compiles one case (from a file, with two seeded random calibration inputs) and
classifies the result: "compiled", "rejected" (a ``CompileError``) or "failed": any other
exception (a traceback), a compiled program with non-finite or out-of-range constants (or that
``Program.validate`` refuses), a model compiled although a constant it reads is not finite, or a
compiled program whose golden output is not ONNX Runtime's (:func:`compare_with_ort`: other
shapes, ORT unable to run the model, or an SNR below 3 dB where the shipped models are at 9 to
35 dB). ``tests/test_fuzz_models.py`` runs the corpus with a time limit per case.
"""
import argparse
import copy
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("models/digits/digits_cnn.onnx", "models/sr/fsrcnn_x2.onnx", "models/dcgan/dcgan_k4s2.onnx")
DEFAULT_SEED = 9
DEFAULT_N = 2000
#: Share of byte-level mutations; the rest are structured.
BYTE_SHARE = 0.4

INTS = [-(1 << 63), -(1 << 31), -1000, -3, -2, -1, 0, 1, 2, 3, 4, 5, 7, 8, 9, 16, 255, 256, 1000, 65535, 65536,
        (1 << 31) - 1, 1 << 31, 1 << 40, (1 << 62)]
SMALL_INTS = [-1, 0, 1, 2, 3, 4]
FLOATS = [math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-45, 1e-30, 1e-10, 0.5, 1.0, -1.0, 2.0, 1e10, 1e30,
          3.4e38, -1e30]
STRINGS = [b"NOTSET", b"VALID", b"SAME_UPPER", b"SAME_LOWER", b"", b"bogus", b"\xff\xfe"]
OPS = ["Conv", "ConvTranspose", "Gemm", "BatchNormalization", "Relu", "Tanh", "Sigmoid", "MaxPool", "Flatten",
       "Reshape", "Identity", "Dropout", "AveragePool", "Softmax", "Add", "LeakyRelu", "Constant", "NoSuchOp", ""]


class _Skip(Exception):
    """A mutation that does not apply to this model (another one is drawn)."""


def _base_models(root=ROOT):
    import onnx
    return [(Path(p).parent.name, onnx.load(str(Path(root) / p))) for p in MODELS]


def _pick(rng, seq):
    if len(seq) == 0:
        raise _Skip
    return seq[int(rng.integers(len(seq)))]


def _value_for(rng, attr_type, like=None):
    """A random (often odd) Python value for an attribute of ONNX type ``attr_type``."""
    from onnx import AttributeProto as A
    n = len(like) if like is not None and hasattr(like, "__len__") and not isinstance(like, bytes) else 4
    if rng.random() < 0.2:
        n = int(_pick(rng, [0, 1, 2, 3, 5, 8]))
    if attr_type == A.INT:
        return int(_pick(rng, INTS if rng.random() < 0.5 else SMALL_INTS))
    if attr_type == A.FLOAT:
        return float(_pick(rng, FLOATS))
    if attr_type == A.STRING:
        return bytes(_pick(rng, STRINGS))
    if attr_type == A.INTS:
        pool = INTS if rng.random() < 0.5 else SMALL_INTS
        return [int(_pick(rng, pool)) for _ in range(n)]
    if attr_type == A.FLOATS:
        return [float(_pick(rng, FLOATS)) for _ in range(n)]
    if attr_type == A.STRINGS:
        return [bytes(_pick(rng, STRINGS)) for _ in range(n)]
    if attr_type == A.TENSOR:
        from onnx import numpy_helper
        return numpy_helper.from_array(np.array([float(_pick(rng, FLOATS))], np.float32))
    raise _Skip


def _set_attr(node, name, value, attr_type=None):
    from onnx import helper
    keep = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(keep)
    a = helper.make_attribute(name, value, attr_type=attr_type) if attr_type is not None else \
        helper.make_attribute(name, value)
    node.attribute.append(a)


def _nodes(m, with_attrs=False, ops=None):
    return [n for n in m.graph.node if (not with_attrs or len(n.attribute)) and (ops is None or n.op_type in ops)]


def _chain_tensors(m):
    return [m.graph.input[0].name] + [o for n in m.graph.node for o in n.output]


# ----------------------------------------------------------------------------- structured mutations

def m_attr_type(rng, m):
    """An attribute re-encoded as another type (INT as FLOAT, a list where a scalar belongs …)."""
    from onnx import AttributeProto as A, helper
    node = _pick(rng, _nodes(m, with_attrs=True))
    a = _pick(rng, list(node.attribute))
    old = helper.get_attribute_value(a)
    new_t = int(_pick(rng, [t for t in (A.INT, A.FLOAT, A.STRING, A.INTS, A.FLOATS, A.TENSOR) if t != a.type]))
    if new_t == A.FLOAT and isinstance(old, int):
        val = float(old)
    elif new_t == A.INT and isinstance(old, float):
        val = int(old) if math.isfinite(old) else 1
    elif new_t == A.INTS and isinstance(old, (int, float)):
        val = [int(old) if math.isfinite(old) else 0]
    elif new_t == A.INT and isinstance(old, list) and old and isinstance(old[0], int):
        val = old[0]
    elif new_t == A.FLOATS and isinstance(old, list) and all(isinstance(v, int) for v in old):
        val = [float(v) for v in old]
    else:
        val = _value_for(rng, new_t, old)
    _set_attr(node, a.name, val, new_t)
    return f"attr_type:{node.op_type}.{a.name}"


def m_attr_value(rng, m):
    """An attribute given an odd value of its own type."""
    from onnx import helper
    node = _pick(rng, _nodes(m, with_attrs=True))
    a = _pick(rng, list(node.attribute))
    _set_attr(node, a.name, _value_for(rng, a.type, helper.get_attribute_value(a)), a.type)
    return f"attr_value:{node.op_type}.{a.name}"


def m_attr_add(rng, m):
    """An attribute the node does not have, from its schema (or an unknown one)."""
    import onnx.defs
    node = _pick(rng, list(m.graph.node))
    try:
        schema = onnx.defs.get_schema(node.op_type, 17, "")
        names = [(k, int(v.type)) for k, v in schema.attributes.items()]
    except Exception:
        names = []
    have = {a.name for a in node.attribute}
    names = [x for x in names if x[0] not in have] + [("bogus_attr", 2)]
    name, t = _pick(rng, names)
    _set_attr(node, name, _value_for(rng, t), t)
    return f"attr_add:{node.op_type}.{name}"


def m_attr_del(rng, m):
    node = _pick(rng, _nodes(m, with_attrs=True))
    i = int(rng.integers(len(node.attribute)))
    name = node.attribute[i].name
    del node.attribute[i]
    return f"attr_del:{node.op_type}.{name}"


_GEOMETRY = {"Conv": ["pads", "strides", "kernel_shape", "dilations", "auto_pad", "group"],
             "ConvTranspose": ["pads", "strides", "kernel_shape", "dilations", "auto_pad", "group", "output_padding",
                               "output_shape"],
             "MaxPool": ["pads", "strides", "kernel_shape", "dilations", "auto_pad", "ceil_mode", "storage_order"]}


def _free_shapes(m):
    """Forget the declared output and intermediate shapes (so that a new geometry can be valid)."""
    for d in m.graph.output[0].type.tensor_type.shape.dim:
        d.dim_param = "D"
    del m.graph.value_info[:]


def m_geometry(rng, m):
    """Pads, strides, kernel shapes, dilations, output padding, auto_pad: plausible small values
    (often valid), or negative, zero, huge, wrong length; the declared output shape is usually
    forgotten so that a valid new geometry compiles."""
    from onnx import AttributeProto as A
    node = _pick(rng, _nodes(m, ops=tuple(_GEOMETRY)))
    name = _pick(rng, _GEOMETRY[node.op_type])
    n = 4 if name == "pads" else 2
    if rng.random() < 0.7:
        _free_shapes(m)
    if name == "auto_pad":
        _set_attr(node, name, bytes(_pick(rng, STRINGS)), A.STRING)
        if rng.random() < 0.7:
            keep = [a for a in node.attribute if a.name != "pads"]
            del node.attribute[:]
            node.attribute.extend(keep)
    elif name in ("group", "ceil_mode", "storage_order"):
        _set_attr(node, name, int(_pick(rng, [-1, 0, 1, 1, 2, 3, 16, 1 << 40])), A.INT)
    else:
        r = rng.random()
        if r < 0.5:                                    # plausible
            hi = {"pads": 5, "strides": 4, "kernel_shape": 6, "dilations": 3, "output_padding": 3,
                  "output_shape": 70}[name]
            v = [int(rng.integers(0 if name in ("pads", "output_padding") else 1, hi)) for _ in range(n)]
            if name != "pads" and rng.random() < 0.7:
                v = [v[0]] * n
        elif r < 0.65:
            v = [int(_pick(rng, INTS))] * n
        elif r < 0.85:
            v = [int(_pick(rng, INTS)) for _ in range(n)]
        else:
            v = [int(rng.integers(0, 4)) for _ in range(int(_pick(rng, [0, 1, 3, 5, 8])))]
        _set_attr(node, name, v, A.INTS)
    return f"geometry:{node.op_type}.{name}"


def m_input_edit(rng, m):
    """A node input dropped, duplicated, emptied or pointed at another (or no) tensor."""
    node = _pick(rng, list(m.graph.node))
    ins = list(node.input)
    how = _pick(rng, ["drop", "dup", "empty", "rename", "missing", "swap"])
    if how == "drop" and ins:
        del ins[int(rng.integers(len(ins)))]
    elif how == "dup" and ins:
        ins.insert(int(rng.integers(len(ins) + 1)), _pick(rng, ins))
    elif how == "empty" and ins:
        ins[int(rng.integers(len(ins)))] = ""
    elif how == "rename" and ins:
        ins[int(rng.integers(len(ins)))] = _pick(rng, _chain_tensors(m) + [t.name for t in m.graph.initializer])
    elif how == "missing" and ins:
        ins[int(rng.integers(len(ins)))] = "no_such_tensor"
    elif how == "swap" and len(ins) > 1:
        i, j = rng.choice(len(ins), 2, replace=False)
        ins[i], ins[j] = ins[j], ins[i]
    else:
        raise _Skip
    del node.input[:]
    node.input.extend(ins)
    return f"input_{how}:{node.op_type}"


def m_output_edit(rng, m):
    """Node outputs or graph outputs renamed, added or removed."""
    from onnx import TensorProto, helper
    g = m.graph
    how = _pick(rng, ["node_rename", "node_extra", "graph_extra", "graph_drop", "graph_rename", "graph_type",
                      "graph_shape"])
    if how == "node_rename":
        node = _pick(rng, list(g.node))
        node.output[0] = _pick(rng, _chain_tensors(m) + ["fresh"])
    elif how == "node_extra":
        _pick(rng, list(g.node)).output.append(_pick(rng, ["extra_out", g.output[0].name, ""]))
    elif how == "graph_extra":
        g.output.append(helper.make_tensor_value_info(_pick(rng, _chain_tensors(m)), TensorProto.FLOAT, None))
    elif how == "graph_drop":
        del g.output[:]
    elif how == "graph_rename":
        g.output[0].name = _pick(rng, _chain_tensors(m) + ["nowhere"])
    elif how == "graph_type":
        g.output[0].type.tensor_type.elem_type = int(_pick(rng, [0, 6, 7, 10, 11, 99]))
    else:
        dims = g.output[0].type.tensor_type.shape.dim
        if not len(dims):
            raise _Skip
        dims[int(rng.integers(len(dims)))].dim_value = int(_pick(rng, [0, 1, 2, 7, 1000]))
    return f"output_{how}"


def _init(rng, m):
    return _pick(rng, list(m.graph.initializer))


def m_init_dtype(rng, m):
    """An initializer converted to another data type, or only relabelled (its bytes kept)."""
    from onnx import TensorProto, numpy_helper
    t = _init(rng, m)
    new = int(_pick(rng, [TensorProto.INT64, TensorProto.INT32, TensorProto.DOUBLE, TensorProto.FLOAT16,
                          TensorProto.BOOL, TensorProto.UINT8, TensorProto.BFLOAT16, TensorProto.STRING, 0, 99]))
    if rng.random() < 0.5 and new not in (0, 99, TensorProto.STRING, TensorProto.BFLOAT16):
        arr = numpy_helper.to_array(t)
        np_t = {TensorProto.INT64: np.int64, TensorProto.INT32: np.int32, TensorProto.DOUBLE: np.float64,
                TensorProto.FLOAT16: np.float16, TensorProto.BOOL: np.bool_, TensorProto.UINT8: np.uint8}[new]
        with np.errstate(all="ignore"):
            t.CopyFrom(numpy_helper.from_array(np.nan_to_num(arr).astype(np_t), t.name))
        return f"init_dtype_convert:{t.name}"
    t.data_type = new
    return f"init_dtype_relabel:{t.name}"


def m_init_shape(rng, m):
    """An initializer reshaped (data kept where the size allows, else dims only changed)."""
    from onnx import numpy_helper
    t = _init(rng, m)
    arr = numpy_helper.to_array(t)
    how = _pick(rng, ["flat", "extra_dim", "transpose", "zero", "dims_only", "column", "truncate"])
    if how == "flat":
        arr = arr.reshape(-1)
    elif how == "extra_dim":
        arr = arr[None]
    elif how == "transpose":
        arr = arr.T
    elif how == "zero":
        arr = np.zeros((0,) + arr.shape[1:], arr.dtype)
    elif how == "column":
        arr = arr.reshape(-1, 1)
    elif how == "truncate":
        arr = arr.reshape(-1)[:max(1, arr.size // 2)]
    if how == "dims_only":
        if not len(t.dims):
            raise _Skip
        t.dims[int(rng.integers(len(t.dims)))] = int(_pick(rng, [0, 1, 2, 3, 1 << 20, -1]))
    else:
        t.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(arr), t.name))
    return f"init_shape_{how}:{t.name}"


def m_init_values(rng, m):
    """NaN, ±inf, ±1e30, 1e-30, 0 or 3.4e38 written into some or all of an initializer's values."""
    from onnx import numpy_helper
    floats = [t for t in m.graph.initializer if t.data_type == 1]
    t = _pick(rng, floats)
    arr = numpy_helper.to_array(t).astype(np.float32).copy()
    if arr.size == 0:
        raise _Skip
    v = np.float32(_pick(rng, [math.nan, math.inf, -math.inf, 1e30, -1e30, 1e-30, 0.0, 3.4e38, -1.0, 1e-45]))
    flat = arr.reshape(-1)
    if rng.random() < 0.3:
        flat[:] = v
    else:
        flat[rng.integers(0, flat.size, int(rng.integers(1, 4)))] = v
    t.CopyFrom(numpy_helper.from_array(arr, t.name))
    return f"init_values:{t.name}={float(v):g}"


def m_node_order(rng, m):
    g = m.graph
    if len(g.node) < 2:
        raise _Skip
    i, j = (int(v) for v in rng.choice(len(g.node), 2, replace=False))
    a, b = copy.deepcopy(g.node[i]), copy.deepcopy(g.node[j])
    g.node[i].CopyFrom(b)
    g.node[j].CopyFrom(a)
    return "node_swap"


def m_op_type(rng, m):
    node = _pick(rng, list(m.graph.node))
    if rng.random() < 0.15:
        node.domain = _pick(rng, ["com.microsoft", "ai.onnx.ml", "custom"])
        return f"domain:{node.op_type}"
    old = node.op_type
    node.op_type = _pick(rng, OPS)
    return f"op_type:{old}->{node.op_type}"


def m_node_delete(rng, m):
    g = m.graph
    i = int(rng.integers(len(g.node)))
    del g.node[i]
    if rng.random() < 0.7 and i < len(g.node) and i > 0:    # reconnect the chain
        g.node[i].input[0] = g.node[i - 1].output[0]
    return "node_delete"


def m_node_dup(rng, m):
    g = m.graph
    i = int(rng.integers(len(g.node)))
    g.node.insert(i + 1, copy.deepcopy(g.node[i]))
    return "node_dup"


def _insert(m, i, node):
    """Insert ``node`` (one input, one output) into the chain before node ``i``."""
    g = m.graph
    src = g.node[i - 1].output[0] if i > 0 else g.input[0].name
    node.input[0] = src
    node.output[0] = f"ins_{len(g.node)}"
    if i < len(g.node):
        for k, inp in enumerate(g.node[i].input):
            if inp == src:
                g.node[i].input[k] = node.output[0]
    else:
        g.output[0].name = node.output[0]
    g.node.insert(i, node)


def m_insert_node(rng, m):
    """A node inserted into the chain (pass-through, activation, pooling, reshaping, BN, unsupported)."""
    from onnx import TensorProto, helper, numpy_helper
    g = m.graph
    i = int(rng.integers(len(g.node) + 1))
    kind = _pick(rng, ["Identity", "Dropout", "Dropout_train", "Relu", "Tanh", "Sigmoid", "MaxPool", "MaxPool_same",
                       "MaxPool_ceil", "MaxPool_pads", "Flatten", "Reshape", "BatchNormalization", "BN_train",
                       "Softmax", "AveragePool", "LeakyRelu"])
    name = f"fuzz_{kind.lower()}"
    if kind == "Dropout":
        node = helper.make_node("Dropout", ["?"], ["?"], name=name)
    elif kind == "Dropout_train":
        t = f"{name}_mode"
        g.initializer.append(numpy_helper.from_array(np.array(bool(rng.random() < 0.7)), t))
        g.initializer.append(numpy_helper.from_array(np.array(0.5, np.float32), f"{name}_ratio"))
        node = helper.make_node("Dropout", ["?", f"{name}_ratio", t], ["?"], name=name)
    elif kind.startswith("MaxPool"):
        extra = {"MaxPool": {}, "MaxPool_same": {"auto_pad": _pick(rng, ["SAME_UPPER", "SAME_LOWER", "VALID"])},
                 "MaxPool_ceil": {"ceil_mode": 1}, "MaxPool_pads": {"pads": [0, 0, 1, 1]}}[kind]
        node = helper.make_node("MaxPool", ["?"], ["?"], name=name, kernel_shape=[2, 2], strides=[2, 2], **extra)
    elif kind == "Reshape":
        t = f"{name}_shape"
        g.initializer.append(numpy_helper.from_array(
            np.array(_pick(rng, [[1, -1], [0, -1], [-1, 1], [2, -1], [-1], [1, 1, -1]]), np.int64), t))
        node = helper.make_node("Reshape", ["?", t], ["?"], name=name)
    elif kind in ("BatchNormalization", "BN_train"):
        c = int(_pick(rng, [1, 3, 12, 16, 32, 64]))
        ps = []
        for p, v in (("s", rng.normal(1, 0.1, c)), ("b", rng.normal(0, 0.1, c)), ("m", rng.normal(0, 0.1, c)),
                     ("v", rng.uniform(-0.5, 2, c) if rng.random() < 0.3 else rng.uniform(0.5, 2, c))):
            g.initializer.append(numpy_helper.from_array(v.astype(np.float32), f"{name}_{p}"))
            ps.append(f"{name}_{p}")
        outs = ["?", f"{name}_rm", f"{name}_rv"] if kind == "BN_train" else ["?"]
        node = helper.make_node("BatchNormalization", ["?", *ps], outs, name=name,
                                **({"training_mode": 1} if kind == "BN_train" else {}))
    else:
        node = helper.make_node(kind, ["?"], ["?"], name=name)
    _insert(m, i, node)
    if kind == "Softmax" or kind == "LeakyRelu":
        g.value_info.append(helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, None))
    return f"insert:{kind}@{i}"


def m_constant(rng, m):
    """An initializer replaced by a Constant node (value, value_floats, value_float, value_ints)."""
    from onnx import helper, numpy_helper
    g = m.graph
    used = {i for n in g.node for i in n.input}
    inits = [t for t in g.initializer if t.name in used]
    t = _pick(rng, inits)
    arr = numpy_helper.to_array(t)
    how = _pick(rng, ["value", "value", "value_floats", "value_float", "value_ints", "value_int", "late"])
    if how in ("value", "late"):
        node = helper.make_node("Constant", [], [t.name], name=f"const_{t.name}", value=copy.deepcopy(t))
    elif how == "value_floats":
        node = helper.make_node("Constant", [], [t.name], name=f"const_{t.name}",
                                value_floats=[float(v) for v in arr.reshape(-1)])
    elif how == "value_float":
        node = helper.make_node("Constant", [], [t.name], name=f"const_{t.name}", value_float=float(arr.reshape(-1)[0])
                                if arr.size else 0.0)
    elif how == "value_ints":
        node = helper.make_node("Constant", [], [t.name], name=f"const_{t.name}",
                                value_ints=[int(v) for v in np.nan_to_num(arr).reshape(-1)])
    else:
        node = helper.make_node("Constant", [], [t.name], name=f"const_{t.name}",
                                value_int=int(np.nan_to_num(arr).reshape(-1)[0]) if arr.size else 0)
    keep = [x for x in g.initializer if x.name != t.name]
    del g.initializer[:]
    g.initializer.extend(keep)
    if how == "late":          # after its first use: not topologically sorted
        first = min(k for k, n in enumerate(g.node) if t.name in n.input)
        g.node.insert(first + 1, node)
    else:
        g.node.insert(0, node)
    return f"constant_{how}:{t.name}"


def m_graph_input(rng, m):
    """The graph input's dimensions (zero, negative, unknown, huge), rank or element type."""
    inp = m.graph.input[0]
    tt = inp.type.tensor_type
    how = _pick(rng, ["dim", "dim", "param", "rank_drop", "rank_add", "elem_type", "no_shape"])
    if how == "dim":
        d = tt.shape.dim[int(rng.integers(len(tt.shape.dim)))]
        d.dim_value = int(_pick(rng, [0, -1, 1, 2, 3, 7, 9, 31, 33, 64, 1000, 1 << 20, 1 << 40]))
    elif how == "param":
        d = tt.shape.dim[int(rng.integers(len(tt.shape.dim)))]
        d.dim_param = "D"
    elif how == "rank_drop":
        del tt.shape.dim[int(rng.integers(len(tt.shape.dim)))]
    elif how == "rank_add":
        tt.shape.dim.add().dim_value = int(_pick(rng, [1, 2]))
    elif how == "elem_type":
        tt.elem_type = int(_pick(rng, [0, 6, 7, 9, 10, 11, 16, 99]))
    else:
        tt.ClearField("shape")
    return f"graph_input_{how}"


def m_gemm_bias(rng, m):
    """A Gemm bias reshaped to (N, 1), (1, N), (N,), (), (2, N)."""
    from onnx import numpy_helper
    g = m.graph
    gemms = [n for n in g.node if n.op_type == "Gemm" and len(n.input) > 2]
    node = _pick(rng, gemms)
    t = next(t for t in g.initializer if t.name == node.input[2])
    arr = numpy_helper.to_array(t).reshape(-1)
    n = arr.size
    shape = _pick(rng, [(n, 1), (1, n), (n,), (1, 1), (2, n)])
    arr = np.resize(arr, shape) if shape != (1, 1) else arr[:1].reshape(1, 1)
    t.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(arr), t.name))
    return f"gemm_bias:{shape}"


def m_bn(rng, m):
    """BatchNormalization: training mode, negative variance, negative or NaN epsilon, momentum."""
    from onnx import AttributeProto as A, numpy_helper
    g = m.graph
    node = _pick(rng, _nodes(m, ops=("BatchNormalization",)))
    how = _pick(rng, ["training", "training3", "var_neg", "eps", "momentum"])
    if how == "training":
        _set_attr(node, "training_mode", 1, A.INT)
    elif how == "training3":
        _set_attr(node, "training_mode", 1, A.INT)
        node.output.extend([f"{node.name}_rm", f"{node.name}_rv"])
    elif how == "var_neg":
        t = next(t for t in g.initializer if t.name == node.input[4])
        arr = numpy_helper.to_array(t).copy()
        arr.reshape(-1)[int(rng.integers(arr.size))] = -float(_pick(rng, [1e-6, 0.5, 1e30]))
        t.CopyFrom(numpy_helper.from_array(arr, t.name))
    elif how == "eps":
        _set_attr(node, "epsilon", float(_pick(rng, [-1.0, -1e-5, 0.0, math.nan, math.inf, 1e30])), A.FLOAT)
    else:
        _set_attr(node, "momentum", float(_pick(rng, FLOATS)), A.FLOAT)
    return f"bn_{how}"


def m_opset(rng, m):
    how = _pick(rng, ["opset", "opset", "ir", "domain", "dup"])
    if how == "opset":
        m.opset_import[0].version = int(_pick(rng, [1, 6, 7, 9, 10, 11, 13, 14, 15, 18, 21, 23, 26, 40]))
    elif how == "ir":
        m.ir_version = int(_pick(rng, [0, 1, 3, 4, 7, 9, 10, 11, 12, 99]))
    elif how == "domain":
        m.opset_import[0].domain = "ai.onnx.ml"
    else:
        m.opset_import.add().CopyFrom(m.opset_import[0])
    return f"opset_{how}"


def m_names(rng, m):
    """Node names emptied, duplicated or made odd."""
    node = _pick(rng, list(m.graph.node))
    node.name = _pick(rng, ["", m.graph.node[0].name, "ünïcödé 名", "a" * 300, "x"])
    return "names"


STRUCTURED = [(m_attr_type, 3), (m_attr_value, 3), (m_attr_add, 2), (m_attr_del, 1), (m_geometry, 6),
              (m_input_edit, 2), (m_output_edit, 1), (m_init_dtype, 2), (m_init_shape, 2), (m_init_values, 4),
              (m_node_order, 1), (m_op_type, 1), (m_node_delete, 1), (m_node_dup, 1), (m_insert_node, 4),
              (m_constant, 3), (m_graph_input, 2), (m_gemm_bias, 1), (m_bn, 2), (m_opset, 1), (m_names, 1)]


# ----------------------------------------------------------------------------- byte-level mutations

def b_flip(rng, data):
    data = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        i = int(rng.integers(len(data)))
        data[i] ^= 1 << int(rng.integers(8))
    return bytes(data), "bytes_flip"


def b_truncate(rng, data):
    return data[:int(rng.integers(len(data)))], "bytes_truncate"


def b_insert(rng, data):
    i = int(rng.integers(len(data) + 1))
    return data[:i] + rng.integers(0, 256, int(rng.integers(1, 17))).astype(np.uint8).tobytes() + data[i:], \
        "bytes_insert"


def b_delete(rng, data):
    i = int(rng.integers(len(data)))
    return data[:i] + data[i + int(rng.integers(1, 17)):], "bytes_delete"


def b_dup(rng, data):
    i = int(rng.integers(len(data)))
    j = min(len(data), i + int(rng.integers(1, 65)))
    return data[:j] + data[i:j] + data[j:], "bytes_dup"


def b_set(rng, data):
    data = bytearray(data)
    for _ in range(int(rng.integers(1, 5))):
        data[int(rng.integers(len(data)))] = int(_pick(rng, [0x00, 0x01, 0x7F, 0x80, 0xFF, 0x08, 0x12, 0x22]))
    return bytes(data), "bytes_set"


def b_head(rng, data):
    """A mutation in the first 2 kB (graph structure and attributes, not weight data)."""
    data = bytearray(data)
    n = min(len(data), 2048)
    for _ in range(int(rng.integers(1, 4))):
        data[int(rng.integers(n))] ^= 1 << int(rng.integers(8))
    return bytes(data), "bytes_head"


BYTES = [b_flip, b_truncate, b_insert, b_delete, b_dup, b_set, b_head]


def _mutate(rng, base):
    """One case from a base ModelProto: ``(tags, model_bytes)``."""
    if rng.random() < BYTE_SHARE:
        data, tag = _pick(rng, BYTES)(rng, base.SerializeToString())
        return tag, data
    import onnx
    funcs, weights = zip(*STRUCTURED)
    p = np.array(weights, float) / sum(weights)
    m = onnx.ModelProto()
    m.CopyFrom(base)
    tags = []
    for _ in range(int(rng.choice([1, 1, 1, 2, 2, 3]))):
        for _attempt in range(20):
            f = funcs[int(rng.choice(len(funcs), p=p))]
            try:
                tags.append(f(rng, m))
                break
            except Exception:        # noqa: BLE001 — not applicable to this (already mutated) model
                continue
    return "+".join(tags) or "unchanged", m.SerializeToString()


def cases(seed=DEFAULT_SEED, n=DEFAULT_N, start=0, root=ROOT):
    """The fuzz corpus: ``n`` cases ``(name, model_bytes)`` from case ``start``, deterministic.

    Case ``i`` mutates shipped model ``i mod 3`` with ``numpy.random.default_rng([seed, i])``.
    The name is ``"{i:05d}-{model}-{mutations}"``.
    """
    bases = _base_models(root)
    for i in range(start, start + n):
        model_name, base = bases[i % len(bases)]
        rng = np.random.default_rng([seed, i])
        tag, data = _mutate(rng, base)
        yield f"{i:05d}-{model_name}-{tag}", data


# ----------------------------------------------------------------------------- running a case

def _calib_shape(data, default):
    """Input shape (C, H, W) or (F,) for the calibration data: the case's own if it parses and is
    small, else the base model's."""
    import onnx
    m = onnx.ModelProto()
    try:
        m.ParseFromString(data)
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in m.graph.input[0].type.tensor_type.shape.dim]
    except Exception:
        return default
    if len(dims) in (2, 4) and all(0 < d <= 4096 for d in dims[1:]) and np.prod(dims[1:]) <= 1 << 16:
        return tuple(int(d) for d in dims[1:])
    return default


def _check_program(p):
    """Why a compiled program is out of range (non-finite or oversized constants), or ""."""
    from nibble.hw.isa import SH_MAX, SH_MIN
    c = p.config
    for i, L in enumerate(p.layers):
        ints = (L.n2, L.q_in, L.q_out, L.sh, L.acc_bits)
        if not all(isinstance(v, (int, np.integer)) for v in ints):
            return f"layer {L.name}: non-integer n2/q/sh/acc_bits {ints}"
        if not SH_MIN <= L.sh_hw <= SH_MAX:
            return f"layer {L.name}: shift {L.sh_hw} out of range"
        if L.acc_bits > c.acc_width:
            return f"layer {L.name}: accumulator {L.acc_bits} bits > {c.acc_width}"
        b = p.layer_bias(i)
        if np.abs(b).max(initial=0) >= 1 << 31:
            return f"layer {L.name}: bias out of range"
    if not isinstance(p.input_q, (int, np.integer)) or not isinstance(p.output_q, (int, np.integer)):
        return "non-integer input/output exponent"
    if p.weights.dtype != np.uint16 or p.params.dtype != np.uint32:
        return "weights/params of the wrong type"
    if hasattr(p, "validate"):               # the program's own consistency checks (host/program.py)
        try:
            p.validate()
        except Exception as e:               # noqa: BLE001
            return f"Program.validate: {type(e).__name__}: {e}"
    return ""


def _used_constants_finite(data):
    """False if a float initializer or Constant read by a node holds NaN or ±inf."""
    import onnx
    from onnx import numpy_helper
    m = onnx.ModelProto()
    m.ParseFromString(data)
    used = {i for n in m.graph.node for i in n.input}
    tensors = [t for t in m.graph.initializer if t.name in used]
    tensors += [a.t for n in m.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    for t in tensors:
        arr = numpy_helper.to_array(t)
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            return False
    for n in m.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name in ("value_float", "value_floats") and not all(
                        math.isfinite(v) for v in ([a.f] if a.name == "value_float" else a.floats)):
                    return False
    return True


#: A compiled case's golden output must be within this of ONNX Runtime's: RMS error at most
#: ``MAX_REL_ERROR`` × the RMS of ONNX Runtime's output (SNR ≥ 3 dB; the shipped models are at
#: 9 to 35 dB), or at most ``MAX_LSB_ERROR`` output LSBs (outputs that are all near zero).
MAX_REL_ERROR = 0.7
MAX_LSB_ERROR = 2.0


def compare_with_ort(data, program, x):
    """Run ``x`` through the golden device and through ONNX Runtime (on the device's int8 input,
    dequantized) and compare every output (after its host tail ops, e.g. a final Softmax).

    :returns: ``(problem, snr_db)``: ``problem`` is "" when the outputs agree, else why not
        (ORT cannot run the model, other shapes, too large an error); ``snr_db`` the worst output's.
    """
    import onnxruntime as ort
    from nibble.host.driver import Device
    from nibble.sim import golden
    with Device("golden") as d:
        d.load(program)
        v = d.quantize(x)
        ys = d.run(x)
    ys = [ys] if len(program.outputs) == 1 else [ys[spec.name] for spec in program.outputs]
    xq = golden.dequantize_features(v, program.input_q)
    so = ort.SessionOptions()
    so.log_severity_level = 4
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    try:
        sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        dtype = np.float16 if "float16" in inp.type else np.float64 if "double" in inp.type else np.float32
        batch = inp.shape[0] if inp.shape and isinstance(inp.shape[0], int) and inp.shape[0] > 0 else 1
        if batch > 64:
            return "", None          # ONNX Runtime would need that many copies of the image
        shape = [batch] + [d if isinstance(d, int) else 1 for d in inp.shape[1:]]
        names = [o.name for o in sess.get_outputs()]
        # a fixed batch size b runs b copies of the image; the first result is compared
        runs = [sess.run(None, {inp.name: np.repeat(xi.reshape(1, *shape[1:]), batch, axis=0).astype(dtype)})
                for xi in xq]
        refs = {name: np.concatenate([r[k][:1] for r in runs]) for k, name in enumerate(names)}
    except Exception as e:  # noqa: BLE001
        return f"compiled, but ONNX Runtime cannot run it: {str(e).splitlines()[0][:300]}", None
    worst = None
    for spec, y in zip(program.outputs, ys):
        if spec.name not in refs:
            return f"output '{spec.name}' is not an output of ONNX Runtime's ({', '.join(refs)})", None
        ref = refs[spec.name].astype(np.float64)
        if ref.size != y.size:
            return f"output '{spec.name}': shape {y.shape} (golden) against {ref.shape} (ONNX Runtime)", None
        y = y.reshape(ref.shape)
        with np.errstate(all="ignore"):
            err, sig = np.sqrt(np.mean((y - ref) ** 2)), np.sqrt(np.mean(ref ** 2))
        snr = float(20 * np.log10(sig / err)) if err > 0 and sig > 0 else (99.0 if err == 0 else -99.0)
        lsb = 2.0 ** -spec.q
        if not np.isfinite(err) or (err > MAX_REL_ERROR * sig and err > MAX_LSB_ERROR * lsb):
            return (f"golden differs from ONNX Runtime on '{spec.name}': RMS error {err:.4g} against RMS {sig:.4g} "
                    f"({snr:.1f} dB)"), snr
        worst = snr if worst is None else min(worst, snr)
    return "", worst


def check_case(name, data, seed=DEFAULT_SEED, workdir=None, compare=True):
    """Compile one case (written to a file, so the file path of ``compile_model`` is the one
    exercised) with 2 seeded random calibration inputs of the model's input shape.

    With ``compare``, a compiled case is also run through the golden device and ONNX Runtime
    (:func:`compare_with_ort`) on the first calibration input.

    :returns: ``(status, detail)``: ``"compiled"`` (detail: the SNR against ONNX Runtime),
        ``"rejected"`` (a ``CompileError``, detail its message) or ``"failed"`` (any other
        exception with its traceback, a compiled program whose constants are non-finite or out of
        range, that compiled although a constant it reads is not finite, or whose output is not
        ONNX Runtime's).
    """
    import tempfile
    import traceback
    from nibble.host.compiler import CompileError, compile_model
    base = {"digits": (1, 8, 8), "sr": (1, 32, 32), "dcgan": (32, 1, 1)}[name.split("-")[1]]
    shape = _calib_shape(data, base)
    idx = int(name.split("-")[0])
    calib = np.random.default_rng([seed, idx, 1]).normal(size=(2, *shape)).astype(np.float32)
    workdir = workdir or tempfile.gettempdir()
    path = os.path.join(workdir, f"fuzz_{os.getpid()}.onnx")
    with open(path, "wb") as f:
        f.write(data)
    try:
        program = compile_model(path, calib)
    except CompileError as e:
        return "rejected", str(e)
    except BaseException as e:        # noqa: BLE001 — anything else is a failure to report
        if isinstance(e, KeyboardInterrupt):
            raise
        return "failed", "".join(traceback.format_exception(e))[-3000:]
    bad = _check_program(program)
    if bad:
        return "failed", f"compiled with out-of-range constants: {bad}"
    if not _used_constants_finite(data):
        return "failed", "compiled although a constant it reads is not finite"
    if not compare:
        return "compiled", ""
    try:
        problem, snr = compare_with_ort(data, program, calib[:1])
    except Exception as e:            # noqa: BLE001
        return "failed", "running the compiled program: " + "".join(traceback.format_exception(e))[-3000:]
    if problem:
        return "failed", problem
    return "compiled", "not compared (fixed batch size)" if snr is None else f"{snr:.1f} dB against ONNX Runtime"


def run(seed, n, start=0, out=sys.stdout):
    """Run cases ``start … start + n − 1`` through :func:`check_case`, one JSON line each
    (``{"i", "name", "status", "detail", "seconds"}``), warnings as errors."""
    import tempfile
    import warnings
    warnings.simplefilter("error")
    with tempfile.TemporaryDirectory() as d:
        for k, (name, data) in enumerate(cases(seed, n, start)):
            t = time.perf_counter()
            status, detail = check_case(name, data, seed, d)
            out.write(json.dumps({"i": start + k, "name": name, "status": status, "detail": detail[:3000],
                                  "seconds": round(time.perf_counter() - t, 4)}) + "\n")
            out.flush()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("-n", type=int, default=DEFAULT_N, help="number of cases")
    ap.add_argument("-o", "--out", help="folder to write the cases to (<name>.onnx)")
    ap.add_argument("--run", action="store_true", help="compile the cases, one JSON line per case")
    ap.add_argument("--start", type=int, default=0, help="first case")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    print(f"fuzz_models: seed {args.seed}, cases {args.start}..{args.start + args.n - 1}", file=sys.stderr)
    if args.run:
        run(args.seed, args.n, args.start)
        return
    if not args.out:
        ap.error("give -o DIR or --run")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in cases(args.seed, args.n, args.start):
        (out / f"{name.replace('/', '_')[:150]}.onnx").write_bytes(data)


if __name__ == "__main__":
    main()
