"""Tile DMA: 2-D copies between an on-chip memory and external memory (DESIGN §4, memory system).

One copy is one LOAD or STORE step of the step list (:data:`nibble.hw.isa.STEP`): ``count``
chunks of ``words`` consecutive words, chunk ``i`` at on-chip word ``mem_addr + i·mem_stride``
and at DDR byte address ``ddr_addr + i·ddr_stride``. A row band of an HWC feature map is one
chunk; the channel block of a concatenated map, or a column band, is one chunk per pixel or row.
Each chunk is one read or write command of :class:`~nibble.hw.mem.axi_master.AXI4Master`, which
splits it into INCR bursts at 4 KiB boundaries.

A DDR beat of ``beat_bits`` (:attr:`~nibble.hw.config.EngineConfig.beat_bits` = ``8·vc·beat_words``)
holds ``beat_bits / word_bits`` words of the region (:func:`words_per_beat`), the first in the
lowest bits: ``beat_words`` feature words, ``2·beat_words`` weight words (``4·vc`` bits each),
``vc·beat_words/4`` parameter words (32 bits).

* **Feature and weight copies** move a beat a cycle: feature and weight memory are banked
  (:class:`~nibble.hw.mem.banked.BankedMemory`, :data:`BANKED`), so the words of a beat are one
  wide write or read. A feature chunk may start and end anywhere (``ddr_addr``, ``ddr_stride``
  multiples of a word, ``vc`` bytes): the DMA reads or writes the aligned beats that cover it,
  :func:`chunk_beats` of them — DDR word ``w`` of the chunk goes to on-chip word
  ``mem_addr + (w − first word)``, and the words of the first and last beat outside the chunk are
  masked (not written into feature memory; ``WSTRB`` low in DDR). Weight chunks are whole beats.
* **Parameter copies** move a word a cycle, in whole beats.

Weight and parameter chunks: ``words`` a multiple of the words per beat, ``ddr_addr`` and
``ddr_stride`` beat-aligned.

The step is checked before it comes here (:mod:`nibble.hw.sequencer`): sizes and alignment as
above and every range inside its memory.
"""
from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from ..config import EngineConfig
from ..isa import STEP, Region, StepOp
from .axi_master import WRITE_DONE_LAYOUT, command_layout, read_beat_layout, write_beat_layout

__all__ = ["TileDMA", "region_word_bits", "words_per_beat", "word_bytes", "chunk_beats", "BANKED", "MEM_READ_LATENCY"]

#: Cycles from a memory read request (``mem_addr``, ``mem_r_en``) to its word on ``mem_r_data``
#: (a synchronous block-RAM read port).
MEM_READ_LATENCY = 1


#: Regions whose memory is banked (:class:`~nibble.hw.mem.banked.BankedMemory`, a bank per word of
#: a DDR beat): the DMA moves a beat of them a cycle. Parameter memory takes a word a cycle.
BANKED = (Region.FEATURE, Region.WEIGHT)


def region_word_bits(config: EngineConfig):
    """``{Region: bits per word}`` of the on-chip memories of ``config``."""
    return {Region.PARAM: 32, Region.WEIGHT: 4 * config.vc, Region.FEATURE: 8 * config.vc}


def words_per_beat(config: EngineConfig, region):
    """Words of ``region`` in one DDR beat of ``config.beat_bits`` bits."""
    return config.beat_bits // region_word_bits(config)[Region(region)]


def word_bytes(config: EngineConfig, region):
    """Bytes of one word of ``region`` in DDR."""
    return region_word_bits(config)[Region(region)] // 8


