"""A small design with the accelerator's two AXI4 ports, to exercise the simulated DDR
(``sim/ddr_model.h`` in ``sim/harness_axi.cpp``) without the accelerator.

:class:`DdrTestTop` has the host's slave port ``s_axi_*`` (32-bit, served by
:class:`nibble.hw.axi.AXI4SlaveBridge` onto an internal bus) and the master port ``m_axi_*``
(``data_width`` bits, driven by :class:`nibble.hw.mem.axi_master.AXI4Master`), as the accelerator
will have them. On the bus, at byte addresses:

* ``0x0000_0000 + 4·i``: the CSRs below (32-bit);
* ``0x1000_0000``: a buffer of ``buf_beats`` beats of ``data_width`` bits (beat ``b``, 32-bit word
  ``k`` at byte ``0x1000_0000 + 4·(b·data_width/32 + k)``: little-endian, the beat's bytes in
  address order), read and written by the host.

A read command copies ``RD_BEATS`` beats from DDR byte address ``RD_ADDR`` into the buffer from
beat ``RD_BUF``; a write command copies ``WR_BEATS`` beats from beat ``WR_BUF`` to DDR address
``WR_ADDR``; one AXI4Master command each (it splits them into INCR bursts at 4 KiB). Both may run
at once. ``idle`` is low from a start until every started command is done (the read's last beat
in the buffer, the write's ``wr_done``), so the harness's WAIT runs exactly that long.

Throttles (``THROTTLE`` bits, a 16-bit LFSR, roughly half the cycles): bit 0 gates the R channel
(``RREADY`` to the DDR and ``RVALID`` to the master both low in a gated cycle: back-pressure on the
slave's R beats), bit 1 the B channel likewise, bit 2 leaves gaps in the master's ``wr_data``
stream (hence in ``WVALID``; a VALID once raised is never dropped, the master's W register holds it).
"""
from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from nibble.hw.axi import AXI4Signature, AXI4SlaveBridge
from nibble.hw.bus import READ_LATENCY
from nibble.hw.mem import AXI4Master

__all__ = ["DdrTestTop", "CSR", "BUF_BASE", "CTRL_READ", "CTRL_WRITE", "CTRL_CLEAR"]

#: CSR word index by name.
CSR = {name: i for i, name in enumerate(
    ["RD_ADDR", "RD_BEATS", "WR_ADDR", "WR_BEATS", "CTRL", "THROTTLE", "STATUS", "CYCLES",
     "FIRST", "ERR_ADDR", "RD_BUF", "WR_BUF"])}
#: Byte address of the buffer.
BUF_BASE = 0x1000_0000
#: CTRL bits (write 1 to act): start the read, start the write, clear the master's sticky error.
CTRL_READ, CTRL_WRITE, CTRL_CLEAR = 1, 2, 4
# STATUS bits: 0 busy, 1 master error, 4..6 error code, 8 some beat of the last read had err,
# 9 the last write's wr_done.err.


