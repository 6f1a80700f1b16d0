"""Stream drivers for `amaranth.sim` testbenches (full rate and throttled, seeded)."""
import random


async def stream_send(ctx, port, payloads, *, idle=0.0, seed=0):
    """Send ``payloads`` on ``port`` (valid/ready); with probability ``idle`` wait a cycle first."""
    rng = random.Random(seed)
    for p in payloads:
        while idle and rng.random() < idle:
            ctx.set(port.valid, 0)
            await ctx.tick()
        ctx.set(port.valid, 1)
        ctx.set(port.payload, p)
        await ctx.tick().until(port.ready)
    ctx.set(port.valid, 0)


async def stream_recv(ctx, port, count, *, stall=0.0, seed=1):
    """Receive ``count`` payloads from ``port``; with probability ``stall`` hold ``ready`` low."""
    rng = random.Random(seed)
    out = []
    while len(out) < count:
        ready = not (stall and rng.random() < stall)
        ctx.set(port.ready, int(ready))
        _, _, valid, payload = await ctx.tick().sample(port.valid, port.payload)
        if ready and valid:
            out.append(payload)
    ctx.set(port.ready, 0)
    return out


def run_sim(dut, *testbenches, deadline_cycles=200000, background=()):
    """Run testbenches on ``dut`` with a 1 MHz sync clock; fail if they do not finish in time.
    ``background``: testbenches that run beside them until they finish (e.g. memory models)."""
    from amaranth.sim import Simulator
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for tb in testbenches:
        sim.add_testbench(tb)
    for tb in background:
        sim.add_testbench(tb, background=True)

    async def watchdog(ctx):
        for _ in range(deadline_cycles):
            await ctx.tick()
        raise AssertionError(f"testbenches did not finish within {deadline_cycles} cycles")

    sim.add_testbench(watchdog, background=True)
    sim.run()
