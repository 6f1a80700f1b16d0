"""Tile DMA: 2-D copies between an on-chip memory and external memory (DESIGN §4, memory system).

One copy is one LOAD or STORE step of the step list (:data:`nibble.hw.isa.STEP`): ``count``
chunks of ``words`` consecutive words, chunk ``i`` at on-chip word ``mem_addr + i·mem_stride``
and at DDR byte address ``ddr_addr + i·ddr_stride``. A row band of an HWC feature map is one
chunk; the channel block of a concatenated map, or a column band, is one chunk per pixel or row.
Each chunk is one read or write command of :class:`~nibble.hw.mem.axi_master.AXI4Master`, which
splits it into INCR bursts at 4 KiB boundaries.

A DDR beat of ``beat_bits`` (= ``8·vc``, one feature word) holds ``beat_bits / word_bits`` words of
the region (:func:`words_per_beat`), the first in the lowest bits: 1 feature word, 2 weight words
(``4·vc`` bits each), ``vc/4`` parameter words (32 bits). The step is checked before it comes
here (:mod:`nibble.hw.sequencer`): ``words`` is a multiple of the words per beat, addresses and
strides are beat-aligned and every range is inside its memory.
"""
from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from ..config import EngineConfig
from ..isa import STEP, Region, StepOp
from .axi_master import WRITE_DONE_LAYOUT, command_layout, read_beat_layout

__all__ = ["TileDMA", "region_word_bits", "words_per_beat", "MEM_READ_LATENCY"]

#: Cycles from a memory read request (``mem_addr``, ``mem_r_en``) to its word on ``mem_r_data``
#: (a synchronous block-RAM read port).
MEM_READ_LATENCY = 1


def region_word_bits(config: EngineConfig):
    """``{Region: bits per word}`` of the on-chip memories of ``config``."""
    return {Region.PARAM: 32, Region.WEIGHT: 4 * config.vc, Region.FEATURE: 8 * config.vc}


def words_per_beat(config: EngineConfig, region):
    """Words of ``region`` in one DDR beat of ``8·vc`` bits."""
    return 8 * config.vc // region_word_bits(config)[Region(region)]