class DdrTestTop(wiring.Component):
    """See the module docstring. ``CYCLES``: cycles from the start of the last command(s) to the
    end of all of them; ``FIRST``: cycles from that start to the read's first beat in the buffer."""

    def __init__(self, data_width=128, buf_beats=512):
        self.data_width, self.buf_beats = data_width, buf_beats
        members = {"idle": Out(1)}
        for name, member in AXI4Signature().members.items():
            members[f"s_axi_{name}"] = member.flip()
        for name, member in AXI4Signature(32, data_width, 4).members.items():
            members[f"m_axi_{name}"] = member
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        D, N = self.data_width, self.buf_beats
        words = D // 32

        m.submodules.bridge = bridge = AXI4SlaveBridge()
        for name, member in bridge.axi.signature.members.items():
            port, inner = getattr(self, f"s_axi_{name}"), getattr(bridge.axi, name)
            m.d.comb += inner.eq(port) if member.flow == In else port.eq(inner)

        m.submodules.master = master = AXI4Master(data_width=D)
        lfsr = Signal(16, init=0xACE1)
        m.d.sync += lfsr.eq(Cat(lfsr[1:], lfsr[0] ^ lfsr[2] ^ lfsr[3] ^ lfsr[5]))
        throttle = Signal(3)
        gate_r = ~throttle[0] | lfsr[0]
        gate_b = ~throttle[1] | lfsr[4]
        gate_w = ~throttle[2] | lfsr[8]
        for name, member in master.axi.signature.members.items():
            port, inner = getattr(self, f"m_axi_{name}"), getattr(master.axi, name)
            if name in ("rvalid", "bvalid"):
                m.d.comb += inner.eq(port & (gate_r if name == "rvalid" else gate_b))
            elif name in ("rready", "bready"):
                m.d.comb += port.eq(inner & (gate_r if name == "rready" else gate_b))
            elif member.flow == Out:
                m.d.comb += port.eq(inner)
            else:
                m.d.comb += inner.eq(port)

        m.submodules.buf = buf = Memory(shape=unsigned(D), depth=N, init=[])
        bus_rp = buf.read_port(domain="comb")
        wr_rp = buf.read_port(domain="comb")
        bus_wp = buf.write_port(granularity=32)
        rd_wp = buf.write_port(granularity=32)

        regs = {name: Signal(32, name=name.lower()) for name in
                ("RD_ADDR", "RD_BEATS", "WR_ADDR", "WR_BEATS", "RD_BUF", "WR_BUF")}
        cycles, first = Signal(32), Signal(32)
        rd_active, wr_active, rd_cmd_sent, wr_cmd_sent = Signal(), Signal(), Signal(), Signal()
        rd_got, wr_sent = Signal(32), Signal(32)
        rd_err, wr_err, got_first = Signal(), Signal(), Signal()
        busy = rd_active | wr_active
        m.d.comb += self.idle.eq(~busy)

        # ---- the internal bus (word addresses): CSRs in region 0, the buffer in region 1
        bus = bridge.bus
        csr_sel = bus.addr[4:] == 0
        buf_word = bus.addr[:26]
        buf_sel = (bus.addr[26:] == 1) & (buf_word < N * words)
        m.d.comb += bus.addr_err.eq(~csr_sel & ~buf_sel)
        status = Cat(busy, master.error, C(0, 2), master.err_code, C(0, 1), rd_err, wr_err)
        csr_values = {CSR["CTRL"]: C(0, 32), CSR["THROTTLE"]: throttle, CSR["STATUS"]: status,
                      CSR["CYCLES"]: cycles, CSR["FIRST"]: first, CSR["ERR_ADDR"]: master.err_addr}
        csr_values.update({CSR[k]: v for k, v in regs.items()})

        s1_valid, s1_csr, s1_idx = Signal(), Signal(), Signal(30)
        m.d.sync += [s1_valid.eq(bus.r_en), s1_csr.eq(csr_sel), s1_idx.eq(bus.addr)]
        assert READ_LATENCY == 2, "the test top answers in two cycles"
        m.d.comb += bus_rp.addr.eq(s1_idx[:26] // words if words > 1 else s1_idx[:26])
        csr_value = Signal(32)
        with m.Switch(s1_idx[:4]):
            for idx, value in csr_values.items():
                with m.Case(idx):
                    m.d.comb += csr_value.eq(value)
        word_sel = s1_idx[:max(1, (words - 1).bit_length())] if words > 1 else C(0, 1)
        buf_value = bus_rp.data.word_select(word_sel, 32) if words > 1 else bus_rp.data
        m.d.sync += [bus.r_valid.eq(s1_valid), bus.r_data.eq(Mux(s1_csr, csr_value, buf_value))]

        m.d.comb += [bus_wp.addr.eq(buf_word // words if words > 1 else buf_word),
                     bus_wp.data.eq(bus.w_data.replicate(words))]
        lane = buf_word % words if words > 1 else C(0, 1)
        with m.If(bus.w_en & buf_sel):
            m.d.comb += bus_wp.en.eq(C(1, words) << lane)
        start = Signal(2)
        with m.If(bus.w_en & csr_sel):
            with m.Switch(bus.addr[:4]):
                for name, reg in regs.items():
                    with m.Case(CSR[name]):
                        m.d.sync += reg.eq(bus.w_data)
                with m.Case(CSR["THROTTLE"]):
                    m.d.sync += throttle.eq(bus.w_data[:3])
                with m.Case(CSR["CTRL"]):
                    m.d.comb += [start.eq(bus.w_data[:2]), master.clear.eq(bus.w_data[2])]

        # ---- cycle counters
        with m.If(start.any()):
            m.d.sync += [cycles.eq(0), got_first.eq(0), first.eq(0)]
        with m.Elif(busy):
            m.d.sync += cycles.eq(cycles + 1)

        # ---- read command: DDR → buffer
        m.d.comb += [master.rd_cmd.valid.eq(rd_active & ~rd_cmd_sent),
                     master.rd_cmd.payload.addr.eq(regs["RD_ADDR"]),
                     master.rd_cmd.payload.beats.eq(regs["RD_BEATS"])]
        with m.If(master.rd_cmd.valid & master.rd_cmd.ready):
            m.d.sync += rd_cmd_sent.eq(1)
        m.d.comb += master.rd_data.ready.eq(1)
        beat = master.rd_data.payload
        with m.If(master.rd_data.valid):
            m.d.comb += [rd_wp.addr.eq(regs["RD_BUF"] + rd_got), rd_wp.data.eq(beat.data),
                         rd_wp.en.eq(C((1 << words) - 1, words))]
            m.d.sync += [rd_got.eq(rd_got + 1), rd_err.eq(rd_err | beat.err)]
            with m.If(~got_first):
                m.d.sync += [got_first.eq(1), first.eq(cycles + 1)]
            with m.If(beat.last):
                m.d.sync += rd_active.eq(0)
        with m.If(start[0]):
            m.d.sync += [rd_active.eq(1), rd_cmd_sent.eq(0), rd_got.eq(0), rd_err.eq(0)]

        # ---- write command: buffer → DDR
        m.d.comb += [master.wr_cmd.valid.eq(wr_active & ~wr_cmd_sent),
                     master.wr_cmd.payload.addr.eq(regs["WR_ADDR"]),
                     master.wr_cmd.payload.beats.eq(regs["WR_BEATS"])]
        with m.If(master.wr_cmd.valid & master.wr_cmd.ready):
            m.d.sync += wr_cmd_sent.eq(1)
        m.d.comb += [wr_rp.addr.eq(regs["WR_BUF"] + wr_sent),
                     master.wr_data.payload.eq(wr_rp.data),
                     master.wr_data.valid.eq(wr_active & (wr_sent < regs["WR_BEATS"]) & gate_w)]
        with m.If(master.wr_data.valid & master.wr_data.ready):
            m.d.sync += wr_sent.eq(wr_sent + 1)
        m.d.comb += master.wr_done.ready.eq(1)
        with m.If(master.wr_done.valid):
            m.d.sync += [wr_active.eq(0), wr_err.eq(master.wr_done.payload.err)]
        with m.If(start[1]):
            m.d.sync += [wr_active.eq(1), wr_cmd_sent.eq(0), wr_sent.eq(0), wr_err.eq(0)]
        return m
