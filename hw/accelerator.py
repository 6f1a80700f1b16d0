"""The accelerator top: engine + device memory + CSRs + host bridge (DESIGN §4).

:class:`AcceleratorCore` is everything behind the internal bus (:mod:`nibble.hw.bus`);
:class:`Accelerator` adds the UART host bridge and is the design that is simulated and built for
boards. The register map (:func:`regmap`) is generated from the same tables the decoder is
built from, exported as JSON and read by the driver and the tests: offsets are never copied.

Address map (byte addresses on the host link; every access is a 32-bit word):

============  ==============  ===============================================================
region        base            contents
============  ==============  ===============================================================
``csr``       ``0x0000_0000`` control and status registers (:data:`CSRS`)
``param``     ``0x1000_0000`` parameter memory, 32-bit words: descriptors, biases
``weight``    ``0x2000_0000`` weight memory: words of ``vc`` 4-bit codes, ``vc·4/32`` slices each
``feature``   ``0x3000_0000`` feature memory: words of ``vc`` int8, ``vc·8/32`` slices each
============  ==============  ===============================================================

A memory word wider than 32 bits is accessed as consecutive 32-bit slices, lowest first; it is
written to memory when its last slice is written (so slices must be written in order, last
last). The memories are reachable only while the engine is idle: while it runs, accesses to
them report ``addr_err`` (the bridge answers "bad address") and CSRs stay reachable.
"""
from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .bus import READ_LATENCY, BusSignature
from .config import EngineConfig
from .isa import (CRC32, CTRL_ACK, CTRL_RUN_STEPS, CTRL_START, DDR_BASE, DEFAULT_MAX_PAYLOAD, DESC_MAGIC,
                  DESC_WORDS, LINK_VERSION, PRELU_FRAC, SEQ_BITS, SH_MAX, SH_MIN, STEP, STEP_BYTES, STEP_CHUNK, STEP_MAGIC,
                  EngineError, Region, StepOp, descriptor_fields)
from .engine import Engine
from .mem.banked import BankedMemory
from .mem.dma import words_per_beat
from .mem.port import SyncReadPort

__all__ = ["AcceleratorCore", "Accelerator", "CSRS", "STATUS_BITS", "REGION_BASE", "ID_VALUE", "VERSION", "regmap"]

ID_VALUE = 0x4E49424C      # "NIBL"
VERSION = 0x0002_0000

#: Byte base address of each region.
REGION_BASE = {"csr": 0x0000_0000, "param": 0x1000_0000, "weight": 0x2000_0000, "feature": 0x3000_0000}

