"""AXI4 slave → internal bus bridge: the gateware side of the PCIe (XDMA) host interface.

A Xilinx XDMA core reaches the accelerator through an AXI interconnect (with a 32-bit
data-width converter on the board): its ``M_AXI`` DMA master (host-to-card and card-to-host
channels) and its ``M_AXI_LITE`` user BAR both end up as AXI4 bursts of 32-bit beats on this
slave port. :class:`AXI4SlaveBridge` turns each beat into one access on the internal bus
(:mod:`.bus`), so CSRs and device memories are reached at the same byte addresses as over the
UART link (the address map in :mod:`.accelerator`).

Source: AMBA AXI and ACE Protocol Specification, ARM IHI 0022E (and later versions), part A
(AXI4): A2 "Signal Descriptions"; A3.2.1 "Handshake process" (valid/ready rules, no
combinational path from inputs to outputs); A3.3 "Relationships between the channels"; A3.4
"Transaction structure": "Address structure" (burst length, size, type, the 4 KiB rule) and
"Read and write response structure"; A5 "Transaction Identifiers".
"""
from amaranth import *
from amaranth.lib import enum, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .bus import ADDR_BITS, READ_LATENCY, BusSignature

__all__ = ["AXI4Signature", "AXI4SlaveBridge", "Burst", "Resp", "BEAT_BYTES", "BEAT_SIZE",
           "R_DEPTH", "FULL_RATE_R_DEPTH", "OKAY", "SLVERR"]


class Burst(enum.IntEnum, shape=2):
    """``AxBURST`` encodings (IHI 0022 A3.4.1 "Address structure", Burst type)."""
    FIXED = 0
    INCR = 1
    WRAP = 2


class Resp(enum.IntEnum, shape=2):
    """``BRESP``/``RRESP`` encodings (IHI 0022 A3.4 "Read and write response structure")."""
    OKAY = 0
    EXOKAY = 1
    SLVERR = 2
    DECERR = 3


OKAY = Resp.OKAY
SLVERR = Resp.SLVERR
#: Bytes per beat the bridge serves (the internal bus word).
BEAT_BYTES = 4
#: ``AxSIZE`` of a 4-byte beat (IHI 0022 A3.4.1 "Address structure", Burst size: bytes = 2 ** AxSIZE).
BEAT_SIZE = 2
#: Smallest read-data FIFO that sustains one read beat per cycle: a beat holds its place from
#: its ``r_en`` until the cycle after its R handshake (``READ_LATENCY`` + two FIFO cycles + 1).
FULL_RATE_R_DEPTH = READ_LATENCY + 3
#: Default read-data FIFO depth: above FULL_RATE_R_DEPTH, and the FIFO's memory (``R_DEPTH``
#: entries next to its output register, see the elaborate comment) a power of two.
R_DEPTH = 8


class AXI4Signature(wiring.Signature):
    """AXI4 port, master side, signal names without a prefix (IHI 0022 A2).

    Parameters: ``addr_width`` (bits of ``AWADDR``/``ARADDR``, 12..64, default 32),
    ``data_width`` (bits of ``WDATA``/``RDATA``, a power of two 8..1024, default 32),
    ``id_width`` (bits of the ID signals, 1..32, default 4).

    Members (``Out`` = driven by the master):

    * write address: ``awid`` Out(id_width), ``awaddr`` Out(addr_width), ``awlen`` Out(8),
      ``awsize`` Out(3), ``awburst`` Out(2), ``awvalid`` Out(1), ``awready`` In(1);
    * write data: ``wdata`` Out(data_width), ``wstrb`` Out(data_width/8), ``wlast`` Out(1),
      ``wvalid`` Out(1), ``wready`` In(1);
    * write response: ``bid`` In(id_width), ``bresp`` In(2), ``bvalid`` In(1), ``bready`` Out(1);
    * read address: ``arid``, ``araddr``, ``arlen``, ``arsize``, ``arburst``, ``arvalid`` (Out)
      and ``arready`` (In), as for the write address;
    * read data: ``rid`` In(id_width), ``rdata`` In(data_width), ``rresp`` In(2), ``rlast``
      In(1), ``rvalid`` In(1), ``rready`` Out(1).

    ``AxLOCK``, ``AxCACHE``, ``AxPROT``, ``AxQOS``, ``AxREGION`` and the user signals are left out:
    an interconnect drives defaults for a slave without them. Response and burst codes:
    :class:`Resp`, :class:`Burst`.

    Raises ``ValueError``: ``"AXI4 addr_width must be in 12..64, not ..."``,
    ``"AXI4 data_width must be a power of two in 8..1024, not ..."``,
    ``"AXI4 id_width must be in 1..32, not ..."``.
    """

    def __init__(self, addr_width=32, data_width=32, id_width=4):
        if not _is_int(addr_width) or not 12 <= addr_width <= 64:
            raise ValueError(f"AXI4 addr_width must be in 12..64, not {addr_width!r}")
        if (not _is_int(data_width) or not 8 <= data_width <= 1024
                or data_width & (data_width - 1)):
            raise ValueError(f"AXI4 data_width must be a power of two in 8..1024, not {data_width!r}")
        if not _is_int(id_width) or not 1 <= id_width <= 32:
            raise ValueError(f"AXI4 id_width must be in 1..32, not {id_width!r}")
        self.addr_width = addr_width
        self.data_width = data_width
        self.id_width = id_width
        members = {}
        for ch, dirn in (("aw", Out), ("ar", Out)):
            members.update({
                f"{ch}id": dirn(id_width), f"{ch}addr": dirn(addr_width), f"{ch}len": dirn(8),
                f"{ch}size": dirn(3), f"{ch}burst": dirn(2), f"{ch}valid": dirn(1),
                f"{ch}ready": In(1),
            })
        members.update({
            "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wlast": Out(1),
            "wvalid": Out(1), "wready": In(1),
            "bid": In(id_width), "bresp": In(2), "bvalid": In(1), "bready": Out(1),
            "rid": In(id_width), "rdata": In(data_width), "rresp": In(2), "rlast": In(1),
            "rvalid": In(1), "rready": Out(1),
        })
        super().__init__(members)

    def _params(self):
        return (self.addr_width, self.data_width, self.id_width)

    def __eq__(self, other):
        return type(other) is AXI4Signature and self._params() == other._params()

    def __hash__(self):
        return hash((AXI4Signature, self._params()))

    def __repr__(self):
        return "AXI4Signature(addr_width={}, data_width={}, id_width={})".format(*self._params())


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