def chunk_beats(config: EngineConfig, region, ddr_addr, words):
    """DDR beats one chunk of ``words`` words at byte address ``ddr_addr`` occupies: the aligned
    beats that cover it (a feature chunk may start inside a beat; other regions' chunks are whole
    beats) — what the DMA reads or writes, and what the ``dma_*_bytes`` CSRs count per chunk."""
    beat = config.beat_bits // 8
    first = ddr_addr % beat // word_bytes(config, region)
    per = words_per_beat(config, region)
    return -(-(first + words) // per)


class TileDMA(wiring.Component):
    """Runs LOAD and STORE steps over an :class:`~nibble.hw.mem.axi_master.AXI4Master`.

    Parameters: ``config`` (:class:`~nibble.hw.config.EngineConfig`; ``vc`` a power of two, so a
    beat of ``beat_bits`` = ``8·vc·beat_words`` bits is an AXI data width), ``addr_width`` (AXI
    byte address bits, 32).

    Members
    -------
    cmd : In(stream.Signature(STEP))
        A checked LOAD or STORE step; taken when the DMA is idle.
    busy : Out(1)
        From the cycle after ``cmd`` is taken until the cycle ``done`` is high, included.
    region : Out(2), store : Out(1)
        The region and direction of the copy in progress (valid while ``busy``): the owner of
        that memory's port selects the DMA with them.
    done : Out(1), err : Out(1)
        One cycle at the end of a copy: every word is written into the memory (LOAD) or every
        write command's response is in (STORE). ``err`` with it: some beat or response was not
        OKAY (the master's sticky error says which).
    mem_addr : Out(24), mem_r_en : Out(1), mem_r_data : In(beat_bits), mem_w_en : Out(1), mem_w_mask : Out(2·beat_words), mem_w_data : Out(beat_bits)
        One port of the region's memory; a read returns ``mem_r_data`` :data:`MEM_READ_LATENCY`
        cycles later. Parameter memory: one word at ``mem_addr`` (the low 32 bits of the data,
        ``mem_w_mask`` = 1). Feature and weight memory (a wide port of a
        :class:`~nibble.hw.mem.banked.BankedMemory`): the ``n`` words of a beat at ``mem_addr …
        mem_addr + n − 1`` (modulo 2²⁴), word ``j`` in bits ``word_bits·j …``, written where
        ``mem_w_mask`` bit ``j`` is set.
    mem_ready : In(1)
        The memory takes a read or write this cycle: ``mem_r_en`` and ``mem_w_en`` are only
        raised with it (the port's owner lowers it for a cycle the engine uses the port; 1 for
        a port of the DMA's own).
    rd_cmd, rd_data, wr_cmd, wr_data, wr_done
        To the master's ports of those names (``rd_cmd``/``wr_cmd``/``wr_data`` driven here;
        ``wr_data`` with strobes, :func:`~nibble.hw.mem.axi_master.write_beat_layout`: the master
        is built with ``strobes=True``).

    Throughput (while ``mem_ready``): a feature or weight copy moves one beat a cycle each way (a
    LOAD writes a beat's words in one cycle, a STORE reads them in one into a 4-beat buffer); a
    parameter copy one word a cycle (a LOAD writes a beat's words in ``words_per_beat`` cycles,
    a STORE reads one word a cycle into the buffer and packs them into beats). Latency of a LOAD:
    the master's (``cmd_latency`` + the slave's + ``rd_latency``) + 1 cycle to the first memory
    write.
    """

    def __init__(self, config: EngineConfig, *, addr_width=32):
        self.config = config
        self.beat_bits = config.beat_bits
        exact_log2(config.vc)           # raises for a vc that is not a power of two
        self.addr_width = addr_width
        super().__init__({
            "cmd": In(stream.Signature(STEP)),
            "busy": Out(1), "region": Out(2), "store": Out(1),
            "done": Out(1), "err": Out(1),
            "mem_addr": Out(24), "mem_r_en": Out(1), "mem_r_data": In(self.beat_bits),
            "mem_w_en": Out(1), "mem_w_mask": Out(max(words_per_beat(config, r) for r in BANKED)),
            "mem_w_data": Out(self.beat_bits),
            "mem_ready": In(1, init=1),
            "rd_cmd": Out(stream.Signature(command_layout(addr_width))),
            "rd_data": In(stream.Signature(read_beat_layout(self.beat_bits))),
            "wr_cmd": Out(stream.Signature(command_layout(addr_width))),
            "wr_data": Out(stream.Signature(write_beat_layout(self.beat_bits))),
            "wr_done": In(stream.Signature(WRITE_DONE_LAYOUT)),
        })

    def elaborate(self, platform):
        m = Module()
        c = self.config
        B = self.beat_bits
        b_log = exact_log2(B // 8)               # log2 of a beat's bytes
        wbits = region_word_bits(c)
        narrow = [r for r in Region if r not in BANKED]
        max_r = max(words_per_beat(c, r) for r in narrow)

        step = Signal(STEP)
        busy = Signal()
        m.d.comb += [self.busy.eq(busy), self.region.eq(step.region), self.store.eq(step.op == StepOp.STORE)]
        m.d.comb += self.cmd.ready.eq(~busy)
        # regions copied a beat a cycle (banked memories) and their words a beat; the others a
        # word a cycle
        banked = {r: words_per_beat(c, r) for r in BANKED}
        MW = max(banked.values())
        wide = Signal()              # the region in progress is banked: a beat a cycle
        nbw = Signal(range(MW + 1))
        nbw_log = Signal(range(exact_log2(MW) + 1))
        with m.Switch(step.region):
            for r, n in banked.items():
                with m.Case(r):
                    m.d.comb += [wide.eq(1), nbw.eq(n), nbw_log.eq(exact_log2(n))]
        # words per beat of a word-a-cycle copy, and its log2
        ratio = Signal(range(max_r + 1))
        ratio_log = Signal(range(exact_log2(max_r) + 1))
        word_mask = Signal(B)
        with m.Switch(step.region):
            for r in narrow:
                with m.Case(r):
                    m.d.comb += [ratio.eq(words_per_beat(c, r)), ratio_log.eq(exact_log2(words_per_beat(c, r))),
                                 word_mask.eq((1 << wbits[r]) - 1)]

        def first_word(addr, region):
            """Word of byte address ``addr`` within its beat, in a banked ``region``."""
            v = Signal(range(MW), name="first_word")
            with m.Switch(region):
                for r, n in banked.items():
                    lo = exact_log2(wbits[r] // 8)
                    if n > 1:
                        with m.Case(r):
                            m.d.comb += v.eq(addr[lo:lo + exact_log2(n)])
            return v

        # ---- command issue: one AXI command per chunk, over the aligned beats that cover it
        cmd_left = Signal(16)
        cmd_addr = Signal(self.addr_width)
        issuing = Signal()
        beats = Signal(26)
        m.d.comb += beats.eq(Mux(wide, (first_word(cmd_addr, step.region) + step.words + nbw - 1) >> nbw_log,
                                 step.words >> ratio_log))
        for s in (self.rd_cmd, self.wr_cmd):
            m.d.comb += [s.payload.addr.eq(Cat(C(0, b_log), cmd_addr[b_log:])), s.payload.beats.eq(beats)]
        m.d.comb += [self.rd_cmd.valid.eq(issuing & (step.op == StepOp.LOAD)),
                     self.wr_cmd.valid.eq(issuing & (step.op == StepOp.STORE))]
        cmd_taken = (self.rd_cmd.valid & self.rd_cmd.ready) | (self.wr_cmd.valid & self.wr_cmd.ready)
        with m.If(cmd_taken):
            m.d.sync += [cmd_addr.eq(cmd_addr + step.ddr_stride), cmd_left.eq(cmd_left - 1)]
            with m.If(cmd_left == 1):
                m.d.sync += issuing.eq(0)

        # ---- the walk over the on-chip side: chunk base + word (weight, parameters) or + the
        # chunk word of the beat's first word (feature: negative in a first beat that starts
        # before the chunk)
        chunk_base = Signal(24)
        word = Signal(24)
        chunks_left = Signal(16)
        walking = Signal()
        step_word = Signal()         # advance the word walk this cycle
        last_word = Signal()
        m.d.comb += last_word.eq((word + 1 == step.words) & (chunks_left == 1))
        with m.If(step_word):
            with m.If(word + 1 == step.words):
                m.d.sync += [word.eq(0), chunk_base.eq(chunk_base + step.mem_stride),
                             chunks_left.eq(chunks_left - 1)]
                with m.If(chunks_left == 1):
                    m.d.sync += walking.eq(0)
            with m.Else():
                m.d.sync += word.eq(word + 1)
        walk_addr = Signal(self.addr_width)      # DDR byte address of the chunk walked
        pos = Signal(signed(26))
        step_beat = Signal()         # advance the beat walk this cycle
        beat_end = Signal()          # this beat holds the chunk's last word
        last_beat = Signal()
        next_walk = Signal(self.addr_width)
        m.d.comb += [beat_end.eq(pos + nbw >= step.words), last_beat.eq(beat_end & (chunks_left == 1)),
                     next_walk.eq(walk_addr + step.ddr_stride)]
        with m.If(step_beat):
            with m.If(beat_end):
                m.d.sync += [chunk_base.eq(chunk_base + step.mem_stride), walk_addr.eq(next_walk),
                             pos.eq(-first_word(next_walk, step.region)), chunks_left.eq(chunks_left - 1)]
                with m.If(chunks_left == 1):
                    m.d.sync += walking.eq(0)
            with m.Else():
                m.d.sync += pos.eq(pos + nbw)
        fmask = Signal(MW)           # the beat's words inside the chunk
        for j in range(MW):
            m.d.comb += fmask[j].eq((pos + j >= 0) & (pos + j < step.words) & (j < nbw))
        m.d.comb += self.mem_addr.eq(Mux(wide, (chunk_base + pos)[:24], chunk_base + word))

        err = Signal()
        finish = Signal()
        m.d.comb += [self.done.eq(finish), self.err.eq(finish & err)]
        with m.If(finish):
            m.d.sync += busy.eq(0)

        # ---- LOAD: beats → memory writes (a beat at once, or word by word)
        beat = Signal(B)
        beat_words = Signal(range(max_r + 1))       # write cycles of ``beat`` left
        m.d.comb += [self.mem_w_data.eq(Mux(wide, beat, beat & word_mask)), self.mem_w_mask.eq(Mux(wide, fmask, 1))]
        is_load = step.op == StepOp.LOAD
        write_now = Signal()
        m.d.comb += write_now.eq(busy & is_load & (beat_words != 0) & walking & self.mem_ready)
        with m.If(write_now):
            m.d.comb += self.mem_w_en.eq(1)
            m.d.sync += beat_words.eq(beat_words - 1)
            with m.If(wide):
                m.d.comb += [step_beat.eq(1), finish.eq(last_beat)]
            with m.Else():
                m.d.comb += [step_word.eq(1), finish.eq(last_word)]
                with m.Switch(step.region):
                    for r in narrow:
                        with m.Case(r):
                            m.d.sync += beat.eq(beat >> wbits[r])
        # the next beat may come in the cycle the last word of this one is written
        m.d.comb += self.rd_data.ready.eq(busy & is_load & ((beat_words == 0) | ((beat_words == 1) & write_now)))
        with m.If(self.rd_data.valid & self.rd_data.ready):
            m.d.sync += [beat.eq(self.rd_data.payload.data), beat_words.eq(Mux(wide, 1, ratio))]
            with m.If(self.rd_data.payload.err):
                m.d.sync += err.eq(1)

        # ---- STORE: memory reads → 4-entry buffer (a beat and its word mask, or a word) →
        # beats (feature), or words packed into beats (weight, parameters)
        m.submodules.rbuf = rbuf = SyncFIFOBuffered(width=B + MW, depth=4)
        pending = Signal()           # a read issued last cycle, its data arrives now
        pend_mask = Signal(MW)
        m.d.sync += [pending.eq(self.mem_r_en), pend_mask.eq(Mux(wide, fmask, 1))]
        m.d.comb += [rbuf.w_en.eq(pending), rbuf.w_data.eq(Cat(self.mem_r_data, pend_mask))]
        is_store = step.op == StepOp.STORE
        with m.If(busy & is_store & walking & (rbuf.level + pending < rbuf.depth) & self.mem_ready):
            m.d.comb += self.mem_r_en.eq(1)
            with m.If(wide):
                m.d.comb += step_beat.eq(1)
            with m.Else():
                m.d.comb += step_word.eq(1)
        pack = Signal(B)
        packed = Signal(range(max_r + 1))
        full = packed == ratio
        head_mask = rbuf.r_data[B:]
        strb = Signal(B // 8)        # each word's bytes with its mask bit
        with m.Switch(step.region):
            for r, n in banked.items():
                with m.Case(r):
                    m.d.comb += strb.eq(Cat(*(head_mask[j].replicate(wbits[r] // 8) for j in range(n))))
        m.d.comb += [self.wr_data.payload.data.eq(Mux(wide, rbuf.r_data[:B], pack)),
                     self.wr_data.payload.strb.eq(Mux(wide, strb, (1 << (B // 8)) - 1)),
                     self.wr_data.valid.eq(busy & is_store & Mux(wide, rbuf.r_rdy, full))]
        take_beat = self.wr_data.valid & self.wr_data.ready
        m.d.comb += rbuf.r_en.eq(busy & is_store & Mux(wide, take_beat, ~full | take_beat))
        with m.If(~wide):
            with m.If(rbuf.r_en & rbuf.r_rdy):
                # the new word enters at the top and earlier ones move down: after ``ratio`` words
                # the first is in the lowest bits (and every bit of the previous beat is gone)
                with m.Switch(step.region):
                    for r in narrow:
                        with m.Case(r):
                            m.d.sync += pack.eq(Cat(pack[wbits[r]:], rbuf.r_data[:wbits[r]]))
                m.d.sync += packed.eq(Mux(take_beat, 1, packed + 1))
            with m.Elif(take_beat):
                m.d.sync += packed.eq(0)
        acks_left = Signal(16)
        m.d.comb += self.wr_done.ready.eq(busy & is_store)
        with m.If(self.wr_done.valid & self.wr_done.ready):
            m.d.sync += acks_left.eq(acks_left - 1)
            with m.If(self.wr_done.payload.err):
                m.d.sync += err.eq(1)
            with m.If(acks_left == 1):
                m.d.comb += finish.eq(1)

        # ---- a new step
        with m.If(self.cmd.valid & self.cmd.ready):
            p = self.cmd.payload
            m.d.sync += [step.eq(p), busy.eq(1), err.eq(0),
                         issuing.eq(1), cmd_left.eq(p.count), cmd_addr.eq(p.ddr_addr),
                         walking.eq(1), chunk_base.eq(p.mem_addr), word.eq(0), chunks_left.eq(p.count),
                         walk_addr.eq(p.ddr_addr), pos.eq(-first_word(p.ddr_addr, p.region)),
                         beat_words.eq(0), packed.eq(0), acks_left.eq(p.count)]
        return m
