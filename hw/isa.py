"""The device's interface facts, defined once: the layer descriptor and the host-link protocol
(DESIGN §4, §6).

Everything a host needs to talk to the accelerator and everything the gateware implements of
it comes from here: the gateware (:mod:`nibble.hw.engine`, :mod:`nibble.hw.bridge`,
:mod:`nibble.hw.accelerator`), the host (:mod:`nibble.host.program`, :mod:`nibble.host.link`,
:mod:`nibble.host.driver`), the exported register map and the tests import these names; none of
the numbers is written anywhere else. It uses only ``amaranth.lib.data`` (a layout, no
gateware), so the host may import it.

Layer descriptor (:data:`DESCRIPTOR`)
=====================================

One :class:`amaranth.lib.data.StructLayout`, :data:`DESC_WORDS` little-endian 32-bit words in
parameter memory (layer ``l`` at ``desc_base + DESC_WORDS·l``; field bit ``b`` of the layout is
bit ``b % 32`` of word ``b // 32``). The engine views its descriptor registers through it, the
host encodes with :func:`encode_descriptor` and decodes with :func:`decode_descriptor`, and the
register map lists every field's offset and width (``regmap.json``). Addresses are words of the
memory they point into; sizes are pixels. Semantics (ARITHMETIC §1, §2, §4, §5):

* ``magic`` = :data:`DESC_MAGIC`. Flags: ``relu``, ``last`` (the network's final layer),
  ``winograd`` (F(2×2,3×3) on the multiplier lanes), ``prelu`` (per-channel slopes at
  ``slope_base``), ``act`` (0 none, 1 tanh, 2 sigmoid table), ``dil``: the input is read as if
  zero-inserted by ``2^dil`` (NZP transposed convolution, ARITHMETIC §1.3; 0 = none).
* Input view: ``in_base`` (pixel (0, 0), channel block 0), ``in_h``, ``in_w``, ``in_cb``
  (channel blocks of ``vc`` read per pixel), ``in_row``, ``in_pix`` (words between input rows and
  pixels): input pixel (iy, ix) block cb is word ``in_base + iy·in_row + ix·in_pix + cb``.
* Convolution: ``kh``, ``kw``, strides ``sy``, ``sx``, zero padding ``pad_t``, ``pad_l``
  (bottom/right padding is implied by the bounds); conv output ``conv_h × conv_w``.
* Max-pool window over the conv output (after bias, activation, requantization):
  ``pool_kh × pool_kw``, strides ``pool_sy``, ``pool_sx``, padding ``pool_pt``, ``pool_pl``
  (padded positions are ignored, as ONNX MaxPool); 1, 1, 1, 1, 0, 0 = no pooling. Output pixel
  (py, px) is the max over conv outputs (py·pool_sy + dy − pool_pt, px·pool_sx + dx − pool_pl)
  inside the conv output.
* Output: ``out_base``, ``out_h × out_w`` (stored size, after pooling), ``out_row``,
  ``out_pix``: output pixel (py, px) is written at ``out_base + py·out_row + px·out_pix``
  (dense maps, TDC phase interleave (ARITHMETIC §5), Concat placement); ``n_coblk`` blocks of
  ``m`` output channels (``n_coblk·m/vc`` words per pixel).
* Parameters: ``w_base`` (weight memory), ``bias_base`` (int32 per output channel, accumulator
  units), ``slope_base`` (PReLU: one slope code per output channel, :data:`PRELU_FRAC`).
* Output stage: ``sh`` (requantization shift, [:data:`SH_MIN`, :data:`SH_MAX`], the effective
  shift: ``+ PRELU_FRAC`` for a PReLU layer, ``+ 2`` for Winograd); with ``ch_sh`` (per-channel
  weight exponents, ARITHMETIC §4.5 ``sh[co]``) one offset code ``d`` per output channel at
  ``shift_base`` (one word each, its low :data:`DSH_BITS` bits, ``0 ≤ d ≤ DSH_MAX``): channel
  ``co`` is requantized by ``sh − d[co]`` (the compiler keeps it in [``SH_MIN``, ``SH_MAX``];
  not with a fused residual Add, whose shift is per layer); saturation bounds
  ``clip_lo``, ``clip_hi`` (int8; −128, 127 unless the layer is clipped, e.g. ReLU6);
  Winograd only: ``xmask``, ``ymask`` (transformed rows ξ / columns ν computed, ARITHMETIC §3).
* Grouped / depthwise convolution (``grp`` ≠ 0): output block ``b`` (``m`` channels) reads the
  ``in_cb`` input blocks from block ``(b // grp)·in_cb`` of each pixel (``grp`` output blocks per
  group; depthwise: ``grp = 1``, ``in_cb = m/vc``, block-diagonal filters); 0 = dense (every
  block reads blocks ``0 … in_cb − 1``).
* Fused residual Add (``res``): the int8 tensor at ``res_base``, with the output's layout (pixel
  at word ``w`` of the output has its residual at ``w − out_base + res_base``), shifted left by
  ``res_sh`` into accumulator units, is added after the bias, before ReLU/PReLU:
  ``acc + bias + (r << res_sh)`` (ARITHMETIC §4.5; ResNet, MobileNetV2 shortcuts).

Host-link protocol, version 2 (:data:`LINK_VERSION`)
====================================================

All multi-byte fields are little-endian. Request (host → device)::

    0xA5 | cmd (1) | seq (2) | addr (4, byte address) | len (2, bytes) | payload (len, WRITE only) | crc (4)

Response (device → host)::

    0x5A | status (1) | seq (2) | len (2) | payload (len bytes) | crc (4)

``crc`` is CRC-32/ISO-HDLC (:data:`CRC32`: the CRC of Ethernet, zip and ``zlib.crc32``) over
every byte after the sync byte up to the end of the payload, sent least significant byte first.
Its Hamming distance is 4 for frames of up to 91,607 bits (Koopman, "32-bit cyclic redundancy
codes for Internet applications", DSN 2002, table 1), far above the longest frame here
(``(max_payload + 14) · 8`` = 8,304 bits at the default 1,024-byte payload), so every frame with
1, 2 or 3 flipped bits is detected, as is every error burst of up to 32 bits; any other
corruption passes with probability 2⁻³². ``tests/test_link.py`` checks the distance for the
longest frame by computing ``xⁱ mod G``.

``seq`` is a 16-bit sequence number chosen by the host; the response echoes it. The host
increments it for every new request and keeps it for the retries of one request, and it
discards (never delivers) a response whose ``seq`` is not that of the request it waits for.

Commands (:class:`Cmd`):

* ``WRITE`` (1): write ``len`` payload bytes as ``len / 4`` bus words from ``addr``.
* ``READ`` (2): answer with ``len`` bytes read as ``len / 4`` words from ``addr``. Reads have no
  side effects on any register, so a repeated READ is executed again.
* ``PING`` (3, ``len`` 0): answer OK with :data:`PING_WORDS` words: word 0 = ``LINK_VERSION |
  max_payload << 16``; word 1 = the ``seq`` of the last executed request ``| 1 << 16`` once a
  request has been executed since reset (bit 16 is 0 before). PING changes nothing.

Retry-safe writes: the device remembers the ``seq``, command and status of the last request
it executed (any command but PING, CRC good). A WRITE whose ``seq`` equals that of the last
executed request, itself a WRITE, is not executed again: it is answered with the stored status.
So a write whose response was lost or corrupted can be re-sent with its ``seq`` and takes effect
exactly once — the engine's start write cannot run the engine twice. The host learns the
device's last ``seq`` with PING when it opens the link (and after a failed transaction) and
continues from the next number, so a new host process never collides with the remembered one.

Status codes (:class:`Status`), decided in this order: ``BAD_CRC`` (the frame is not executed
and not remembered), PING (``OK``, or ``BAD_LENGTH`` if ``len`` ≠ 0), a repeated WRITE (the
stored status), ``UNKNOWN_COMMAND``, ``BAD_LENGTH`` (``len`` 0, not a multiple of 4, or above
``max_payload``), ``BAD_ADDRESS`` (``addr`` not aligned, or any word of the range unmapped;
nothing is written), ``OK``. Only OK answers to READ and PING carry a payload.

Word ``k`` of a transfer is bus word address ``(addr >> 2) + k`` modulo 2³⁰; payload bytes
``4k .. 4k+3`` are that word, least significant byte first.

The device skips bytes other than 0xA5 between frames and abandons a frame whose bytes stop
arriving for :data:`TIMEOUT_BITS` bit times. The protocol is request/response: the host sends
the next request only after the response to the last one, or after giving up on it.
"""
import enum

