"""cocotb testbench of the Winograd transform blocks on their generated Verilog (ARITHMETIC §2.1).

The top (``WinogradTop`` in tests/test_winograd_cocotb.py) holds several blocks side by side, each
with its own ports ``<key>__i__payload``, ``<key>__i__valid``, ``<key>__i__ready``,
``<key>__o__payload``, ``<key>__o__valid``, ``<key>__o__ready``, ``<key>__busy`` and shared
``clk``, ``rst``. A ``pre`` block is ``WinogradPrePE(variant)`` (``V = Bᵀ d B``), compared with
:func:`nibble.sim.winograd.input_transform`; a ``post`` block is ``WinogradPostPE(variant,
in_width)`` (``Y = Aᵀ M A``), compared with :func:`nibble.sim.winograd.output_transform`. Every
output tile must equal the golden one bit for bit, in order, none lost or duplicated.

Stream payloads are flat bit vectors: the Amaranth layout
``ArrayLayout(ArrayLayout(signed(w), n), n)`` indexed ``tile[row][col]`` puts element
``(row, col)`` at bits ``(row·n + col)·w`` up, two's complement.

Parameters come from environment variables set by the pytest wrapper: WG_BLOCKS (JSON list of
``{key, block, variant, in_width, out_width, latency}``), WG_RANDOM (random tiles per block),
WG_SEED.
"""
import itertools
import json
import os
import random
import zlib

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from nibble.sim import winograd as wg

BLOCKS = json.loads(os.environ["WG_BLOCKS"])
N_RANDOM = int(os.environ["WG_RANDOM"])
SEED = int(os.environ.get("WG_SEED", "1"))


