"""Step sequencer: runs a program that lives in external memory (DESIGN §4, memory system).

A step list (:data:`nibble.hw.isa.STEP`) in DDR says what moves between DDR and the on-chip
memories and when the engine runs: LOAD/STORE steps go to the tile DMA
(:class:`~nibble.hw.mem.dma.TileDMA`), RUN steps start the engine (:class:`~nibble.hw.engine.Engine`)
at a descriptor in parameter memory, END finishes. The two units work at the same time: a LOAD
runs while the engine computes (the compiler loads the next layer's filters into the other half
of weight memory — TF2's double-buffered filter caches — and the next row band's input into the
other half of feature memory), and so does a STORE from feature memory (the last band's output
rows); ``wait`` makes a step wait for all earlier ones. The sequencer does not compare
addresses: a copy beside a RUN must not touch the memory words that RUN uses, and the compiler
sets ``wait`` where it would (:func:`nibble.host.steps.check_overlaps` checks a list).

Fetch: the steps are read in chunks of :data:`CHUNK_STEPS` (256 bytes) into a FIFO of
:data:`FIFO_STEPS`, a chunk whenever there is room for one and none is in flight, until a chunk
holds an END or a step whose ``magic`` is wrong. So a list is read at most to the end of the
chunk that holds its END: the host pads it to whole chunks (:func:`nibble.host.program` does).

Execution, per step (one step at a time, in order): the step at the FIFO's head is taken into a
register (1 cycle), checked (1 cycle: ranges computed from registered products), then issued
when its unit can take it:

* ``wait`` set: both units idle;
* LOAD, and STORE from feature memory: the DMA idle (beside a running engine, the DMA takes the
  memory ports in the cycles the engine leaves them: :class:`nibble.hw.accelerator.AcceleratorCore`);
* STORE from weight or parameter memory: the DMA and the engine idle (their read ports are the
  engine's while it runs);
* RUN: the engine idle, and the DMA not in such a STORE;
* END: both idle; then ``done``.

Errors (``error``, ``err_code`` = :class:`~nibble.hw.isa.EngineError`, ``step`` names the step):
``STEP``/``STEP_RANGE`` for a step that fails its check (it is not issued), ``DDR`` for an error
response on a fetch or a copy, or the engine's own code when a RUN fails. After an error nothing
more is issued; ``busy`` stays high until the DMA, the engine and the fetch have drained.

Latency: 3 cycles per step from the FIFO head to its issue (take, check, issue) when its unit is
free; the first step issues ``cmd_latency`` + DDR latency + beats + 3 cycles after ``start``.
"""
from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from .config import EngineConfig
from .isa import DDR_BASE, STEP, STEP_BYTES, STEP_CHUNK, STEP_MAGIC, EngineError, Region, StepOp
from .mem.axi_master import command_layout, read_beat_layout
from .mem.dma import word_bytes, words_per_beat

__all__ = ["StepSequencer", "CHUNK_STEPS", "FIFO_STEPS", "check_step"]

#: Steps read from DDR by one fetch command (:data:`~nibble.hw.isa.STEP_CHUNK`).
CHUNK_STEPS = STEP_CHUNK
#: Steps the fetch FIFO holds.
FIFO_STEPS = 16


