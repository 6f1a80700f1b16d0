"""AcceleratorCore's bus decoder under the bus rule of hw/bus.py: a read every cycle, each answered
exactly READ_LATENCY cycles after its r_en, in order, with the word as it was when it was issued.

Reads are pipelined across all regions and slices (CSR, parameter, multi-slice weight and feature
words) in one stream, and mixed with writes to the words being read. Offsets come from regmap.
"""
import random

from amaranth.sim import Simulator

from nibble.hw.accelerator import ID_VALUE, VERSION, AcceleratorCore, regmap
from nibble.hw.bus import READ_LATENCY
from nibble.hw.config import EngineConfig

SEED = 515
#: vc = 16: weight words of 2 slices, feature words of 4; no Winograd path (a shorter build).
CONFIG = EngineConfig(m=16, vc=16, acc_width=24, filter_depth=16, feature_depth=32, weight_depth=32,
                      param_depth=64, clk_hz=1_000_000, baud=250_000, winograd=False)


def addresses(rm):
    """Byte address of every 32-bit slice of every memory word, by region."""
    return {name: [r["base"] + 4 * i for i in range(r["words"])]
            for name, r in rm["regions"].items() if name != "csr"}


def csr(rm, name):
    return rm["regions"]["csr"]["base"] + rm["csrs"][name]["offset"]


def test_back_to_back_reads_all_regions():
    print("seed", SEED)
    rng = random.Random(SEED)
    rm = regmap(CONFIG)
    dut = AcceleratorCore(CONFIG)
    bus = dut.bus
    slices = addresses(rm)
    model = {}                         # byte address → 32-bit value, as the host sees it
    for name, addrs in slices.items():
        for a in addrs:
            model[a] = rng.getrandbits(32)
    model[csr(rm, "scratch")] = 0x5CA7C401
    model[csr(rm, "desc_base")] = 7
    csr_fixed = {"id": ID_VALUE, "version": VERSION, "cfg_m": CONFIG.m, "cfg_vc": CONFIG.vc,
                 "cfg_feature_depth": CONFIG.feature_depth, "cfg_weight_depth": CONFIG.weight_depth,
                 "runs": 0, "status": 0}
    for name, v in csr_fixed.items():
        model[csr(rm, name)] = v
    readable = list(model)

    # ops: ("w", addr, value) or ("r", addr); writes of a wide word come last slice last.
    ops = []
    for _ in range(300):
        ops.append(("r", rng.choice(readable)))
    # re-write whole memory words while reading them: a read issued before the write of the
    # committing slice returns the old word, one issued after it the new word
    for name in ("weight", "feature", "param"):
        n = rm["regions"][name]["slices"]
        base = rng.randrange(rm["regions"][name]["depth"]) * n
        for k in range(n):
            a = slices[name][base + k]
            ops += [("r", a), ("w", a, rng.getrandbits(32)), ("r", a)]
        ops += [("r", slices[name][base + k]) for k in range(n)]
    ops += [("w", csr(rm, "scratch"), 0x1234), ("r", csr(rm, "scratch"))]

    expected = []                      # (cycle of r_en, value)
    got = []

    async def tb(ctx):
        # fill everything first, one write per cycle
        for a in readable:
            if a in slices_flat:
                ctx.set(bus.addr, a >> 2); ctx.set(bus.w_data, model[a]); ctx.set(bus.w_en, 1)
                await ctx.tick()
        for name in ("scratch", "desc_base"):
            ctx.set(bus.addr, csr(rm, name) >> 2); ctx.set(bus.w_data, model[csr(rm, name)])
            ctx.set(bus.w_en, 1)
            await ctx.tick()
        ctx.set(bus.w_en, 0)
        stage = {}                     # pending lower slices of wide words (committed on the last)
        cycle = 0
        for op in ops + [None] * (READ_LATENCY + 1):
            ctx.set(bus.w_en, 0); ctx.set(bus.r_en, 0)
            if op is not None:
                ctx.set(bus.addr, op[1] >> 2)
                assert not ctx.get(bus.addr_err), f"0x{op[1]:08x} unmapped"
                if op[0] == "r":
                    ctx.set(bus.r_en, 1)
                    expected.append((cycle, model[op[1]]))
                else:
                    ctx.set(bus.w_data, op[2]); ctx.set(bus.w_en, 1)
                    commit(op[1], op[2], stage)
            _, _, valid, data = await ctx.tick().sample(bus.r_valid, bus.r_data)
            if valid:
                got.append((cycle - READ_LATENCY, data))
            cycle += 1

    slices_flat = {a for addrs in slices.values() for a in addrs}

    def commit(a, value, stage):
        """The model of a host write: a wide word changes when its last slice is written."""
        for name, addrs in slices.items():
            if a in addrs:
                r = rm["regions"][name]
                i = (a - r["base"]) // 4
                n = r["slices"]
                stage[(name, i % n)] = value
                if i % n == n - 1:
                    for k in range(n):
                        model[r["base"] + 4 * (i - i % n + k)] = stage.get((name, k), value)
                return
        model[a] = value

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert len(got) == len(expected)
    for (c_exp, v_exp), (c_got, v_got) in zip(expected, got):
        assert (c_got, v_got) == (c_exp, v_exp), f"read issued at cycle {c_exp}"
