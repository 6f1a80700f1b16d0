"""Program files (``host/program.py``): format version, checksum, schema and consistency checks.

Every damaged or edited file must give a :class:`ProgramError` (never another exception, never
a program that differs from the one saved): truncations, byte flips, arrays removed, replaced or
added, JSON edits with a recomputed checksum, and files that are not programs at all.
"""
import copy
import dataclasses
import hashlib
import io
import json
import zipfile

import numpy as np

from nibble.hw.isa import DESC_WORDS, descriptor_fields
import pytest

from nibble.host.compiler import compile_model
from nibble.host.driver import Device
from nibble.host.program import FORMAT_VERSION, LayerPlan, Program, ProgramError, program_checksum
from nibble.hw.config import EngineConfig

SEED = 20240
DIGITS = "models/digits/digits_cnn.onnx"
DCGAN = "models/dcgan/dcgan_k4s2.onnx"


@pytest.fixture(scope="module")
def digits():
    """The digits CNN, both conv layers Winograd (``auto``), Gemm head."""
    return compile_model(DIGITS, np.load("models/digits/calib_x.npy"))


@pytest.fixture(scope="module")
def dcgan():
    """The DCGAN generator as Winograd-TDC where a phase allows: phase groups, masks, tanh."""
    return compile_model(DCGAN, np.load("models/dcgan/calib_z.npy"), deconv="winograd")


@pytest.fixture(scope="module")
def good(digits, tmp_path_factory):
    path = tmp_path_factory.mktemp("prog") / "digits.npz"
    digits.save(path)
    return path


def _same(p, q):
    """Field-by-field equality of two programs (the arrays by value and dtype)."""
    for f in dataclasses.fields(Program):
        a, b = getattr(p, f.name), getattr(q, f.name)
        if isinstance(a, np.ndarray):
            if not (np.array_equal(a, b) and np.asarray(b).dtype == a.dtype):
                return False
        elif a != b:
            return False
    return True


def _members(path):
    """name → bytes of the ``.npy`` members of a program file, and the decoded parts."""
    with zipfile.ZipFile(path) as z:
        raw = {n[:-4]: z.read(n) for n in z.namelist()}
    arr = {k: np.load(io.BytesIO(v)) for k, v in raw.items()}
    return raw, json.loads(arr["meta"].tobytes()), arr["params"], arr["weights"]


def _npy(a, allow_pickle=False):
    f = io.BytesIO()
    np.lib.format.write_array(f, np.asanyarray(a), allow_pickle=allow_pickle)
    return f.getvalue()


def _write_zip(path, members):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name if name.endswith(".npy") else name + ".npy", data)


def _write(path, meta, params, weights, checksum=None):
    """A program file with the given parts; the checksum is recomputed unless given."""
    mb = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    if checksum is None:
        checksum = program_checksum(mb, params, weights)
    _write_zip(path, {"meta": _npy(np.frombuffer(mb, np.uint8)), "params": _npy(params),
                      "weights": _npy(weights), "checksum": _npy(np.frombuffer(checksum, np.uint8))})


def _rewrite_descriptors(meta, params):
    """The descriptors of an edited plan written into the parameter image (a careful forger)."""
    cfg = EngineConfig.from_dict(meta["config"])
    params = params.copy()
    n = len(meta["layers"])
    for i, d in enumerate(meta["layers"]):
        d = dict(d, pad=tuple(d["pad"]), wmask=tuple(d["wmask"]), phase=tuple(d["phase"]), pool=tuple(d["pool"]), crop=tuple(d["crop"]),
                 clip=tuple(d["clip"]))
        at = meta["desc_base"] + DESC_WORDS * i
        params[at:at + DESC_WORDS] = LayerPlan(**d).descriptor(cfg, last=i == n - 1)
    return params


def _load_error(path):
    """The ProgramError of loading ``path`` (any other exception fails the test)."""
    with pytest.raises(ProgramError) as e:
        Program.load(path)
    return str(e.value)


# ------------------------------------------------------------------------------------------------
# good files