class Block:
    """One block of the top: its ports, parameters, stimulus and golden outputs."""

    def __init__(self, dut, cfg):
        self.key, self.kind, self.variant = cfg["key"], cfg["block"], cfg["variant"]
        self.in_w, self.out_w, self.latency = cfg["in_width"], cfg["out_width"], cfg["latency"]
        var = wg.variant(self.variant)
        self.var, self.alpha = var, var.alpha
        self.n_out = var.alpha if self.kind == "pre" else var.m      # output tile n_out × n_out
        self.mat = var.BT if self.kind == "pre" else var.AT
        self.lo, self.hi = -(1 << (self.in_w - 1)), (1 << (self.in_w - 1)) - 1
        self.seed = SEED + zlib.crc32(self.key.encode())
        port = lambda name: getattr(dut, f"{self.key}__{name}")
        self.i_payload, self.i_valid, self.i_ready = port("i__payload"), port("i__valid"), port("i__ready")
        self.o_payload, self.o_valid, self.o_ready = port("o__payload"), port("o__valid"), port("o__ready")
        self.busy = port("busy")

    def golden(self, tiles):
        """input_transform (pre) or output_transform (post) of a stack of tiles."""
        if self.kind == "pre":
            return wg.input_transform(tiles, self.variant)
        return wg.output_transform(tiles, self.variant)

    def pack(self, tile):
        """Flat payload of an input tile: element (row, col) at bits ((row·α + col)·in_w …)."""
        v, n, w = 0, self.alpha, self.in_w
        for row, col in itertools.product(range(n), range(n)):
            v |= (int(tile[row][col]) & ((1 << w) - 1)) << ((row * n + col) * w)
        return v

    def unpack(self, v):
        """Signed output tile ``[row][col]`` from a flat payload."""
        n, w = self.n_out, self.out_w
        out = []
        for row in range(n):
            r = []
            for col in range(n):
                e = (v >> ((row * n + col) * w)) & ((1 << w) - 1)
                r.append(e - (1 << w) if e >> (w - 1) else e)
            out.append(r)
        return out

    def named_tiles(self):
        """Extremes: all lo, all hi, both checkerboards, one hi in each position over lo and the
        converse, one extreme in each position over 0, and for every output position the two
        tiles that reach its maximum and minimum (sign pattern of its coefficients)."""
        a, lo, hi = self.alpha, self.lo, self.hi
        tiles = [np.full((a, a), lo), np.full((a, a), hi)]
        yy, xx = np.indices((a, a))
        tiles += [np.where((yy + xx) % 2, hi, lo), np.where((yy + xx) % 2, lo, hi)]
        for i, j in itertools.product(range(a), range(a)):
            for ext, bg in ((hi, lo), (lo, hi), (lo, 0), (hi, 0)):
                t = np.full((a, a), bg)
                t[i, j] = ext
                tiles.append(t)
        for i, j in itertools.product(range(self.mat.shape[0]), repeat=2):
            coef = np.outer(self.mat[i], self.mat[j])
            tiles += [np.where(coef > 0, hi, lo), np.where(coef > 0, lo, hi)]
        return tiles

    def realistic_tiles(self, rng, count):
        """Post only: accumulator tiles ``M = Σ_ci U ⊙ V`` of random 4-bit codes and int8 inputs,
        Cin small enough that ``M`` fits the accumulator width."""
        umax = max(abs(x) for x in wg.u_range(self.variant))
        vmax = max(abs(x) for x in wg.v_range(self.variant))
        cin_max = max(1, self.hi // (umax * vmax))
        tiles = []
        for _ in range(count):
            cin = int(rng.integers(1, cin_max + 1))
            codes = rng.integers(0, 16, (1, cin, self.var.r, self.var.r))
            U = wg.weight_transform(codes, self.variant, codes=True)
            V = wg.input_transform(rng.integers(-128, 128, (cin, self.alpha, self.alpha)), self.variant)
            M = (U[0] * V).sum(axis=0)
            if self.lo <= M.min() and M.max() <= self.hi:
                tiles.append(M)
        return tiles

    def stimulus(self):
        """Input tiles (extremes, then seeded random) and their golden output tiles."""
        rng = np.random.default_rng(self.seed)
        tiles = self.named_tiles()
        if self.kind == "post":
            tiles += self.realistic_tiles(rng, 20)
        a = self.alpha
        tiles += list(rng.integers(self.lo, self.hi + 1, (N_RANDOM, a, a), dtype=np.int64))
        tiles = np.array(tiles, dtype=np.int64)
        return tiles, self.golden(tiles).tolist()

    def check(self, got, expected):
        assert len(got) == len(expected), f"{self.key}: {len(got)} tiles out, {len(expected)} expected"
        bad = [k for k, (g, e) in enumerate(zip(got, expected)) if g != e]
        assert not bad, (f"{self.key}: {len(bad)} tiles differ; first #{bad[0]}: got {got[bad[0]]}, "
                         f"expected {expected[bad[0]]}")
        flat = [x for t in got for r in t for x in r]
        if self.kind == "pre":                      # the §2.5 extremes of V pass through
            assert (min(flat), max(flat)) == wg.v_range(self.variant)
        else:                                       # the top output bit is used both ways
            assert min(flat) < -(1 << (self.out_w - 2)) and max(flat) >= 1 << (self.out_w - 2)


async def _reset(dut, blk):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    for cfg in BLOCKS:
        b = Block(dut, cfg)
        b.i_valid.value = 0
        b.i_payload.value = 0
        b.o_ready.value = 0
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    await ReadOnly()
    assert len(blk.i_payload) == blk.alpha ** 2 * blk.in_w
    assert len(blk.o_payload) == blk.n_out ** 2 * blk.out_w
    assert not blk.o_valid.value and not blk.busy.value
    await RisingEdge(dut.clk)


KEYS = [cfg["key"] for cfg in BLOCKS]
#: the block keys as test parameters, named by key in the test names
KEY_PARAMS = [cocotb.Param(value=k, name=k) for k in KEYS]


@cocotb.test()
@cocotb.parametrize(key=KEY_PARAMS)
async def full_rate(dut, key):
    """Valid every cycle, ready always high: i.ready never drops and the N outputs come on N
    consecutive cycles from cycle ``latency``, so N tiles take N + latency cycles."""
    blk = Block(dut, BLOCKS[KEYS.index(key)])
    await _reset(dut, blk)
    tiles, expected = blk.stimulus()
    n = len(tiles)
    blk.o_ready.value = 1
    got, out_cycles = [], []
    for cyc in range(n + blk.latency + 3):
        blk.i_valid.value = int(cyc < n)
        if cyc < n:
            blk.i_payload.value = blk.pack(tiles[cyc])
        await ReadOnly()
        if cyc < n:
            assert blk.i_ready.value, f"{key}: i.ready low at cycle {cyc} with a ready sink"
        if blk.o_valid.value:
            got.append(blk.unpack(int(blk.o_payload.value)))
            out_cycles.append(cyc)
        if cyc >= n + blk.latency:
            assert not blk.busy.value, f"{key}: busy after the last tile left"
        await RisingEdge(dut.clk)
    blk.i_valid.value = 0
    blk.check(got, expected)
    assert out_cycles == list(range(blk.latency, blk.latency + n))
    assert out_cycles[-1] + 1 == n + blk.latency


@cocotb.test(timeout_time=200, timeout_unit="us")       # 20 000 cycles: about 10× the slowest run
@cocotb.parametrize(("key", KEY_PARAMS), (("idle", "stall"), [(0.3, 0.4), (0.05, 0.8)]))
async def throttled(dut, key, idle, stall):
    """Seeded random input idle cycles (junk payload while ``i.valid`` is low) and output stalls;
    a stalled output must hold valid and payload until it is taken. 30 % idle / 40 % stall, and
    a nearly full-rate source against 80 % stall (the pipeline fills and holds). A lost tile
    fails by timeout."""
    blk = Block(dut, BLOCKS[KEYS.index(key)])
    await _reset(dut, blk)
    tiles, expected = blk.stimulus()
    idle_rng, stall_rng, junk = (random.Random(blk.seed + k) for k in (1, 2, 3))
    got = []

    async def sink():
        # ready is driven after a clock edge; a transfer happens at the next edge if valid & ready
        held = None
        while len(got) < len(expected):
            ready = int(stall_rng.random() >= stall)
            blk.o_ready.value = ready
            await ReadOnly()
            valid = bool(blk.o_valid.value)
            payload = int(blk.o_payload.value) if valid else None
            if held is not None:
                assert valid and payload == held, f"{key}: stalled output changed before it was taken"
            if valid and ready:
                got.append(blk.unpack(payload))
            held = payload if valid and not ready else None
            await RisingEdge(dut.clk)
        blk.o_ready.value = 0

    sink_task = cocotb.start_soon(sink())
    for t in tiles:
        while idle_rng.random() < idle:
            blk.i_valid.value = 0
            blk.i_payload.value = junk.getrandbits(blk.alpha ** 2 * blk.in_w)   # must be ignored
            await RisingEdge(dut.clk)
        blk.i_valid.value = 1
        blk.i_payload.value = blk.pack(t)
        while True:
            await ReadOnly()
            accepted = bool(blk.i_ready.value)
            await RisingEdge(dut.clk)
            if accepted:
                break
    blk.i_valid.value = 0
    await sink_task
    for _ in range(blk.latency + 2):
        await RisingEdge(dut.clk)
    await ReadOnly()
    assert not blk.o_valid.value, f"{key}: output beyond the last tile"
    assert not blk.busy.value
    blk.check(got, expected)
