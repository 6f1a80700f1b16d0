"""`Program`: a compiled network — layer descriptors, packed weights, biases, quantization.

A ``Program`` is what the compiler writes and every device (``golden``, ``sim``, ``uart``) runs.
It holds the exact device-memory images (parameter memory: descriptors + biases; weight
memory: 4-bit codes packed four to a 16-bit word, first code in the lowest nibble, DESIGN §3),
plus the per-layer plan (shapes, INQ ``n2``, feature exponents ``Q``, shift ``sh``, addresses).
It is saved to and loaded from one ``.npz`` file (no pickles).
"""
import dataclasses
import json

import numpy as np

from ..hw.config import DESC_WORDS, EngineConfig
from ..hw.engine import ACT_SHIFT, DESC_MAGIC, FLAG_LAST, FLAG_POOL, FLAG_RELU, FLAG_WINOGRAD
from ..sim.golden import pack_codes, unpack_codes

__all__ = ["LayerPlan", "Program", "weight_words", "weight_codes", "features_to_words",
           "words_to_features", "FORMAT_VERSION"]

FORMAT_VERSION = 2


@dataclasses.dataclass
class LayerPlan:
    """One layer as the engine runs it (one descriptor). Sizes in pixels/channels, addresses in
    words of the memory they point into (see ``hw/engine.py``)."""
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
    pool: int               # 1 or 2 (2×2 max-pool, stride 2, floor)
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
    phase: tuple = ()       # TDC phase (φy, φx, S): outputs go to (S·a + φy, S·b + φx)
    full_h: int = 0         # the group's whole output map (TDC): rows, columns
    full_w: int = 0
    map_base: int = 0       # feature-memory word of the group's output map

    @property
    def scale(self):
        """Accumulator scale of the layer's datapath: 4 for Winograd F(2×2,3×3), else 1."""
        return 4 if self.winograd else 1

    @property
    def sh_hw(self):
        """The shift the output stage applies: ``sh + 2`` for Winograd (ARITHMETIC §2.3)."""
        return self.sh + (2 if self.winograd else 0)

    def n_coblk(self, m):
        return -(-self.cout // m)

    def macs(self):
        """Useful multiply-accumulates of the layer (no padding lanes, pooled pixels only)."""
        return self.cout * self.cin * self.kh * self.kw * self.out_h * self.pool * self.out_w * self.pool

    def descriptor(self, config, last):
        """The 16 descriptor words (``hw/engine.py``)."""
        flags = (DESC_MAGIC << 16) | (FLAG_RELU if self.relu else 0) | \
            (FLAG_POOL if self.pool == 2 else 0) | (FLAG_LAST if last else 0) | \
            (FLAG_WINOGRAD if self.winograd else 0) | (self.act << ACT_SHIFT)
        out_pix = self.out_pix or self.cb_out
        out_row = self.out_row or self.out_w * self.cb_out
        dil_log2 = self.dil.bit_length() - 1
        assert 1 << dil_log2 == self.dil, "input zero insertion must be a power of two"
        w = [flags, self.in_base, self.in_h, self.in_w, self.cb_in,
             self.kh | self.kw << 8 | self.stride << 16 | dil_log2 << 24, self.pad[0] | self.pad[2] << 8,
             self.out_base, self.out_h, self.out_w, self.n_coblk(config.m),
             self.w_base, self.bias_base,
             (self.sh_hw & 0xFF) | (self.wmask[0] << 16) | (self.wmask[1] << 20), out_row, out_pix]
        assert len(w) == DESC_WORDS
        return w


def weight_words(codes, m, vc, cb_in):
    """Weight-memory image of one layer: uint16 words in engine order (``hw/engine.py``).

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
class Program:
    """A compiled network for one :class:`EngineConfig`.

    Attributes: ``config``; ``layers`` (list of :class:`LayerPlan`); ``params`` (uint32 image of
    parameter memory from word 0: descriptors then biases); ``weights`` (uint16 image of weight
    memory from word 0); ``input_shape`` (C, H, W), ``input_q``; ``output_shape`` (C, H, W),
    ``output_q``; ``input_name``/``output_name`` of the source model; ``flatten_output``.
    """
    config: EngineConfig
    layers: list
    params: np.ndarray
    weights: np.ndarray
    input_shape: tuple
    input_q: int
    output_shape: tuple
    output_q: int
    input_name: str = "input"
    output_name: str = "output"
    flatten_output: bool = False
    desc_base: int = 0

    @property
    def input_base(self):
        return self.layers[0].in_base

    @property
    def output_base(self):
        return self.layers[-1].map_base

    def layer_codes(self, i):
        """Codes of layer ``i`` read back from the weight-memory image (Cout, Cin, Kh, Kw)."""
        L, c = self.layers[i], self.config
        per_word = c.vc // 4
        start = L.w_base * per_word
        n = L.n_coblk(c.m) * c.m * L.kh * L.kw * L.cb_in * per_word
        return weight_codes(self.weights[start:start + n], L.cout, L.cin, L.kh, L.kw, c.m, c.vc, L.cb_in)

    def layer_bias(self, i):
        """int64 biases (Cout,) of layer ``i`` read back from the parameter-memory image, in the
        units of the layer's accumulator (``LayerPlan.scale`` × the bias for Winograd layers)."""
        L = self.layers[i]
        return self.params[L.bias_base:L.bias_base + L.cout].view(np.int32).astype(np.int64)

    def macs(self):
        return sum(L.macs() for L in self.layers)

    def save(self, path):
        meta = {
            "format": FORMAT_VERSION, "config": self.config.to_dict(),
            "layers": [dataclasses.asdict(L) for L in self.layers],
            "input_shape": list(self.input_shape), "input_q": self.input_q,
            "output_shape": list(self.output_shape), "output_q": self.output_q,
            "input_name": self.input_name, "output_name": self.output_name,
            "flatten_output": self.flatten_output, "desc_base": self.desc_base,
        }
        with open(path, "wb") as f:
            np.savez(f, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8),
                     params=self.params.astype(np.uint32), weights=self.weights.astype(np.uint16))

    @classmethod
    def load(cls, path):
        """Read a program file written by :meth:`save`.

        :raises ValueError: if the file is not a Nibble program or has another format version.
        """
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(bytes(z["meta"]).decode())
                params, weights = z["params"], z["weights"]
        except (OSError, KeyError, ValueError) as e:
            raise ValueError(f"{path}: not a Nibble program file ({e})") from None
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"{path}: program format {meta.get('format')} is not {FORMAT_VERSION}")
        layers = []
        for d in meta["layers"]:
            d["pad"] = tuple(d["pad"])
            d["wmask"] = tuple(d["wmask"])
            d["phase"] = tuple(d["phase"])
            layers.append(LayerPlan(**d))
        return cls(config=EngineConfig.from_dict(meta["config"]), layers=layers, params=params,
                   weights=weights, input_shape=tuple(meta["input_shape"]), input_q=meta["input_q"],
                   output_shape=tuple(meta["output_shape"]), output_q=meta["output_q"],
                   input_name=meta["input_name"], output_name=meta["output_name"],
                   flatten_output=meta["flatten_output"], desc_base=meta["desc_base"])