@pytest.mark.parametrize("which", ["digits", "dcgan"])
def test_round_trip(which, request, tmp_path):
    p = request.getfixturevalue(which)
    path = tmp_path / "p.npz"
    p.save(path)
    q = Program.load(path)
    assert _same(p, q)
    assert q.params.dtype == np.uint32 and q.weights.dtype == np.uint16
    x = np.random.default_rng(SEED).uniform(-1, 1, (3, *p.input_shape))
    with Device("golden") as a, Device("golden") as b:
        a.load(p)
        b.load(q)
        assert np.array_equal(a.run(x), b.run(x))
    q.save(tmp_path / "again.npz")                  # what was loaded saves and loads again
    assert _same(p, Program.load(tmp_path / "again.npz"))


def test_every_compiled_form_is_valid(tmp_path):
    """Every mode the compiler produces passes the checks (no false alarms): direct and
    Winograd convs, TDC, NZP and Winograd-TDC deconvolutions, the super-resolution network."""
    cases = [(DIGITS, "models/digits/calib_x.npy", dict(winograd="direct")),
             (DIGITS, "models/digits/calib_x.npy", dict(winograd="winograd")),
             (DCGAN, "models/dcgan/calib_z.npy", dict(deconv="tdc")),
             (DCGAN, "models/dcgan/calib_z.npy", dict(deconv="nzp")),
             (DCGAN, "models/dcgan/calib_z.npy", dict(deconv="auto")),
             ("models/sr/fsrcnn_x2.onnx", "models/sr/calib_x.npy", dict(deconv="auto")),
             ("models/sr/fsrcnn_x2.onnx", "models/sr/calib_x.npy", dict(deconv="nzp"))]
    for model, calib, kw in cases:
        p = compile_model(model, np.load(calib), **kw)
        p.validate()
        p.save(tmp_path / "p.npz")
        assert _same(p, Program.load(tmp_path / "p.npz")), (model, kw)


def test_file_layout_and_checksum_definition(good):
    """Four arrays; the checksum is the documented SHA-256 over meta, params, weights."""
    with zipfile.ZipFile(good) as z:
        assert sorted(z.namelist()) == ["checksum.npy", "meta.npy", "params.npy", "weights.npy"]
    raw, meta, params, weights = _members(good)
    assert meta["format"] == FORMAT_VERSION == 9
    h = hashlib.sha256(b"nibble-program\0")
    for name in ("meta", "params", "weights"):
        a = np.load(io.BytesIO(raw[name]))
        h.update(f"{name}\0{a.dtype.str}\0{','.join(map(str, a.shape))}\0".encode() + a.tobytes())
    assert np.load(io.BytesIO(raw["checksum"])).tobytes() == h.digest()
    assert h.digest() == program_checksum(np.load(io.BytesIO(raw["meta"])).tobytes(), params, weights)


# ------------------------------------------------------------------------------------------------
# damaged files

def test_truncated_files(good, tmp_path):
    data = good.read_bytes()
    rng = np.random.default_rng(SEED)
    offsets = sorted({0, 1, 2, 3, 4, 30, len(data) - 1, len(data) - 22, len(data) - 23}
                     | set(rng.integers(0, len(data), 150).tolist()))
    bad = tmp_path / "t.npz"
    for n in offsets:
        bad.write_bytes(data[:n])
        msg = _load_error(bad)
        assert msg.startswith(f"{bad}: "), (n, msg)


def test_byte_flips(good, digits, tmp_path):
    """A flipped byte either gives a ProgramError or leaves the program unchanged (a byte the
    archive does not use, such as a time stamp): never another exception, never another program."""
    data = good.read_bytes()
    rng = np.random.default_rng(SEED + 1)
    bad = tmp_path / "f.npz"
    refused = 0
    for _ in range(300):
        b = bytearray(data)
        for pos in rng.integers(0, len(b), rng.integers(1, 4)):
            b[pos] ^= int(rng.integers(1, 256))
        bad.write_bytes(bytes(b))
        try:
            q = Program.load(bad)
        except ProgramError as e:
            assert str(e).startswith(f"{bad}: ")
            refused += 1
        else:
            assert _same(digits, q)
    assert refused > 250


