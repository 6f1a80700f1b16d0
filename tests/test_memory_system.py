"""The memory system of the PCIe device in amaranth.sim: step sequencer, tile DMA, read mux and
AXI4 master inside AcceleratorCore(ddr=True), against a Python AXI4 slave memory.

The slave (``SlaveMemory`` of test_axi_master.py, written from IHI 0022: random ready/valid
pauses, a read latency, checks of every burst) holds DDR; the host drives the internal bus. The
expected DDR and on-chip memories come from :func:`reference`, the step semantics of
``hw/isa.py`` (``STEP``) applied word by word in NumPy — a model written from the documented
format, not from the gateware. Named cases: strided 2-D chunks in every region (1, 2 and 4
words per beat), a STORE of what a LOAD brought, LOADs into weight memory beside a STORE,
``wait``, and each error code with the index of the refused step; on a 512-bit DDR port
(``beat_words`` = 4: banked feature memory, a beat a cycle, two steps a beat): feature chunks that
start and end inside a beat (the DMA masks the words around them, and the slave writes only the
bytes WSTRB selects), weight and parameter copies of 8 and 16 words a beat, and seeded random
lists.
"""
import dataclasses
import random
import types

import numpy as np
import pytest
from amaranth.sim import Simulator

from nibble.hw.accelerator import AcceleratorCore, regmap
from nibble.hw.bus import READ_LATENCY
from nibble.hw.config import EngineConfig
from nibble.hw.isa import (CTRL_ACK, CTRL_RUN_STEPS, DDR_BASE, STEP_BYTES, EngineError, Region, StepOp,
                           decode_step, encode_step)
from nibble.hw.mem.dma import region_word_bits, words_per_beat
from nibble.hw.sequencer import CHUNK_STEPS, check_step
from test_axi_master import SlaveMemory

SEED = 20261202
CONFIG = EngineConfig(m=16, vc=16, acc_width=24, filter_depth=16, feature_depth=64, weight_depth=64,
                      param_depth=128, clk_hz=1_000_000, baud=250_000, winograd=False, ddr_bytes=1 << 20)
#: The same with a 512-bit DDR port: 4 feature words a beat, feature memory in 4 banks.
CONFIG4 = dataclasses.replace(CONFIG, beat_words=4)
BEAT = CONFIG.vc                       # bytes per DDR beat
LIST_AT = DDR_BASE + 0x1000            # the step list
DEPTH = {Region.PARAM: CONFIG.param_depth, Region.WEIGHT: CONFIG.weight_depth, Region.FEATURE: CONFIG.feature_depth}
NAME = {Region.PARAM: "param", Region.WEIGHT: "weight", Region.FEATURE: "feature"}


class OffsetMemory:
    """A byte array seen at addresses ``base …`` (the DDR window) by SlaveMemory."""

    def __init__(self, base, data):
        self.base, self.data = base, data

    def __len__(self):
        return self.base + len(self.data)

    def __getitem__(self, s):
        return self.data[s.start - self.base:s.stop - self.base]

    def __setitem__(self, s, v):
        self.data[s.start - self.base:s.stop - self.base] = v


def step_list(steps):
    """The bytes of a list, padded with END steps to whole fetch chunks."""
    raw = b"".join(encode_step(op, **f) for op, f in steps)
    n = len(steps)
    pad = -n % CHUNK_STEPS
    return raw + encode_step(StepOp.END) * pad