class AXI4SlaveBridge(wiring.Component):
    """AXI4 slave with 32-bit data → master of the internal bus (:mod:`.bus`).

    Parameters
    ----------
    addr_width : int
        ``AxADDR`` bits, 12..64 (default 32). Byte address ``a`` is bus word ``a >> 2``; a burst
        whose address has bits set above bit ``ADDR_BITS + 1`` is answered ``SLVERR``.
    id_width : int
        ID bits, 1..32 (default 4, as the XDMA core's ``M_AXI``).
    r_depth : int
        Read beats in flight on the bus or queued for R at most, 1..256 (default :data:`R_DEPTH`
        = 8): the capacity of the read-data FIFO. Reads run at one beat per cycle when
        ``r_depth >=`` :data:`FULL_RATE_R_DEPTH` (``READ_LATENCY + 3`` = 5); a smaller FIFO
        still works, slower.

    Members
    -------
    axi : In(AXI4Signature(addr_width, 32, id_width))
        The slave port. Every ready/valid output is a register or a decode of the state
        registers: no combinational path from an AXI input to an AXI output (IHI 0022 A3.2.1
        "Handshake process").
    bus : Out(BusSignature())
        Internal bus master. ``w_en`` and ``r_en`` are raised only for a word whose
        ``addr_err`` is low in that cycle; ``r_en`` as often as every cycle.

    Transactions (IHI 0022 A3.4)
    ----------------------------
    * INCR and FIXED bursts of 1..256 beats (``AxLEN`` 0..255) with ``AxSIZE`` =
      :data:`BEAT_SIZE` (4 bytes), on a 4-byte aligned address, are served a bus access per beat
      (INCR: word address + 1 per beat; FIXED: every beat at the same word). The 4 KiB rule of
      A3.4.1 is the master's; ``WLAST`` is not checked, the beats are counted from ``AWLEN``.
    * A WRAP (or reserved) burst type, another size, an unaligned address, or address bits above
      the bus's range: every beat of the burst is answered ``SLVERR`` and nothing is accessed.
      A write beat whose ``WSTRB`` is not all ones (the bus writes whole words) is not written
      and makes the burst's ``BRESP`` ``SLVERR``.
    * A beat whose bus address has ``addr_err`` (unmapped, or a memory while the engine runs)
      is not issued on the bus: ``BRESP`` = ``SLVERR`` for the whole write burst (the other
      beats are written), ``RRESP`` = ``SLVERR`` and ``RDATA`` = 0 for that read beat.
    * Every burst's beats are consumed or produced in full, errors or not, so the channels stay
      in step; ``BID``/``RID`` echo ``AWID``/``ARID``; ``RLAST`` marks the last read beat.
    * One burst at a time holds the bus (address, then all of its beats). When both a read and
      a write are waiting, they alternate: the burst served after a read is a waiting write,
      after a write a waiting read — neither is starved. A new write burst is accepted once
      the previous write's B response has been taken (or is taken in the same cycle). Read data
      of earlier bursts may still be draining on R while a write burst runs; the bus returns
      them in order (the values from before the write).

    Latency and throughput, in cycles, for ``n`` beats, with the valid signals and ``BREADY``/
    ``RREADY`` high (``L`` = ``READ_LATENCY`` = 2), from the first cycle of ``AxVALID`` on an
    idle bridge (:attr:`addr_latency` = 1 cycle of arbitration, then ``AxREADY``):

    * write: ``AWREADY`` at cycle 1, ``WREADY`` from cycle 2, one W beat per cycle; each beat
      is written on the bus :attr:`write_beat_latency` = 1 cycle after its W handshake;
      ``BVALID`` :attr:`b_latency` = 2 cycles after the last W handshake (cycle ``n + 3``).
      Back-to-back write bursts: :meth:`write_burst_cycles` = ``n + 3`` cycles each.
    * read: the first ``r_en`` at cycle 2, then one per cycle; ``RVALID`` of beat ``i`` at cycle
      :attr:`read_latency` + ``i`` (``read_latency = 2 + L + 2`` = 6 cycles from ``ARVALID``:
      arbitration, handshake, bus latency, two FIFO cycles). Back-to-back read bursts:
      :meth:`read_burst_cycles` = ``n + 2`` cycles each (``r_depth >= FULL_RATE_R_DEPTH``).
      With ``RREADY`` low the FIFO fills and issue pauses; no beat is lost.
    """

    def __init__(self, *, addr_width=32, id_width=4, r_depth=R_DEPTH):
        if not _is_int(r_depth) or not 1 <= r_depth <= 256:
            raise ValueError(f"AXI4SlaveBridge r_depth must be in 1..256, not {r_depth!r}")
        self.r_depth = r_depth
        super().__init__({
            "axi": In(AXI4Signature(addr_width, 8 * BEAT_BYTES, id_width)),
            "bus": Out(BusSignature()),
        })

    #: Cycles from the first ``AxVALID`` cycle to ``AxREADY`` on an idle bridge.
    addr_latency = 1
    #: Cycles from a W handshake to the beat's ``w_en`` on the bus.
    write_beat_latency = 1
    #: Cycles from the last W handshake to ``BVALID``.
    b_latency = 2

    @property
    def read_latency(self):
        """Cycles from the first ``ARVALID`` cycle (idle bridge) to the first ``RVALID``."""
        return self.addr_latency + 1 + READ_LATENCY + 2

    def write_burst_cycles(self, n):
        """Cycles between the AW handshakes of back-to-back ``n``-beat write bursts at full rate."""
        return n + 3

    def read_burst_cycles(self, n):
        """Cycles between the AR handshakes (and the first R beats) of back-to-back ``n``-beat
        read bursts at full rate."""
        return n + 2

    def elaborate(self, platform):
        m = Module()
        axi, bus = self.axi, self.bus
        aw = axi.signature.addr_width
        idw = axi.signature.id_width

        # ---- the burst being served (one at a time, read or write)
        addr = Signal(ADDR_BITS)        # bus word of the next beat (write: the pending beat)
        length = Signal(8)              # AxLEN
        incr = Signal()                 # INCR: +1 word per beat; FIXED: 0
        burst_err = Signal()            # every beat of the burst is SLVERR, no access
        burst_id = Signal(idw)
        beat = Signal(8)                # beats accepted (W) / issued (read) so far
        last_read = Signal()            # the last burst granted was a read
        m.d.comb += bus.addr.eq(addr)

        def start_burst(a, ln, size, burst, ident):
            bad = (size != BEAT_SIZE) | ((burst != Burst.INCR) & (burst != Burst.FIXED)) | (a[:2] != 0)
            if aw > ADDR_BITS + 2:
                bad = bad | (a[ADDR_BITS + 2:] != 0)
            return [addr.eq(a[2:]), length.eq(ln), incr.eq(burst == Burst.INCR),
                    burst_err.eq(bad), burst_id.eq(ident), beat.eq(0)]

        # ---- write path: W beat → pending register → bus write
        w_open = Signal()               # WREADY: beats of the current burst still to accept
        pend = Signal()
        pend_data = Signal(32)
        pend_strb_ok = Signal()
        pend_last = Signal()
        w_err = Signal()
        m.d.comb += [axi.wready.eq(w_open), bus.w_data.eq(pend_data)]
        bvalid = Signal()
        m.d.comb += axi.bvalid.eq(bvalid)
        with m.If(axi.bvalid & axi.bready):
            m.d.sync += bvalid.eq(0)

        # ---- read path: issue → delay line of READ_LATENCY → FIFO → R
        # ``pending`` (issued, not yet taken on R) never exceeds r_depth, so the FIFO always has
        # room for what the pipeline delivers. SyncFIFOBuffered holds ``depth - 1`` entries in
        # its memory plus its output register, and refuses a write while the memory is full even
        # in the cycle its head moves to the output register: one spare entry keeps ``w_rdy``
        # high whenever fewer than r_depth words are queued.
        m.submodules.r_fifo = fifo = SyncFIFOBuffered(width=32 + 2 + idw, depth=self.r_depth + 1)
        pending = Signal(range(self.r_depth + 1))
        issue = Signal()
        issue_err = Signal()
        line = [Signal(3 + idw, name=f"r_line{i}") for i in range(READ_LATENCY)]   # valid, err, last, id
        m.d.sync += line[0].eq(Cat(issue, issue_err, beat == length, burst_id))
        for prev, nxt in zip(line, line[1:]):
            m.d.sync += nxt.eq(prev)
        out = line[-1]
        m.d.comb += [
            fifo.w_en.eq(out[0]),
            fifo.w_data.eq(Cat(Mux(out[1], 0, bus.r_data), out[1:])),
            axi.rvalid.eq(fifo.r_rdy),
            axi.rdata.eq(fifo.r_data[:32]),
            axi.rresp.eq(Mux(fifo.r_data[32], Resp.SLVERR, Resp.OKAY)),
            axi.rlast.eq(fifo.r_data[33]),
            axi.rid.eq(fifo.r_data[34:]),
            fifo.r_en.eq(axi.rready),
        ]
        taken = axi.rvalid & axi.rready
        m.d.sync += pending.eq(pending + issue - taken)

        # Only registers and state changes are assigned inside the FSM; its combinational
        # outputs are plain expressions of the state below (no default-then-override
        # processes, which Icarus Verilog can re-run without end when two of them glitch).
        w_ok = Signal()                 # the pending write beat may be written
        with m.FSM(name="axi_fsm") as fsm:
            with m.State("IDLE"):
                want_w = axi.awvalid & (~bvalid | axi.bready)
                want_r = axi.arvalid
                with m.If(want_r & (~want_w | ~last_read)):
                    m.next = "AR"
                with m.Elif(want_w):
                    m.next = "AW"

            with m.State("AW"):
                with m.If(axi.awvalid):
                    m.d.sync += start_burst(axi.awaddr, axi.awlen, axi.awsize, axi.awburst, axi.awid)
                    m.d.sync += [w_open.eq(1), w_err.eq(0), last_read.eq(0)]
                    m.next = "WRITE"
                with m.Else():              # AWVALID dropped (A3.2.1 forbids it): start over
                    m.next = "IDLE"

            with m.State("WRITE"):
                accept = axi.wvalid & w_open
                m.d.sync += [pend.eq(accept), pend_data.eq(axi.wdata),
                             pend_strb_ok.eq(axi.wstrb == (1 << BEAT_BYTES) - 1),
                             pend_last.eq(beat == length)]
                with m.If(accept):
                    m.d.sync += beat.eq(beat + 1)
                    with m.If(beat == length):
                        m.d.sync += w_open.eq(0)
                with m.If(pend):
                    m.d.sync += [addr.eq(addr + incr), w_err.eq(w_err | ~w_ok)]
                    with m.If(pend_last):
                        m.d.sync += [bvalid.eq(1), axi.bid.eq(burst_id),
                                     axi.bresp.eq(Mux(w_err | ~w_ok, Resp.SLVERR, Resp.OKAY))]
                        m.next = "IDLE"

            with m.State("AR"):
                with m.If(axi.arvalid):
                    m.d.sync += start_burst(axi.araddr, axi.arlen, axi.arsize, axi.arburst, axi.arid)
                    m.d.sync += last_read.eq(1)
                    m.next = "READ"
                with m.Else():
                    m.next = "IDLE"

            with m.State("READ"):
                with m.If(issue):
                    m.d.sync += [addr.eq(addr + incr), beat.eq(beat + 1)]
                    with m.If(beat == length):
                        m.next = "IDLE"

        m.d.comb += [
            axi.awready.eq(fsm.ongoing("AW")),
            axi.arready.eq(fsm.ongoing("AR")),
            w_ok.eq(~burst_err & pend_strb_ok & ~bus.addr_err),
            bus.w_en.eq(fsm.ongoing("WRITE") & pend & w_ok),
            issue.eq(fsm.ongoing("READ") & (pending < self.r_depth)),
            issue_err.eq(burst_err | bus.addr_err),
            bus.r_en.eq(issue & ~issue_err),
        ]
        return m