@pytest.mark.parametrize("name", ["meta", "params", "weights", "checksum"])
def test_array_removed_replaced_or_added(name, good, tmp_path):
    raw, _, _, _ = _members(good)
    bad = tmp_path / "a.npz"
    original = np.load(io.BytesIO(raw[name]))
    cases = {
        "removed": None,
        "wrong dtype": _npy(original.astype(np.int64) if name != "meta" else original.astype(np.int16)),
        "2-D": _npy(original.reshape(1, -1)),
        "0-d": _npy(np.array(7, original.dtype)),
        "empty": _npy(original[:0]),
        "object (pickle)": _npy(np.array([1, "x"], dtype=object), allow_pickle=True),
        "structured": _npy(np.zeros(4, dtype=[("a", "<u4"), ("b", "<u2")])),
        "big-endian": _npy(original.astype(original.dtype.newbyteorder(">"))) if original.itemsize > 1 else None,
        "not .npy": b"this is not an array",
        "changed value": _npy(np.concatenate([original[:-1], original[-1:] ^ 1])),
        "shortened": _npy(original[:-1]),
        "header lies": raw[name][:-original.itemsize],
    }
    for case, data in cases.items():
        if case == "big-endian" and data is None:
            continue
        members = dict(raw)
        if data is None:
            del members[name]
        else:
            members[name] = data
        _write_zip(bad, members)
        msg = _load_error(bad)
        assert name in msg or "checksum" in msg or "format" in msg or "meta" in msg, (case, msg)
    _write_zip(bad, {**raw, "extra": _npy(np.zeros(3, np.uint8))})
    assert "unexpected array 'extra'" in _load_error(bad)
    with zipfile.ZipFile(bad, "w") as z:
        for n, d in raw.items():
            z.writestr(n + ".npy", d)
        with pytest.warns(UserWarning, match="Duplicate name"):
            z.writestr(name + ".npy", raw[name])
    assert f"'{name}' appears twice" in _load_error(bad)


def test_not_a_program(tmp_path):
    cases = {"empty.npz": (b"", "an empty file"), "text.npz": (b"hello world\n" * 10, "not a zip archive"),
             "array.npz": (_npy(np.zeros(3)), "a .npy array, not a .npz archive"),
             "pickle.npz": (b"\x80\x04\x95" + bytes(40), "not a zip archive"),
             "zip.npz": (None, "meta: missing array")}
    for name, (data, want) in cases.items():
        path = tmp_path / name
        if data is None:
            np.savez(path, a=np.zeros(3))
        else:
            path.write_bytes(data)
        assert want in _load_error(path), name
    assert "cannot read the file" in _load_error(tmp_path / "missing.npz")
    assert "cannot read the file" in _load_error(tmp_path)


def test_old_format_refused(good, tmp_path):
    """A format-2 file (no checksum) is refused by its version, with the remedy."""
    raw, meta, params, weights = _members(good)
    meta["format"] = 2
    bad = tmp_path / "old.npz"
    with open(bad, "wb") as f:
        np.savez(f, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), params=params, weights=weights)
    msg = _load_error(bad)
    assert "format: the file has program format 2" in msg and "nibble compile" in msg


def test_edit_without_checksum_refused(good, tmp_path):
    """``layers: []`` (which used to run and return the input) without a new checksum."""
    raw, meta, params, weights = _members(good)
    checksum = np.load(io.BytesIO(raw["checksum"])).tobytes()
    meta["layers"] = []
    bad = tmp_path / "e.npz"
    _write(bad, meta, params, weights, checksum=checksum)
    assert "checksum: does not match the content" in _load_error(bad)
    meta = _members(good)[1]
    meta["layers"][0]["mode_reason"] = "edited"      # even a harmless field
    _write(bad, meta, params, weights, checksum=checksum)
    assert "checksum" in _load_error(bad)


# ------------------------------------------------------------------------------------------------
# edits with a recomputed checksum: the schema and consistency checks

def _set(path, value):
    def edit(meta):
        d = meta
        for k in path[:-1]:
            d = d[k]
        if value is _DELETE:
            del d[path[-1]]
        else:
            d[path[-1]] = value
    return edit


_DELETE = object()