def check_step(config: EngineConfig, step):
    """The error a step gets from the sequencer, or ``None`` (the same rules, in Python, for the
    host: :mod:`nibble.host.program` refuses such a list before it reaches a device).

    :param step: ``{field: int}`` as :func:`nibble.hw.isa.decode_step` returns.
    :returns: ``(EngineError, reason)`` or ``None``.
    """
    beat = config.beat_bits // 8
    if step["magic"] != STEP_MAGIC:
        return EngineError.STEP, f"magic 0x{step['magic']:02x} is not 0x{STEP_MAGIC:02x}"
    if step["op"] not in [int(o) for o in StepOp]:
        return EngineError.STEP, f"unknown op {step['op']}"
    op = StepOp(step["op"])
    if op == StepOp.RUN:
        if step["mem_addr"] >= config.param_depth:
            return EngineError.STEP_RANGE, f"descriptor {step['mem_addr']} outside parameter memory"
        return None
    if op == StepOp.END:
        return None
    if step["region"] not in [int(r) for r in Region]:
        return EngineError.STEP, f"unknown region {step['region']}"
    region = Region(step["region"])
    # a feature chunk may start and end inside a beat (the DMA masks the words around it)
    r = 1 if region == Region.FEATURE else words_per_beat(config, region)
    align = config.vc if region == Region.FEATURE else beat
    if step["count"] == 0 or step["words"] == 0 or step["words"] % r:
        return EngineError.STEP, f"count {step['count']}, words {step['words']}: need ≥ 1 and words a multiple of {r}"
    if step["ddr_addr"] % align or step["ddr_stride"] % align:
        return EngineError.STEP, f"DDR address 0x{step['ddr_addr']:x} / stride {step['ddr_stride']} not multiples of {align} bytes"
    depth = {Region.PARAM: config.param_depth, Region.WEIGHT: config.weight_depth,
             Region.FEATURE: config.feature_depth}[region]
    if step["mem_addr"] + (step["count"] - 1) * step["mem_stride"] + step["words"] > depth:
        return EngineError.STEP_RANGE, f"on-chip words up to {step['mem_addr'] + (step['count'] - 1) * step['mem_stride'] + step['words']} > {depth}"
    end = step["ddr_addr"] + (step["count"] - 1) * step["ddr_stride"] + step["words"] * word_bytes(config, region)
    if step["ddr_addr"] < DDR_BASE or end > DDR_BASE + config.ddr_bytes:
        return EngineError.STEP_RANGE, f"DDR bytes 0x{step['ddr_addr']:x}..0x{end:x} outside the DDR window"
    return None


