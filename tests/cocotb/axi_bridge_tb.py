"""cocotb testbench: AXI4SlaveBridge + AcceleratorCore (tests/test_axi_cocotb.py ``AxiCoreTop``).

The AXI4 master is cocotbext-axi's ``AxiMaster`` (an implementation independent of the bridge),
with seeded random pauses on all five channels. Expected values come from :class:`HostView`, the
register map's documented behaviour (regmap docstring): CSRs, memories of 32-bit slices where a
wide word is committed when its last slice is written, unmapped addresses answered SLVERR.
Parameters arrive in environment variables set by the pytest wrapper: NIBBLE_TB_CONFIG (the
EngineConfig as JSON), NIBBLE_TB_SEED.
"""
import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles
from cocotbext.axi import AxiBurstType, AxiBus, AxiMaster

from nibble.hw.accelerator import ID_VALUE, VERSION, regmap
from nibble.hw.axi import BEAT_BYTES, Resp
from nibble.hw.config import EngineConfig

CONFIG = EngineConfig.from_dict(json.loads(os.environ["NIBBLE_TB_CONFIG"]))
SEED = int(os.environ["NIBBLE_TB_SEED"])
RM = regmap(CONFIG)
CLOCK_NS = 10
PAUSE = 0.3                     # probability of a pause cycle on each channel
MEMORIES = ("param", "weight", "feature")


def csr(name):
    return RM["regions"]["csr"]["base"] + RM["csrs"][name]["offset"]


class HostView:
    """What the host reads back after its writes, slice by slice (byte address → 32-bit value)."""

    def __init__(self):
        self.value = {}
        self.stage = {name: {} for name in MEMORIES}    # lower slices waiting for the last one

    @staticmethod
    def region(addr):
        for name, r in RM["regions"].items():
            if r["base"] <= addr < r["base"] + BEAT_BYTES * r["words"]:
                return name, r
        return None, None

    def mapped(self, addr):
        return self.region(addr)[0] is not None

    def write(self, addr, words):
        """Expected BRESP of an INCR write burst; applies the mapped beats."""
        err = False
        for i, v in enumerate(words):
            a = addr + BEAT_BYTES * i
            name, r = self.region(a)
            if name is None:
                err = True
            elif name == "csr":
                self.value[a] = v          # the tests write only scratch here
            else:
                slot = (a - r["base"]) // BEAT_BYTES
                n = r["slices"]
                self.stage[name][slot % n] = v
                if slot % n == n - 1:      # the last slice commits the word
                    first = r["base"] + BEAT_BYTES * (slot - n + 1)
                    for k in range(n):
                        self.value[first + BEAT_BYTES * k] = self.stage[name].get(k, 0)
        return Resp.SLVERR if err else Resp.OKAY

    def read(self, addr, n):
        """Expected (words, RRESP of the whole burst) of an INCR read burst."""
        words, err = [], False
        for i in range(n):
            a = addr + BEAT_BYTES * i
            if self.mapped(a):
                words.append(self.value.get(a, 0))
            else:
                words.append(0)
                err = True
        return words, Resp.SLVERR if err else Resp.OKAY


def pauses(rng, p=PAUSE):
    while True:
        yield rng.random() < p


def to_bytes(words):
    return b"".join(w.to_bytes(BEAT_BYTES, "little") for w in words)


def to_words(data):
    return [int.from_bytes(data[i:i + BEAT_BYTES], "little") for i in range(0, len(data), BEAT_BYTES)]


async def setup(dut, seed):
    rng = random.Random(seed)
    dut.rst.value = 1
    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    axi = AxiMaster(AxiBus.from_prefix(dut, "axi_"), dut.clk, dut.rst)
    for ch in (axi.write_if.aw_channel, axi.write_if.w_channel, axi.write_if.b_channel,
               axi.read_if.ar_channel, axi.read_if.r_channel):
        ch.set_pause_generator(pauses(random.Random(rng.getrandbits(32))))
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)
    return axi, rng


async def write_words(axi, addr, words, **kw):
    return (await axi.write(addr, to_bytes(words), **kw)).resp


async def read_words(axi, addr, n, **kw):
    r = await axi.read(addr, BEAT_BYTES * n, **kw)
    return to_words(r.data), r.resp


async def check_read(axi, view, addr, n):
    got = await read_words(axi, addr, n)
    exp = view.read(addr, n)
    assert got == exp, f"read 0x{addr:08x} x{n}: got {got}, expected {exp}"