#: CSRs: (name, access, description). Offset = 4·index.
CSRS = [
    ("id", "ro", f"identification, reads 0x{ID_VALUE:08X} ('NIBL')"),
    ("version", "ro", "gateware version (major << 16 | minor)"),
    ("ctrl", "wo", "bit 0 start: run the engine from desc_base (refused while busy or while the "
                   "last run is not acknowledged); bit 1 ack: acknowledge the finished run "
                   "(clears done and error); bit 2 run steps: run the step list at step_base "
                   "(external memory; refused likewise, and on a device without it)"),
    ("status", "ro", "bit 0 busy, bit 1 done, bit 2 error (both until acknowledged), "
                     "bit 3 refused (the last start was refused)"),
    ("runs", "ro", "runs started since reset (a start that is accepted counts one)"),
    ("err_code", "ro", "engine error code (0 none; see error_codes)"),
    ("layer", "ro", "index of the layer running, finished last, or in error"),
    ("desc_base", "rw", "parameter-memory word of the first layer descriptor"),
    ("cycles", "ro", "clock cycles from start to done/error"),
    ("beats", "ro", "input vectors accepted by the PE array during the last run (all its RUN steps)"),
    ("feature_reads", "ro", "feature-memory words the engine read during the last run (feature reader and residual "
                            "reader; all its RUN steps)"),
    ("cfg_m", "ro", "PEs in the array (M)"),
    ("cfg_vc", "ro", "SAC lanes per PE (Vc)"),
    ("cfg_acc_width", "ro", "accumulator bits"),
    ("cfg_filter_depth", "ro", "filter-cache words per PE"),
    ("cfg_feature_depth", "ro", "feature-memory words"),
    ("cfg_weight_depth", "ro", "weight-memory words"),
    ("cfg_param_depth", "ro", "parameter-memory words"),
    ("scratch", "rw", "free register for link tests"),
    ("step_base", "rw", "DDR byte address of the step list run by ctrl bit 2 (a multiple of the step size)"),
    ("steps", "ro", "steps issued by the last step-list run (after a step error: the index of the refused step)"),
    ("dma_rd_bytes", "ro", "bytes of the DDR beats read during the last run (step fetches and LOADs)"),
    ("dma_wr_bytes", "ro", "bytes of the DDR beats written during the last run (STOREs; a beat counts whole whatever its strobes)"),
    ("engine_cycles", "ro", "cycles the engine was busy during the last run (the rest of cycles: waiting for memory)"),
    ("stall_feature_load", "ro", "cycles of the last step-list run the engine was idle while the DMA loaded feature "
                                 "words"),
    ("stall_weight_load", "ro", "the same, while the DMA loaded weight words"),
    ("stall_param_load", "ro", "the same, while the DMA loaded parameter words (biases, descriptors)"),
    ("stall_store", "ro", "the same, while the DMA stored feature words"),
    ("stall_steps", "ro", "the same, with the DMA idle (the sequencer fetching or issuing steps); the five stall "
                          "counters add up to cycles - engine_cycles"),
    ("desc_count", "ro", "descriptors the engine finished during the last run (all its RUN steps)"),
    ("desc_sel", "rw", "index into the descriptor cycle log read by desc_cycles"),
    ("desc_cycles", "ro", "engine cycles of the desc_sel-th descriptor finished during the last run (from the cycle "
                          "after the previous one's end, or the start, to its end; 0 beyond desc_count or the "
                          "log's DESC_LOG entries)"),
]
#: The stall counters of a step-list run, by cause (engine idle while the run goes on).
STALL_CSRS = ("stall_feature_load", "stall_weight_load", "stall_param_load", "stall_store", "stall_steps")
#: Entries of the descriptor cycle log (``desc_sel`` / ``desc_cycles``): the first this many
#: descriptors of a run are logged; ``desc_count`` counts them all.
DESC_LOG = 1024
#: Bit of each flag in the ``status`` CSR.
STATUS_BITS = {"busy": 0, "done": 1, "error": 2, "refused": 3}
CSR_INDEX = {name: i for i, (name, _, _) in enumerate(CSRS)}


