"""Drive the internal bus (hw/bus.py) from amaranth.sim testbenches."""
import numpy as np


async def bus_write(ctx, bus, byte_addr, words):
    """Write 32-bit ``words`` from ``byte_addr`` on, one per cycle."""
    for i, w in enumerate(words):
        ctx.set(bus.addr, (byte_addr >> 2) + i)
        ctx.set(bus.w_data, int(w))
        ctx.set(bus.w_en, 1)
        assert not ctx.get(bus.addr_err), f"write to unmapped 0x{byte_addr + 4 * i:08x}"
        await ctx.tick()
    ctx.set(bus.w_en, 0)


async def bus_read(ctx, bus, byte_addr, n):
    """Read ``n`` 32-bit words from ``byte_addr`` on."""
    out = []
    for i in range(n):
        ctx.set(bus.addr, (byte_addr >> 2) + i)
        ctx.set(bus.r_en, 1)
        assert not ctx.get(bus.addr_err), f"read from unmapped 0x{byte_addr + 4 * i:08x}"
        await ctx.tick()
        ctx.set(bus.r_en, 0)
        data, = await ctx.tick().sample(bus.r_data).until(bus.r_valid)
        out.append(data)
    return out


def to_u32(raw: bytes):
    return np.frombuffer(raw, "<u4")
