"""A memory of ``banks`` interleaved block RAMs: a beat of consecutive words per cycle (DESIGN §4).

Feature memory on a device whose DDR beat holds several feature words
(:attr:`nibble.hw.config.EngineConfig.beat_words`) is built as ``banks`` block RAMs of
``depth / banks`` words: word ``a`` is row ``a // banks`` of bank ``a mod banks``. Any
``banks`` consecutive words ``a … a + banks − 1`` then lie in different banks, one each, so a
**wide** port reads or writes them all in one cycle whatever ``a`` is (the tile DMA moves a DDR
beat a cycle: :class:`~nibble.hw.mem.dma.TileDMA`), while a **narrow** port reads or writes one
word anywhere, as a single memory would (the engine's readers and writer). With ``banks = 1``
it is one plain memory, nothing added.

Ports (each a plain synchronous block-RAM port, read data one cycle after ``en``):

* :meth:`read_port` ``(wide=False)``: ``addr`` (24 bits), ``en``; ``data``: one word, or with
  ``wide`` ``banks`` words, word ``j`` (bits ``j·width …``) the word at ``addr + j``.
* :meth:`write_port`: ``addr`` (24 bits), ``data`` (``banks`` words, word ``j`` for ``addr + j``),
  ``mask`` (``banks`` bits: word ``j`` is written with bit ``j``; a one-word write is ``mask = 1``
  and the word in the lowest bits).

Addresses are taken modulo 2²⁴, so a beat may start before word 0 as long as its masked-off
words are the ones below it (the DMA's first beat of a chunk that does not start on a beat);
words whose address lies past ``depth`` must be masked off (a wide read returns don't-care for
them). Cost: ``banks`` block RAMs of ``depth / banks`` words hold what one of ``depth`` held;
per port, ``banks`` address adders and a ``banks``-way word rotation (wide) or word select
(narrow), registered with the read.
"""
from amaranth import *
from amaranth.lib.memory import Memory
from amaranth.utils import exact_log2

__all__ = ["BankedMemory", "ADDR_BITS"]

#: Address bits of every port (the step's ``mem_addr`` width, :data:`nibble.hw.isa.STEP`).
ADDR_BITS = 24


class _Port:
    def __init__(self, name, data_bits, wide=False):
        self.addr = Signal(ADDR_BITS, name=f"{name}_addr")
        self.en = Signal(name=f"{name}_en")
        self.data = Signal(data_bits, name=f"{name}_data")
        self.wide = wide


class BankedMemory(Elaboratable):
    """``depth`` words of ``width`` bits in ``banks`` interleaved block RAMs (module docstring).

    :param width: bits per word; :param depth: words (a multiple of ``banks``);
    :param banks: 1, 2, 4 or 8; :param name: prefix of the block RAMs' names.
    :raises ValueError: ``banks`` not a power of two up to 8, ``depth`` not a multiple of it.
    """

    def __init__(self, width, depth, banks=1, *, name="mem"):
        if banks not in (1, 2, 4, 8):
            raise ValueError(f"BankedMemory banks must be 1, 2, 4 or 8, not {banks!r}")
        if depth % banks:
            raise ValueError(f"BankedMemory depth {depth} is not a multiple of its {banks} banks")
        self.width, self.depth, self.banks, self.name = width, depth, banks, name
        self._reads, self._writes = [], []

    def read_port(self, wide=False):
        """A read port (module docstring); ``wide``: ``banks`` consecutive words a read."""
        p = _Port(f"{self.name}_r{len(self._reads)}", self.width * (self.banks if wide else 1), wide)
        self._reads.append(p)
        return p

    def write_port(self):
        """The write port (one per memory): ``addr``, ``data`` (``banks`` words), ``mask``."""
        if self._writes:
            raise ValueError("a BankedMemory has one write port")
        p = _Port(f"{self.name}_w", self.width * self.banks, wide=True)
        # one bank: the mask is the write enable
        p.mask = p.en if self.banks == 1 else Signal(self.banks, name=f"{self.name}_w_mask")
        self._writes.append(p)
        return p

    def elaborate(self, platform):
        m = Module()
        B, W = self.banks, self.width
        rows = self.depth // B
        sh = exact_log2(B)
        mems = []
        for b in range(B):
            mem = Memory(shape=W, depth=rows, init=[])
            m.submodules[f"{self.name}_bank{b}" if B > 1 else self.name] = mem
            mems.append(mem)
        for p in self._writes:
            for b, mem in enumerate(mems):
                wp = mem.write_port()
                if B == 1:
                    m.d.comb += [wp.addr.eq(p.addr), wp.en.eq(p.en), wp.data.eq(p.data)]
                    continue
                # bank b holds word j = (b − addr) mod B of the beat, at row (addr + j) >> sh
                j = Signal(sh, name=f"{self.name}_w_j{b}")
                m.d.comb += j.eq(C(b, sh) - p.addr[:sh])
                a = (p.addr + j)[:ADDR_BITS]
                m.d.comb += [wp.addr.eq(a[sh:]), wp.en.eq(p.mask.bit_select(j, 1)),
                             wp.data.eq(p.data.word_select(j, W))]
        for p in self._reads:
            ports = [mem.read_port(domain="sync") for mem in mems]
            if B == 1:
                m.d.comb += [ports[0].addr.eq(p.addr), ports[0].en.eq(p.en), p.data.eq(ports[0].data)]
                continue
            rot = Signal(sh, name=f"{p.addr.name}_rot")        # addr mod B, registered with the read
            with m.If(p.en):
                m.d.sync += rot.eq(p.addr[:sh])
            for b, rp in enumerate(ports):
                m.d.comb += rp.en.eq(p.en)
                if p.wide:
                    j = C(b, sh) - p.addr[:sh]
                    m.d.comb += rp.addr.eq((p.addr + j[:sh])[:ADDR_BITS][sh:])
                else:
                    m.d.comb += rp.addr.eq(p.addr[sh:])
            out = Array(rp.data for rp in ports)
            if p.wide:
                # word j of the beat came from bank (rot + j) mod B
                m.d.comb += p.data.eq(Cat(*(out[(rot + j)[:sh]] for j in range(B))))
            else:
                m.d.comb += p.data.eq(out[rot])
        return m
