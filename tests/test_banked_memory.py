"""BankedMemory in amaranth.sim against a flat list of words (the memory it stands for).

Named cases: one bank is the plain memory; a wide write and a wide read at every offset in the
beat; a masked beat that starts below word 0 (the DMA's first beat of a chunk at word 0 that
does not start on a beat); narrow reads beside wide ones. Then seeded random traffic: each cycle
a random masked wide write and random narrow and wide reads, every read checked against the
flat model one cycle later.
"""
import random

import pytest
from amaranth import *
from amaranth.sim import Simulator

from nibble.hw.mem.banked import ADDR_BITS, BankedMemory

W = 16                      # bits per word (small, to keep the model readable)


def _bench(banks, depth, cycles):
    """Run ``cycles`` (a list of dicts: ``w`` = (addr, [words], mask) or None, ``r`` / ``rw`` =
    addr or None for the narrow / wide read) and return, per cycle, (narrow word, wide words) as
    read, beside the flat model's."""
    mem = BankedMemory(W, depth, banks, name="t")
    wp, rn, rw = mem.write_port(), mem.read_port(), mem.read_port(wide=True)
    got, want = [], []
    flat = [0] * depth

    async def tb(ctx):
        for cyc in cycles:
            addr, words, mask = cyc.get("w") or (0, [0] * banks, 0)
            ctx.set(wp.addr, addr % (1 << ADDR_BITS))
            ctx.set(wp.data, sum(v << (W * j) for j, v in enumerate(words)))
            ctx.set(wp.mask, mask)
            for port, key in ((rn, "r"), (rw, "rw")):
                a = cyc.get(key)
                ctx.set(port.en, a is not None)
                ctx.set(port.addr, 0 if a is None else a)
            await ctx.tick()
            # the data of this cycle's reads (the memory before this cycle's write)
            n = ctx.get(rn.data) if cyc.get("r") is not None else None
            wd = ctx.get(rw.data) if cyc.get("rw") is not None else None
            got.append((n, None if wd is None else [(wd >> (W * j)) & ((1 << W) - 1) for j in range(banks)]))
            exp_n = flat[cyc["r"]] if cyc.get("r") is not None else None
            exp_w = [flat[cyc["rw"] + j] for j in range(banks)] if cyc.get("rw") is not None else None
            want.append((exp_n, exp_w))
            for j in range(banks):
                if mask >> j & 1:
                    flat[(addr + j) % (1 << ADDR_BITS)] = words[j]

    sim = Simulator(mem)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return got, want


def _check(banks, depth, cycles):
    got, want = _bench(banks, depth, cycles)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"cycle {i}: read {g}, the flat memory has {w}"


@pytest.mark.parametrize("banks", [1, 2, 4])
def test_wide_write_and_read_at_every_offset(banks):
    depth = 32
    cycles = [{"w": (a, [100 * a + j for j in range(banks)], (1 << banks) - 1)} for a in range(0, depth - banks + 1, 3)]
    cycles += [{"rw": a, "r": (a * 7) % depth} for a in range(depth - banks + 1)]
    _check(banks, depth, cycles)


def test_masked_beat_below_word_zero():
    """A beat at address −1 (mod 2²⁴) with its first word masked writes words 0, 1, 2 only."""
    cycles = [{"w": ((1 << ADDR_BITS) - 1, [9, 10, 11, 12], 0b1110)}, {"rw": 0, "r": 2}, {"r": 3}]
    _check(4, 16, cycles)


@pytest.mark.parametrize("seed", range(4))
def test_random_traffic(seed):
    rng = random.Random(seed)
    banks = rng.choice([2, 4, 8])
    depth = banks * rng.randint(4, 12)
    cycles = []
    for _ in range(300):
        c = {}
        if rng.random() < 0.6:
            a = rng.randrange(depth - banks + 1)
            c["w"] = (a, [rng.randrange(1 << W) for _ in range(banks)], rng.randrange(1 << banks))
        if rng.random() < 0.6:
            c["r"] = rng.randrange(depth)
        if rng.random() < 0.6:
            c["rw"] = rng.randrange(depth - banks + 1)
        cycles.append(c)
    _check(banks, depth, cycles)


def test_bad_parameters():
    with pytest.raises(ValueError, match="banks must be 1, 2, 4 or 8"):
        BankedMemory(8, 24, 3)
    with pytest.raises(ValueError, match="not a multiple"):
        BankedMemory(8, 30, 4)