from amaranth import Shape, signed
from amaranth.lib import data

__all__ = [
    "DESCRIPTOR", "DESC_WORDS", "DESC_MAGIC", "EngineError", "encode_descriptor", "decode_descriptor",
    "descriptor_fields", "PRELU_FRAC", "PRELU_BITS", "RES_SH_MAX",
    "LINK_VERSION", "REQUEST_SYNC", "RESPONSE_SYNC", "Cmd", "Status", "SEQ_BITS",
    "REQUEST_HEADER", "RESPONSE_HEADER", "CRC_BYTES", "REQUEST_OVERHEAD", "RESPONSE_OVERHEAD",
    "CRC32", "CRC_HAMMING_DISTANCE", "CRC_HD_MAX_BITS", "TIMEOUT_BITS", "PING_WORDS",
    "DEFAULT_MAX_PAYLOAD", "CTRL_START", "CTRL_ACK", "CTRL_RUN_STEPS", "SH_MIN", "SH_MAX",
    "STEP", "STEP_WORDS", "STEP_BYTES", "STEP_MAGIC", "StepOp", "Region", "encode_step", "decode_step",
    "DDR_BASE", "STEP_CHUNK", "DSH_BITS", "DSH_MAX",
]

#: Version of the host-link protocol (word 0 of a PING answer, ``link_version`` in the regmap).
LINK_VERSION = 2

