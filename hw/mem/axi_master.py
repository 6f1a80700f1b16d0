"""AXI4 burst master: beat commands → AXI4 INCR bursts, the engine's path to external memory.

On the VC707 and KC705 the DDR3 SODIMM is reached through a Xilinx MIG 7-series controller whose
AXI4 slave port runs at the controller's UI clock. Its data width ``C_S_AXI_DATA_WIDTH`` is 32, 64,
128, 256 or 512 bits; the native width ``APP_DATA_WIDTH`` (512 bits for a 64-bit DDR3 at 4:1)
needs no width converter inside the controller (Xilinx UG586, "Zynq-7000 SoC and 7 Series Devices
Memory Interface Solutions", AXI4 Slave Interface Block, "AXI4 Slave Interface Parameters").
:class:`AXI4Master` speaks that port with full-width INCR bursts, one ID and in-order data.

Source: AMBA AXI and ACE Protocol Specification, ARM IHI 0022E (and later versions), part A
(AXI4): A3.2.1 "Handshake process" (a VALID once raised stays until its READY, no combinational
path from inputs to outputs); A3.3.1 "Dependencies between channel handshake signals" (the master
does not wait for AWREADY before WVALID); A3.4.1 "Address structure" (AxLEN = beats - 1 up to 256
beats for INCR, AxSIZE = log2 bytes per beat, "a burst must not cross a 4KB address boundary");
A3.4.4 "Read and write response structure" (OKAY, EXOKAY, SLVERR, DECERR; one BRESP per burst,
one RRESP per beat); A5 "Transaction Identifiers" (the slave returns the read data and write
responses of one ID in issue order).
"""
from amaranth import *
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.fifo import SyncFIFO, SyncFIFOBuffered
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from ..axi import AXI4Signature, Burst, Resp

__all__ = ["AXI4Master", "BurstSplitter", "ErrorCode", "DATA_WIDTHS", "MAX_BURST", "PAGE_BYTES",
           "BEATS_WIDTH", "AXI_ID", "command_layout", "burst_layout", "read_beat_layout",
           "write_beat_layout", "WRITE_DONE_LAYOUT"]

#: Data widths of the master (those of the MIG's AXI4 slave port, UG586 ``C_S_AXI_DATA_WIDTH``).
DATA_WIDTHS = (32, 64, 128, 256, 512)
#: Longest INCR burst of AXI4, in beats (IHI 0022 A3.4.1, Burst length: AxLEN 0..255).
MAX_BURST = 256
#: The boundary no burst may cross, in bytes (IHI 0022 A3.4.1, "4KB address boundary").
PAGE_BYTES = 4096
#: Bits of a command's beat count.
BEATS_WIDTH = 32
#: ``AWID``/``ARID`` of every burst; ``BID``/``RID`` are expected to echo it.
AXI_ID = 0


def command_layout(addr_width):
    """Payload of ``rd_cmd``/``wr_cmd``: ``addr`` (byte address, ``addr_width`` bits), ``beats``
    (beat count, :data:`BEATS_WIDTH` bits)."""
    return data.StructLayout({"addr": addr_width, "beats": BEATS_WIDTH})


def burst_layout(addr_width, burst_beats):
    """Payload of :class:`BurstSplitter`'s output: ``addr`` (byte address of the first beat),
    ``beats`` (0..``burst_beats``; 0 only for a zero-beat command), ``final`` (the command's
    last burst), ``reject`` (the command is a command error: nothing goes to AXI)."""
    return data.StructLayout({"addr": addr_width, "beats": range(burst_beats + 1),
                              "final": 1, "reject": 1})


def read_beat_layout(data_width):
    """Payload of ``rd_data``: ``data`` (``data_width`` bits, byte ``k`` of the beat at bits
    ``8k..8k+7``: the byte at address ``beat address + k``), ``last`` (the final beat of its
    command), ``err`` (the beat's ``RRESP`` was not OKAY, or the command was a command error and
    ``data`` is 0)."""
    return data.StructLayout({"data": data_width, "last": 1, "err": 1})