# (edit of the metadata, expected text in the message)
SCHEMA_EDITS = [
    (_set(["layers"], []), "layers: no layers"),
    (_set(["layers"], {}), "layers: expected a list"),
    (_set(["layers", 1, "cout"], -3), "layers[1].cout: expected a positive integer, got -3"),
    (_set(["layers", 1, "cout"], "16"), "layers[1].cout: expected a positive integer, got \"16\""),
    (_set(["layers", 1, "cout"], 16.0), "layers[1].cout: expected a positive integer, got 16.0"),
    (_set(["layers", 1, "cout"], True), "layers[1].cout: expected a positive integer, got true"),
    (_set(["layers", 0, "kh"], _DELETE), "layers[0].kh: missing"),
    (_set(["layers", 0, "colour"], 3), "layers[0].colour: unexpected field"),
    (_set(["layers", 0], [1, 2]), "layers[0]: expected a JSON object"),
    (_set(["layers", 0, "pad"], [1, 1, 1]), "layers[0].pad: expected [top, bottom, left, right]"),
    (_set(["layers", 0, "pad"], [-1, 1, 1, 1]), "layers[0].pad"),
    (_set(["layers", 0, "relu"], 1), "layers[0].relu: expected true or false, got 1"),
    (_set(["layers", 0, "name"], 5), "layers[0].name: expected a string"),
    (_set(["layers", 0, "op"], "matmul"), "layers[0].op: expected one of"),
    (_set(["layers", 0, "pool"], 3), "layers[0].pool: expected [kh, kw, sy, sx, top, bottom, left, right]"),
    (_set(["layers", 0, "pool"], [2, 2, 0, 2, 0, 0, 0, 0]), "layers[0].pool"),
    (_set(["layers", 0, "clip"], [0, 300]), "layers[0].clip"),
    (_set(["layers", 0, "prelu"], 0), "layers[0].prelu: expected true or false"),
    (_set(["layers", 0, "act"], 5), "layers[0].act"),
    (_set(["layers", 0, "dil"], 3), "layers[0].dil: expected a power of two"),
    (_set(["layers", 0, "wmask"], [0, 15]), "layers[0].wmask"),
    (_set(["layers", 0, "phase"], [0, 0]), "layers[0].phase"),
    (_set(["layers", 0, "phase"], [2, 0, 2, 2]), "layers[0].phase"),
    (_set(["layers", 0, "sh"], 99), "layers[0].sh: expected an integer in [-16, 47], got 99"),
    (_set(["layers", 0, "in_base"], -1), "layers[0].in_base"),
    (_set(["layers", 0, "in_h"], 10 ** 30), "layers[0].in_h"),
    (_set(["config", "m"], 0), "config"),
    (_set(["config", "m"], 15.5), "config.m: expected a positive integer"),
    (_set(["config", "winograd"], "yes"), "config.winograd: expected true or false"),
    (_set(["config", "vc"], _DELETE), "config.vc: missing"),
    (_set(["config", "turbo"], True), "config.turbo: unexpected field"),
    (_set(["config"], None), "config: expected a JSON object"),
    (_set(["inputs", 0, "shape"], [1, 8]), "inputs[0].shape: expected [C, H, W]"),
    (_set(["inputs", 0, "q"], "5"), "inputs[0].q: expected an integer"),
    (_set(["inputs"], []), "inputs: expected a list of at least 1"),
    (_set(["outputs", 0, "flatten"], "no"), "outputs[0].flatten: expected true or false"),
    (_set(["outputs", 0, "tail"], ["argmax"]), "outputs[0].tail: expected a list of host operators"),
    (_set(["desc_base"], -16), "desc_base"),
    (_set(["outputs", 0, "name"], _DELETE), "outputs[0].name: missing"),
    (_set(["surprise"], 1), "surprise: unexpected field"),
    (_set(["format"], 3), "format: the file has program format 3"),
    (_set(["format"], _DELETE), "format: missing"),
]


@pytest.mark.parametrize("edit,want", SCHEMA_EDITS, ids=[w for _, w in SCHEMA_EDITS])
def test_schema_edits_with_checksum(edit, want, good, tmp_path):
    _, meta, params, weights = _members(good)
    edit(meta)
    bad = tmp_path / "s.npz"
    _write(bad, meta, params, weights)
    msg = _load_error(bad)
    assert msg.startswith(f"{bad}: ") and want in msg, msg