REQUEST_SYNC = 0xA5
RESPONSE_SYNC = 0x5A

#: Bits of the sequence number.
SEQ_BITS = 16

#: Request header bytes after the sync byte: cmd (1), seq (2), addr (4), len (2).
REQUEST_HEADER = 9
#: Response header bytes after the sync byte: status (1), seq (2), len (2).
RESPONSE_HEADER = 5
#: Bytes of the frame check sequence.
CRC_BYTES = 4
#: Bytes of a request without payload.
REQUEST_OVERHEAD = 1 + REQUEST_HEADER + CRC_BYTES
#: Bytes of a response without payload.
RESPONSE_OVERHEAD = 1 + RESPONSE_HEADER + CRC_BYTES

#: CRC-32/ISO-HDLC in the parameterisation of the reveng catalogue (and of
#: ``amaranth.lib.crc.Algorithm``): equal to ``zlib.crc32``; check value 0xCBF43926.
CRC32 = dict(crc_width=32, polynomial=0x04C11DB7, initial_crc=0xFFFFFFFF,
             reflect_input=True, reflect_output=True, xor_output=0xFFFFFFFF)
#: Minimum Hamming distance of :data:`CRC32` for frames of up to :data:`CRC_HD_MAX_BITS` bits.
CRC_HAMMING_DISTANCE = 4
CRC_HD_MAX_BITS = 91_607

#: An incomplete frame is abandoned after this many bit times without a byte.
TIMEOUT_BITS = 64
#: Words of a PING answer.
PING_WORDS = 2
#: Largest payload of one frame, by default (bytes; the bridge's write buffer).
DEFAULT_MAX_PAYLOAD = 1024

#: ``ctrl`` CSR bits: start the engine; acknowledge the finished run (clears ``done``/``error``).
CTRL_START = 1 << 0
CTRL_ACK = 1 << 1
#: ``ctrl`` CSR bit: run the step list at ``step_base`` (external memory, see :data:`STEP`).
CTRL_RUN_STEPS = 1 << 2