def write_beat_layout(data_width):
    """Payload of ``wr_data`` of a master built with ``strobes``: ``data`` (``data_width`` bits,
    byte ``k`` at bits ``8k..8k+7``), ``strb`` (``data_width / 8`` bits: byte ``k`` is written
    with bit ``k``; ``WSTRB``, IHI 0022 A3.4.3 "Data read and write structure")."""
    return data.StructLayout({"data": data_width, "strb": data_width // 8})


#: Payload of ``wr_done``: ``err``, some burst of the command got a ``BRESP`` other than OKAY, or the
#: command was a command error (nothing written).
WRITE_DONE_LAYOUT = data.StructLayout({"err": 1})


class ErrorCode(enum.IntEnum, shape=3):
    """``err_code``: the reason of the first error since reset or ``clear``."""
    NONE = 0
    RD_SLVERR = 1      #: a read beat answered SLVERR (``err_addr``: that beat's address)
    RD_DECERR = 2      #: a read beat answered DECERR
    WR_SLVERR = 3      #: a write burst answered SLVERR (``err_addr``: the burst's address)
    WR_DECERR = 4      #: a write burst answered DECERR
    RD_CMD = 5         #: read command error (``err_addr``: the command's address)
    WR_CMD = 6         #: write command error
    PROTOCOL = 7       #: EXOKAY, ``RLAST`` on the wrong beat, ``RID``/``BID`` not :data:`AXI_ID`


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


class BurstSplitter(wiring.Component):
    """A command (byte address, beat count) → its AXI4 INCR bursts, one per cycle.

    Parameters: ``addr_width``, ``beat_bytes`` (a power of two, 4..64), ``burst_beats`` (the
    longest burst, 1..:data:`MAX_BURST`, at most ``PAGE_BYTES // beat_bytes``).

    Members
    -------
    i : In(stream.Signature(command_layout(addr_width)))
        Commands. Taken when idle or in the cycle the current command's last burst is taken,
        so commands of one burst each go at one per cycle.
    o : Out(stream.Signature(burst_layout(addr_width, burst_beats)))
        Bursts, valid from the cycle after the command is taken. Each burst has
        ``min(beats left, burst_beats, beats to the next 4 KiB boundary)`` beats, so none crosses
        one (IHI 0022 A3.4.1). A command error (address not a multiple of ``beat_bytes``, zero
        beats, or ``addr + beats * beat_bytes`` beyond ``2 ** addr_width``) is split the same way
        with ``reject`` set; a zero-beat command gives one burst of 0 beats.
    reject : Out(1)
        One cycle, the cycle after a command error is taken; ``reject_addr`` its address.

    Each cycle computes the burst from registers (a min of three and a comparison of the beat
    count); ``o.ready`` reaches ``i.ready`` combinationally.
    """

    def __init__(self, addr_width, beat_bytes, burst_beats):
        if not _is_int(beat_bytes) or beat_bytes not in (4, 8, 16, 32, 64):
            raise ValueError(f"BurstSplitter beat_bytes must be one of 4, 8, 16, 32, 64, not {beat_bytes!r}")
        longest = min(MAX_BURST, PAGE_BYTES // beat_bytes)
        if not _is_int(burst_beats) or not 1 <= burst_beats <= longest:
            raise ValueError(f"BurstSplitter burst_beats must be in 1..{longest}, not {burst_beats!r}")
        self.addr_width, self.beat_bytes, self.burst_beats = addr_width, beat_bytes, burst_beats
        super().__init__({
            "i": In(stream.Signature(command_layout(addr_width))),
            "o": Out(stream.Signature(burst_layout(addr_width, burst_beats))),
            "reject": Out(1),
            "reject_addr": Out(addr_width),
        })

    def elaborate(self, platform):
        m = Module()
        aw, s = self.addr_width, exact_log2(self.beat_bytes)
        page_beats = PAGE_BYTES // self.beat_bytes
        i, o = self.i, self.o

        active = Signal()
        addr = Signal(aw)
        left = Signal(BEATS_WIDTH)
        reject = Signal()

        to_page = Signal(range(page_beats + 1))          # beats up to the next 4 KiB boundary
        cap = Signal(range(self.burst_beats + 1))
        final = Signal()
        m.d.comb += [
            to_page.eq(page_beats - addr[s:12]),
            cap.eq(Mux(to_page < self.burst_beats, to_page, self.burst_beats)),
            final.eq(left <= cap),
            o.valid.eq(active),
            o.payload.addr.eq(addr),
            o.payload.beats.eq(Mux(final, left, cap)),
            o.payload.final.eq(final),
            o.payload.reject.eq(reject),
            i.ready.eq(~active | (o.ready & final)),
        ]

        cmd = i.payload
        bad = (cmd.addr[:s] != 0) | (cmd.beats == 0) | ((cmd.addr + (cmd.beats << s)) > (1 << aw))
        m.d.sync += [self.reject.eq(i.valid & i.ready & bad), self.reject_addr.eq(cmd.addr)]
        with m.If(o.valid & o.ready):
            m.d.sync += [addr.eq(addr + (o.payload.beats << s)), left.eq(left - o.payload.beats)]
            with m.If(final):
                m.d.sync += active.eq(0)
        with m.If(i.valid & i.ready):
            m.d.sync += [active.eq(1), addr.eq(cmd.addr), left.eq(cmd.beats), reject.eq(bad)]
        return m


class AXI4Master(wiring.Component):
    """AXI4 burst master: read and write commands of whole beats → INCR bursts, data in order.

    Parameters
    ----------
    data_width : int
        Bits per beat: one of :data:`DATA_WIDTHS` (32, 64, 128, 256, 512; the MIG's port on the
        VC707/KC705 is 512 bits natively, 128 and 256 are common behind a converter).
        ``beat_bytes = data_width // 8``; ``AxSIZE = log2(beat_bytes)``.
    addr_width : int
        Byte address bits, 12..64 (default 32).
    id_width : int
        ID bits, 1..32 (default 4). Every burst uses ID :data:`AXI_ID`.
    max_burst : int
        Longest burst in beats, 1..:data:`MAX_BURST` (default 256). Bursts are also cut at
        4 KiB boundaries, so the longest issued is :attr:`burst_beats` =
        ``min(max_burst, 4096 // beat_bytes)`` (64 beats at 512 bits).
    max_reads : int
        Read bursts outstanding at most, 1..64 (default 4): a burst counts from the cycle it is
        loaded into the AR register until its last beat is in the read buffer.
    max_writes : int
        Write bursts outstanding at most, 1..64 (default 4): from the AW register until its B
        response is taken.
    r_depth : int
        Read buffer depth in beats, :attr:`burst_beats`..65536 (default ``max_reads *
        burst_beats``, which never holds back ``max_reads`` full bursts while ``rd_data`` keeps
        up). The buffer is a block-RAM FIFO of ``r_depth`` entries of ``data_width + 2`` bits
        plus its output register.

    Members
    -------
    axi : Out(AXI4Signature(addr_width, data_width, id_width))
        The master port. ``AxBURST`` = INCR, ``AxSIZE`` = log2(beat_bytes), ``WSTRB`` all ones
        (with ``strobes``: each beat's own).
        ``AxCACHE``/``AxPROT``/``AxLOCK``/``AxQOS`` are not in :class:`~nibble.hw.axi.AXI4Signature`:
        the interconnect or the MIG drives their defaults (normal, non-secure data accesses).
        ``ARVALID``/``AWVALID``/``WVALID`` and their payloads are registers; ``RREADY``/``BREADY``
        are decodes of internal state: no combinational path from an AXI input to an AXI output.
    rd_cmd : In(stream.Signature(command_layout(addr_width)))
        Read ``beats`` beats from byte address ``addr``.
    rd_data : Out(stream.Signature(read_beat_layout(data_width)))
        Every beat of every read command, in command order: ``data``, ``last`` on the final
        beat of each command, ``err`` per beat.
    wr_cmd : In(stream.Signature(command_layout(addr_width)))
        Write ``beats`` beats at byte address ``addr``.
    wr_data : In(stream.Signature(data_width)), or with ``strobes`` In(stream.Signature(write_beat_layout(data_width)))
        The beats of the write commands, in command order, all bytes written (full strobes), or
        the bytes of each beat's ``strb`` (parameter ``strobes``, default False: a beat that
        writes only some of its bytes, the tile DMA's first and last beats of a chunk that does
        not start or end on a beat).
        A beat is taken once its command's burst is in the W queue: from :attr:`cmd_latency`
        cycles after the command's handshake.
    wr_done : Out(stream.Signature(WRITE_DONE_LAYOUT))
        One completion per write command, in order, after the B responses of all its bursts:
        ``err`` if any of them was not OKAY or the command was a command error.
    error : Out(1)
        Sticky: set by the first error, with ``err_code`` (:class:`ErrorCode`) and ``err_addr``
        (``addr_width`` bits) of that error; later errors do not overwrite them. ``clear``
        (In(1), one cycle) resets all three, except that an error in the same cycle is recorded.

    Commands and errors
    -------------------
    A command is split into INCR bursts of at most :attr:`burst_beats` beats that never cross a
    4 KiB boundary (IHI 0022 A3.4.1). A **command error**, an ``addr`` not a multiple of
    ``beat_bytes``, zero beats, or a range past ``2 ** addr_width``, sends nothing to AXI, sets
    ``error`` (``RD_CMD``/``WR_CMD``, the command's address), and keeps the streams in step: a
    read delivers its ``beats`` beats with ``data`` = 0 and ``err`` set (a zero-beat read: no
    beat), a write takes and drops its ``beats`` beats from ``wr_data`` and completes on
    ``wr_done`` with ``err`` (after those beats). A **response error** is never dropped: a read burst answered SLVERR or DECERR still
    delivers all its beats, data as returned, ``err`` set on each failing beat; a write burst
    answered so makes its command's ``wr_done.err``; both set the sticky ``error`` with the
    beat's (read) or burst's (write) address. Protocol violations by the slave (see
    :class:`ErrorCode`) set ``PROTOCOL``; beats are still counted from the burst lengths.

    Ordering and buffers
    --------------------
    One ID: the slave returns reads in order and bursts are matched to their command by a
    queue, no reordering buffer. Reads and writes run independently; a read issued after a
    write to the same bytes may see the old data: wait for ``wr_done`` first.

    * command queues: 2 entries each (``rd_cmd.ready``/``wr_cmd.ready`` depend only on their
      fill level, so commands go in at one per cycle with no path from AXI to them);
    * read tracking queue: ``max_reads`` bursts; read buffer: ``r_depth`` beats. A burst is
      issued only when the buffer has room for all its beats beyond those already in it or in
      flight (a credit counter), so ``RREADY`` stays high however long ``rd_data`` is held:
      no beat waits on R and none is lost;
    * W queue and B queue: ``max_writes`` bursts each; ``wr_done`` queue: 2 entries. The
      tracking queues are small register/LUT-RAM FIFOs (``addr_width + 10`` bits an entry at most).
    * ``wr_data.ready`` follows ``WREADY`` combinationally (the W register takes a beat when it
      is empty or being emptied): one W beat per cycle without a second register.

    Latency and throughput, in cycles (the properties below; a test checks them)
    ----------------------------------------------------------------------------
    * :attr:`cmd_latency` = 3: from a command's handshake (idle master) to ``ARVALID``/
      ``AWVALID`` of its first burst; write beats are taken from ``wr_data`` from then on.
    * :attr:`w_latency` = 1: from a ``wr_data`` handshake to ``WVALID`` of that beat.
    * :attr:`rd_latency` = 2: from an R handshake to that beat on ``rd_data`` (buffer empty).
    * :attr:`done_latency` = 1: from the B handshake of a command's last burst to ``wr_done``.
    * One AR and one AW per cycle, one R and one W beat per cycle across bursts and commands:
      no cycle is lost at a burst or command boundary. Reads run at one beat per cycle when the
      slave's latency (AR to first R beat) is covered by the ``max_reads`` bursts and the
      ``r_depth`` beats allowed in flight; ``wr_data`` then ``WREADY`` pace the writes.
    """

    #: Cycles from a command handshake to the first ``AxVALID`` of its bursts.
    cmd_latency = 3
    #: Cycles from a ``wr_data`` handshake to ``WVALID`` of that beat.
    w_latency = 1
    #: Cycles from an R handshake to that beat's ``rd_data.valid`` (empty read buffer).
    rd_latency = 2
    #: Cycles from the B handshake of a command's last burst to ``wr_done.valid``.
    done_latency = 1

    def __init__(self, *, data_width, addr_width=32, id_width=4, max_burst=MAX_BURST, max_reads=4,
                 max_writes=4, r_depth=None, strobes=False):
        self.strobes = bool(strobes)
        if not _is_int(data_width) or data_width not in DATA_WIDTHS:
            raise ValueError(f"AXI4Master data_width must be one of {', '.join(map(str, DATA_WIDTHS))}, "
                             f"not {data_width!r}")
        if not _is_int(max_burst) or not 1 <= max_burst <= MAX_BURST:
            raise ValueError(f"AXI4Master max_burst must be in 1..{MAX_BURST}, not {max_burst!r}")
        if not _is_int(max_reads) or not 1 <= max_reads <= 64:
            raise ValueError(f"AXI4Master max_reads must be in 1..64, not {max_reads!r}")
        if not _is_int(max_writes) or not 1 <= max_writes <= 64:
            raise ValueError(f"AXI4Master max_writes must be in 1..64, not {max_writes!r}")
        self.data_width = data_width
        self.beat_bytes = data_width // 8
        self.burst_beats = min(max_burst, PAGE_BYTES // self.beat_bytes)
        if r_depth is None:
            r_depth = max_reads * self.burst_beats
        if not _is_int(r_depth) or not self.burst_beats <= r_depth <= 65536:
            raise ValueError(f"AXI4Master r_depth must be in {self.burst_beats}..65536, not {r_depth!r}")
        self.max_burst, self.max_reads, self.max_writes = max_burst, max_reads, max_writes
        self.r_depth = r_depth
        sig = AXI4Signature(addr_width, data_width, id_width)
        self.addr_width = addr_width
        super().__init__({
            "axi": Out(sig),
            "rd_cmd": In(stream.Signature(command_layout(addr_width))),
            "rd_data": Out(stream.Signature(read_beat_layout(data_width))),
            "wr_cmd": In(stream.Signature(command_layout(addr_width))),
            "wr_data": In(stream.Signature(write_beat_layout(data_width) if self.strobes else data_width)),
            "wr_done": Out(stream.Signature(WRITE_DONE_LAYOUT)),
            "error": Out(1),
            "err_code": Out(ErrorCode),
            "err_addr": Out(addr_width),
            "clear": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        axi = self.axi
        aw, s = self.addr_width, exact_log2(self.beat_bytes)
        blayout = burst_layout(aw, self.burst_beats)

        # Combinational outputs below are plain expressions of registers (no default-then-
        # override processes): Icarus can re-run such processes without end when two glitch.
        m.d.comb += [
            axi.arid.eq(AXI_ID), axi.arsize.eq(s), axi.arburst.eq(Burst.INCR),
            axi.awid.eq(AXI_ID), axi.awsize.eq(s), axi.awburst.eq(Burst.INCR),
        ]
        if self.strobes:
            w_data = self.wr_data.payload.data
        else:
            w_data = self.wr_data.payload
            m.d.comb += axi.wstrb.eq((1 << self.beat_bytes) - 1)
        events = []                     # (condition, ErrorCode value, address), by priority

        # ================================================================== read side
        m.submodules.rd_cmd_q = rd_cmd_q = SyncFIFO(width=len(self.rd_cmd.payload.as_value()), depth=2)
        m.submodules.rd_split = rs = BurstSplitter(aw, self.beat_bytes, self.burst_beats)
        m.d.comb += [
            rd_cmd_q.w_en.eq(self.rd_cmd.valid), rd_cmd_q.w_data.eq(self.rd_cmd.payload),
            self.rd_cmd.ready.eq(rd_cmd_q.w_rdy),
            rs.i.valid.eq(rd_cmd_q.r_rdy), rs.i.payload.eq(rd_cmd_q.r_data), rd_cmd_q.r_en.eq(rs.i.ready),
        ]

        # Read tracking queue: one entry per burst, from its issue to its last beat.
        rtrack = data.StructLayout({"addr": aw, "len": 8, "final": 1, "reject": 1})
        m.submodules.rd_track = rt = SyncFIFO(width=rtrack.size, depth=self.max_reads)
        # Read buffer; its memory holds r_depth entries next to the output register (one spare
        # entry: SyncFIFOBuffered refuses a write while its memory is full).
        rbeat = read_beat_layout(self.data_width)
        m.submodules.rd_buf = rb = SyncFIFOBuffered(width=rbeat.size, depth=self.r_depth + 1)
        r_free = Signal(range(self.r_depth + 1), init=self.r_depth)    # beats not yet promised

        ar_valid = Signal()
        ar_free = ~ar_valid | axi.arready
        rb_ = rs.o.payload
        empty = rb_.beats == 0
        m.d.comb += rs.o.ready.eq(empty | (rt.w_rdy & (r_free >= rb_.beats) & (rb_.reject | ar_free)))
        r_issue = rs.o.valid & rs.o.ready & ~empty
        r_entry = Signal(rtrack)
        m.d.comb += [
            r_entry.addr.eq(rb_.addr), r_entry.len.eq(rb_.beats - 1),
            r_entry.final.eq(rb_.final), r_entry.reject.eq(rb_.reject),
            rt.w_en.eq(r_issue), rt.w_data.eq(r_entry),
        ]
        with m.If(axi.arready):
            m.d.sync += ar_valid.eq(0)
        with m.If(r_issue & ~rb_.reject):
            m.d.sync += [ar_valid.eq(1), axi.araddr.eq(rb_.addr), axi.arlen.eq(rb_.beats - 1)]
        m.d.comb += axi.arvalid.eq(ar_valid)

        # R → read buffer, beats counted against the head of the tracking queue.
        head = data.View(rtrack, rt.r_data)
        r_beat = Signal(8)
        beat_last = r_beat == head.len
        m.d.comb += axi.rready.eq(rt.r_rdy & ~head.reject & rb.w_rdy)
        r_take = axi.rvalid & axi.rready
        local_take = rt.r_rdy & head.reject & rb.w_rdy
        put = r_take | local_take
        r_word = Signal(rbeat)
        m.d.comb += [
            r_word.data.eq(Mux(head.reject, 0, axi.rdata)),
            r_word.last.eq(beat_last & head.final),
            r_word.err.eq(head.reject | (axi.rresp != Resp.OKAY)),
            rb.w_en.eq(put), rb.w_data.eq(r_word),
            rt.r_en.eq(put & beat_last),
        ]
        with m.If(put):
            m.d.sync += r_beat.eq(Mux(beat_last, 0, r_beat + 1))
        m.d.comb += [
            self.rd_data.valid.eq(rb.r_rdy), self.rd_data.payload.eq(rb.r_data),
            rb.r_en.eq(self.rd_data.ready),
        ]
        r_given = self.rd_data.valid & self.rd_data.ready
        m.d.sync += r_free.eq(r_free + r_given - Mux(r_issue, rb_.beats, 0))

        r_addr = (head.addr + (r_beat << s))[:aw]
        resp_code = lambda resp, slverr, decerr: Mux(resp == Resp.SLVERR, slverr,
                                                     Mux(resp == Resp.DECERR, decerr, ErrorCode.PROTOCOL))
        events.append((r_take & (axi.rresp != Resp.OKAY),
                       resp_code(axi.rresp, ErrorCode.RD_SLVERR, ErrorCode.RD_DECERR), r_addr))
        events.append((r_take & ((axi.rlast != beat_last) | (axi.rid != AXI_ID)), ErrorCode.PROTOCOL, r_addr))

        # ================================================================== write side
        m.submodules.wr_cmd_q = wr_cmd_q = SyncFIFO(width=len(self.wr_cmd.payload.as_value()), depth=2)
        m.submodules.wr_split = ws = BurstSplitter(aw, self.beat_bytes, self.burst_beats)
        m.d.comb += [
            wr_cmd_q.w_en.eq(self.wr_cmd.valid), wr_cmd_q.w_data.eq(self.wr_cmd.payload),
            self.wr_cmd.ready.eq(wr_cmd_q.w_rdy),
            ws.i.valid.eq(wr_cmd_q.r_rdy), ws.i.payload.eq(wr_cmd_q.r_data), wr_cmd_q.r_en.eq(ws.i.ready),
        ]
        wtrack = data.StructLayout({"len": 8, "reject": 1})
        btrack = data.StructLayout({"addr": aw, "final": 1, "reject": 1, "empty": 1})
        m.submodules.w_track = wt = SyncFIFO(width=wtrack.size, depth=self.max_writes)
        m.submodules.b_track = bt = SyncFIFO(width=btrack.size, depth=self.max_writes)
        m.submodules.wr_done_q = dq = SyncFIFO(width=WRITE_DONE_LAYOUT.size, depth=2)

        aw_valid = Signal()
        aw_free = ~aw_valid | axi.awready
        wb = ws.o.payload
        w_empty = wb.beats == 0
        m.d.comb += ws.o.ready.eq(bt.w_rdy & (w_empty | wt.w_rdy) & (wb.reject | aw_free))
        w_burst = ws.o.valid & ws.o.ready
        w_entry, b_entry = Signal(wtrack), Signal(btrack)
        m.d.comb += [
            w_entry.len.eq(wb.beats - 1), w_entry.reject.eq(wb.reject),
            wt.w_en.eq(w_burst & ~w_empty), wt.w_data.eq(w_entry),
            b_entry.addr.eq(wb.addr), b_entry.final.eq(wb.final), b_entry.reject.eq(wb.reject),
            b_entry.empty.eq(w_empty),
            bt.w_en.eq(w_burst), bt.w_data.eq(b_entry),
        ]
        with m.If(axi.awready):
            m.d.sync += aw_valid.eq(0)
        with m.If(w_burst & ~wb.reject):
            m.d.sync += [aw_valid.eq(1), axi.awaddr.eq(wb.addr), axi.awlen.eq(wb.beats - 1)]
        m.d.comb += axi.awvalid.eq(aw_valid)

        # wr_data → W register (or dropped, for a command error), beats counted per burst.
        whead = data.View(wtrack, wt.r_data)
        w_beat = Signal(8)
        w_last = w_beat == whead.len
        w_valid = Signal()
        w_load = ~w_valid | axi.wready
        m.d.comb += self.wr_data.ready.eq(wt.r_rdy & (whead.reject | w_load))
        w_take = self.wr_data.valid & self.wr_data.ready
        with m.If(w_load):
            m.d.sync += [w_valid.eq(w_take & ~whead.reject), axi.wdata.eq(w_data), axi.wlast.eq(w_last)]
            if self.strobes:
                m.d.sync += axi.wstrb.eq(self.wr_data.payload.strb)
        with m.If(w_take):
            m.d.sync += w_beat.eq(Mux(w_last, 0, w_beat + 1))
        m.d.comb += [axi.wvalid.eq(w_valid), wt.r_en.eq(w_take & w_last)]
        # Bursts of command errors whose beats were all dropped, not yet completed on the B side.
        dropped = Signal(range(self.max_writes + 1))

        # B responses (or command errors) → one completion per command.
        bhead = data.View(btrack, bt.r_data)
        m.d.comb += axi.bready.eq(bt.r_rdy & ~bhead.reject & dq.w_rdy)
        b_take = axi.bvalid & axi.bready
        local_done = bt.r_rdy & bhead.reject & dq.w_rdy & (bhead.empty | (dropped != 0))
        step = b_take | local_done
        cmd_err = Signal()                  # an earlier burst of the command failed
        burst_err = local_done | (b_take & (axi.bresp != Resp.OKAY))
        m.d.comb += [bt.r_en.eq(step), dq.w_en.eq(step & bhead.final), dq.w_data.eq(cmd_err | burst_err)]
        with m.If(step):
            m.d.sync += cmd_err.eq(Mux(bhead.final, 0, cmd_err | burst_err))
        m.d.sync += dropped.eq(dropped + (w_take & w_last & whead.reject) - (local_done & ~bhead.empty))
        m.d.comb += [self.wr_done.valid.eq(dq.r_rdy), self.wr_done.payload.eq(dq.r_data),
                     dq.r_en.eq(self.wr_done.ready)]

        events.append((b_take & (axi.bresp != Resp.OKAY),
                       resp_code(axi.bresp, ErrorCode.WR_SLVERR, ErrorCode.WR_DECERR), bhead.addr))
        events.append((b_take & (axi.bid != AXI_ID), ErrorCode.PROTOCOL, bhead.addr))
        events.append((rs.reject, ErrorCode.RD_CMD, rs.reject_addr))
        events.append((ws.reject, ErrorCode.WR_CMD, ws.reject_addr))

        # ================================================================== sticky error
        ev_code = C(ErrorCode.NONE, ErrorCode)
        ev_addr = C(0, aw)
        for cond, code, addr in reversed(events):
            ev_code = Mux(cond, code, ev_code)
            ev_addr = Mux(cond, addr, ev_addr)
        ev_any = Cat(cond for cond, _, _ in events).any()
        with m.If(ev_any & (~self.error | self.clear)):
            m.d.sync += [self.error.eq(1), self.err_code.eq(ev_code), self.err_addr.eq(ev_addr)]
        with m.Elif(self.clear):
            m.d.sync += [self.error.eq(0), self.err_code.eq(ErrorCode.NONE), self.err_addr.eq(0)]
        return m