def test_meta_not_json(good, tmp_path):
    _, meta, params, weights = _members(good)
    bad = tmp_path / "j.npz"
    text = json.dumps(meta)
    for raw, want in [(b"\xff\xfe" + text.encode(), "not valid JSON"), (text.encode()[:-1], "not valid JSON"),
                      (b"[1, 2, 3]", "expected a JSON object"),
                      (text.replace('"desc_base": ', '"desc_base": NaN, "x": ', 1).encode(), "not valid JSON"),
                      (text.replace('"desc_base": ', '"desc_base": 1, "desc_base": ', 1).encode(), "duplicate key"),
                      (b"[" * 100000 + b"]" * 100000, "meta")]:
        _write(bad, raw, params, weights)
        assert want in _load_error(bad)


def _layer_edit(field, value, i=1, descriptors=True, **more):
    """Set plan fields of layer ``i`` and rewrite the descriptors, so only the plan's
    consistency can tell."""
    def edit(meta, params, weights):
        meta["layers"][i].update({field: value, **more})
        return (_rewrite_descriptors(meta, params) if descriptors else params), weights
    return edit


def _weights_edit(index, value):
    def edit(meta, params, weights):
        weights = weights.copy()
        weights[index] = value
        return params, weights
    return edit


def _params_edit(index_of, value):
    def edit(meta, params, weights):
        params = params.copy()
        params[index_of(meta)] = value
        return params, weights
    return edit


def _drop_layer(i):
    def edit(meta, params, weights):
        del meta["layers"][i]
        return _rewrite_descriptors(meta, params), weights
    return edit


def _move_map(i, where):
    """Move layer ``i``'s output map and the next layer's input with it."""
    def edit(meta, params, weights):
        L = meta["layers"][i]
        L["map_base"] = L["out_base"] = where(L)
        meta["layers"][i + 1]["in_base"] = L["map_base"]
        return _rewrite_descriptors(meta, params), weights
    return edit


def _meta_edit(f):
    def edit(meta, params, weights):
        f(meta)
        return params, weights
    return edit


#: The descriptor word holding the shift field ``sh``.
_SH_WORD = descriptor_fields()["sh"][0] // 32

