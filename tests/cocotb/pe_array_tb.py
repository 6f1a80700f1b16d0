"""cocotb testbench of the PE array on its generated Verilog, against the golden model.

The DUT is ``PEArray(m=M, vc=VC, acc_width=ACC, depth=DEPTH)`` converted by Amaranth; its stream
payloads are flat bit vectors (StructLayout fields from bit 0 up: x lanes, addr, first, last).
Parameters come from environment variables set by the pytest wrapper.
"""
import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from nibble.sim import golden

M = int(os.environ["PEA_M"])
VC = int(os.environ["PEA_VC"])
ACC = int(os.environ["PEA_ACC"])
DEPTH = int(os.environ["PEA_DEPTH"])
SEED = int(os.environ.get("PEA_SEED", "1"))
ABITS = max(1, (DEPTH - 1).bit_length())


def pack_beat(x, addr, first, last):
    v = 0
    for lane, xv in enumerate(x):
        v |= (int(xv) & 0xFF) << (8 * lane)
    v |= addr << (8 * VC)
    v |= first << (8 * VC + ABITS)
    v |= last << (8 * VC + ABITS + 1)
    return v


def unpack_acc(v):
    out = []
    for k in range(M):
        a = (v >> (ACC * k)) & ((1 << ACC) - 1)
        out.append(a - (1 << ACC) if a >> (ACC - 1) else a)
    return out


async def _reset(dut):
    dut.rst.value = 1
    dut.i__valid.value = 0
    dut.o__ready.value = 0
    dut.w_en.value = 0
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0


async def _run(dut, idle, stall):
    rng = np.random.default_rng(SEED)
    prng = random.Random(SEED)
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    await _reset(dut)
    caches = rng.integers(0, 16, (M, DEPTH, VC))
    caches[0, 0, :] = 0b1111                  # −64: the worst case with x = −128
    for pe in range(M):
        for a in range(DEPTH):
            dut.w_en.value = 1
            dut.w_pe.value = pe
            dut.w_addr.value = a
            dut.w_data.value = sum(int(c) << (4 * lane) for lane, c in enumerate(caches[pe, a]))
            await RisingEdge(dut.clk)
    dut.w_en.value = 0

    beats, expected = [], []
    for g in range(30):
        n = int(rng.integers(1, 6))
        acc = np.zeros(M, np.int64)
        for j in range(n):
            x = rng.integers(-128, 128, VC)
            if g == 0:
                x[:] = -128
            addr = 0 if g == 0 else int(rng.integers(0, DEPTH))
            beats.append(pack_beat(x, addr, int(j == 0), int(j == n - 1)))
            acc += [golden.sac(x, caches[pe, addr]).sum() for pe in range(M)]
        expected.append(acc.tolist())

    got = []

    async def sink():
        # ready is driven after a clock edge; a transfer happens at the next edge if valid & ready
        while len(got) < len(expected):
            ready = int(prng.random() >= stall)
            dut.o__ready.value = ready
            await ReadOnly()
            if ready and dut.o__valid.value:
                got.append(unpack_acc(int(dut.o__payload.value)))
            await RisingEdge(dut.clk)
        dut.o__ready.value = 0

    sink_task = cocotb.start_soon(sink())
    for b in beats:
        while prng.random() < idle:
            dut.i__valid.value = 0
            await RisingEdge(dut.clk)
        dut.i__valid.value = 1
        dut.i__payload.value = b
        while True:
            await ReadOnly()
            accepted = bool(dut.i__ready.value)
            await RisingEdge(dut.clk)
            if accepted:
                break
    dut.i__valid.value = 0
    await sink_task
    assert got == expected


@cocotb.test()
async def full_rate(dut):
    await _run(dut, 0.0, 0.0)


@cocotb.test()
async def throttled(dut):
    await _run(dut, 0.3, 0.4)
