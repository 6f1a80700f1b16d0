"""`EngineConfig`: the parameters of one generated accelerator (DESIGN §4).

One object carries everything that sizes the hardware, and it is what a compiled ``Program``
is checked against. It can be read from and written to a small JSON file (``--config FILE``).
"""
import dataclasses
import hashlib
import json

from .isa import DESC_WORDS

__all__ = ["EngineConfig", "DESC_WORDS"]


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    """Sizes of the PE array, its memories and the host link.

    :param m: PEs (output channels computed in parallel). Default 16.
    :param vc: SAC lanes per PE = input channels per feature word. Multiple of 8. Default 16.
    :param acc_width: accumulator bits per PE (ARITHMETIC §4.4); the compiler rejects layers
        whose worst case needs more. 20..48, default 32.
    :param filter_depth: words (``vc`` codes each) in every PE's filter cache; bounds
        ``Kh·Kw·⌈Cin/vc⌉`` of a layer. Default 512.
    :param feature_depth: words (``vc`` int8 each, HWC) of feature memory. Default 8192 (128 KiB).
    :param weight_depth: words (``vc`` 4-bit codes each) of weight memory. Default 32768 (256 KiB:
        the published DCGAN Deconv2 layer in Winograd-TDC form needs 18,432 words).
    :param param_depth: 32-bit words of parameter memory (descriptors and biases). Default 4096.
    :param clk_hz: clock frequency the design is built for (Hz); sets the UART divisor.
    :param baud: UART bit rate (bit/s).
    :param winograd: build the Winograd F(2×2,3×3) path (``vc`` pre-PEs, ``m·vc`` multiplier lanes
        of 10 × 11 bits (DSP48E1), ``m`` post-PEs, a transformed-weight cache per PE, the weight
        transform in the loader). Default True. Without it, Winograd descriptors are rejected.
    :param vp: output-pixel lanes of the PE array (TF2's 5, DESIGN §4): in direct mode every beat
        carries ``vp`` neighbouring output pixels of one row, each with its own feature-memory read
        port (a copy of the feature memory) and its own ``vc`` SAC lanes per PE (sharing the PE's
        filter-cache read); the residual reader, the output stage and the writer take the lanes'
        pixels one per cycle. Winograd beats use lane 0. 1..8, default 1.
    :param weight_ports: weight-memory read ports of the direct-mode filter loader, 1 or 2.
        With 2 the weight memory is built twice (a copy per read port, as the feature memory is
        for the pixel lanes) and the loader fills two filter caches a cycle — PEs
        ``0 … m/2 − 1`` from the first port, ``m/2 … m − 1`` from the second — so a block's
        ``m·kh·kw·⌈Cin/vc⌉`` filter words load in half the cycles. The Winograd weight transform
        reads the first port only. Default 1.
    :param ddr_bytes: bytes of the external-memory window at :data:`~nibble.hw.isa.DDR_BASE`
        that the step sequencer and the DMA may address (a power of two, 1 MiB..2 GiB; default
        1 GiB, the SODIMM of the VC707 and KC705). Used by devices with external memory.
    :param beat_words: feature words in one DDR beat, 1, 2 or 4: the AXI4 master's data width is
        :attr:`beat_bits` = ``8·vc·beat_words`` bits (at most 512, the MIG's native width for a
        64-bit DDR3 at 4:1); on the device with DDR, feature memory is built in ``beat_words``
        banks (word ``a`` in bank ``a mod beat_words``) and weight memory in ``2·beat_words``, so
        a feature or weight LOAD or STORE moves a whole beat of words a cycle. Parameter copies
        move one word a cycle. Default 1.

    Peak throughput is ``m·vc·vp`` shift-accumulate operations per cycle (256 by default).
    :raises ValueError: on any inconsistent parameter, naming it.
    """
    m: int = 16
    vc: int = 16
    acc_width: int = 32
    filter_depth: int = 512
    feature_depth: int = 8192
    weight_depth: int = 32768
    param_depth: int = 4096
    clk_hz: int = 200_000_000
    baud: int = 12_500_000
    winograd: bool = True
    ddr_bytes: int = 1 << 30
    vp: int = 1
    weight_ports: int = 1
    beat_words: int = 1

    def __post_init__(self):
        if self.m < 1:
            raise ValueError(f"EngineConfig.m must be at least 1, not {self.m}")
        if self.vc < 8 or self.vc % 8:
            raise ValueError(f"EngineConfig.vc must be a positive multiple of 8, not {self.vc}")
        if self.m % self.vc:
            raise ValueError(f"EngineConfig.m ({self.m}) must be a multiple of vc ({self.vc})")
        if not isinstance(self.vp, int) or not 1 <= self.vp <= 8:
            raise ValueError(f"EngineConfig.vp must be an integer in 1..8, not {self.vp!r}")
        if self.weight_ports not in (1, 2) or isinstance(self.weight_ports, bool):
            raise ValueError(f"EngineConfig.weight_ports must be 1 or 2, not {self.weight_ports!r}")
        if self.beat_words not in (1, 2, 4) or isinstance(self.beat_words, bool):
            raise ValueError(f"EngineConfig.beat_words must be 1, 2 or 4, not {self.beat_words!r}")
        if self.beat_bits > 512:
            raise ValueError(f"EngineConfig: a DDR beat of 8·vc·beat_words = {self.beat_bits} bits exceeds the "
                             "512 bits of the AXI4 master")
        if self.feature_depth % self.beat_words:
            raise ValueError(f"EngineConfig.feature_depth ({self.feature_depth}) must be a multiple of beat_words "
                             f"({self.beat_words}, the feature-memory banks)")
        if self.weight_depth % (2 * self.beat_words):
            raise ValueError(f"EngineConfig.weight_depth ({self.weight_depth}) must be a multiple of 2·beat_words "
                             f"({2 * self.beat_words}, the weight-memory banks)")
        if not 20 <= self.acc_width <= 48:
            raise ValueError(f"EngineConfig.acc_width must be in 20..48, not {self.acc_width}")
        for name in ("filter_depth", "feature_depth", "weight_depth", "param_depth"):
            v = getattr(self, name)
            if v < 16 or v > (1 << 24):
                raise ValueError(f"EngineConfig.{name} must be in 16..2^24, not {v}")
        if self.param_depth < DESC_WORDS + self.m:
            raise ValueError("EngineConfig.param_depth too small for one descriptor and one bias block")
        if not isinstance(self.winograd, bool):
            raise ValueError(f"EngineConfig.winograd must be true or false, not {self.winograd!r}")
        if (not isinstance(self.ddr_bytes, int) or self.ddr_bytes < (1 << 20) or self.ddr_bytes > (1 << 31)
                or self.ddr_bytes & (self.ddr_bytes - 1)):
            raise ValueError(f"EngineConfig.ddr_bytes must be a power of two in 1 MiB..2 GiB, not {self.ddr_bytes}")
        if self.uart_divisor < 4:
            raise ValueError(f"EngineConfig: clk_hz/baud = {self.clk_hz}/{self.baud} gives fewer than "
                             "4 clock cycles per UART bit")

    @property
    def uart_divisor(self):
        """Clock cycles per UART bit (``clk_hz // baud``)."""
        return self.clk_hz // self.baud

    @property
    def beat_bits(self):
        """Bits of a DDR beat, the AXI4 master's data width: ``8·vc·beat_words``."""
        return 8 * self.vc * self.beat_words

    @property
    def peak_ops_per_cycle(self):
        """``m · vc · vp`` shift-accumulate operations per cycle."""
        return self.m * self.vc * self.vp

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown EngineConfig field(s): {', '.join(sorted(unknown))}")
        return cls(**d)

    @classmethod
    def load(cls, path):
        """Read a JSON configuration file (any subset of the fields)."""
        with open(path) as f:
            try:
                d = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"configuration {path}: not valid JSON ({e})") from None
        return cls.from_dict(d)

    def digest(self):
        """Short stable hash of the configuration (for generated-file stamps and caches)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]