class TileDMA(wiring.Component):
    """Runs LOAD and STORE steps over an :class:`~nibble.hw.mem.axi_master.AXI4Master`.

    Parameters: ``config`` (:class:`~nibble.hw.config.EngineConfig`; ``vc`` a power of two, so a
    beat of ``8·vc`` bits is an AXI data width), ``addr_width`` (AXI byte address bits, 32).

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
    mem_addr : Out(24), mem_r_en : Out(1), mem_r_data : In(8·vc), mem_w_en : Out(1), mem_w_data : Out(8·vc)
        One port of the region's memory: a read returns ``mem_r_data`` :data:`MEM_READ_LATENCY`
        cycles later (the low ``word_bits``); a write stores the low ``word_bits`` of
        ``mem_w_data`` at ``mem_addr``.
    mem_ready : In(1)
        The memory takes a read or write this cycle: ``mem_r_en`` and ``mem_w_en`` are only
        raised with it (the port's owner lowers it for a cycle the engine uses the port; 1 for
        a port of the DMA's own).
    rd_cmd, rd_data, wr_cmd, wr_data, wr_done
        To the master's ports of those names (``rd_cmd``/``wr_cmd``/``wr_data`` driven here).

    Throughput: one memory word per cycle each way (while ``mem_ready``) — a LOAD writes a beat's words in
    ``words_per_beat`` cycles, a STORE reads one word per cycle into a 4-word buffer and packs them
    into beats. Latency of a LOAD: the master's (``cmd_latency`` + the slave's + ``rd_latency``)
    + 1 cycle to the first memory write.
    """

    def __init__(self, config: EngineConfig, *, addr_width=32):
        self.config = config
        self.beat_bits = 8 * config.vc
        exact_log2(config.vc)           # raises for a vc that is not a power of two
        self.addr_width = addr_width
        super().__init__({
            "cmd": In(stream.Signature(STEP)),
            "busy": Out(1), "region": Out(2), "store": Out(1),
            "done": Out(1), "err": Out(1),
            "mem_addr": Out(24), "mem_r_en": Out(1), "mem_r_data": In(self.beat_bits),
            "mem_w_en": Out(1), "mem_w_data": Out(self.beat_bits), "mem_ready": In(1, init=1),
            "rd_cmd": Out(stream.Signature(command_layout(addr_width))),
            "rd_data": In(stream.Signature(read_beat_layout(self.beat_bits))),
            "wr_cmd": Out(stream.Signature(command_layout(addr_width))),
            "wr_data": Out(stream.Signature(self.beat_bits)),
            "wr_done": In(stream.Signature(WRITE_DONE_LAYOUT)),
        })

    def elaborate(self, platform):
        m = Module()
        c = self.config
        B = self.beat_bits
        wbits = region_word_bits(c)
        max_r = max(words_per_beat(c, r) for r in Region)

        step = Signal(STEP)
        busy = Signal()
        m.d.comb += [self.busy.eq(busy), self.region.eq(step.region),
                     self.store.eq(step.op == StepOp.STORE)]
        m.d.comb += self.cmd.ready.eq(~busy)
        # words per beat of the region in progress, and its log2
        ratio = Signal(range(max_r + 1))
        ratio_log = Signal(range(exact_log2(max_r) + 1))
        word_mask = Signal(B)
        with m.Switch(step.region):
            for r in Region:
                with m.Case(r):
                    m.d.comb += [ratio.eq(words_per_beat(c, r)), ratio_log.eq(exact_log2(words_per_beat(c, r))),
                                 word_mask.eq((1 << wbits[r]) - 1)]
        beats = Signal(24)
        m.d.comb += beats.eq(step.words >> ratio_log)

        # ---- command issue: one AXI command per chunk
        cmd_left = Signal(16)
        cmd_addr = Signal(self.addr_width)
        issuing = Signal()
        for s in (self.rd_cmd, self.wr_cmd):
            m.d.comb += [s.payload.addr.eq(cmd_addr), s.payload.beats.eq(beats)]
        m.d.comb += [self.rd_cmd.valid.eq(issuing & (step.op == StepOp.LOAD)),
                     self.wr_cmd.valid.eq(issuing & (step.op == StepOp.STORE))]
        cmd_taken = (self.rd_cmd.valid & self.rd_cmd.ready) | (self.wr_cmd.valid & self.wr_cmd.ready)
        with m.If(cmd_taken):
            m.d.sync += [cmd_addr.eq(cmd_addr + step.ddr_stride), cmd_left.eq(cmd_left - 1)]
            with m.If(cmd_left == 1):
                m.d.sync += issuing.eq(0)

        # ---- the word walk over the on-chip side: chunk base + word index
        chunk_base = Signal(24)
        word = Signal(24)
        chunks_left = Signal(16)
        walking = Signal()
        step_word = Signal()         # advance the walk by one word this cycle
        last_word = Signal()
        m.d.comb += [self.mem_addr.eq(chunk_base + word),
                     last_word.eq((word + 1 == step.words) & (chunks_left == 1))]
        with m.If(step_word):
            with m.If(word + 1 == step.words):
                m.d.sync += [word.eq(0), chunk_base.eq(chunk_base + step.mem_stride),
                             chunks_left.eq(chunks_left - 1)]
                with m.If(chunks_left == 1):
                    m.d.sync += walking.eq(0)
            with m.Else():
                m.d.sync += word.eq(word + 1)

        err = Signal()
        finish = Signal()
        m.d.comb += [self.done.eq(finish), self.err.eq(finish & err)]
        with m.If(finish):
            m.d.sync += busy.eq(0)

        # ---- LOAD: beats → words → memory writes
        beat = Signal(B)
        beat_words = Signal(range(max_r + 1))       # words of ``beat`` not yet written
        m.d.comb += self.mem_w_data.eq(beat & word_mask)
        is_load = step.op == StepOp.LOAD
        write_now = Signal()
        m.d.comb += write_now.eq(busy & is_load & (beat_words != 0) & walking & self.mem_ready)
        with m.If(write_now):
            m.d.comb += [self.mem_w_en.eq(1), step_word.eq(1)]
            m.d.sync += beat_words.eq(beat_words - 1)
            with m.Switch(step.region):
                for r in Region:
                    with m.Case(r):
                        m.d.sync += beat.eq(beat >> wbits[r])
            with m.If(last_word):
                m.d.comb += finish.eq(1)
        # the next beat may come in the cycle the last word of this one is written
        m.d.comb += self.rd_data.ready.eq(busy & is_load & ((beat_words == 0) | ((beat_words == 1) & write_now)))
        with m.If(self.rd_data.valid & self.rd_data.ready):
            m.d.sync += [beat.eq(self.rd_data.payload.data), beat_words.eq(ratio)]
            with m.If(self.rd_data.payload.err):
                m.d.sync += err.eq(1)

        # ---- STORE: memory reads → 4-word buffer → packed beats
        m.submodules.rbuf = rbuf = SyncFIFOBuffered(width=B, depth=4)
        pending = Signal()           # a read issued last cycle, its word arrives now
        m.d.sync += pending.eq(self.mem_r_en)
        m.d.comb += [rbuf.w_en.eq(pending), rbuf.w_data.eq(self.mem_r_data)]
        is_store = step.op == StepOp.STORE
        with m.If(busy & is_store & walking & (rbuf.level + pending < rbuf.depth) & self.mem_ready):
            m.d.comb += [self.mem_r_en.eq(1), step_word.eq(1)]
        pack = Signal(B)
        packed = Signal(range(max_r + 1))
        full = packed == ratio
        m.d.comb += [self.wr_data.payload.eq(pack), self.wr_data.valid.eq(busy & is_store & full)]
        take_beat = self.wr_data.valid & self.wr_data.ready
        m.d.comb += rbuf.r_en.eq(busy & is_store & (~full | take_beat))
        with m.If(rbuf.r_en & rbuf.r_rdy):
            # the new word enters at the top and earlier ones move down: after ``ratio`` words
            # the first is in the lowest bits (and every bit of the previous beat is gone)
            with m.Switch(step.region):
                for r in Region:
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
                         beat_words.eq(0), packed.eq(0), acks_left.eq(p.count)]
        return m