def _region_words(config):
    """(word bits, slices per word, depth) per memory region."""
    return {
        "param": (32, 1, config.param_depth),
        "weight": (config.vc * 4, config.vc * 4 // 32, config.weight_depth),
        "feature": (config.vc * 8, config.vc * 8 // 32, config.feature_depth),
    }


def regmap(config: EngineConfig, *, ddr=False):
    """The register map of an accelerator with ``config`` as a JSON-ready dict.

    Keys: ``regions`` (byte base, 32-bit words, memory word bits and slices), ``csrs`` (byte
    offset, access, description), ``config``, ``error_codes``, ``descriptor`` (words, magic, flag
    bits), ``requant`` (shift range). Read by the driver (:mod:`nibble.host.driver`) and tests.
    """
    regions = {"csr": {"base": REGION_BASE["csr"], "words": len(CSRS), "word_bits": 32, "slices": 1}}
    for name, (bits, slices, depth) in _region_words(config).items():
        regions[name] = {"base": REGION_BASE[name], "words": depth * slices, "word_bits": bits,
                         "slices": slices, "depth": depth}
    extra = {}
    if ddr:
        regions["ddr"] = {"base": DDR_BASE, "bytes": config.ddr_bytes, "beat_bits": config.beat_bits}
        extra["steps"] = {"bytes": STEP_BYTES, "magic": STEP_MAGIC, "chunk": STEP_CHUNK,
                          "ops": {o.name.lower(): int(o) for o in StepOp},
                          "regions": {r.name.lower(): int(r) for r in Region},
                          "fields": {n: {"offset": f.offset, "width": f.width} for n, f in STEP}}
    return {
        **extra,
        "id": ID_VALUE,
        "version": VERSION,
        "regions": regions,
        "csrs": {name: {"offset": 4 * i, "access": acc, "doc": doc} for i, (name, acc, doc) in enumerate(CSRS)},
        "status_bits": STATUS_BITS,
        "ctrl_bits": {"start": CTRL_START, "ack": CTRL_ACK, "run_steps": CTRL_RUN_STEPS},
        "link": {"version": LINK_VERSION, "max_payload": DEFAULT_MAX_PAYLOAD, "seq_bits": SEQ_BITS,
                 "crc": {"name": "CRC-32/ISO-HDLC", **CRC32}},
        "config": config.to_dict(),
        "error_codes": {e.name.lower(): int(e) for e in EngineError},
        "descriptor": {"words": DESC_WORDS, "magic": DESC_MAGIC,
                       "fields": {n: {"offset": o, "width": w, "signed": sg}
                                  for n, (o, w, sg) in descriptor_fields().items()}},
        "requant": {"sh_min": SH_MIN, "sh_max": SH_MAX, "prelu_frac": PRELU_FRAC},
        "desc_log": {"depth": DESC_LOG},
    }


class AcceleratorCore(wiring.Component):
    """Engine, device memories and CSRs behind one internal bus slave port.

    Members: ``bus``: ``In(BusSignature())`` (slave; read latency ``READ_LATENCY`` = 2 cycles,
    a read accepted every cycle, writes every cycle, see :mod:`.bus`);
    ``busy``, ``done``, ``error``: ``Out(1)`` (engine status, e.g. for LEDs); ``irq``: ``Out(1)``,
    high from the end of a run (done or error) until it is acknowledged (``ctrl`` bit 1): the
    level of the PCIe endpoint's user interrupt.

    With ``ddr=True`` (the PCIe device): ``m_axi``: ``Out(AXI4Signature(32, beat_bits, 4))``, the
    AXI4 master to external memory (:class:`~.mem.axi_master.AXI4Master`), and the memory system
    behind ``ctrl`` bit 2: the step sequencer (:mod:`.sequencer`) fetching a step list from DDR,
    the tile DMA (:mod:`.mem.dma`) moving data between DDR and the on-chip memories. Port
    ownership: while the engine runs it holds every read port but the residual one, and feature
    memory's write port in the cycles its writer writes. The DMA copies beside it: a LOAD uses
    the memory's write port (in feature memory, the cycles the writer leaves free), a feature
    STORE the residual read port (the cycles the residual reader leaves free), so it runs
    beside the engine too; a STORE from weight or parameter memory takes their read port while
    the engine is idle (:mod:`.sequencer`). The host holds all ports otherwise and reaches the
    memories only while nothing runs.
    """

    def __init__(self, config: EngineConfig, *, ddr=False):
        self.config = config
        self.ddr = ddr
        self.engine = Engine(config)
        members = {
            "bus": In(BusSignature()),
            "busy": Out(1), "done": Out(1), "error": Out(1), "irq": Out(1),
        }
        if ddr:
            from .axi import AXI4Signature
            members["m_axi"] = Out(AXI4Signature(32, config.beat_bits, 4))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        c = self.config
        m.submodules.engine = eng = self.engine
        bus = self.bus

        byte_addr = Cat(C(0, 2), bus.addr)
        region = byte_addr[28:32]
        offset = bus.addr[:26]                   # word offset within the region

        # ---- memory system (PCIe device): AXI4 master, read mux, step sequencer, tile DMA
        if self.ddr:
            from .mem.axi_master import AXI4Master
            from .mem.dma import TileDMA
            from .mem.read_mux import ReadMux
            from .sequencer import StepSequencer
            m.submodules.axi_master = axm = AXI4Master(data_width=c.beat_bits, addr_width=32, id_width=4,
                                                       strobes=True)
            m.submodules.read_mux = rmux = ReadMux(32, c.beat_bits)
            m.submodules.dma = dma = TileDMA(c)
            m.submodules.sequencer = seq = StepSequencer(c)
            wiring.connect(m, wiring.flipped(self.m_axi), axm.axi)
            wiring.connect(m, rmux.cmd, axm.rd_cmd)
            wiring.connect(m, axm.rd_data, rmux.data)
            wiring.connect(m, seq.rd_cmd, rmux.a_cmd)
            wiring.connect(m, rmux.a_data, seq.rd_data)
            wiring.connect(m, dma.rd_cmd, rmux.b_cmd)
            wiring.connect(m, rmux.b_data, dma.rd_data)
            wiring.connect(m, dma.wr_cmd, axm.wr_cmd)
            wiring.connect(m, dma.wr_data, axm.wr_data)
            wiring.connect(m, axm.wr_done, dma.wr_done)
            wiring.connect(m, seq.dma, dma.cmd)
            m.d.comb += [seq.dma_busy.eq(dma.busy), seq.dma_done.eq(dma.done), seq.dma_err.eq(dma.err),
                         seq.dma_region.eq(dma.region), seq.dma_store.eq(dma.store),
                         seq.eng_busy.eq(eng.busy), seq.eng_error.eq(eng.error), seq.eng_err_code.eq(eng.err_code)]
            seq_busy, seq_done, seq_error, seq_err_code, seq_steps = seq.busy, seq.done, seq.error, seq.err_code, seq.step
            dma_busy, dma_region, dma_store = dma.busy, dma.region, dma.store
            axi = axm.axi
            beat_bytes = c.beat_bits // 8
            rd_beat = axi.rvalid & axi.rready
            wr_beat = axi.wvalid & axi.wready
        else:
            seq_busy = seq_done = seq_error = dma_busy = dma_store = C(0, 1)
            seq_err_code, seq_steps, dma_region = C(0, 4), C(0, 32), C(0, 2)
            rd_beat = wr_beat = C(0, 1)
            beat_bytes = 0
        busy = Signal()
        m.d.comb += busy.eq(eng.busy | seq_busy)

        # ---- CSRs
        desc_base = Signal(range(c.param_depth))
        step_base = Signal(32)
        scratch = Signal(32)
        # A finished run (done or error) must be acknowledged before the next start: a start
        # that arrives twice cannot run the engine twice.
        acked = Signal()
        refused = Signal()
        runs = Signal(32)
        step_mode = Signal()                     # the last run was a step list
        run_done = Signal()
        run_error = Signal()
        m.d.comb += [run_done.eq(Mux(step_mode, seq_done, eng.done)), run_error.eq(Mux(step_mode, seq_error, eng.error))]
        finished = Signal()
        m.d.comb += finished.eq((run_done | run_error) & ~acked & ~busy)
        m.d.comb += self.irq.eq(finished)
        m.d.comb += [self.busy.eq(busy), self.done.eq(run_done), self.error.eq(run_error)]
        # run counters of a step list (a direct run reports the engine's own)
        run_cycles, engine_cycles, beats_total = Signal(32), Signal(32), Signal(32)
        rd_bytes, wr_bytes = Signal(32), Signal(32)
        f_reads = Signal(32)                     # feature words the engine read (both read ports)
        f_ports = [eng.f_rd, eng.f_rd2] + [getattr(eng, f"f_rd_px{j}") for j in range(1, c.vp)]
        m.d.sync += f_reads.eq(f_reads + sum(p.req.valid & p.req.ready for p in f_ports))
        eng_was = Signal()
        m.d.sync += eng_was.eq(eng.busy)
        with m.If(busy):
            m.d.sync += run_cycles.eq(run_cycles + 1)
        with m.If(eng.busy):
            m.d.sync += engine_cycles.eq(engine_cycles + 1)
        with m.If(eng_was & ~eng.busy):
            m.d.sync += beats_total.eq(beats_total + eng.beats)
        # stall cycles of a step-list run by cause: the engine idle while the run goes on
        stalls = {n: Signal(32, name=n) for n in STALL_CSRS}
        with m.If(busy & ~eng.busy):
            with m.If(dma_busy & dma_store):
                m.d.sync += stalls["stall_store"].eq(stalls["stall_store"] + 1)
            with m.Elif(dma_busy & (dma_region == Region.FEATURE)):
                m.d.sync += stalls["stall_feature_load"].eq(stalls["stall_feature_load"] + 1)
            with m.Elif(dma_busy & (dma_region == Region.WEIGHT)):
                m.d.sync += stalls["stall_weight_load"].eq(stalls["stall_weight_load"] + 1)
            with m.Elif(dma_busy):
                m.d.sync += stalls["stall_param_load"].eq(stalls["stall_param_load"] + 1)
            with m.Else():
                m.d.sync += stalls["stall_steps"].eq(stalls["stall_steps"] + 1)
        if beat_bytes:
            with m.If(rd_beat):
                m.d.sync += rd_bytes.eq(rd_bytes + beat_bytes)
            with m.If(wr_beat):
                m.d.sync += wr_bytes.eq(wr_bytes + beat_bytes)
        # descriptor cycle log: the engine cycles of every descriptor of the run, in order
        m.submodules.desc_log = desc_log = Memory(shape=32, depth=DESC_LOG, init=[])
        log_w = desc_log.write_port()
        desc_sel = Signal(32)
        log_r = desc_log.read_port(transparent_for=(log_w,))
        desc_count, desc_cyc = Signal(32), Signal(32)
        m.d.comb += [log_r.addr.eq(desc_sel), log_r.en.eq(1),
                     log_w.addr.eq(desc_count), log_w.data.eq(desc_cyc + 1),
                     log_w.en.eq(eng.desc_end & (desc_count < DESC_LOG))]
        with m.If(eng.desc_end):
            m.d.sync += [desc_count.eq(desc_count + 1), desc_cyc.eq(0)]
        with m.Elif(eng.busy):
            m.d.sync += desc_cyc.eq(desc_cyc + 1)
        desc_cycles = Signal(32)
        m.d.comb += desc_cycles.eq(Mux(desc_sel < Mux(desc_count < DESC_LOG, desc_count, DESC_LOG), log_r.data, 0))
        start_steps = Signal()
        if self.ddr:
            m.d.comb += [seq.step_base.eq(step_base), seq.start.eq(start_steps)]
            with m.If(seq.eng_start):
                m.d.comb += [eng.start.eq(1), eng.desc_base.eq(seq.eng_desc)]
            with m.Else():
                m.d.comb += eng.desc_base.eq(desc_base)
        else:
            m.d.comb += eng.desc_base.eq(desc_base)
        ro_values = {
            "id": C(ID_VALUE, 32), "version": C(VERSION, 32),
            "status": Cat(busy, run_done & ~acked, run_error & ~acked, refused),
            "runs": runs,
            "err_code": Mux(step_mode, seq_err_code, eng.err_code), "layer": eng.layer, "desc_base": desc_base,
            "cycles": Mux(step_mode, run_cycles, eng.cycles), "beats": Mux(step_mode, beats_total, eng.beats),
            "cfg_m": C(c.m, 32), "cfg_vc": C(c.vc, 32), "cfg_acc_width": C(c.acc_width, 32),
            "cfg_filter_depth": C(c.filter_depth, 32), "cfg_feature_depth": C(c.feature_depth, 32),
            "cfg_weight_depth": C(c.weight_depth, 32), "cfg_param_depth": C(c.param_depth, 32),
            "scratch": scratch, "ctrl": C(0, 32),
            "step_base": step_base, "steps": seq_steps, "dma_rd_bytes": rd_bytes, "dma_wr_bytes": wr_bytes,
            "engine_cycles": engine_cycles, "feature_reads": f_reads,
            "desc_count": desc_count, "desc_sel": desc_sel, "desc_cycles": desc_cycles, **stalls,
        }
        csr_sel = region == (REGION_BASE["csr"] >> 28)
        csr_rdata = Signal(32)
        with m.Switch(offset):
            for i, (name, _, _) in enumerate(CSRS):
                with m.Case(i):
                    m.d.comb += csr_rdata.eq(ro_values[name])
        with m.If(bus.w_en & csr_sel):
            with m.Switch(offset):
                with m.Case(CSR_INDEX["ctrl"]):
                    with m.If(bus.w_data & (CTRL_START | CTRL_RUN_STEPS)):
                        steps_absent = C(0, 1) if self.ddr else ((bus.w_data & CTRL_RUN_STEPS) != 0)
                        with m.If(busy | finished | steps_absent):
                            m.d.sync += refused.eq(1)
                        with m.Else():
                            with m.If(bus.w_data & CTRL_START):
                                m.d.comb += eng.start.eq(1)
                                m.d.sync += step_mode.eq(0)
                            with m.Else():
                                m.d.comb += start_steps.eq(1)
                                m.d.sync += [step_mode.eq(1), run_cycles.eq(0), engine_cycles.eq(0),
                                             beats_total.eq(0), rd_bytes.eq(0), wr_bytes.eq(0),
                                             *[v.eq(0) for v in stalls.values()]]
                            m.d.sync += [refused.eq(0), acked.eq(0), runs.eq(runs + 1), f_reads.eq(0),
                                         desc_count.eq(0), desc_cyc.eq(0)]
                    with m.Elif(bus.w_data & CTRL_ACK):
                        with m.If(~busy):
                            m.d.sync += acked.eq(1)
                with m.Case(CSR_INDEX["desc_base"]):
                    m.d.sync += desc_base.eq(bus.w_data)
                with m.Case(CSR_INDEX["step_base"]):
                    m.d.sync += step_base.eq(bus.w_data)
                with m.Case(CSR_INDEX["scratch"]):
                    m.d.sync += scratch.eq(bus.w_data)
                with m.Case(CSR_INDEX["desc_sel"]):
                    m.d.sync += desc_sel.eq(bus.w_data)

        # ---- memories, each with one read and one write port shared by host and engine
        words = _region_words(c)
        addr_err = Signal()
        m.d.comb += addr_err.eq(1)
        with m.If(csr_sel & (offset < len(CSRS))):
            m.d.comb += addr_err.eq(0)

        rd_sel = Signal(2)         # region of the pending read, registered: 0 csr, 1 param, ...
        rd_slice = Signal(8)
        rd_csr = Signal(32)
        rd_valid = Signal(READ_LATENCY)
        m.d.sync += rd_valid.eq(Cat(bus.r_en & ~addr_err, rd_valid[:-1]))
        m.d.comb += bus.r_valid.eq(rd_valid[-1])
        m.d.comb += bus.addr_err.eq(addr_err)

        mem_rdata = {}
        dma_rdata = {}
        for idx, name in enumerate(("param", "weight", "feature"), start=1):
            bits, slices, depth = words[name]
            if name in ("feature", "weight"):
                # banked on a device with DDR: a DMA beat (beat_words feature or 2·beat_words weight
                # words) is one wide write or read; the weight memory's engine port is also a weight
                # STORE's (wide). Without DDR one bank (the host writes a word at a time).
                banks = words_per_beat(c, Region[name.upper()]) if self.ddr else 1
                mem = BankedMemory(bits, depth, banks, name=f"{name}_mem")
                rp, wp = mem.read_port(wide=name == "weight"), mem.write_port()
                w_en = wp.mask                  # word j of a write with bit j (a one-word write: 1)
            else:
                mem = Memory(shape=bits, depth=depth, init=[])
                rp = mem.read_port(domain="sync")
                wp = mem.write_port()
                w_en = wp.en
            m.submodules[f"{name}_mem"] = mem
            sel = region == (REGION_BASE[name] >> 28)
            word = Signal(range(depth), name=f"{name}_word")
            slc = Signal(range(slices), name=f"{name}_slice") if slices > 1 else C(0, 1)
            if slices > 1:
                m.d.comb += [word.eq(offset // slices), slc.eq(offset % slices)]
            else:
                m.d.comb += word.eq(offset)
            with m.If(sel & (offset < depth * slices) & ~busy):
                m.d.comb += addr_err.eq(0)

            # host write: stage lower slices, commit on the last one
            host_we = Signal(name=f"{name}_host_we")
            host_wdata = Signal(bits, name=f"{name}_host_wdata")
            if slices > 1:
                stage = Signal(bits - 32, name=f"{name}_stage")
                with m.If(bus.w_en & sel & ~addr_err & (slc != slices - 1)):
                    m.d.sync += stage.word_select(slc[:max(1, (slices - 1).bit_length())], 32).eq(bus.w_data)
                m.d.comb += [host_we.eq(bus.w_en & sel & ~addr_err & (slc == slices - 1)),
                             host_wdata.eq(Cat(stage, bus.w_data))]
            else:
                m.d.comb += [host_we.eq(bus.w_en & sel & ~addr_err), host_wdata.eq(bus.w_data)]

            # the engine's port (any latency) in front of the memory's one-cycle read port
            eng_port = SyncReadPort(depth, bits)
            m.submodules[f"{name}_eng_port"] = eng_port
            wiring.connect(m, {"param": eng.p_rd, "weight": eng.w_rd, "feature": eng.f_rd}[name], eng_port.bus)
            eng_r = (eng_port.addr, eng_port.en)
            m.d.comb += eng_port.data.eq(rp.data[:bits])
            # the DMA holds this memory's ports while it copies to or from it; in feature
            # memory it shares them with the running engine, which goes first
            dma_here = dma_busy & (dma_region == Region[name.upper()])
            # the engine writes this memory this cycle (feature memory only; a write per cycle)
            eng_w = eng.busy & eng.f_wr.req.valid if name == "feature" else C(0, 1)
            if name == "feature":
                m.d.comb += eng.f_wr.req.ready.eq(1)
            dma_r_port = rp
            if name == "weight" and c.weight_ports == 2:     # the filter loader's second port (a copy)
                rpw = mem.read_port()
                m.submodules.weight_eng_port2 = wport2 = SyncReadPort(depth, bits)
                wiring.connect(m, eng.w_rd2, wport2.bus)
                m.d.comb += [rpw.addr.eq(wport2.addr), rpw.en.eq(wport2.en), wport2.data.eq(rpw.data)]
            if name == "feature":
                rp2 = mem.read_port(wide=True)         # the residual reader's port, and a feature STORE's
                dma_r_port = rp2
                m.submodules.feature_res_port = res_port = SyncReadPort(depth, bits)
                wiring.connect(m, eng.f_rd2, res_port.bus)
                m.d.comb += [rp2.addr.eq(res_port.addr), rp2.en.eq(res_port.en), res_port.data.eq(rp2.data[:bits])]
                if self.ddr:
                    with m.If(~res_port.en & dma_here & dma_store):
                        m.d.comb += [rp2.addr.eq(dma.mem_addr), rp2.en.eq(dma.mem_r_en)]
                    with m.If(dma_here):
                        m.d.comb += dma.mem_ready.eq(Mux(dma_store, ~res_port.en, ~eng_w))
                for j in range(1, c.vp):                  # the other pixel lanes' ports
                    rpj = mem.read_port()
                    m.submodules[f"feature_px{j}_port"] = pxp = SyncReadPort(depth, bits)
                    wiring.connect(m, getattr(eng, f"f_rd_px{j}"), pxp.bus)
                    m.d.comb += [rpj.addr.eq(pxp.addr), rpj.en.eq(pxp.en), pxp.data.eq(rpj.data)]
            if self.ddr:
                dma_rdata[Region[name.upper()]] = dma_r_port.data
            with m.If(eng.busy):
                m.d.comb += [rp.addr.eq(eng_r[0]), rp.en.eq(eng_r[1])]
            if self.ddr and name != "feature":
                with m.Elif(dma_here & dma_store):
                    m.d.comb += [rp.addr.eq(dma.mem_addr), rp.en.eq(dma.mem_r_en)]
            with m.Else():
                m.d.comb += [rp.addr.eq(word), rp.en.eq(1)]
            with m.If(eng_w):
                m.d.comb += [wp.addr.eq(eng.f_wr.req.payload.addr), w_en.eq(1), wp.data.eq(eng.f_wr.req.payload.data)]
            if self.ddr:
                with m.Elif(dma_here & ~dma_store):
                    mask = dma.mem_w_mask[:len(wp.mask)] if name != "param" else C(1, 1)
                    m.d.comb += [wp.addr.eq(dma.mem_addr), w_en.eq(mask & dma.mem_w_en.replicate(len(mask))),
                                 wp.data.eq(dma.mem_w_data)]
            with m.Elif(~busy):
                m.d.comb += [wp.addr.eq(word), w_en.eq(host_we), wp.data.eq(host_wdata)]
            mem_rdata[idx] = (rp.data[:bits], slices)
            with m.If(bus.r_en & sel):
                m.d.sync += [rd_sel.eq(idx), rd_slice.eq(slc)]

        if self.ddr:
            # the read data of the memory the DMA stores from (the cycle after its read)
            dma_rd_region = Signal(2)
            m.d.sync += dma_rd_region.eq(dma_region)
            with m.Switch(dma_rd_region):
                for r, value in dma_rdata.items():
                    with m.Case(r):
                        m.d.comb += dma.mem_r_data.eq(value)

        with m.If(bus.r_en & csr_sel):
            m.d.sync += [rd_sel.eq(0), rd_csr.eq(csr_rdata)]

        # second read cycle: select the region and the slice
        r_data = Signal(32)
        with m.Switch(rd_sel):
            with m.Case(0):
                m.d.comb += r_data.eq(rd_csr)
            for idx, (data, slices) in mem_rdata.items():
                with m.Case(idx):
                    if slices > 1:
                        m.d.comb += r_data.eq(data.word_select(rd_slice[:max(1, (slices - 1).bit_length())], 32))
                    else:
                        m.d.comb += r_data.eq(data)
        # The decoder is a pipeline, so a read may be issued every cycle (bus rule): cycle 1
        # registers the region, slice and CSR value and addresses the memories, cycle 2 selects
        # into this output register. ``rd_valid`` follows READ_LATENCY; so does the data here.
        assert READ_LATENCY >= 2, "the decoder needs two cycles per read"
        for i in range(READ_LATENCY - 2):
            delayed = Signal(32, name=f"r_data_d{i}")
            m.d.sync += delayed.eq(r_data)
            r_data = delayed
        m.d.sync += bus.r_data.eq(r_data)
        return m


class Accelerator(wiring.Component):
    """The whole device: :class:`AcceleratorCore` behind a host interface.

    ``phy="uart"`` (boards without PCIe): members ``uart_rx``: ``In(1)`` (idle high), ``uart_tx``:
    ``Out(1)``; the UART bridge (:mod:`.bridge`) at ``config.baud`` with ``config.uart_divisor``
    clock cycles per bit.
    ``phy="stream"`` (the simulated UART device): the bridge's byte streams as plain ports
    ``rx_data``: ``In(8)``, ``rx_valid``: ``In(1)``, ``rx_ready``: ``Out(1)``, ``tx_data``:
    ``Out(8)``, ``tx_valid``: ``Out(1)``, ``tx_ready``: ``In(1)`` — the same frames, a byte per
    cycle.
    ``phy="axi"`` (PCIe): an AXI4 slave port ``s_axi_<name>`` for every member of
    :class:`.axi.AXI4Signature` (32-bit data, byte addresses of the regmap), served by
    :class:`.axi.AXI4SlaveBridge`. On a board the XDMA endpoint's DMA master (h2c/c2h) and its
    AXI-Lite user BAR reach it through an AXI interconnect; the simulated device's harness
    (``sim/harness_axi.cpp``) drives it directly. ``irq``: ``Out(1)``, the run-finished level for
    the endpoint's user interrupt (:class:`AcceleratorCore`). ``m_axi_<name>``: the AXI4 master to
    external memory (``8·vc``-bit data, byte addresses from :data:`~nibble.hw.isa.DDR_BASE`; the
    MIG on a board, the harness's DDR model in simulation); ``vc`` must be a power of two ≤ 32.
    All: ``idle``: ``Out(1)`` (host interface idle and engine not busy: nothing happens until the
    host acts; with ``axi``, engine not busy), ``busy``, ``done``, ``error``: ``Out(1)`` (LEDs).
    """

    def __init__(self, config: EngineConfig = EngineConfig(), *, phy="uart"):
        self.config = config
        self.phy = phy
        members = {"idle": Out(1), "busy": Out(1), "done": Out(1), "error": Out(1)}
        if phy == "uart":
            members.update(uart_rx=In(1, init=1), uart_tx=Out(1, init=1))
        elif phy == "stream":
            members.update(rx_data=In(8), rx_valid=In(1), rx_ready=Out(1),
                           tx_data=Out(8), tx_valid=Out(1), tx_ready=In(1))
        elif phy == "axi":
            from .axi import AXI4Signature
            if config.vc & (config.vc - 1):
                raise ValueError(f"the PCIe device's DDR beat is 8·vc·beat_words bits: vc must be a power of two, "
                                 f"not {config.vc}")
            for name, member in AXI4Signature().members.items():
                members[f"s_axi_{name}"] = member.flip()
            for name, member in AXI4Signature(32, config.beat_bits, 4).members.items():
                members[f"m_axi_{name}"] = member
            members["irq"] = Out(1)
        else:
            raise ValueError(f"phy must be 'uart', 'stream' or 'axi', not {phy!r}")
        super().__init__(members)

    def regmap(self):
        """:func:`regmap` of this accelerator's configuration (with ``ddr`` for ``phy="axi"``)."""
        return regmap(self.config, ddr=self.phy == "axi")

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = AcceleratorCore(self.config, ddr=self.phy == "axi")
        if self.phy == "axi":
            for name, member in core.m_axi.signature.members.items():
                port, inner = getattr(self, f"m_axi_{name}"), getattr(core.m_axi, name)
                m.d.comb += port.eq(inner) if member.flow == Out else inner.eq(port)
            from .axi import AXI4SlaveBridge
            m.submodules.bridge = bridge = AXI4SlaveBridge()
            wiring.connect(m, bridge.bus, core.bus)
            for name, member in bridge.axi.signature.members.items():
                port, inner = getattr(self, f"s_axi_{name}"), getattr(bridge.axi, name)
                m.d.comb += inner.eq(port) if member.flow == In else port.eq(inner)
            m.d.comb += [self.idle.eq(~core.busy), self.irq.eq(core.irq)]
        else:
            from .bridge import UARTBridge
            m.submodules.bridge = bridge = UARTBridge(divisor=self.config.uart_divisor, phy=self.phy)
            wiring.connect(m, bridge.bus, core.bus)
            if self.phy == "uart":
                m.d.comb += [bridge.rx.eq(self.uart_rx), self.uart_tx.eq(bridge.tx)]
            else:
                m.d.comb += [
                    bridge.i.payload.eq(self.rx_data), bridge.i.valid.eq(self.rx_valid),
                    self.rx_ready.eq(bridge.i.ready),
                    self.tx_data.eq(bridge.o.payload), self.tx_valid.eq(bridge.o.valid),
                    bridge.o.ready.eq(self.tx_ready),
                ]
            m.d.comb += self.idle.eq(bridge.idle & ~core.busy)
        m.d.comb += [self.busy.eq(core.busy), self.done.eq(core.done), self.error.eq(core.error)]
        return m
