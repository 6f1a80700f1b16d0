"""`Program`: a compiled network — layer descriptors, packed weights, biases, quantization.

A ``Program`` is what the compiler writes and every device (``golden``, ``sim``, ``uart``) runs.
It holds the exact device-memory images (parameter memory: descriptors + biases; weight
memory: 4-bit codes packed four to a 16-bit word, first code in the lowest nibble, DESIGN §3),
plus the per-layer plan (shapes, INQ ``n2``, feature exponents ``Q``, shift ``sh``, addresses).

Program file (format :data:`FORMAT_VERSION`): one ``.npz`` (zip) archive, no pickles, with
exactly four ``.npy`` arrays:

* ``meta``: uint8, the UTF-8 JSON metadata: ``format``, ``config`` (every :class:`EngineConfig`
  field), ``layers`` (every :class:`LayerPlan` field of every plan), ``input_shape``,
  ``input_q``, ``output_shape``, ``output_q``, ``input_name``, ``output_name``,
  ``flatten_output``, ``desc_base``;
* ``params``: little-endian uint32, the parameter-memory image from word 0;
* ``weights``: little-endian uint16, the weight-memory image from word 0 (``vc/4`` per word);
* ``checksum``: uint8 (32,), :func:`program_checksum` of the other three.

:meth:`Program.load` refuses (:class:`ProgramError`, naming the file and the field) anything
that is not such a file: not a zip archive, a damaged or truncated one, another format version,
missing, extra or mistyped arrays, a checksum that does not match (an edited file), and — even
with a recomputed checksum — a program that is not consistent (:meth:`Program.validate`).
"""
import dataclasses
import hashlib
import io
import json
import os
import tempfile
import zipfile

import numpy as np

from ..hw.config import EngineConfig
from ..hw.isa import DESC_WORDS, DSH_MAX, PRELU_BITS, PRELU_FRAC, RES_SH_MAX, SH_MAX, SH_MIN, encode_descriptor
from ..sim.golden import (ACT_NONE, ACT_Q_IN, ACT_Q_OUT, ACT_SIGMOID, ACT_TANH, DE, INT8_CLIP, POOL_2X2, POOL_NONE,
                          acc_bits, code_to_int, pack_codes, pool_out_size, unpack_codes)
from ..sim.winograd import weight_transform

__all__ = ["LayerPlan", "TensorSpec", "Program", "HOST_OPS", "ProgramError", "program_checksum", "weight_words", "weight_codes",
           "features_to_words", "words_to_features", "FORMAT_VERSION"]

#: Version of the program file layout; :meth:`Program.load` accepts this version only.
#: 3: ``checksum`` array, schema and consistency checks on load. 4: several inputs and outputs
#: (:class:`TensorSpec`), plans with input views, general max-pool windows, PReLU and clipping.
#: 5: ``stream_weights`` (the weight image lives in external memory, streamed layer by layer).
#: 8: per-channel requantization shifts (``ch_sh``, ``shift_base``: per-channel weight exponents).
#: 9: ``config.beat_words`` (the DDR beat's feature words) and an input's ``fold`` (the first
#: layer's taps folded into channels on the host).
FORMAT_VERSION = 9

#: Operators a program may run on the host after an output (``TensorSpec.tail``), on the
#: dequantized float output: ``gap`` (the mean over the rows and columns, (C, H, W) → (C,)), and
#: over the channel axis ``softmax``.
HOST_OPS = ("gap", "softmax")


class ProgramError(ValueError):
    """A program (file or object) that no device may run. The message names the file (or
    ``program``), the field and what is wrong, e.g.
    ``program.npz: layers[2].cout: expected a positive integer, got -3``."""