class StepSequencer(wiring.Component):
    """Fetches and issues the steps of a list in DDR (see the module docstring).

    Members
    -------
    start : In(1)
        One cycle: run the list at byte address ``step_base`` (a multiple of
        :data:`~nibble.hw.isa.STEP_BYTES`). Ignored while ``busy``.
    step_base : In(32)
    busy : Out(1); done, error : Out(1)
        ``done``/``error`` hold until the next start.
    err_code : Out(4), step : Out(32)
        The error (:class:`~nibble.hw.isa.EngineError`) and the index of the step issued last or
        in error.
    rd_cmd : Out(stream.Signature(command_layout(32))), rd_data : In(stream.Signature(read_beat_layout(beat_bits)))
        Step fetches (to a :class:`~nibble.hw.mem.read_mux.ReadMux` client). A step of
        :data:`~nibble.hw.isa.STEP_BYTES` is assembled from beats narrower than it, or a beat
        wider than it holds several, handed to the FIFO one a cycle.
    dma : Out(stream.Signature(STEP))
        LOAD/STORE steps to the DMA's ``cmd``; ``dma_busy``, ``dma_done``, ``dma_err``,
        ``dma_region``, ``dma_store`` : In(1)/In(2) from it.
    eng_start : Out(1), eng_desc : Out(24)
        Start the engine at descriptor ``eng_desc``; ``eng_busy``, ``eng_error`` : In(1),
        ``eng_err_code`` : In(4) from it.
    """

    def __init__(self, config: EngineConfig):
        self.config = config
        beat_bits = config.beat_bits
        super().__init__({
            "start": In(1), "step_base": In(32),
            "busy": Out(1), "done": Out(1), "error": Out(1), "err_code": Out(4), "step": Out(32),
            "rd_cmd": Out(stream.Signature(command_layout(32))),
            "rd_data": In(stream.Signature(read_beat_layout(beat_bits))),
            "dma": Out(stream.Signature(STEP)),
            "dma_busy": In(1), "dma_done": In(1), "dma_err": In(1), "dma_region": In(2), "dma_store": In(1),
            "eng_start": Out(1), "eng_desc": Out(24),
            "eng_busy": In(1), "eng_error": In(1), "eng_err_code": In(4),
        })

    def elaborate(self, platform):
        m = Module()
        c = self.config
        beat_bytes = c.beat_bits // 8
        beats_per_step = max(1, STEP_BYTES // beat_bytes)
        steps_per_beat = max(1, beat_bytes // STEP_BYTES)

        running = Signal()          # between start and the END (or an error)
        failed = Signal()           # an error was seen; drain, then report

        # ---- fetch
        fifo_rst = Signal()         # a new run starts with an empty FIFO (steps left by an error)
        fifo = SyncFIFOBuffered(width=STEP.size, depth=FIFO_STEPS)
        m.submodules.fifo = ResetInserter(fifo_rst)(fifo)
        fetch_addr = Signal(32)
        in_flight = Signal()        # a chunk is being read
        stop_fetch = Signal()       # a chunk held an END or a bad step
        m.d.comb += [self.rd_cmd.payload.addr.eq(fetch_addr),
                     self.rd_cmd.payload.beats.eq(CHUNK_STEPS * STEP_BYTES // beat_bytes),
                     self.rd_cmd.valid.eq(running & ~failed & ~in_flight & ~stop_fetch
                                          & (fifo.level <= FIFO_STEPS - CHUNK_STEPS))]
        with m.If(self.rd_cmd.valid & self.rd_cmd.ready):
            m.d.sync += [in_flight.eq(1), fetch_addr.eq(fetch_addr + CHUNK_STEPS * STEP_BYTES)]
        # a step is assembled from ``beats_per_step`` beats, or a beat holds ``steps_per_beat`` steps
        # (handed to the FIFO one a cycle, the beat held meanwhile)
        assembly = Signal(8 * STEP_BYTES)
        part = Signal(range(beats_per_step))
        sub = Signal(range(steps_per_beat))
        data = self.rd_data.payload.data
        if steps_per_beat == 1:
            m.d.comb += self.rd_data.ready.eq(1)      # the FIFO has room for the whole chunk
            new_step = STEP(Cat(assembly[8 * beat_bytes:], data)[:STEP.size])
            beat_done = C(1, 1)
        else:
            m.d.comb += self.rd_data.ready.eq(sub == steps_per_beat - 1)
            new_step = STEP(data.word_select(sub, 8 * STEP_BYTES)[:STEP.size])
            beat_done = sub == steps_per_beat - 1
        with m.If(self.rd_data.valid):
            if steps_per_beat == 1:
                m.d.sync += assembly.eq(Cat(assembly[8 * beat_bytes:], data))
            else:
                m.d.sync += sub.eq(Mux(beat_done, 0, sub + 1))
            with m.If(self.rd_data.payload.err & beat_done):
                m.d.sync += failed.eq(1)
                with m.If(~failed):
                    m.d.sync += self.err_code.eq(EngineError.DDR)
            with m.If(part == beats_per_step - 1):
                m.d.sync += part.eq(0)
                m.d.comb += [fifo.w_en.eq(~stop_fetch & ~failed & ~self.rd_data.payload.err),
                             fifo.w_data.eq(new_step.as_value())]
                with m.If((new_step.op == StepOp.END) | (new_step.magic != STEP_MAGIC)):
                    m.d.sync += stop_fetch.eq(1)
            with m.Else():
                m.d.sync += part.eq(part + 1)
            with m.If(self.rd_data.payload.last & beat_done):
                m.d.sync += in_flight.eq(0)

        # ---- units: active from the cycle they are started
        eng_started = Signal()
        dma_started = Signal()
        m.d.sync += [eng_started.eq(self.eng_start), dma_started.eq(self.dma.valid & self.dma.ready)]
        eng_active = self.eng_busy | eng_started
        dma_active = self.dma_busy | dma_started
        # the DMA's region and direction are valid from the cycle after its command is taken:
        # a STORE from weight or parameter memory holds the read port the engine needs
        dma_holds_engine = dma_active & self.dma_store & (self.dma_region != Region.FEATURE)

        # unit errors
        with m.If(self.dma_done & self.dma_err):
            m.d.sync += failed.eq(1)
            with m.If(~failed):
                m.d.sync += self.err_code.eq(EngineError.DDR)
        eng_was = Signal()
        m.d.sync += eng_was.eq(self.eng_busy)
        with m.If(eng_was & ~self.eng_busy & self.eng_error):
            m.d.sync += failed.eq(1)
            with m.If(~failed):
                m.d.sync += self.err_code.eq(self.eng_err_code)

        # ---- execute: take → products → check → issue
        cur = Signal(STEP)
        stage = Signal(2)           # 0 none, 1 taken, 2 products ready, 3 checked
        count = Signal(32)
        take = Signal()
        m.d.comb += [take.eq(running & ~failed & (stage == 0) & fifo.r_rdy), fifo.r_en.eq(take)]
        with m.If(take):
            m.d.sync += [cur.eq(fifo.r_data), stage.eq(1)]
        with m.If(stage == 1):
            m.d.sync += stage.eq(2)

        # the check, from registered products
        depth = Signal(25)
        ratio = Signal(range(beat_bytes + 1))        # words a multiple of it (1: feature)
        align = Signal(range(beat_bytes + 1))        # bytes ddr_addr, ddr_stride are multiples of
        wlog = Signal(range(8))                      # log2 of a word's bytes
        with m.Switch(cur.region):
            for r in Region:
                with m.Case(r):
                    feature = r == Region.FEATURE
                    m.d.comb += [depth.eq({Region.PARAM: c.param_depth, Region.WEIGHT: c.weight_depth,
                                           Region.FEATURE: c.feature_depth}[r]),
                                 ratio.eq(1 if feature else words_per_beat(c, r)),
                                 align.eq(c.vc if feature else beat_bytes),
                                 wlog.eq(exact_log2(word_bytes(c, r)))]
        mem_span = Signal(41)
        ddr_span = Signal(49)
        m.d.sync += [mem_span.eq((cur.count - 1) * cur.mem_stride),
                     ddr_span.eq((cur.count - 1) * cur.ddr_stride)]
        op_ok = (cur.op >= StepOp.LOAD) & (cur.op <= StepOp.END)
        is_copy = (cur.op == StepOp.LOAD) | (cur.op == StepOp.STORE)
        region_ok = cur.region != 0
        sizes_ok = (cur.count != 0) & (cur.words != 0) & ((cur.words & (ratio - 1)) == 0)
        align_ok = (((cur.ddr_addr | cur.ddr_stride) & (align - 1)) == 0)
        mem_end = mem_span + cur.mem_addr + cur.words
        ddr_end = ddr_span + cur.ddr_addr + (cur.words << wlog)
        range_ok = (mem_end <= depth) & (cur.ddr_addr >= DDR_BASE) & (ddr_end <= DDR_BASE + c.ddr_bytes)
        run_ok = cur.mem_addr < c.param_depth

        unit_ok = Signal()
        issue_ok = Signal()
        engine_port = (cur.op == StepOp.STORE) & (cur.region != Region.FEATURE)
        with m.Switch(cur.op):
            with m.Case(StepOp.LOAD, StepOp.STORE):
                m.d.comb += unit_ok.eq(~dma_active & (~eng_active | ~engine_port))
            with m.Case(StepOp.RUN):
                m.d.comb += unit_ok.eq(~eng_active & ~dma_holds_engine)
            with m.Case(StepOp.END):
                m.d.comb += unit_ok.eq(~eng_active & ~dma_active)
        m.d.comb += issue_ok.eq(unit_ok & (~cur.wait | (~eng_active & ~dma_active)))

        m.d.comb += [self.dma.payload.eq(cur), self.eng_desc.eq(cur.mem_addr)]
        with m.If(running & (stage == 2) & ~failed):
            m.d.sync += stage.eq(3)
            fail = Signal(4)
            with m.If((cur.magic != STEP_MAGIC) | ~op_ok):
                m.d.comb += fail.eq(EngineError.STEP)
            with m.Elif(is_copy & (~region_ok | ~sizes_ok | ~align_ok)):
                m.d.comb += fail.eq(EngineError.STEP)
            with m.Elif(is_copy & ~range_ok):
                m.d.comb += fail.eq(EngineError.STEP_RANGE)
            with m.Elif((cur.op == StepOp.RUN) & ~run_ok):
                m.d.comb += fail.eq(EngineError.STEP_RANGE)
            with m.If(fail != 0):
                m.d.sync += [failed.eq(1), self.err_code.eq(fail)]
        with m.If(running & (stage == 3) & ~failed & issue_ok):
            with m.Switch(cur.op):
                with m.Case(StepOp.LOAD, StepOp.STORE):
                    m.d.comb += self.dma.valid.eq(1)
                with m.Case(StepOp.RUN):
                    m.d.comb += self.eng_start.eq(1)
                with m.Case(StepOp.END):
                    m.d.sync += [running.eq(0), self.done.eq(1)]
            m.d.sync += [stage.eq(0), count.eq(count + 1)]
        m.d.comb += self.step.eq(count)

        # ---- start, drain, finish
        with m.If(failed & running & ~eng_active & ~dma_active & ~in_flight):
            m.d.sync += [running.eq(0), self.error.eq(1)]
        m.d.comb += self.busy.eq(running | in_flight | eng_active | dma_active)
        with m.If(self.start & ~self.busy):
            m.d.sync += [running.eq(1), failed.eq(0), self.done.eq(0), self.error.eq(0), self.err_code.eq(0),
                         fetch_addr.eq(self.step_base), stop_fetch.eq(0), stage.eq(0), count.eq(0), part.eq(0), sub.eq(0)]
            m.d.comb += fifo_rst.eq(1)
        return m