#: Smallest requantization shift the output stage supports (an exact left shift by 16;
#: descriptor field ``sh``, ARITHMETIC §4.5).
SH_MIN = -16
#: Largest requantization shift the output stage supports.
SH_MAX = 47
#: Bits of a per-channel shift offset code (descriptor flag ``ch_sh``, words at ``shift_base``).
DSH_BITS = 5
#: Largest per-channel shift offset: the spread of a layer's per-channel weight exponents.
DSH_MAX = (1 << DSH_BITS) - 1


#: Magic number of a layer descriptor (field ``magic``).
DESC_MAGIC = 0xD35C

#: PReLU / LeakyReLU slope codes (the number format is part of the arithmetic contract, defined
#: in :mod:`nibble.sim.golden`): signed ``PRELU_BITS``-bit ``A``, slope ``A · 2^−PRELU_FRAC``.
from ..sim.golden import PRELU_BITS, PRELU_FRAC  # noqa: E402

#: The layer descriptor (see the module docstring for the semantics of every field).
DESCRIPTOR = data.StructLayout({
    "magic": 16, "relu": 1, "last": 1, "winograd": 1, "prelu": 1, "act": 2, "dil": 3,
    "in_base": 24, "in_h": 16, "in_w": 16, "in_cb": 16, "in_row": 24, "in_pix": 24,
    "kh": 8, "kw": 8, "sy": 8, "sx": 8, "pad_t": 8, "pad_l": 8,
    "conv_h": 16, "conv_w": 16,
    "pool_kh": 4, "pool_kw": 4, "pool_sy": 4, "pool_sx": 4, "pool_pt": 4, "pool_pl": 4,
    "out_base": 24, "out_h": 16, "out_w": 16, "out_row": 24, "out_pix": 24, "n_coblk": 16,
    "w_base": 24, "bias_base": 24, "slope_base": 24,
    "sh": signed(8), "clip_lo": signed(8), "clip_hi": signed(8), "xmask": 4, "ymask": 4,
    "res": 1, "res_sh": 5, "res_base": 24, "grp": 16,
    "ch_sh": 1, "shift_base": 24,
})
#: Largest ``res_sh`` (the residual's left shift into accumulator units).
RES_SH_MAX = 31
#: 32-bit words per layer descriptor in parameter memory.
DESC_WORDS = -(-DESCRIPTOR.size // 32)


def descriptor_fields():
    """``{name: (bit offset, width, signed)}`` of every :data:`DESCRIPTOR` field (for the register
    map and C headers)."""
    return {name: (f.offset, f.width, Shape.cast(f.shape).signed) for name, f in DESCRIPTOR}


def encode_descriptor(**fields):
    """The :data:`DESC_WORDS` 32-bit words of a descriptor (``magic`` is set).

    :param fields: every field of :data:`DESCRIPTOR` but ``magic``, as ints; missing fields are 0.
    :returns: list of ``DESC_WORDS`` ints in [0, 2³²).
    :raises ValueError: naming the field, for an unknown field or a value that does not fit.
    """
    layout = dict(DESCRIPTOR)
    for name, v in fields.items():
        if name not in layout or name == "magic":
            raise ValueError(f"descriptor has no field '{name}'")
        shape = Shape.cast(layout[name].shape)
        lo, hi = (-(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1) if shape.signed else (0, (1 << shape.width) - 1)
        if not lo <= int(v) <= hi:
            raise ValueError(f"descriptor field '{name}' = {v} does not fit [{lo}, {hi}]")
    bits = DESCRIPTOR.const({"magic": DESC_MAGIC, **{k: int(v) for k, v in fields.items()}}).as_bits()
    return [(bits >> (32 * i)) & 0xFFFF_FFFF for i in range(DESC_WORDS)]


def decode_descriptor(words):
    """``{name: int}`` of the descriptor in ``words`` (:data:`DESC_WORDS` 32-bit words).

    :raises ValueError: if there are not ``DESC_WORDS`` words.
    """
    words = [int(w) for w in words]
    if len(words) != DESC_WORDS:
        raise ValueError(f"a descriptor has {DESC_WORDS} words, not {len(words)}")
    bits = sum((w & 0xFFFF_FFFF) << (32 * i) for i, w in enumerate(words))
    view = DESCRIPTOR.from_bits(bits & ((1 << DESCRIPTOR.size) - 1))
    return {name: int(getattr(view, name)) for name, _ in DESCRIPTOR}


class EngineError(enum.IntEnum):
    """Error codes of the engine (``err_code`` CSR; the engine stops, ``layer`` names the layer)."""
    NONE = 0
    #: ``magic`` is not :data:`DESC_MAGIC`.
    BAD_MAGIC = 1
    #: a size, stride, pixel/row pitch or pool field is zero.
    ZERO_SIZE = 2
    #: the filters do not fit the filter cache.
    FILTER_CACHE = 3
    #: the input, output or residual view leaves feature memory.
    FEATURE_RANGE = 4
    #: the filters leave weight memory.
    WEIGHT_RANGE = 5
    #: the biases or slopes leave parameter memory.
    PARAM_RANGE = 6
    #: ``sh`` outside [SH_MIN, SH_MAX], ``clip_lo > clip_hi``, or ``ch_sh`` with a fused residual Add.
    SHIFT_RANGE = 7
    #: Winograd on a layer that is not 3×3 stride 1, with zero insertion, an empty position mask,
    #: a pool other than 2×2 stride 2 unpadded, or on an engine built without Winograd.
    WINOGRAD = 8
    #: a pool padding not smaller than its window, or a residual Add on a pooling layer.
    POOL = 9
    #: a step (:data:`STEP`) with a wrong ``magic``, an unknown ``op`` or ``region``, zero
    #: ``count`` or ``words``, ``words`` not a whole number of beats, or a DDR address or stride
    #: not a multiple of the beat (of a word, for a feature copy; ``step`` names it).
    STEP = 10
    #: a step's on-chip range leaves its memory, or its DDR range leaves the DDR window.
    STEP_RANGE = 11
    #: external memory answered a burst with an error (SLVERR/DECERR) or broke the AXI protocol.
    DDR = 12


class Cmd(enum.IntEnum):
    """Request command codes."""
    WRITE = 0x01
    READ = 0x02
    PING = 0x03


class Status(enum.IntEnum):
    """Response status codes."""
    OK = 0
    BAD_CRC = 1
    UNKNOWN_COMMAND = 2
    BAD_ADDRESS = 3
    BAD_LENGTH = 4


# ---------------------------------------------------------------------------------------------
# The step list: how a program that lives in external memory runs (DESIGN §4, memory system).
# ---------------------------------------------------------------------------------------------

#: AXI byte address of external memory (DDR3 behind the MIG) in the address map of both the
#: engine's AXI4 master and the host's PCIe DMA (on a board the XDMA's master and the engine reach
#: the MIG through one interconnect at this base; the accelerator's own regions lie below it).
DDR_BASE = 0x8000_0000


class Region(enum.IntEnum):
    """On-chip memory of a step (field ``region``)."""
    PARAM = 1
    WEIGHT = 2
    FEATURE = 3


class StepOp(enum.IntEnum):
    """Operation of a step (field ``op``); 0 is no operation, so a zeroed step is an error."""
    #: copy ``count`` chunks of ``words`` words from DDR into the on-chip memory ``region``.
    LOAD = 1
    #: copy ``count`` chunks of ``words`` words of ``region`` into DDR.
    STORE = 2
    #: run the engine from descriptor ``mem_addr`` (parameter memory) to its ``last`` layer.
    RUN = 3
    #: the end of the list: finish when every earlier step is done.
    END = 4


#: Magic number of a step (field ``magic``).
STEP_MAGIC = 0x5E

#: One step of a step list (:data:`STEP_BYTES` bytes, little-endian, at ``step_base + STEP_BYTES·i``
#: in DDR). The sequencer (:mod:`nibble.hw.sequencer`) fetches the steps in order and issues each
#: to the DMA (:mod:`nibble.hw.mem.dma`) or the engine:
#:
#: * ``LOAD``/``STORE``: chunk ``i`` (0 ≤ i < ``count``) is ``words`` consecutive words of
#:   ``region`` from word ``mem_addr + i·mem_stride`` and the bytes from ``ddr_addr +
#:   i·ddr_stride`` (AXI byte address, :data:`DDR_BASE` included) in DDR. One DDR beat
#:   (``beat_bits`` = ``8·vc·beat_words``, :class:`~nibble.hw.config.EngineConfig`) holds
#:   ``beat_bits / word_bits`` consecutive words, the first in the lowest bits (parameter words
#:   32 bits, weight words ``4·vc``, feature words ``8·vc``). A parameter or weight copy moves
#:   whole beats: ``words`` is a multiple of that and ``ddr_addr``, ``ddr_stride`` are multiples
#:   of the beat's bytes. A feature chunk may start and end inside a beat: ``ddr_addr``,
#:   ``ddr_stride`` are multiples of a feature word (``vc`` bytes), ``words`` any (the DMA moves
#:   the beats that cover the chunk and masks the words around it, :mod:`nibble.hw.mem.dma`).
#: * ``RUN``: the engine runs the descriptors from parameter word ``mem_addr``.
#: * ``wait``: the step starts only when every earlier step is complete (the compiler's barrier
#:   for a data dependency). Without it a step starts as soon as its unit is free, so a LOAD, or
#:   a STORE from feature memory, runs while the engine computes (double-buffered filters and
#:   row bands, TF2), sharing the ports in the cycles the engine leaves them; only a STORE from
#:   weight or parameter memory waits for the engine, and a RUN for such a STORE. The words a
#:   copy and a running descriptor touch are not compared: the compiler sets ``wait``.
STEP = data.StructLayout({
    "magic": 8, "op": 3, "wait": 1, "region": 2,
    "mem_addr": 24, "count": 16, "words": 24, "mem_stride": 24,
    "ddr_addr": 32, "ddr_stride": 32,
})
#: Bytes of a step in the list (the layout padded to a power of two).
STEP_BYTES = 32
#: Steps the sequencer reads from DDR at a time; a list is padded with END steps to whole chunks,
#: so that no read goes past its end.
STEP_CHUNK = 8
#: 32-bit words of a step.
STEP_WORDS = STEP_BYTES // 4
assert STEP.size <= 8 * STEP_BYTES


def encode_step(op, **fields):
    """The :data:`STEP_BYTES` bytes of one step (``magic`` is set).

    :param op: a :class:`StepOp`.
    :param fields: the other fields of :data:`STEP` (``region`` as a :class:`Region` or int);
        missing fields are 0.
    :raises ValueError: naming the field, for an unknown field or a value that does not fit.
    """
    layout = dict(STEP)
    fields = {"op": int(StepOp(op)), **{k: int(v) for k, v in fields.items()}}
    for name, v in fields.items():
        if name not in layout or name == "magic":
            raise ValueError(f"step has no field '{name}'")
        if not 0 <= v < (1 << Shape.cast(layout[name].shape).width):
            raise ValueError(f"step field '{name}' = {v} does not fit {Shape.cast(layout[name].shape).width} bits")
    bits = STEP.const({"magic": STEP_MAGIC, **fields}).as_bits()
    return bits.to_bytes(STEP_BYTES, "little")


def decode_step(raw):
    """``{name: int}`` of the step in ``raw`` (:data:`STEP_BYTES` bytes).

    :raises ValueError: if ``raw`` is not ``STEP_BYTES`` long.
    """
    if len(raw) != STEP_BYTES:
        raise ValueError(f"a step has {STEP_BYTES} bytes, not {len(raw)}")
    view = STEP.from_bits(int.from_bytes(bytes(raw), "little") & ((1 << STEP.size) - 1))
    return {name: int(getattr(view, name)) for name, _ in STEP}