@dataclasses.dataclass
class LayerPlan:
    """One layer as the engine runs it (one descriptor, :data:`nibble.hw.isa.DESCRIPTOR`). Sizes in
    pixels/channels, addresses in words of the memory they point into.

    The plan reads tensor ``src`` (a program input or the ``dst`` of an earlier plan; ``""``: the
    previous plan's output, or the program input for the first) through the view ``in_base``,
    ``in_row``, ``in_pix`` (0: dense, ``in_pix = cb_in``, ``in_row = in_w·in_pix``) and writes
    tensor ``dst`` (``""``: unnamed) at ``out_base + py·out_row + px·out_pix``. Epilogue, in
    order (ARITHMETIC §4.5): bias, a residual tensor ``res_src`` (``res``: int8 with exponent
    ``res_q`` at ``res_base``, laid out as the output, added as ``r << res_sh_hw``), ReLU or PReLU (slope codes at ``slope_base``, one int32 word
    per output channel), requantization with saturation to ``clip`` (int8 bounds), the
    tanh/sigmoid table ``act``, max-pool ``pool`` = ``(kh, kw, sy, sx, top, bottom, left,
    right)`` over the ``conv_h × conv_w`` conv output (:data:`nibble.sim.golden.POOL_NONE`: none).
    """
    name: str
    op: str                 # "conv" (a Gemm is a conv whose kernel covers its whole input)
    cin: int
    cout: int
    in_h: int
    in_w: int
    kh: int
    kw: int
    stride: int
    pad: tuple              # (top, bottom, left, right)
    conv_h: int
    conv_w: int
    pool: tuple             # max-pool window (kh, kw, sy, sx, top, bottom, left, right)
    out_h: int
    out_w: int
    relu: bool
    n2: int                 # INQ: weight = code_to_int · 2^n2
    q_in: int               # input features = V · 2^(−q_in)
    q_out: int
    sh: int                 # q_in − n2 − q_out (ARITHMETIC §4.5)
    acc_bits: int           # worst-case accumulator width (ARITHMETIC §4.4; ×4 scaled in Winograd)
    cb_in: int = 1          # feature words per input pixel (≥ ⌈cin/vc⌉; channels beyond cin are 0)
    cb_out: int = 1         # feature words per output pixel = n_coblk·m/vc
    in_base: int = 0
    out_base: int = 0
    w_base: int = 0
    bias_base: int = 0
    winograd: bool = False  # run as Winograd F(2×2,3×3): biases stored ×4, shift sh + 2 (§2.3)
    mode_reason: str = ""   # why the layer runs in its mode (the compiler's choice)
    out_row: int = 0        # words between output rows (0: out_w · cb_out, a dense map)
    out_pix: int = 0        # words between output pixels (0: cb_out)
    act: int = 0            # output activation (sim.golden.ACT_*)
    dil: int = 1            # input zero insertion (NZP: the input is read as if expanded by dil)
    wmask: tuple = (15, 15) # Winograd: rows ξ / columns ν of the transformed positions computed
    group: str = ""         # plans of one IR layer (TDC phases) share input and output maps
    phase: tuple = ()       # TDC phase (φy, φx, Sy, Sx): outputs go to (Sy·a + φy, Sx·b + φx)
    full_h: int = 0         # the group's whole output map (TDC): rows, columns
    full_w: int = 0
    map_base: int = 0       # feature-memory word of the group's output map
    prelu: bool = False     # PReLU / LeakyReLU: slope codes at slope_base (sim.golden.PRELU_FRAC)
    slope_base: int = 0     # parameter-memory word of the layer's first slope code
    clip: tuple = INT8_CLIP  # saturation bounds (lo, hi) of the requantized value
    in_row: int = 0         # words between input rows (0: in_w · in_pix, a dense map)
    in_pix: int = 0         # words between input pixels (0: cb_in)
    crop: tuple = (0, 0)    # input rows, columns skipped at the top/left (a negative TDC phase offset)
    src: str = ""           # tensor read ("": the previous plan's output / the program input)
    dst: str = ""           # tensor written
    res: bool = False       # fused residual Add of the tensor res_src (at res_base, the output's layout)
    res_src: str = ""
    res_base: int = 0
    res_q: int = 0          # the residual's exponent: it enters the accumulator shifted by res_sh_hw
    groups: int = 1         # convolution groups (ONNX ``group``)
    grp: int = 0            # grouped plan: output blocks per group (0: dense); each block reads cb_in
                            # input blocks from block (b // grp)·cb_in of the pixel (in_pix words)
    dst_off: int = 0        # Concat placement: the plan writes words dst_off … dst_off + cb_out − 1
    dst_pix: int = 0        # of each dst_pix-word pixel of dst (0: cb_out, a map of its own)
    ch_sh: bool = False     # per-channel weight exponents: channel co shifts by sh_hw − d[co], the
    shift_base: int = 0     # offset codes d (one word each) from parameter word shift_base

    @property
    def scale(self):
        """Accumulator scale of the layer's datapath: 4 for Winograd F(2×2,3×3), else 1."""
        return 4 if self.winograd else 1

    @property
    def sh_hw(self):
        """The shift the output stage applies: ``sh + 2`` for Winograd (ARITHMETIC §2.3),
        ``+ PRELU_FRAC`` for PReLU (the slope's fraction bits, ARITHMETIC §4.5)."""
        return self.sh + (2 if self.winograd else 0) + (PRELU_FRAC if self.prelu else 0)

    @property
    def param_arrays(self):
        """Per-output-channel arrays the plan keeps in parameter memory (``n_coblk·m`` words each,
        loaded per output block): the biases, the PReLU slope codes, the shift offsets."""
        return 1 + bool(self.prelu) + bool(self.ch_sh)

    @property
    def res_sh_hw(self):
        """The residual's left shift into accumulator units: ``q_in − n2 − res_q`` (+ 2 for
        Winograd's ×4 scale); 0 without a residual."""
        return self.q_in - self.n2 - self.res_q + (2 if self.winograd else 0) if self.res else 0

    @property
    def pools(self):
        """True if the plan max-pools (``pool`` is not :data:`~nibble.sim.golden.POOL_NONE`)."""
        return tuple(self.pool) != POOL_NONE

    @property
    def in_view(self):
        """``(in_row, in_pix)`` with the dense defaults filled in (words)."""
        pix = self.in_pix or self.cb_in
        return self.in_row or self.in_w * pix, pix

    @property
    def read_area(self):
        """``(base, rows, columns)`` of the part of the input map the engine reads: the map without
        its first ``crop`` rows and columns (word ``in_base + crop_y·in_row + crop_x·in_pix``).
        ``pad`` pads this area, so a TDC phase whose first tap lies below the input's first row
        (a negative offset, ARITHMETIC §1.4) is mapped by cropping rather than by a negative
        padding."""
        row, pix = self.in_view
        cy, cx = self.crop
        return self.in_base + cy * row + cx * pix, self.in_h - cy, self.in_w - cx

    @property
    def out_view(self):
        """``(out_row, out_pix)`` with the dense defaults filled in (words)."""
        pix = self.out_pix or self.cb_out
        return self.out_row or self.out_w * pix, pix

    def n_coblk(self, m):
        return -(-self.cout // m)

    def codes_cin(self, vc):
        """Input channels of the stored filters: ``cin`` (dense), or the ``cb_in·vc`` channels
        one output block reads (grouped: block-diagonal filters)."""
        return self.cb_in * vc if self.grp else self.cin

    def macs(self):
        """Useful multiply-accumulates of the layer: every conv output once (no padding lanes,
        no zero weights outside a group; a pool window recomputing overlapped outputs is not
        counted twice)."""
        return self.cout * (self.cin // self.groups) * self.kh * self.kw * self.conv_h * self.conv_w

    def descriptor(self, config, last):
        """The :data:`~nibble.hw.isa.DESC_WORDS` descriptor words (:data:`nibble.hw.isa.DESCRIPTOR`).

        :raises ValueError: a field that does not fit its descriptor field (naming it).
        """
        dil_log2 = self.dil.bit_length() - 1
        if 1 << dil_log2 != self.dil:
            raise ValueError(f"layer '{self.name}': input zero insertion {self.dil} is not a power of two")
        in_row, in_pix = self.in_view
        out_row, out_pix = self.out_view
        in_base, in_h, in_w = self.read_area
        pkh, pkw, psy, psx, ppt, _, ppl, _ = self.pool
        return encode_descriptor(
            relu=self.relu, last=last, winograd=self.winograd, prelu=self.prelu, act=self.act, dil=dil_log2,
            in_base=in_base, in_h=in_h, in_w=in_w, in_cb=self.cb_in, in_row=in_row,
            in_pix=in_pix, kh=self.kh, kw=self.kw, sy=self.stride, sx=self.stride, pad_t=self.pad[0],
            pad_l=self.pad[2], conv_h=self.conv_h, conv_w=self.conv_w, pool_kh=pkh, pool_kw=pkw,
            pool_sy=psy, pool_sx=psx, pool_pt=ppt, pool_pl=ppl, out_base=self.out_base, out_h=self.out_h,
            out_w=self.out_w, out_row=out_row, out_pix=out_pix, n_coblk=self.n_coblk(config.m),
            w_base=self.w_base, bias_base=self.bias_base, slope_base=self.slope_base, sh=self.sh_hw,
            clip_lo=self.clip[0], clip_hi=self.clip[1], xmask=self.wmask[0], ymask=self.wmask[1],
            res=self.res, res_sh=self.res_sh_hw, res_base=self.res_base, grp=self.grp,
            ch_sh=self.ch_sh, shift_base=self.shift_base)


def weight_words(codes, m, vc, cb_in):
    """Weight-memory image of one layer: uint16 words in engine order (:mod:`nibble.hw.engine`).

    :param codes: uint8 (Cout, Cin, Kh, Kw) 4-bit codes.
    :param cb_in: input channel blocks (feature words per input pixel, ≥ ⌈Cin/vc⌉).
    :returns: uint16 array; memory word ``j`` (``vc`` codes) = 16-bit words ``j·vc/4 … ``.
    Order: output block, PE, tap ``ky·kw+kx``, input block; output channels beyond Cout and
    input channels beyond Cin are zero codes.
    """
    co, ci, kh, kw = codes.shape
    nb, cb = -(-co // m), cb_in
    full = np.zeros((nb * m, cb * vc, kh, kw), np.uint8)
    full[:co, :ci] = codes
    # (blk, pe, cb, lane, ky, kx) -> (blk, pe, ky, kx, cb, lane)
    arr = full.reshape(nb, m, cb, vc, kh, kw).transpose(0, 1, 4, 5, 2, 3)
    return pack_codes(arr.ravel())


def weight_codes(words, cout, cin, kh, kw, m, vc, cb_in):
    """Inverse of :func:`weight_words`: (Cout, Cin, Kh, Kw) uint8 codes."""
    nb, cb = -(-cout // m), cb_in
    n = nb * m * kh * kw * cb * vc
    arr = unpack_codes(words, n).reshape(nb, m, kh, kw, cb, vc).transpose(0, 1, 4, 5, 2, 3)
    return arr.reshape(nb * m, cb * vc, kh, kw)[:cout, :cin].copy()


def features_to_words(v, vc, cb=None):
    """CHW int8 feature map → device bytes, HWC with channels padded to ``cb·vc`` (DESIGN §3).

    :param cb: feature words per pixel (default ``⌈C/vc⌉``).
    :returns: ``bytes`` of ``H·W·cb·vc`` int8 values.
    """
    v = np.asarray(v)
    if v.min(initial=0) < -128 or v.max(initial=0) > 127:
        raise ValueError("features must be int8 values")
    c, h, w = v.shape
    cp = (cb or -(-c // vc)) * vc
    hwc = np.zeros((h, w, cp), np.int8)
    hwc[:, :, :c] = v.transpose(1, 2, 0)
    return hwc.tobytes()


def words_to_features(raw, c, h, w, vc, cb=None):
    """Inverse of :func:`features_to_words`: CHW int64 array."""
    cp = (cb or -(-c // vc)) * vc
    hwc = np.frombuffer(raw, np.int8).reshape(h, w, cp)
    return hwc[:, :, :c].transpose(2, 0, 1).astype(np.int64)


@dataclasses.dataclass
class TensorSpec:
    """A program input or output: a feature map in device memory.

    ``name`` (the model's tensor name), ``shape`` (C, H, W), ``q`` (value = V · 2^−q,
    ARITHMETIC §4.3), ``base`` (feature-memory word of pixel (0, 0)), ``row`` and ``pix`` (words
    between rows and pixels; 0 = a dense map with ⌈C/vc⌉ words per pixel). Outputs also carry
    ``flatten`` (returned as (N, C): a Gemm head) and ``tail`` (host operators of
    :data:`HOST_OPS` applied in order to the dequantized float output, over the channel axis).

    An input may carry ``fold`` (:func:`nibble.host.passes.fold_taps.fold_taps`): the first
    layer's kernel taps folded into channels on the host. ``fold`` = ``(C, H, W, kh, kw, stride,
    top, bottom, left, right)``: the model's input is ``(C, H, W)`` (:attr:`user_shape`, what a
    caller gives) and the device's map is ``shape`` = ``(kh·kw·C, Ho, Wo)``, channel
    ``(dy·kw + dx)·C + c`` of pixel ``(y, x)`` holding input ``(c, y·stride + dy − top, x·stride
    + dx − left)`` (zero outside): :meth:`device_input`.
    """
    name: str
    shape: tuple
    q: int
    base: int
    row: int = 0
    pix: int = 0
    flatten: bool = False
    tail: tuple = ()
    fold: tuple = ()

    @property
    def user_shape(self):
        """``(C, H, W)`` a caller gives for this tensor: the model's, before any :attr:`fold`."""
        return tuple(self.fold[:3]) if self.fold else tuple(self.shape)

    def device_input(self, x):
        """``x`` (C, H, W) or (N, C, H, W) in :attr:`user_shape` → the device's map ``shape``
        (the taps of :attr:`fold` gathered into channels; ``x`` itself without a fold). Any
        numeric dtype; zeros where a tap falls in the padding."""
        if not self.fold:
            return x
        from .passes.fold_taps import fold_map
        return fold_map(x, self.fold)

    def view(self, vc):
        """``(row, pix, cb)``: words between rows and pixels, and channel blocks (⌈C/vc⌉)."""
        c, h, w = self.shape
        cb = -(-c // vc)
        pix = self.pix or cb
        return self.row or w * pix, pix, cb

    def words(self, vc):
        """Feature-memory words from ``base`` to the end of the map's last pixel."""
        c, h, w = self.shape
        row, pix, cb = self.view(vc)
        return (h - 1) * row + (w - 1) * pix + cb


@dataclasses.dataclass
class Program:
    """A compiled network for one :class:`EngineConfig`.

    Attributes: ``config``; ``layers`` (list of :class:`LayerPlan`, in execution order);
    ``params`` (uint32 image of parameter memory from word 0: descriptors from ``desc_base``,
    then biases and slope codes); ``weights`` (uint16 image of weight memory from word 0);
    ``inputs``, ``outputs`` (lists of :class:`TensorSpec`). ``input_shape``, ``input_q``,
    ``input_name`` and ``output_shape``, ``output_q``, ``output_name``, ``flatten_output`` are
    those of the first input and output.

    ``stream_weights``: the weight image is larger than weight memory and lives in external
    memory; a device with it loads each plan's weights (``w_base`` is then an offset in the
    image) into one half of weight memory while the plan before computes
    (:mod:`nibble.host.steps`). Every plan's weights then fit half of weight memory.

    ``feature_space``: 0 — the feature maps live in feature memory (the addresses of the plans
    and tensor specs are its words); > 0 — they live in external memory, a space of that many
    feature words, and a device with DDR runs each plan in row bands that fit feature memory
    (:mod:`nibble.host.steps`; the weights are then streamed too: ``stream_weights``).
    """
    config: EngineConfig
    layers: list
    params: np.ndarray
    weights: np.ndarray
    inputs: list
    outputs: list
    desc_base: int = 0
    stream_weights: bool = False
    feature_space: int = 0

    @property
    def feature_words(self):
        """Words of the space the feature addresses point into: ``feature_space``, or the
        feature memory's ``config.feature_depth``."""
        return self.feature_space or self.config.feature_depth

    input_shape = property(lambda self: self.inputs[0].user_shape)
    input_q = property(lambda self: self.inputs[0].q)
    input_name = property(lambda self: self.inputs[0].name)
    input_base = property(lambda self: self.inputs[0].base)
    output_shape = property(lambda self: tuple(self.outputs[0].shape))
    output_q = property(lambda self: self.outputs[0].q)
    output_name = property(lambda self: self.outputs[0].name)
    output_base = property(lambda self: self.outputs[0].base)
    flatten_output = property(lambda self: self.outputs[0].flatten)

    def layer_codes(self, i):
        """Codes of layer ``i`` read back from the weight-memory image (Cout, Cin, Kh, Kw)."""
        L, c = self.layers[i], self.config
        per_word = c.vc // 4
        start = L.w_base * per_word
        n = L.n_coblk(c.m) * c.m * L.kh * L.kw * L.cb_in * per_word
        return weight_codes(self.weights[start:start + n], L.cout, L.codes_cin(c.vc), L.kh, L.kw, c.m, c.vc,
                            L.cb_in)

    def layer_bias(self, i, padded=False):
        """int64 biases (Cout,) of layer ``i`` read back from the parameter-memory image, in the
        units of the layer's accumulator (``LayerPlan.scale`` × the bias for Winograd layers);
        ``padded``: all ``n_coblk·m`` words the engine loads."""
        L = self.layers[i]
        n = L.n_coblk(self.config.m) * self.config.m if padded else L.cout
        return self.params[L.bias_base:L.bias_base + n].view(np.int32).astype(np.int64)

    def layer_slopes(self, i, padded=False):
        """int64 PReLU slope codes (Cout,) of layer ``i`` from the parameter-memory image
        (``padded``: all ``n_coblk·m``), or None for a layer without PReLU."""
        L = self.layers[i]
        if not L.prelu:
            return None
        n = L.n_coblk(self.config.m) * self.config.m if padded else L.cout
        return self.params[L.slope_base:L.slope_base + n].view(np.int32).astype(np.int64)

    def layer_shifts(self, i, padded=False):
        """int64 per-channel shift offsets ``d`` (Cout,) of layer ``i`` from the parameter-memory
        image (``padded``: all ``n_coblk·m``), or None for a layer with one shift."""
        L = self.layers[i]
        if not L.ch_sh:
            return None
        n = L.n_coblk(self.config.m) * self.config.m if padded else L.cout
        return self.params[L.shift_base:L.shift_base + n].astype(np.int64)

    def layer_sh(self, i):
        """The output stage's shift of layer ``i``: ``sh_hw``, or ``sh_hw − d`` per channel (int64
        (n_coblk·m,)) with per-channel weight exponents (ARITHMETIC §4.5)."""
        L = self.layers[i]
        return L.sh_hw if not L.ch_sh else L.sh_hw - self.layer_shifts(i, padded=True)

    def macs(self):
        return sum(L.macs() for L in self.layers)

    def _meta(self):
        return {
            "format": FORMAT_VERSION, "config": self.config.to_dict(),
            "layers": [dataclasses.asdict(L) for L in self.layers],
            "inputs": [dataclasses.asdict(t) for t in self.inputs],
            "outputs": [dataclasses.asdict(t) for t in self.outputs],
            "desc_base": self.desc_base, "stream_weights": self.stream_weights, "feature_space": self.feature_space,
        }

    def _checked(self, where):
        """``(meta JSON bytes, params, weights)`` of this program after :meth:`validate`'s checks."""
        if not isinstance(self.config, EngineConfig):
            raise ProgramError(f"{where}: config: expected an EngineConfig, got {type(self.config).__name__}")
        if not isinstance(self.layers, list) or not all(isinstance(L, LayerPlan) for L in self.layers):
            raise ProgramError(f"{where}: layers: expected a list of LayerPlan")
        try:
            text = json.dumps(self._meta())
        except (TypeError, ValueError) as e:
            raise ProgramError(f"{where}: the plan holds a value that is not plain JSON ({e})") from None
        params = _image(self.params, np.dtype("<u4"), "params", where)
        weights = _image(self.weights, np.dtype("<u2"), "weights", where)
        _parse(_decode_meta(text.encode(), where), params, weights, where)
        return text.encode(), params, weights

    def validate(self, where="program"):
        """Check that the program is one a device may run: the checks of :meth:`load` on the
        object (every field of the right type and range, the memory images within the
        configuration's depths, the descriptors equal to the plans, the addresses within the
        memories, consecutive layers of consistent shapes, no weights in the padding, the
        Winograd position masks and the accumulator widths consistent with the weights).

        :param where: how messages name the program.
        :raises ProgramError: naming the first field that is wrong.
        """
        self._checked(where)

    def save(self, path):
        """Write the program file (format :data:`FORMAT_VERSION`) to ``path``, replacing it
        atomically (a temporary file in the same folder, then a rename).

        :raises ProgramError: if the program is not valid (:meth:`validate`); nothing is written.
        :raises OSError: if the file cannot be written.
        """
        meta, params, weights = self._checked("program")
        meta = np.frombuffer(meta, np.uint8)
        checksum = np.frombuffer(program_checksum(meta, params, weights), np.uint8)
        path = os.fspath(path)
        try:
            fd, tmp = tempfile.mkstemp(prefix=".nibble-", suffix=".npz.tmp", dir=os.path.dirname(path) or ".")
        except OSError as e:                # name the file asked for, not the temporary one
            raise OSError(e.errno, e.strerror, path) from None
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, meta=meta, params=params, weights=weights, checksum=checksum)
            os.replace(tmp, path)
        except BaseException as e:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            if isinstance(e, OSError):
                raise OSError(e.errno, e.strerror, path) from None
            raise

    @classmethod
    def load(cls, path):
        """Read a program file written by :meth:`save` and check it.

        Checks, in order: the file is a zip archive; its ``meta`` array is JSON of format
        :data:`FORMAT_VERSION` with a valid ``config``; the archive holds exactly the arrays
        ``meta``, ``params``, ``weights`` and ``checksum`` (``.npy``, no pickles, the expected
        dtypes, sizes within the configuration's memories); the checksum matches the content;
        every field is present with the right type and range; the program is consistent
        (:meth:`validate`).

        :raises ProgramError: (a ``ValueError``) on any problem, naming the file and the field:
            a missing or unreadable file, not a zip archive, a damaged or truncated archive,
            another format version, an edited file, an inconsistent program. No other exception
            comes out of reading a damaged file.
        """
        where = os.fspath(path) if isinstance(path, (str, bytes, os.PathLike)) else repr(path)
        where = where.decode(errors="replace") if isinstance(where, bytes) else where
        with _Archive(path, where) as ar:
            meta_raw = ar.array("meta", _META_LIMIT, "bytes of metadata")
            meta = _decode_meta(meta_raw.tobytes(), where)
            fmt = meta.get("format")
            if fmt is None:
                raise ProgramError(f"{where}: format: missing (not a Nibble program file)")
            if not _is_int(fmt) or fmt != FORMAT_VERSION:
                raise ProgramError(f"{where}: format: the file has program format {_got(fmt)}, this Nibble reads "
                                   f"format {FORMAT_VERSION} (compile the model again with 'nibble compile')")
            config = _parse_config(meta.get("config"), _Check(where))
            ar.check_members()
            if _is_int(meta.get("feature_space")) and meta["feature_space"] > 0:
                params = ar.array("params", 1 << 24, "words; a program with its maps in DDR has at most 2^24")
            else:
                params = ar.array("params", config.param_depth,
                                  f"words; the parameter memory holds {config.param_depth} (config.param_depth)")
            per_word = config.vc // 4
            if meta.get("stream_weights") is True:
                weights = ar.array("weights", config.ddr_bytes // 2,
                                   f"16-bit words; external memory holds {config.ddr_bytes // 2} (config.ddr_bytes)")
            else:
                weights = ar.array("weights", config.weight_depth * per_word,
                                   f"16-bit words; the weight memory holds {config.weight_depth} words of "
                                   f"{per_word} (config.weight_depth)")
            checksum = ar.array("checksum", 32, "bytes (a SHA-256 digest has 32)")
        if len(checksum) != 32:
            raise ProgramError(f"{where}: checksum: expected 32 bytes (SHA-256), got {len(checksum)}")
        if program_checksum(meta_raw, params, weights) != checksum.tobytes():
            raise ProgramError(f"{where}: checksum: does not match the content (the file was changed after "
                               "it was written, or is damaged)")
        return _parse(meta, params, weights, where)


def program_checksum(meta, params, weights):
    """SHA-256 of a program's content, as stored in its file's ``checksum`` array.

    The digest covers ``b"nibble-program\\0"``, then for each array in the fixed order
    ``meta`` (uint8: the UTF-8 JSON metadata), ``params`` (uint32), ``weights`` (uint16): its
    name, NUL, its dtype as NumPy spells it (``|u1``, ``<u4``, ``<u2``), NUL, its shape as
    comma-separated decimal numbers, NUL, and its bytes (little-endian, C order).

    :param meta: the JSON bytes (``bytes`` or uint8 array). :param params, weights: the images.
    :returns: the 32-byte digest.
    """
    h = hashlib.sha256(b"nibble-program\0")
    if isinstance(meta, (bytes, bytearray)):
        meta = np.frombuffer(meta, np.uint8)
    for name, a in zip(_CHECKSUM_ORDER, (meta, params, weights)):
        a = np.ascontiguousarray(a, dtype=_DTYPES[name])
        h.update(f"{name}\0{a.dtype.str}\0{','.join(str(n) for n in a.shape)}\0".encode())
        h.update(a.tobytes())
    return h.digest()


# ------------------------------------------------------------------------------------------------
# Reading the archive

_CHECKSUM_ORDER = ("meta", "params", "weights")
_DTYPES = {"meta": np.dtype("|u1"), "params": np.dtype("<u4"), "weights": np.dtype("<u2"),
           "checksum": np.dtype("|u1")}
_DTYPE_NAMES = {"meta": "uint8", "params": "little-endian uint32", "weights": "little-endian uint16",
                "checksum": "uint8"}
_META_LIMIT = 16 << 20          # bytes of JSON metadata
_HEADER_SLACK = 1 << 16         # bytes of .npy header allowed on top of the data


class _Archive:
    """The zip archive of a program file; every failure is a :class:`ProgramError`."""

    def __init__(self, path, where):
        self.where = where
        try:
            self.f = open(path, "rb")
            head = self.f.read(4)
            self.f.seek(0)
        except (OSError, TypeError, ValueError) as e:
            if getattr(self, "f", None) is not None:
                self.f.close()
            raise ProgramError(f"{where}: cannot read the file ({getattr(e, 'strerror', None) or e})") from None
        if head[:2] != b"PK":
            self.f.close()
            what = ("an empty file" if not head else
                    "a .npy array, not a .npz archive" if head == b"\x93NUM" else "not a zip archive")
            raise ProgramError(f"{where}: not a Nibble program file ({what})")
        try:
            self.zf = zipfile.ZipFile(self.f)
            self.infos = self.zf.infolist()
        except Exception as e:          # anything zipfile raises on a damaged archive
            self.f.close()
            raise ProgramError(f"{where}: not a Nibble program file (damaged or truncated zip archive: "
                               f"{_reason(e)})") from None
        self.members = {}
        for info in self.infos:
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            if name in self.members:
                self.close()
                raise ProgramError(f"{where}: array '{name}' appears twice in the archive")
            self.members[name] = info

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.zf.close()
        finally:
            self.f.close()

    def check_members(self):
        for name in _DTYPES:
            if name not in self.members:
                raise ProgramError(f"{self.where}: {name}: missing array (a program file holds "
                                   f"{', '.join(_DTYPES)})")
        for name in self.members:
            if name not in _DTYPES:
                raise ProgramError(f"{self.where}: unexpected array '{name}' (a program file holds "
                                   f"{', '.join(_DTYPES)})")

    def array(self, name, limit, unit):
        """The 1-D array ``name`` (at most ``limit`` elements of its dtype). The ``.npy`` header
        is parsed as a literal (``numpy.lib.format``); the data is read with ``frombuffer`` only
        after the dtype is checked, so nothing is ever unpickled (stricter than
        ``np.load(allow_pickle=False)``, and the sizes are known before anything is allocated)."""
        where = self.where
        info = self.members.get(name)
        if info is None:
            raise ProgramError(f"{where}: {name}: missing array (not a Nibble program file)")
        dtype = _DTYPES[name]
        if info.file_size > _HEADER_SLACK + limit * dtype.itemsize:
            raise ProgramError(f"{where}: {name}: {info.file_size} bytes, more than the {limit} {unit} allow")
        try:
            raw = self.zf.read(info)
        except Exception as e:          # BadZipFile (CRC), zlib.error, EOFError, NotImplementedError …
            raise ProgramError(f"{where}: {name}: damaged archive member ({_reason(e)})") from None
        f = io.BytesIO(raw)
        try:
            shape, fortran, dt = read_npy_header(f, np.lib.format.read_magic(f))
        except Exception as e:          # ValueError from the header parser, and anything else it meets
            raise ProgramError(f"{where}: {name}: not a .npy array ({_reason(e)})") from None
        if dt.hasobject or dt.names is not None or dt.str != dtype.str:
            raise ProgramError(f"{where}: {name}: expected dtype {_DTYPE_NAMES[name]}, got {dt}")
        if len(shape) != 1:
            raise ProgramError(f"{where}: {name}: expected a 1-D array, got shape {tuple(shape)}")
        n = shape[0]
        if n > limit:
            raise ProgramError(f"{where}: {name}: {n} {unit}" if name != "checksum" else
                               f"{where}: checksum: expected 32 bytes (SHA-256), got {n}")
        data = raw[f.tell():]
        if len(data) != n * dtype.itemsize:
            raise ProgramError(f"{where}: {name}: the header announces {n * dtype.itemsize} bytes of data, "
                               f"the member holds {len(data)}")
        return np.frombuffer(data, dtype).copy()


def read_npy_header(f, version):
    """``(shape, fortran_order, dtype)`` of an open ``.npy`` stream after its magic bytes
    (``numpy.lib.format``; versions 1.0 and 2.0). Raises ``ValueError`` on anything else."""
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(f)
    raise ValueError(f".npy format version {version[0]}.{version[1]} is not supported")


def _reason(e):
    text = str(e).strip().replace("\n", " ")
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _no_duplicates(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise ValueError(f"duplicate key {k!r}")
        d[k] = v
    return d


def _no_constant(name):
    raise ValueError(f"{name} is not a number")


def _decode_meta(raw, where):
    """The metadata dict from its JSON bytes."""
    try:
        meta = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:     # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ProgramError(f"{where}: meta: not valid JSON metadata ({_reason(e)})") from None
    if not isinstance(meta, dict):
        raise ProgramError(f"{where}: meta: expected a JSON object, got {_got(meta)}")
    return meta


def _image(a, dtype, name, where):
    """A memory image of a :class:`Program` object as a 1-D array of ``dtype`` (values checked)."""
    a = np.asarray(a)
    if a.ndim != 1 or a.dtype.kind not in "iu":
        raise ProgramError(f"{where}: {name}: expected a 1-D array of integers, got {a.dtype} shape {a.shape}")
    top = (1 << (8 * dtype.itemsize)) - 1
    if a.size and (int(a.min()) < 0 or int(a.max()) > top):
        raise ProgramError(f"{where}: {name}: values outside 0..{top}")
    return a.astype(dtype)


# ------------------------------------------------------------------------------------------------
# Schema: every field present, of the right type and range

def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _got(v):
    try:
        s = json.dumps(v)
    except (TypeError, ValueError):
        s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _int_kind(lo, hi):
    if lo is None and hi is None:
        return "an integer"
    if hi is None:
        return {0: "a non-negative integer", 1: "a positive integer"}.get(lo, f"an integer >= {lo}")
    return f"an integer in [{lo}, {hi}]"


class _Check:
    """Field checks; every failure is ``ProgramError("<where>: <field>: expected …, got …")``."""

    def __init__(self, where):
        self.where = where

    def fail(self, field, msg):
        raise ProgramError(f"{self.where}: {field}: {msg}")

    def int(self, v, field, lo=None, hi=None):
        if not _is_int(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
            self.fail(field, f"expected {_int_kind(lo, hi)}, got {_got(v)}")
        return v

    def bool(self, v, field):
        if not isinstance(v, bool):
            self.fail(field, f"expected true or false, got {_got(v)}")
        return v

    def str(self, v, field):
        if not isinstance(v, str):
            self.fail(field, f"expected a string, got {_got(v)}")
        return v

    def ints(self, v, field, ranges, what):
        if not isinstance(v, list) or len(v) != len(ranges) or not all(
                _is_int(x) and lo <= x <= hi for x, (lo, hi) in zip(v, ranges)):
            self.fail(field, f"expected {what}, got {_got(v)}")
        return tuple(v)

    def keys(self, d, names, field):
        if not isinstance(d, dict):
            self.fail(field, f"expected a JSON object, got {_got(d)}")
        for k in names:
            if k not in d:
                self.fail(f"{field}.{k}" if field else k, "missing")
        for k in d:
            if k not in names:
                self.fail(f"{field}.{k}" if field else k, "unexpected field")


_U8, _U16, _U32 = (1, 255), (1, 65535), (0, (1 << 32) - 1)
_Q = (-128, 128)                # feature and weight exponents


def _phase(c, v, f):
    if v == []:
        return ()
    if not (isinstance(v, list) and len(v) == 4 and all(_is_int(x) for x in v) and 1 <= v[2] <= 255
            and 1 <= v[3] <= 255 and 0 <= v[0] < v[2] and 0 <= v[1] < v[3]):
        c.fail(f, f"expected [] or [φy, φx, Sy, Sx] with 0 <= φ < S <= 255 per axis, got {_got(v)}")
    return tuple(v)


def _dil(c, v, f):
    if not (_is_int(v) and 1 <= v <= 128 and v & (v - 1) == 0):
        c.fail(f, f"expected a power of two in [1, 128], got {_got(v)}")
    return v


def _choice(*values):
    def check(c, v, f):
        if v not in values or isinstance(v, bool) or type(v) is not type(values[0]):
            c.fail(f, f"expected one of {', '.join(_got(x) for x in values)}, got {_got(v)}")
        return v
    return check


def _ranged(lo=None, hi=None):
    return lambda c, v, f: c.int(v, f, lo, hi)


#: The type and range of every LayerPlan field in the file.
_LAYER_SPEC = {
    "name": lambda c, v, f: c.str(v, f),
    "op": _choice("conv", "deconv_nzp", "deconv_phase"),
    "cin": _ranged(1), "cout": _ranged(1),
    "in_h": _ranged(*_U16), "in_w": _ranged(*_U16),
    "kh": _ranged(*_U8), "kw": _ranged(*_U8), "stride": _ranged(*_U8),
    "pad": lambda c, v, f: c.ints(v, f, [(0, 255), (-65535, 65535), (0, 255), (-65535, 65535)],
                                  "[top, bottom, left, right] with top, left in [0, 255]"),
    "conv_h": _ranged(1), "conv_w": _ranged(1),
    "pool": lambda c, v, f: c.ints(v, f, [(1, 15)] * 4 + [(0, 14)] * 4,
                                   "[kh, kw, sy, sx, top, bottom, left, right]: sizes and strides in [1, 15], "
                                   "paddings in [0, 14]"),
    "out_h": _ranged(*_U16), "out_w": _ranged(*_U16),
    "relu": lambda c, v, f: c.bool(v, f),
    "n2": _ranged(*_Q), "q_in": _ranged(*_Q), "q_out": _ranged(*_Q),
    "sh": _ranged(SH_MIN, SH_MAX),
    "acc_bits": _ranged(1, 64),
    "cb_in": _ranged(1), "cb_out": _ranged(1),
    "in_base": _ranged(*_U32), "out_base": _ranged(*_U32), "w_base": _ranged(*_U32),
    "bias_base": _ranged(*_U32),
    "winograd": lambda c, v, f: c.bool(v, f),
    "mode_reason": lambda c, v, f: c.str(v, f),
    "out_row": _ranged(*_U32), "out_pix": _ranged(*_U32),
    "act": _choice(ACT_NONE, ACT_TANH, ACT_SIGMOID),
    "dil": _dil,
    "wmask": lambda c, v, f: c.ints(v, f, [(1, 15), (1, 15)], "[rows, columns] 4-bit masks, each in [1, 15]"),
    "group": lambda c, v, f: c.str(v, f),
    "phase": _phase,
    "full_h": _ranged(0, 65535), "full_w": _ranged(0, 65535),
    "map_base": _ranged(*_U32),
    "prelu": lambda c, v, f: c.bool(v, f),
    "slope_base": _ranged(*_U32),
    "clip": lambda c, v, f: c.ints(v, f, [(-128, 127), (-128, 127)], "[lo, hi] int8 bounds"),
    "in_row": _ranged(*_U32), "in_pix": _ranged(*_U32),
    "crop": lambda c, v, f: c.ints(v, f, [(0, 65535), (0, 65535)], "[rows, columns] in [0, 65535]"),
    "src": lambda c, v, f: c.str(v, f), "dst": lambda c, v, f: c.str(v, f),
    "res": lambda c, v, f: c.bool(v, f), "res_src": lambda c, v, f: c.str(v, f),
    "res_base": _ranged(*_U32), "res_q": _ranged(*_Q),
    "groups": _ranged(1, 1 << 16), "grp": _ranged(0, 65535),
    "dst_off": _ranged(*_U32), "dst_pix": _ranged(*_U32),
    "ch_sh": lambda c, v, f: c.bool(v, f), "shift_base": _ranged(*_U32),
}
assert set(_LAYER_SPEC) == {fl.name for fl in dataclasses.fields(LayerPlan)}, "LayerPlan and its file schema"

_TOP_KEYS = ("format", "config", "layers", "inputs", "outputs", "desc_base", "stream_weights", "feature_space")
_TENSOR_KEYS = ("name", "shape", "q", "base", "row", "pix", "flatten", "tail", "fold")


def _parse_fold(c, v, field):
    """A :attr:`TensorSpec.fold` from the file: ``[]`` or ten sizes (C, H, W, kh, kw, stride, top,
    bottom, left, right)."""
    if v == []:
        return ()
    return c.ints(v, field, [(1, 1 << 24)] * 6 + [(0, 1 << 24)] * 4,
                  "[] or [C, H, W, kh, kw, stride, top, bottom, left, right] (sizes ≥ 1, paddings ≥ 0)")


def _parse_tensors(c, v, field, minimum):
    """A list of :class:`TensorSpec` from the file."""
    if not isinstance(v, list) or len(v) < minimum:
        c.fail(field, f"expected a list of at least {minimum} tensor(s), got {_got(v)}")
    out = []
    for i, d in enumerate(v):
        f = f"{field}[{i}]"
        c.keys(d, list(_TENSOR_KEYS), f)
        tail = d["tail"]
        if not isinstance(tail, list) or any(t not in HOST_OPS for t in tail):
            c.fail(f"{f}.tail", f"expected a list of host operators ({', '.join(HOST_OPS)}), got {_got(tail)}")
        out.append(TensorSpec(name=c.str(d["name"], f"{f}.name"),
                              shape=c.ints(d["shape"], f"{f}.shape", [(1, 1 << 24)] * 3, "[C, H, W] of positive integers"),
                              q=c.int(d["q"], f"{f}.q", *_Q), base=c.int(d["base"], f"{f}.base", *_U32),
                              row=c.int(d["row"], f"{f}.row", *_U32), pix=c.int(d["pix"], f"{f}.pix", *_U32),
                              flatten=c.bool(d["flatten"], f"{f}.flatten"), tail=tuple(tail),
                              fold=_parse_fold(c, d["fold"], f"{f}.fold")))
    return out


def _parse_config(d, c):
    fields = {fl.name: fl for fl in dataclasses.fields(EngineConfig)}
    c.keys(d, list(fields), "config")
    for name in fields:
        if name == "winograd":
            c.bool(d[name], "config.winograd")
        else:
            c.int(d[name], f"config.{name}", 1)
    try:
        return EngineConfig(**d)
    except (ValueError, TypeError) as e:
        c.fail("config", str(e))


def _parse(meta, params, weights, where):
    """A checked :class:`Program` from the metadata dict and the two memory images."""
    c = _Check(where)
    c.keys(meta, _TOP_KEYS, "")
    if meta["format"] != FORMAT_VERSION or not _is_int(meta["format"]):
        c.fail("format", f"expected {FORMAT_VERSION}, got {_got(meta['format'])}")
    config = _parse_config(meta["config"], c)
    layers = meta["layers"]
    if not isinstance(layers, list):
        c.fail("layers", f"expected a list of layer plans, got {_got(layers)}")
    if not layers:
        c.fail("layers", "no layers (a program runs at least one layer)")
    plans = []
    for i, d in enumerate(layers):
        f = f"layers[{i}]"
        c.keys(d, list(_LAYER_SPEC), f)
        plans.append(LayerPlan(**{k: check(c, d[k], f"{f}.{k}") for k, check in _LAYER_SPEC.items()}))
    p = Program(config=config, layers=plans, params=params, weights=weights,
                inputs=_parse_tensors(c, meta["inputs"], "inputs", 1),
                outputs=_parse_tensors(c, meta["outputs"], "outputs", 1),
                desc_base=c.int(meta["desc_base"], "desc_base", *_U32),
                stream_weights=c.bool(meta["stream_weights"], "stream_weights"),
                feature_space=c.int(meta["feature_space"], "feature_space", 0, 1 << 24))
    if p.feature_space and not p.stream_weights:
        c.fail("feature_space", "feature maps in external memory need stream_weights")
    _consistency(p, c)
    return p


# ------------------------------------------------------------------------------------------------
# Consistency: what the devices would otherwise get wrong

def _groups(layers):
    """``(start, end)`` of each run of plans of one IR layer, as :func:`golden_forward` runs them."""
    out, i = [], 0
    while i < len(layers):
        j = i + 1
        while j < len(layers) and layers[i].group and layers[j].group == layers[i].group:
            j += 1
        out.append((i, j))
        i = j
    return out


def _consistency(p, c):
    cfg, layers, n = p.config, p.layers, len(p.layers)
    per_word = cfg.vc // 4
    n_params, n_words = len(p.params), len(p.weights) // per_word
    if n_params > cfg.param_depth and not p.feature_space:      # maps in DDR: parameters streamed too
        c.fail("params", f"{n_params} words; the parameter memory holds {cfg.param_depth}")
    if len(p.weights) % per_word:
        c.fail("weights", f"{len(p.weights)} 16-bit words, not a whole number of {per_word}-word memory words")
    if p.stream_weights:
        half = cfg.weight_depth // 2
        for i, L in enumerate(layers):
            # maps in DDR: a plan is streamed in parts of whole output blocks (host.steps.parts)
            need = (cfg.m if p.feature_space else L.n_coblk(cfg.m) * cfg.m) * L.kh * L.kw * L.cb_in
            if need > half:
                c.fail(f"layers[{i}].w_base", f"{need} weight words; a streamed plan holds half of the weight "
                                              f"memory ({half} words)")
        if n_words * cfg.vc // 2 > cfg.ddr_bytes // 2:
            c.fail("weights", f"{n_words} words; half of external memory holds {cfg.ddr_bytes // cfg.vc}")
    elif n_words > cfg.weight_depth:
        c.fail("weights", f"{n_words} words; the weight memory holds {cfg.weight_depth}")
    d_end = p.desc_base + DESC_WORDS * n
    if d_end > n_params:
        c.fail("desc_base", f"{n} descriptors from word {p.desc_base} need {d_end} words of parameter memory, "
                            f"the image has {n_params}")
    for i, L in enumerate(layers):
        _check_plan(p, i, L, c, d_end)
    groups = _groups(layers)
    for a, b in groups:
        _check_group(layers, a, b, c)
    _dataflow(p, c, groups)
    for i, L in enumerate(layers):
        _check_contents(p, i, L, c)


def _extent(base, h, w, row, pix, cb):
    """``(first, end)`` feature-memory words of a map view."""
    return base, base + (h - 1) * row + (w - 1) * pix + cb


def _dataflow(p, c, groups):
    """Tensors: every plan reads a program input or the output of an earlier plan, with its shape,
    exponent and layout; nothing is written twice; the outputs exist; and no plan writes over a
    tensor that is still to be read (or is a program output)."""
    vc = p.config.vc
    tensors = {}          # name -> (shape, q, base, row, pix, cb, group index of the producer or -1)
    names = [t.name for t in p.inputs]
    if len(set(names)) != len(names):
        c.fail("inputs", f"tensor names appear twice: {names}")
    for k, t in enumerate(p.inputs):
        row, pix, cb = t.view(vc)
        tensors[t.name] = (tuple(t.shape), t.q, t.base, row, pix, cb, -1)
        if t.fold:
            from .passes.fold_taps import fold_shape
            if fold_shape(t.fold) != tuple(t.shape):
                c.fail(f"inputs[{k}].fold", f"folds a {list(t.fold[:3])} input into {list(fold_shape(t.fold))}, "
                                            f"not the input's shape {list(t.shape)}")
        if t.base + t.words(vc) > p.feature_words:
            c.fail(f"inputs[{k}].base", f"the input map ends at word {t.base + t.words(vc)}, the feature memory "
                                        f"has {p.feature_words}")
    reads = {}            # tensor -> last group index reading it
    parts = {}            # concatenated tensor -> the pixel words written so far
    prev = p.inputs[0].name
    srcs, dsts = [], []
    for g, (a, _) in enumerate(groups):
        L, f = p.layers[a], f"layers[{a}]"
        src = L.src or prev
        if src not in tensors:
            c.fail(f"{f}.src", f"'{src}' is not a program input nor written by an earlier layer")
        shape, q, base, row, pix, cb, _ = tensors[src]
        if src in parts and parts[src] != set(range(pix)):
            c.fail(f"{f}.src", f"reads the concatenated tensor '{src}' before all its parts are written")
        for field, have, want, what in (("cin", L.cin, shape[0], "channels"), ("in_h", L.in_h, shape[1], "rows"),
                                        ("in_w", L.in_w, shape[2], "columns"), ("q_in", L.q_in, q, "exponent"),
                                        ("in_base", L.in_base, base, "first word"),
                                        ("cb_in", L.in_view[1] if L.grp else L.cb_in, cb, "words per pixel"),
                                        ("in_row", L.in_view[0], row, "words per row"),
                                        ("in_pix", L.in_view[1], pix, "words per pixel step")):
            if have != want:
                c.fail(f"{f}.{field}", f"{have} is not the {what} {want} of the tensor '{src}' it reads")
        reads[src] = g
        if L.res:
            if L.res_src not in tensors:
                c.fail(f"{f}.res_src", f"'{L.res_src}' is not a program input nor written by an earlier layer")
            shape, q, base, row, pix, cb, _ = tensors[L.res_src]
            want = ((L.cout, L.out_h, L.out_w), L.res_q, L.res_base, *L.out_view, L.cb_out)
            if (shape, q, base, row, pix, cb) != want:
                c.fail(f"{f}.res_src", f"the residual '{L.res_src}' (shape {list(shape)}, q {q}, word {base}, "
                                       f"row {row}, pixel {pix}, {cb} words) is not laid out as the output "
                                       f"{[L.cout, L.out_h, L.out_w]} with q {L.res_q} at word {L.res_base}")
            reads[L.res_src] = g
        dst = L.dst or f"<layers[{a}]>"
        out_row, out_pix = (L.full_w * L.cb_out, L.cb_out) if L.phase else (L.full_w * (L.dst_pix or L.cb_out),
                                                                           L.dst_pix or L.cb_out)
        words = set(range(L.dst_off, L.dst_off + L.cb_out))
        if L.dst_pix:                   # one part of a concatenated tensor: C = dst_pix·vc channels
            rec = ((out_pix * vc, L.full_h, L.full_w), L.q_out, L.map_base, out_row, out_pix, out_pix, g)
            if dst in tensors:
                if dst not in parts or tensors[dst][:6] != rec[:6]:
                    c.fail(f"{f}.dst", f"the tensor '{dst}' is written twice, or its parts differ in size, "
                                       "exponent or place")
                if parts[dst] & words:
                    c.fail(f"{f}.dst_off", f"words {sorted(parts[dst] & words)} of the pixels of '{dst}' are "
                                           "written by two layers")
                parts[dst] |= words
            else:
                tensors[dst], parts[dst] = rec, words
        else:
            if dst in tensors:
                c.fail(f"{f}.dst", f"the tensor '{dst}' is written twice")
            tensors[dst] = ((L.cout, L.full_h, L.full_w), L.q_out, L.map_base, out_row, out_pix, L.cb_out, g)
        srcs.append(src)
        dsts.append(dst)
        prev = dst
    for name, words in parts.items():
        if words != set(range(tensors[name][4])):
            c.fail("layers", f"the concatenated tensor '{name}' has pixel words {sorted(set(range(tensors[name][4])) - words)} "
                             "that no layer writes")
    onames = [t.name for t in p.outputs]
    if len(set(onames)) != len(onames):
        c.fail("outputs", f"tensor names appear twice: {onames}")
    for k, t in enumerate(p.outputs):
        f = f"outputs[{k}]"
        if t.name not in tensors or tensors[t.name][6] < 0:
            c.fail(f"{f}.name", f"'{t.name}' is not written by any layer")
        shape, q, base, row, pix, cb, _ = tensors[t.name]
        trow, tpix, _ = t.view(vc)
        for field, have, want in (("shape", list(t.shape), list(shape)), ("q", t.q, q), ("base", t.base, base),
                                  ("row", trow, row), ("pix", tpix, pix)):
            if have != want:
                c.fail(f"{f}.{field}", f"{have} is not the {field} {want} of the tensor '{t.name}'")
        reads[t.name] = len(groups)
    for g, (a, _) in enumerate(groups):
        shape, _, base, row, pix, cb, _ = tensors[dsts[g]]
        lo, hi = _extent(base, shape[1], shape[2], row, pix, cb)
        for name, (s2, _, b2, r2, p2, c2, prod) in tensors.items():
            if name == dsts[g] or prod >= g or reads.get(name, -1) < g:
                continue               # not yet written, or never read again
            lo2, hi2 = _extent(b2, s2[1], s2[2], r2, p2, c2)
            if lo < hi2 and lo2 < hi:
                c.fail(f"layers[{a}].map_base", f"the output '{dsts[g]}' (words {lo}..{hi - 1}) overwrites the tensor "
                                                f"'{name}' (words {lo2}..{hi2 - 1}), which is still to be read")


def _check_plan(p, i, L, c, d_end):
    """One plan: geometry, modes, shift, memory ranges, its descriptor words."""
    cfg, f = p.config, f"layers[{i}]"
    fail = lambda field, msg: c.fail(f"{f}.{field}", msg)  # noqa: E731
    if L.op == "conv" and (L.dil != 1 or L.phase):
        fail("op", "a 'conv' plan has no input zero insertion (dil 1) and no phase")
    if L.op == "deconv_nzp" and (L.phase or L.stride != 1):
        fail("op", "a 'deconv_nzp' plan has stride 1 and no phase")
    if L.op == "deconv_phase" and (not L.phase or L.dil != 1 or L.stride != 1):
        fail("op", "a 'deconv_phase' plan has a phase [φy, φx, S], stride 1 and no zero insertion")
    t, b, l, r = L.pad
    _, in_h, in_w = L.read_area
    if in_h < 1 or in_w < 1:
        fail("crop", f"{list(L.crop)} leaves nothing of the {L.in_h}x{L.in_w} input")
    if (L.dil != 1 or L.grp) and tuple(L.crop) != (0, 0):
        fail("crop", "only a plan without zero insertion and groups crops its input")
    conv_h = ((in_h - 1) * L.dil + 1 + t + b - L.kh) // L.stride + 1
    conv_w = ((in_w - 1) * L.dil + 1 + l + r - L.kw) // L.stride + 1
    crop = f" cropped by {list(L.crop)}" if any(L.crop) else ""
    geo = (f"a {L.kh}x{L.kw} kernel, stride {L.stride}, zero insertion {L.dil}, padding {list(L.pad)} "
           f"on a {L.in_h}x{L.in_w} input{crop}")
    if conv_h < 1 or conv_w < 1:
        fail("pad", f"{geo} gives no output")
    if (L.conv_h, L.conv_w) != (conv_h, conv_w):
        fail("conv_h", f"{geo} gives {conv_h}x{conv_w}, the plan says {L.conv_h}x{L.conv_w}")
    pkh, pkw, psy, psx, ppt, ppb, ppl, ppr = L.pool
    if max(ppt, ppb) >= pkh or max(ppl, ppr) >= pkw:
        fail("pool", f"a padding of the max-pool window {list(L.pool)} is not smaller than the window")
    ph, pw = pool_out_size(L.conv_h, L.conv_w, L.pool)
    if (L.out_h, L.out_w) != (ph, pw) or min(L.out_h, L.out_w) < 1:
        fail("out_h", f"a {L.conv_h}x{L.conv_w} map pooled by {list(L.pool)} is {ph}x{pw}, the plan says "
                      f"{L.out_h}x{L.out_w}")
    if (L.out_h - 1) * psy - ppt >= L.conv_h or (L.out_w - 1) * psx - ppl >= L.conv_w:
        fail("pool", f"the last max-pool window of {list(L.pool)} starts outside the {L.conv_h}x{L.conv_w} map")
    if L.clip[0] > L.clip[1]:
        fail("clip", f"{list(L.clip)}: the lower bound is above the upper one")
    if L.res:
        if L.pools or L.phase or L.op != "conv":
            fail("res", "a residual Add is fused only into a convolution without pooling or phases")
        if not 0 <= L.res_sh_hw <= RES_SH_MAX:
            fail("res_q", f"the residual shift q_in - n2 - res_q = {L.res_sh_hw} is outside [0, {RES_SH_MAX}]")
    elif L.res_src or L.res_base or L.res_q:
        fail("res", "res_src, res_base and res_q are set without a residual")
    if L.winograd:
        if not cfg.winograd:
            fail("winograd", "a Winograd plan, but the engine is configured without the Winograd path")
        if (L.kh, L.kw, L.stride, L.dil) != (3, 3, 1, 1):
            fail("winograd", "Winograd F(2x2,3x3) needs a 3x3 stride-1 plan without zero insertion")
        if L.pools and tuple(L.pool) != POOL_2X2:
            fail("pool", "a Winograd plan pools only with the 2x2 stride-2 unpadded window")
        if 16 * L.cb_in > cfg.filter_depth // 2:
            fail("cb_in", f"16 x {L.cb_in} transformed-weight words exceed half the filter cache "
                          f"({cfg.filter_depth // 2})")
    elif L.wmask != (15, 15):
        fail("wmask", f"only a Winograd plan skips transformed positions; expected [15, 15], got {list(L.wmask)}")
    if L.kh * L.kw * L.cb_in > cfg.filter_depth:
        fail("cb_in", f"a filter of {L.kh * L.kw * L.cb_in} words does not fit the {cfg.filter_depth}-word "
                      "filter cache")
    if L.grp:
        if L.cin % L.groups or L.cout % L.groups or L.groups < 2:
            fail("groups", f"{L.groups} groups do not divide {L.cin} input and {L.cout} output channels")
        if L.in_view[1] * cfg.vc < L.cin or L.cb_in > L.in_view[1]:
            fail("in_pix", f"a grouped plan reads {L.cb_in} of the in_pix = {L.in_view[1]} words of a pixel, "
                           f"which must hold its {L.cin} input channels")
        if L.winograd and L.pools:
            fail("grp", "a grouped Winograd plan does not pool")
    elif L.groups != 1:
        fail("groups", f"{L.groups} groups in a dense plan (grp = 0)")
    elif L.cb_in * cfg.vc < L.cin:
        fail("cb_in", f"{L.cb_in} words of {cfg.vc} channels cannot hold {L.cin} input channels")
    nb = L.n_coblk(cfg.m)
    if L.cb_out != nb * cfg.m // cfg.vc:
        fail("cb_out", f"{L.cout} output channels in blocks of {cfg.m} take {nb * cfg.m // cfg.vc} words per "
                       f"pixel, the plan says {L.cb_out}")
    q_to = ACT_Q_IN if L.act else L.q_out
    if L.act and L.q_out != ACT_Q_OUT:
        fail("q_out", f"a tanh/sigmoid table gives exponent {ACT_Q_OUT}, the plan says {L.q_out}")
    if L.sh != L.q_in - L.n2 - q_to:
        fail("sh", f"q_in - n2 - {'ACT_Q_IN' if L.act else 'q_out'} = {L.q_in - L.n2 - q_to}, the plan says {L.sh}")
    if not SH_MIN <= L.sh_hw <= SH_MAX:
        fail("sh", f"the hardware shift {L.sh_hw} is outside [{SH_MIN}, {SH_MAX}]")
    if L.acc_bits > cfg.acc_width:
        fail("acc_bits", f"{L.acc_bits} bits, the engine's accumulators have {cfg.acc_width}")
    # the output map: dense, or one phase of an interleaved map (ARITHMETIC §5)
    if L.phase:
        py, px, sy, sx = L.phase
        rows, cols = -(-(L.full_h - py) // sy), -(-(L.full_w - px) // sx)
        if (L.out_h, L.out_w) != (rows, cols):
            fail("out_h", f"phase ({py}, {px}) of stride ({sy}, {sx}) of a {L.full_h}x{L.full_w} map has "
                          f"{rows}x{cols} outputs, the plan says {L.out_h}x{L.out_w}")
        want = (L.map_base + (py * L.full_w + px) * L.cb_out, sy * L.full_w * L.cb_out, sx * L.cb_out)
    else:
        if (L.full_h, L.full_w) != (L.out_h, L.out_w):
            fail("full_h", f"{L.full_h}x{L.full_w} is not the output {L.out_h}x{L.out_w} of a plan without phase")
        P = L.dst_pix or L.cb_out
        if L.dst_off + L.cb_out > P:
            fail("dst_off", f"words {L.dst_off}..{L.dst_off + L.cb_out - 1} do not fit a {P}-word pixel of "
                            f"'{L.dst}'")
        want = (L.map_base + L.dst_off, L.out_row and L.out_w * P, L.out_pix and P)
    for field, w in zip(("out_base", "out_row", "out_pix"), want):
        if getattr(L, field) != w:
            fail(field, f"expected {w} for this output map, got {getattr(L, field)}")
    # memory ranges (the engine's checks, against the images the program carries)
    in_end = _extent(L.in_base, L.in_h, L.in_w, *L.in_view, L.in_view[1] if L.grp else L.cb_in)[1]
    map_end = L.map_base + L.full_h * L.full_w * (L.dst_pix or L.cb_out)
    if in_end > p.feature_words:
        fail("in_base", f"the input map ends at word {in_end}, the feature memory has {p.feature_words}")
    if map_end > p.feature_words:
        fail("map_base", f"the output map ends at word {map_end}, the feature memory has {p.feature_words}")
    if L.in_base < map_end and L.map_base < in_end:
        fail("map_base", f"the output map (words {L.map_base}..{map_end - 1}) overlaps the input map "
                         f"(words {L.in_base}..{in_end - 1})")
    w_end = L.w_base + nb * cfg.m * L.kh * L.kw * L.cb_in
    if w_end > len(p.weights) // (cfg.vc // 4):
        fail("w_base", f"the filters end at weight word {w_end}, the weight image has "
                       f"{len(p.weights) // (cfg.vc // 4)}")
    def param_block(field, base, what):      # the n_coblk·m words of one per-channel parameter
        end = base + nb * cfg.m
        if end > len(p.params):
            fail(field, f"the {what} end at parameter word {end}, the parameter image has {len(p.params)}")
        if base < d_end and p.desc_base < end:
            fail(field, f"the {what} (words {base}..{end - 1}) overlap the descriptors "
                        f"(words {p.desc_base}..{d_end - 1})")
        return p.params[base:end]
    param_block("bias_base", L.bias_base, "biases")
    if L.prelu:
        codes = param_block("slope_base", L.slope_base, "slope codes").view(np.int32)
        lim = 1 << (PRELU_BITS - 1)
        if np.any(codes < -lim) or np.any(codes >= lim) or np.any(codes[L.cout:]):
            fail("slope_base", f"slope codes outside the {PRELU_BITS}-bit range or in the padding channels")
    if L.ch_sh:
        if L.res:
            fail("ch_sh", "per-channel shifts with a fused residual Add")
        d = param_block("shift_base", L.shift_base, "shift offsets").astype(np.int64)
        if np.any(d > DSH_MAX) or np.any(d[L.cout:]):
            fail("shift_base", f"shift offsets above {DSH_MAX} or in the padding channels")
        if L.sh_hw - int(d.max()) < SH_MIN:
            fail("shift_base", f"a per-channel shift {L.sh_hw - int(d.max())} is below {SH_MIN}")
    elif L.shift_base:
        fail("shift_base", "shift_base is set without per-channel shifts (ch_sh)")
    want = L.descriptor(cfg, last=i == len(p.layers) - 1)
    at = p.desc_base + DESC_WORDS * i
    for k, w in enumerate(want):
        have = int(p.params[at + k])
        if have != w:
            c.fail(f"params[{at + k}]", f"descriptor word {k} of layers[{i}] is 0x{have:08x}, the layer plan "
                                        f"gives 0x{w:08x}")


_SHARED = ("op", "cin", "cout", "in_h", "in_w", "cb_in", "cb_out", "in_base", "map_base", "full_h", "full_w",
           "q_in", "q_out", "relu", "act", "prelu", "clip", "in_row", "in_pix", "src", "dst")


def _check_group(layers, a, b, c):
    """The plans ``a … b-1`` of one IR layer: one plan, or every phase of one transposed conv."""
    first = layers[a]
    if b - a == 1 and not first.phase:
        return
    for i in range(a, b):
        L = layers[i]
        if not L.phase:
            c.fail(f"layers[{i}].group", f"'{L.group}' holds several plans, so they must be the phases of one "
                                         "transposed convolution")
        for field in _SHARED:
            if getattr(L, field) != getattr(first, field):
                c.fail(f"layers[{i}].{field}", f"{_got(getattr(L, field))} differs from the first phase of its "
                                               f"group (layers[{a}]: {_got(getattr(first, field))})")
        if L.phase[2:] != first.phase[2:]:
            c.fail(f"layers[{i}].phase", f"stride {list(L.phase[2:])} differs from the first phase of its group "
                                         f"({list(first.phase[2:])})")
    sy, sx = first.phase[2:]
    have = [tuple(layers[i].phase[:2]) for i in range(a, b)]
    want = {(py, px) for py in range(sy) for px in range(sx) if py < first.full_h and px < first.full_w}
    if len(set(have)) != len(have):
        c.fail(f"layers[{a}].phase", f"a phase appears twice in group '{first.group}'")
    if set(have) != want:
        missing = sorted(want - set(have))
        c.fail(f"layers[{a}].phase", f"the phases of '{first.group or first.name}' do not cover its "
                                     f"{first.full_h}x{first.full_w} output map (missing {missing})")


def _check_contents(p, i, L, c):
    """Weights and biases of one plan: no codes in the padding, Winograd masks that skip only zero
    transformed weights, an accumulator wide enough for the weights and biases (ARITHMETIC §4.4)."""
    cfg, f = p.config, f"layers[{i}]"
    nb, cb, vc = L.n_coblk(cfg.m), L.cb_in, cfg.vc
    start = L.w_base * (vc // 4)
    n = nb * cfg.m * L.kh * L.kw * cb * vc
    full = unpack_codes(p.weights[start:start + n // 4], n).reshape(nb, cfg.m, L.kh, L.kw, cb, vc)
    full = code_to_int(full.transpose(0, 1, 4, 5, 2, 3).reshape(nb * cfg.m, cb * vc, L.kh, L.kw))
    cin = L.codes_cin(vc)
    if np.any(full[L.cout:]) or np.any(full[:, cin:]):
        c.fail(f"{f}.w_base", "nonzero weights in the padding (output channels beyond cout or input "
                              "channels beyond cin)")
    g = full[:L.cout, :cin]
    bias = np.abs(p.params[L.bias_base:L.bias_base + L.cout].view(np.int32).astype(np.int64))
    bmax = int(bias.max(initial=0))
    if L.winograd:
        u = weight_transform(g, "F2x2_3x3")
        rows = np.array([L.wmask[0] >> k & 1 for k in range(4)], bool)
        cols = np.array([L.wmask[1] >> k & 1 for k in range(4)], bool)
        if np.any(u[:, :, ~np.outer(rows, cols)]):
            c.fail(f"{f}.wmask", f"{list(L.wmask)} skips transformed weights that are not zero")
        used_r, used_c = np.flatnonzero(np.any(g, axis=(0, 1, 3))), np.flatnonzero(np.any(g, axis=(0, 1, 2)))
        taps = cin * (3 - used_r[0] if len(used_r) else 0) * (3 - used_c[0] if len(used_c) else 0)
        need = acc_bits(taps, DE, -(-bmax // 4)) + 2
    else:
        need = acc_bits(cin * L.kh * L.kw, DE, bmax)
    if need > L.acc_bits:
        c.fail(f"{f}.acc_bits", f"the weights and biases need {need}-bit accumulators, the plan says {L.acc_bits}")