def reference(steps, ddr, mems, config=CONFIG):
    """Apply ``steps`` ([(op, fields)]) to ``ddr`` (bytes from DDR_BASE, a NumPy uint8 array) and
    ``mems`` ({Region: list of int words}) as hw/isa.py's STEP documents, up to the first END or
    refused step. Returns the index of the refused step and its error, or None."""
    for i, (op, f) in enumerate(steps):
        s = decode_step(encode_step(op, **f))
        bad = check_step(config, s)
        if bad:
            return i, bad[0]
        if s["op"] == StepOp.END:
            return None
        if s["op"] == StepOp.RUN:
            raise AssertionError("no RUN steps in these cases")
        reg = Region(s["region"])
        wb = region_word_bits(config)[reg]
        for c in range(s["count"]):
            for j in range(s["words"]):
                w = s["mem_addr"] + c * s["mem_stride"] + j
                byte = s["ddr_addr"] - DDR_BASE + c * s["ddr_stride"] + j * wb // 8
                if s["op"] == StepOp.LOAD:
                    mems[reg][w] = int.from_bytes(ddr[byte:byte + wb // 8].tobytes(), "little")
                else:
                    ddr[byte:byte + wb // 8] = np.frombuffer(mems[reg][w].to_bytes(wb // 8, "little"), np.uint8)
    return None


def run(steps, *, seed=SEED, ready_p=0.7, valid_p=0.7, read_latency=12, err=(), max_cycles=40000, corrupt=None,
        config=CONFIG):
    """Initialise DDR and the memories with seeded random data, run the list, read everything
    back. Returns (ddr, mems, csrs) as the device has them."""
    rng = np.random.default_rng(seed)
    ddr = rng.integers(0, 256, CONFIG.ddr_bytes, dtype=np.uint8)
    lst = bytearray(step_list(steps))
    if corrupt is not None:                 # the magic byte of step ``corrupt``
        lst[STEP_BYTES * corrupt] ^= 0xFF
    ddr[LIST_AT - DDR_BASE:LIST_AT - DDR_BASE + len(lst)] = np.frombuffer(bytes(lst), np.uint8)
    mems = {reg: [int(v) for v in rng.integers(0, 1 << 62, DEPTH[reg], dtype=np.int64)] for reg in Region}
    for reg in Region:
        wb = region_word_bits(config)[reg]
        mems[reg] = [(v * 0x9E3779B97F4A7C15 + k) % (1 << wb) for k, v in enumerate(mems[reg])]
    rm = regmap(config, ddr=True)
    dut = AcceleratorCore(config, ddr=True)
    beat = config.beat_bits // 8
    shim = types.SimpleNamespace(axi=dut.m_axi, beat_bytes=beat, burst_beats=min(256, 4096 // beat))
    slave = SlaveMemory(shim, OffsetMemory(DDR_BASE, ddr), rng=random.Random(seed + 1), ready_p=ready_p,
                        valid_p=valid_p, read_latency=read_latency, err=err, strobes=True)
    csr = lambda name: rm["csrs"][name]["offset"] >> 2
    # host writes: every memory word, slice by slice, then step_base and ctrl
    writes = []
    for reg in Region:
        region = rm["regions"][NAME[reg]]
        for w, v in enumerate(mems[reg]):
            for k in range(region["slices"]):
                writes.append(((region["base"] >> 2) + w * region["slices"] + k, (v >> (32 * k)) & 0xFFFF_FFFF))
    writes += [(csr("step_base"), LIST_AT), (csr("ctrl"), CTRL_RUN_STEPS)]
    reads = [(reg, w, k, (rm["regions"][NAME[reg]]["base"] >> 2) + w * rm["regions"][NAME[reg]]["slices"] + k)
             for reg in Region for w in range(DEPTH[reg]) for k in range(rm["regions"][NAME[reg]]["slices"])]
    csr_names = ["status", "err_code", "steps", "cycles", "dma_rd_bytes", "dma_wr_bytes", "engine_cycles", "runs"]
    out = {"mems": {reg: [0] * DEPTH[reg] for reg in Region}, "csrs": {}}

    async def tb(ctx):
        bus = dut.bus
        cycle = 0
        sigs = [getattr(dut.m_axi, n) for n in SlaveMemory.OUTPUTS + SlaveMemory.INPUTS]

        async def cycle_with(**bus_set):
            nonlocal cycle
            assert cycle < max_cycles, f"unfinished after {max_cycles} cycles"
            slave.drive(ctx, cycle)
            for name in ("w_en", "r_en"):
                ctx.set(getattr(bus, name), bus_set.get(name, 0))
            if "addr" in bus_set:
                ctx.set(bus.addr, bus_set["addr"])
            if "w_data" in bus_set:
                ctx.set(bus.w_data, bus_set["w_data"])
            if bus_set.get("w_en") or bus_set.get("r_en"):
                assert not ctx.get(bus.addr_err), f"bus access to 0x{bus_set['addr'] << 2:08x} refused"
            vals = (await ctx.tick().sample(*sigs, bus.r_valid, bus.r_data))[2:]
            slave.observe(dict(zip(SlaveMemory.OUTPUTS + SlaveMemory.INPUTS, vals[:-2])), cycle)
            cycle += 1
            return vals[-2], vals[-1]

        for a, v in writes:
            await cycle_with(w_en=1, addr=a, w_data=v)
        # run until not busy
        while True:
            await cycle_with(r_en=1, addr=csr("status"))
            for _ in range(READ_LATENCY - 1):
                await cycle_with()
            valid, status = await cycle_with()
            assert valid
            if not status & 1:
                break
        for _ in range(4):
            await cycle_with()
        assert not slave.busy()
        pending = []
        for item in [("csr", n, 0, csr(n)) for n in csr_names] + reads:
            valid, value = await cycle_with(r_en=1, addr=item[3])
            pending.append(item)
            if valid:
                got.append(value)
        for _ in range(READ_LATENCY + 1):
            valid, value = await cycle_with()
            if valid:
                got.append(value)
        for (reg, w, k, _), value in zip(pending, got):
            if reg == "csr":
                out["csrs"][w] = value
            else:
                out["mems"][reg][w] |= value << (32 * k)

    got = []
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return ddr, out["mems"], out["csrs"], mems


def check(steps, **kw):
    ddr, mems, csrs, init_mems = run(steps, **kw)
    config = kw.get("config", CONFIG)
    rng = np.random.default_rng(kw.get("seed", SEED))
    exp_ddr = rng.integers(0, 256, CONFIG.ddr_bytes, dtype=np.uint8)
    lst = step_list(steps)
    exp_ddr[LIST_AT - DDR_BASE:LIST_AT - DDR_BASE + len(lst)] = np.frombuffer(lst, np.uint8)
    exp_mems = {reg: list(v) for reg, v in init_mems.items()}
    refused = reference(steps, exp_ddr, exp_mems, config)
    for reg in Region:
        assert mems[reg] == exp_mems[reg], f"{NAME[reg]} memory differs at words " \
            f"{[i for i, (a, b) in enumerate(zip(mems[reg], exp_mems[reg])) if a != b][:8]}"
    diff = np.flatnonzero(ddr != exp_ddr)
    assert diff.size == 0, f"DDR differs at bytes {[hex(DDR_BASE + int(d)) for d in diff[:8]]}"
    return csrs, refused


def copy(op, region, mem_addr, count, words, mem_stride, ddr_off, ddr_stride, wait=0):
    return (op, dict(region=region, mem_addr=mem_addr, count=count, words=words, mem_stride=mem_stride,
                     ddr_addr=DDR_BASE + ddr_off, ddr_stride=ddr_stride, wait=wait))


def test_copies_in_every_region():
    steps = [
        copy(StepOp.LOAD, Region.FEATURE, 3, 4, 5, 9, 0x4000, 0x100),       # 4 rows of 5 words
        copy(StepOp.LOAD, Region.WEIGHT, 1, 3, 6, 10, 0x5000, 0x40),        # 2 words per beat
        copy(StepOp.LOAD, Region.PARAM, 7, 2, 12, 20, 0x6000, 0x30),        # 4 words per beat
        copy(StepOp.STORE, Region.FEATURE, 3, 2, 10, 18, 0x8000, 0x1F0, wait=1),
        copy(StepOp.STORE, Region.WEIGHT, 0, 1, 64, 0, 0x9000, 0),
        copy(StepOp.STORE, Region.PARAM, 0, 4, 8, 30, 0xA000, 0x20),
        (StepOp.END, {}),
    ]
    csrs, refused = check(steps)
    assert refused is None
    assert csrs["status"] & 0b110 == 0b010, f"status {csrs['status']:#x} err {csrs['err_code']}"
    assert csrs["steps"] == len(steps)
    moved_in = 4 * 5 * BEAT + 3 * 3 * BEAT + 2 * 3 * BEAT
    fetched = CHUNK_STEPS * STEP_BYTES
    assert csrs["dma_rd_bytes"] == moved_in + fetched
    assert csrs["dma_wr_bytes"] == (2 * 10 + 32 + 4 * 2) * BEAT
    assert csrs["engine_cycles"] == 0 and csrs["cycles"] > 0


def test_4k_crossing_long_chunk_and_back_pressure():
    steps = [
        copy(StepOp.LOAD, Region.FEATURE, 0, 1, 64, 0, 0x0FC0, 0),            # crosses 4 KiB
        copy(StepOp.STORE, Region.FEATURE, 0, 1, 64, 0, 0x1FF0 + 0x10000, 0, wait=1),
        copy(StepOp.LOAD, Region.WEIGHT, 0, 2, 32, 32, 0x20000, 0x7F0),
        (StepOp.END, {}),
    ]
    csrs, refused = check(steps, ready_p=0.4, valid_p=0.5, read_latency=30, seed=SEED + 1)
    assert refused is None and csrs["status"] & 0b110 == 0b010


def test_more_steps_than_the_fifo():
    rng = random.Random(SEED)
    steps = []
    for i in range(3 * CHUNK_STEPS + 3):
        reg = rng.choice(list(Region))
        r = words_per_beat(CONFIG, reg)
        words = r * rng.randint(1, 3)
        steps.append(copy(rng.choice([StepOp.LOAD, StepOp.STORE]), reg, rng.randrange(DEPTH[reg] - 2 * words),
                          2, words, words, 0x30000 + 0x100 * i, 0x40, wait=rng.random() < 0.3))
    steps.append((StepOp.END, {}))
    csrs, refused = check(steps, seed=SEED + 2)
    assert refused is None and csrs["status"] & 0b110 == 0b010
    assert csrs["steps"] == len(steps)


@pytest.mark.parametrize("bad, code", [
    (dict(region=0), EngineError.STEP),
    (dict(words=3), EngineError.STEP),                        # not whole weight beats
    (dict(ddr_addr=DDR_BASE + 8), EngineError.STEP),          # not beat-aligned
    (dict(mem_addr=60), EngineError.STEP_RANGE),              # leaves weight memory
    (dict(ddr_addr=DDR_BASE + (1 << 20) - 16), EngineError.STEP_RANGE),   # leaves the DDR window
    (dict(ddr_addr=0x4000_0000), EngineError.STEP_RANGE),     # below the DDR window
])
def test_refused_step(bad, code):
    good = copy(StepOp.LOAD, Region.FEATURE, 0, 1, 4, 0, 0x4000, 0)
    fields = dict(region=Region.WEIGHT, mem_addr=0, count=1, words=8, mem_stride=0, ddr_addr=DDR_BASE + 0x5000,
                  ddr_stride=0)
    fields.update(bad)
    steps = [good, (StepOp.LOAD, fields), good, (StepOp.END, {})]
    csrs, refused = check(steps)
    assert refused == (1, code)
    assert csrs["status"] & 0b110 == 0b100
    assert csrs["err_code"] == code and csrs["steps"] == 1


def test_ddr_error_response():
    steps = [copy(StepOp.LOAD, Region.FEATURE, 0, 1, 4, 0, 0x4000, 0), (StepOp.END, {})]
    _, _, csrs, _ = run(steps, err=[(DDR_BASE + 0x4010, DDR_BASE + 0x4020, 3)], seed=SEED + 3)
    assert csrs["status"] & 0b110 == 0b100 and csrs["err_code"] == EngineError.DDR


def test_bad_magic():
    steps = [copy(StepOp.LOAD, Region.FEATURE, 0, 1, 4, 0, 0x4000, 0),
             copy(StepOp.LOAD, Region.FEATURE, 8, 1, 4, 0, 0x4400, 0), (StepOp.END, {})]
    _, mems, csrs, init = run(steps, corrupt=1, seed=SEED + 4)
    assert csrs["status"] & 0b110 == 0b100 and csrs["err_code"] == EngineError.STEP and csrs["steps"] == 1
    assert mems[Region.FEATURE][8:12] == init[Region.FEATURE][8:12]      # the bad step did nothing


def test_wide_beats_unaligned_feature_chunks():
    """beat_words = 4: feature chunks that start and end inside a beat, strided by a word, a beat
    or a stride that moves the offset in the beat, into and out of feature memory; weight and
    parameter copies of 8 and 16 words a beat; the bus bytes counted as whole beats."""
    from nibble.hw.mem.dma import chunk_beats
    beat = CONFIG4.beat_bits // 8
    steps = [
        copy(StepOp.LOAD, Region.FEATURE, 3, 4, 5, 9, 0x4010, 0x110),       # offsets 1, 2, 3, 0 in the beat
        copy(StepOp.LOAD, Region.FEATURE, 41, 6, 1, 2, 0x4830, 0x10),       # a word a chunk, every offset
        copy(StepOp.LOAD, Region.FEATURE, 56, 1, 7, 0, 0x4C20, 0),          # ends at the memory's last word
        copy(StepOp.LOAD, Region.WEIGHT, 1, 3, 8, 10, 0x5000, 0x40),        # 8 words a beat
        copy(StepOp.LOAD, Region.PARAM, 7, 2, 32, 40, 0x6000, 0x80),        # 16 words a beat
        copy(StepOp.STORE, Region.FEATURE, 2, 3, 11, 13, 0x8030, 0x1F0, wait=1),
        copy(StepOp.STORE, Region.FEATURE, 0, 5, 2, 3, 0x9010, 0x30),
        copy(StepOp.STORE, Region.WEIGHT, 0, 1, 64, 0, 0xA000, 0),
        copy(StepOp.STORE, Region.PARAM, 16, 2, 16, 48, 0xB000, 0x40),
        (StepOp.END, {}),
    ]
    csrs, refused = check(steps, config=CONFIG4, seed=SEED + 5)
    assert refused is None
    assert csrs["status"] & 0b110 == 0b010, f"status {csrs['status']:#x} err {csrs['err_code']}"
    assert csrs["steps"] == len(steps)
    beats = lambda op: sum(chunk_beats(CONFIG4, f["region"], f["ddr_addr"] + k * f["ddr_stride"], f["words"])
                           for o, f in steps if o == op for k in range(f["count"]))
    fetched = -(-len(steps) // CHUNK_STEPS) * CHUNK_STEPS * STEP_BYTES
    assert csrs["dma_rd_bytes"] == beats(StepOp.LOAD) * beat + fetched
    assert csrs["dma_wr_bytes"] == beats(StepOp.STORE) * beat


@pytest.mark.parametrize("seed", range(3))
def test_wide_beats_random_lists(seed):
    """beat_words = 4: seeded random LOAD/STORE lists in every region (feature chunks at any word
    offset and length), under random back-pressure; more steps than the fetch FIFO."""
    rng = random.Random(SEED + 10 + seed)
    steps = []
    for i in range(2 * CHUNK_STEPS + 5):
        reg = rng.choice(list(Region))
        if reg == Region.FEATURE:
            words, count = rng.randint(1, 9), rng.randint(1, 3)
            ddr, stride = 0x30000 + 0x200 * i + 16 * rng.randrange(4), 16 * rng.randint(9, 13)
        else:
            r = words_per_beat(CONFIG4, reg)
            words, count = r * rng.randint(1, 2), rng.randint(1, 2)
            ddr, stride = 0x30000 + 0x200 * i, 64 * rng.randint(1, 3)
        stride_m = words + rng.randrange(3)
        mem = rng.randrange(DEPTH[reg] - (count - 1) * stride_m - words + 1)
        steps.append(copy(rng.choice([StepOp.LOAD, StepOp.STORE]), reg, mem, count, words, stride_m, ddr, stride,
                          wait=rng.random() < 0.3))
    steps.append((StepOp.END, {}))
    csrs, refused = check(steps, config=CONFIG4, seed=SEED + 20 + seed, ready_p=0.6, valid_p=0.6)
    assert refused is None and csrs["status"] & 0b110 == 0b010
    assert csrs["steps"] == len(steps)


@pytest.mark.parametrize("bad, code", [
    (dict(region=Region.WEIGHT, words=4), EngineError.STEP),         # not whole 8-word weight beats
    (dict(region=Region.WEIGHT, words=8, ddr_addr=DDR_BASE + 0x5020), EngineError.STEP),   # not on a 64-byte beat
    (dict(ddr_addr=DDR_BASE + 0x4008), EngineError.STEP),             # a feature chunk not on a word
    (dict(mem_addr=62), EngineError.STEP_RANGE),                      # 3 words from word 62 leave feature memory
])
def test_wide_beats_refused_step(bad, code):
    good = copy(StepOp.LOAD, Region.FEATURE, 0, 1, 3, 0, 0x4010, 0)
    fields = dict(good[1])
    fields.update(bad)
    steps = [good, (StepOp.LOAD, fields), good, (StepOp.END, {})]
    csrs, refused = check(steps, config=CONFIG4, seed=SEED + 6)
    assert refused == (1, code)
    assert csrs["err_code"] == code and csrs["steps"] == 1