@cocotb.test()
async def csrs(dut):
    axi, rng = await setup(dut, SEED)
    view = HostView()
    value = rng.getrandbits(32)
    assert await write_words(axi, csr("scratch"), [value]) == Resp.OKAY
    view.write(csr("scratch"), [value])
    assert await read_words(axi, csr("scratch"), 1) == ([value], Resp.OKAY)
    assert await read_words(axi, csr("id"), 1) == ([ID_VALUE], Resp.OKAY)
    fixed = {"id": ID_VALUE, "version": VERSION, "cfg_m": CONFIG.m, "cfg_vc": CONFIG.vc,
             "cfg_feature_depth": CONFIG.feature_depth, "cfg_weight_depth": CONFIG.weight_depth,
             "cfg_param_depth": CONFIG.param_depth, "status": 0, "runs": 0, "scratch": value}
    n = RM["regions"]["csr"]["words"]
    words, resp = await read_words(axi, csr("id"), n + 2)       # all CSRs, then two unmapped
    assert resp == Resp.SLVERR and words[n:] == [0, 0]
    for name, v in fixed.items():
        assert words[RM["csrs"][name]["offset"] // BEAT_BYTES] == v, name
    # a 2-byte write (WSTRB 0b0011) is refused, scratch unchanged
    assert (await axi.write(csr("scratch"), b"\x55\x66")).resp == Resp.SLVERR
    assert await read_words(axi, csr("scratch"), 1) == ([value], Resp.OKAY)
    # FIXED bursts: four writes to scratch (the last stays), three reads of id
    data = [rng.getrandbits(32) for _ in range(4)]
    assert await write_words(axi, csr("scratch"), data, burst=AxiBurstType.FIXED) == Resp.OKAY
    assert await read_words(axi, csr("scratch"), 1) == ([data[-1]], Resp.OKAY)
    assert await read_words(axi, csr("id"), 3, burst=AxiBurstType.FIXED) == ([ID_VALUE] * 3, Resp.OKAY)


@cocotb.test()
async def memories(dut):
    """Random bursts into every memory, some running past its end, read back exactly."""
    dut._log.info("seed %d", SEED)
    axi, rng = await setup(dut, SEED + 1)
    view = HostView()
    for name in MEMORIES:
        r = RM["regions"][name]
        for _ in range(10):
            n = rng.randrange(1, 48)
            start = rng.randrange(r["words"] + 4 - min(n, 8))   # some bursts cross the end
            addr = r["base"] + BEAT_BYTES * start
            words = [rng.getrandbits(32) for _ in range(n)]
            resp = await write_words(axi, addr, words)
            assert resp == view.write(addr, words), f"write {name} 0x{addr:08x} x{n}"
            await check_read(axi, view, addr, n)
    for name in MEMORIES:                          # whole regions: no stray writes
        r = RM["regions"][name]
        await check_read(axi, view, r["base"], r["words"])
        await check_read(axi, view, r["base"] + BEAT_BYTES * (r["words"] - 2), 4)


@cocotb.test()
async def concurrent_reads_and_writes(dut):
    """Writes and reads of different regions in flight together, with IDs chosen by the master."""
    axi, rng = await setup(dut, SEED + 2)
    view = HostView()
    wr, fr = RM["regions"]["weight"], RM["regions"]["feature"]
    base = [rng.getrandbits(32) for _ in range(wr["words"])]
    assert await write_words(axi, wr["base"], base) == view.write(wr["base"], base)
    for _ in range(3):
        n = fr["slices"] * rng.randrange(1, fr["depth"] // 2)
        addr = fr["base"] + BEAT_BYTES * fr["slices"] * rng.randrange(fr["depth"] - n // fr["slices"])
        words = [rng.getrandbits(32) for _ in range(n)]
        tasks = [cocotb.start_soon(write_words(axi, addr, words))]
        reads = [(wr["base"] + BEAT_BYTES * k, rng.randrange(1, 16))
                 for k in rng.sample(range(wr["words"] - 16), 3)]
        tasks += [cocotb.start_soon(read_words(axi, a, k)) for a, k in reads]
        tasks.append(cocotb.start_soon(read_words(axi, csr("id"), 1)))
        results = [await t for t in tasks]
        assert results[0] == view.write(addr, words)
        for (a, k), got in zip(reads, results[1:-1]):
            assert got == view.read(a, k)
        assert results[-1] == ([ID_VALUE], Resp.OKAY)
        await check_read(axi, view, addr, n)