# (program, edit of (meta, params, weights), expected text in the message)
CONSISTENCY_EDITS = [
    ("digits", _layer_edit("n2", -5, sh=6, descriptors=False),
     f"params[{DESC_WORDS + _SH_WORD}]: descriptor word {_SH_WORD} of layers[1]"),
    ("digits", _layer_edit("cout", 17), "layers[1].cb_out"),
    ("digits", _layer_edit("conv_h", 7), "layers[1].conv_h"),
    ("digits", _layer_edit("out_h", 3), "layers[1].out_h"),
    ("digits", _layer_edit("in_h", 9), "layers[1]"),
    ("digits", _layer_edit("sh", 3), "layers[1].sh"),
    ("digits", _layer_edit("q_in", 2), "layers[1]"),
    ("digits", _layer_edit("acc_bits", 40), "layers[1].acc_bits: 40 bits"),
    ("digits", _layer_edit("acc_bits", 5), "layers[1].acc_bits: the weights and biases need"),
    ("digits", _layer_edit("in_base", 100), "layers[1]"),
    ("digits", _move_map(1, lambda L: 8190), "layers[1].map_base: the output map ends at word 8206"),
    ("digits", _move_map(1, lambda L: L["in_base"] + 8), "layers[1].map_base: the output map (words "),
    ("digits", _move_map(1, lambda L: 7000), None),                   # a legitimate relocation
    ("digits", _layer_edit("w_base", 10 ** 6), "layers[1].w_base"),
    ("digits", _layer_edit("bias_base", 0), "layers[1].bias_base"),
    ("digits", _layer_edit("bias_base", 10 ** 5), "layers[1].bias_base"),
    ("digits", _layer_edit("cb_in", 300), "layers[1].cb_in"),
    ("digits", _layer_edit("wmask", [7, 15]), "layers[1].wmask: [7, 15] skips transformed weights"),
    ("digits", _layer_edit("winograd", True, i=2), "layers[2].winograd: Winograd F(2x2,3x3) needs a 3x3"),
    ("digits", _layer_edit("stride", 2), "layers[1]"),
    ("digits", _layer_edit("op", "deconv_phase"), "layers[1].op"),
    ("digits", _layer_edit("phase", [0, 0, 1, 1]), "layers[1].op"),
    ("digits", _layer_edit("out_row", 5), "layers[1].out_row"),
    ("digits", _drop_layer(1), "layers[1].src: '/3/Conv_output_0' is not a program input nor written"),
    # the digits input is folded (fold_taps): its shape is checked against the fold first
    ("digits", _meta_edit(_set(["inputs", 0, "shape"], [1, 9, 8])), "inputs[0].fold: folds a [1, 8, 8] input"),
    ("digits", _meta_edit(_set(["inputs", 0, "fold"], [1, 8, 8, 3, 3, 1, 1, 1, 1, 300])), "inputs[0].fold"),
    ("digits", _meta_edit(_set(["inputs", 0, "fold"], [1, 8, 8, 3, 3])), "inputs[0].fold: expected"),
    ("digits", _meta_edit(_set(["outputs", 0, "shape"], [10, 1, 2])), "outputs[0].shape"),
    ("digits", _meta_edit(_set(["inputs", 0, "q"], 9)), "layers[0].q_in"),
    ("digits", _meta_edit(_set(["outputs", 0, "q"], 0)), "outputs[0].q"),
    ("digits", _meta_edit(_set(["outputs", 0, "name"], "nothing")), "outputs[0].name: 'nothing' is not written"),
    ("digits", _layer_edit("src", "nowhere"), "layers[1].src: 'nowhere' is not a program input"),
    ("digits", _meta_edit(_set(["desc_base"], 4000)), "desc_base"),
    ("digits", _meta_edit(_set(["config", "winograd"], False)), "layers[1].winograd"),
    ("digits", _meta_edit(_set(["config", "acc_width"], 20)), "acc_bits"),
    ("digits", _meta_edit(_set(["config", "feature_depth"], 64)), "map_base"),
    ("digits", _meta_edit(_set(["config", "weight_depth"], 16)), "weights"),
    ("digits", _meta_edit(_set(["config", "param_depth"], 40)), "params"),
    ("digits", _weights_edit(-1, 0x0010), "layers[2].w_base: nonzero weights in the padding"),
    ("digits", _params_edit(lambda m: m["layers"][2]["bias_base"], 0x7FFFFFFF), "layers[2].acc_bits"),
    ("digits", _params_edit(lambda m: 0, 0), "params[0]"),
    ("dcgan", _drop_layer(3), "do not cover"),
    ("dcgan", _layer_edit("phase", [0, 0, 2, 2], i=2, out_base=0), "appears twice"),
    ("dcgan", _layer_edit("out_base", 0, i=2), "layers[2].out_base"),
    ("dcgan", _layer_edit("group", "other"), "layers[1].phase"),
]


@pytest.mark.parametrize("which,edit,want", CONSISTENCY_EDITS, ids=[f"{w}-{i}" for i, (w, _, _) in
                                                                    enumerate(CONSISTENCY_EDITS)])
def test_consistency_edits_with_checksum(which, edit, want, request, tmp_path):
    path = tmp_path / "good.npz"
    request.getfixturevalue(which).save(path)
    _, meta, params, weights = _members(path)
    params, weights = edit(meta, params, weights)
    bad = tmp_path / "c.npz"
    _write(bad, meta, params, weights)
    if want is None:                    # consistent: loads, and runs as the original
        p, q = request.getfixturevalue(which), Program.load(bad)
        x = np.random.default_rng(SEED).uniform(-1, 1, (2, *p.input_shape))
        with Device("golden") as a, Device("golden") as b:
            a.load(p)
            b.load(q)
            assert np.array_equal(a.run(x), b.run(x))
        return
    msg = _load_error(bad)
    assert msg.startswith(f"{bad}: ") and want in msg, msg


def test_invalid_program_object_is_not_saved(digits, tmp_path):
    p = copy.deepcopy(digits)
    p.layers = []
    with pytest.raises(ProgramError, match="^program: layers: no layers"):
        p.validate()
    with pytest.raises(ProgramError, match="layers: no layers"):
        p.save(tmp_path / "x.npz")
    assert list(tmp_path.iterdir()) == []
    p = copy.deepcopy(digits)
    p.params = p.params.astype(np.int64)
    p.params[-1] = -1
    with pytest.raises(ProgramError, match="params: values outside"):
        p.validate()
    p = copy.deepcopy(digits)
    p.layers[0].n2 = np.int64(3)
    with pytest.raises(ProgramError, match="not plain JSON"):
        p.validate()
