"""Latency-tolerant memory ports: a request stream and an in-order response stream (DESIGN §4).

Every block of the engine reads memory through a :func:`read_port` and writes it through a
:func:`write_port`, so it works with any memory latency and back-pressure: an on-chip block RAM
behind a :class:`SyncReadPort`, or a path through the AXI4 master to DDR.

Rules of a read port (the requester's view, ``wiring.connect`` the two sides):

* ``req``: ``Out(stream.Signature(range(depth)))`` — word addresses, one per transfer.
* ``resp``: ``In(stream.Signature(width))`` — one word per request, in request order, any
  number of cycles later.
* A requester must be ready for the responses of every request it issued: it may hold
  ``resp.ready`` low, but only for as long as the memory can buffer (a :class:`SyncReadPort`
  buffers :attr:`SyncReadPort.depth` words), and its ``busy`` includes responses still due.

A write port has one stream ``req`` of ``{addr, data}``; a write is done when it is taken.
"""
from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

__all__ = ["read_port", "write_port", "write_layout", "SyncReadPort", "BurstReader", "burst_layout", "ReadPortMux"]


def read_port(depth, width):
    """Signature of a read port of a ``depth``-word, ``width``-bit memory (requester's view)."""
    return wiring.Signature({"req": Out(stream.Signature(range(depth))),
                             "resp": In(stream.Signature(width))})


def write_layout(depth, width):
    """Payload of a write request: ``addr`` (``range(depth)``) and ``data`` (``width`` bits)."""
    return data.StructLayout({"addr": range(depth), "data": width})


def write_port(depth, width):
    """Signature of a write port (requester's view): ``req`` of :func:`write_layout`."""
    return wiring.Signature({"req": Out(stream.Signature(write_layout(depth, width)))})


class SyncReadPort(wiring.Component):
    """A :func:`read_port` in front of a synchronous memory read port with one cycle of latency.

    Parameters: ``depth`` words of ``width`` bits; ``depth_buf`` (default 3) response words it
    can hold.

    Members:
      * ``bus``: ``In(read_port(depth, width))`` — the requester connects here.
      * ``addr``: ``Out(range(depth))``, ``en``: ``Out(1)``, ``data``: ``In(width)`` — to the
        memory's read port (``data`` one cycle after ``en``).
      * ``busy``: ``Out(1)`` — a request is in flight or a word is buffered.

    Latency: 2 cycles from a request's transfer to its response's ``valid`` (memory read, then
    the response FIFO). Throughput: one word per cycle while ``resp.ready`` is high (a request
    is taken while the words in flight plus buffered are fewer than ``depth_buf``; with the
    default 3 the port never stalls a requester that takes every response at once).
    Back-pressure: ``resp.ready`` low fills the FIFO, then ``req.ready`` falls.
    """

    def __init__(self, depth, width, depth_buf=3):
        if depth_buf < 2:
            raise ValueError(f"SyncReadPort needs a buffer of at least 2 words, not {depth_buf}")
        self.mem_depth, self.width, self.depth = depth, width, depth_buf
        super().__init__({
            "bus": In(read_port(depth, width)),
            "addr": Out(range(depth)), "en": Out(1), "data": In(width),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = fifo = SyncFIFO(width=self.width, depth=self.depth)
        inflight = Signal()
        room = Signal()
        m.d.comb += room.eq(fifo.level + inflight < self.depth)
        take = Signal()
        m.d.comb += [
            self.bus.req.ready.eq(room),
            take.eq(self.bus.req.valid & room),
            self.addr.eq(self.bus.req.payload), self.en.eq(take),
            fifo.w_en.eq(inflight), fifo.w_data.eq(self.data),
            self.bus.resp.valid.eq(fifo.r_rdy), self.bus.resp.payload.eq(fifo.r_data),
            fifo.r_en.eq(self.bus.resp.ready),
            self.busy.eq(inflight | fifo.r_rdy),
        ]
        m.d.sync += inflight.eq(take)
        return m


def burst_layout(depth, max_words):
    """Command of a :class:`BurstReader`: ``base`` (``range(depth)``) and ``n`` words (≥ 1)."""
    return data.StructLayout({"base": range(depth), "n": range(max_words + 1)})


class BurstReader(wiring.Component):
    """Reads ``n`` consecutive words from ``base`` through a :func:`read_port` and streams them.

    Parameters: ``depth`` words of ``width`` bits in the memory, ``max_words`` per command.

    Members:
      * ``cmd``: ``In(stream.Signature(burst_layout(depth, max_words)))`` — taken when no
        command is issuing (``n`` ≥ 1; a command with ``n`` = 0 is taken and reads nothing). A
        second command may be taken while the first one's responses are still due.
      * ``port``: ``Out(read_port(depth, width))``.
      * ``o``: ``Out(stream.Signature(width))`` — the words in address order, command after
        command (the memory's responses, passed through: ``o.ready`` is ``resp.ready``).
      * ``busy``: ``Out(1)`` — requests left to issue or responses still due.

    Latency: the memory's (a request per cycle from the cycle after ``cmd`` is taken; the words
    arrive as the memory answers). Throughput: one word per cycle. Source: DESIGN §4 (engine
    parts with stream ports that tolerate any memory latency).
    """

    def __init__(self, depth, width, max_words):
        self.mem_depth, self.width, self.max_words = depth, width, max_words
        super().__init__({
            "cmd": In(stream.Signature(burst_layout(depth, max_words))),
            "port": Out(read_port(depth, width)),
            "o": Out(stream.Signature(width)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        addr = Signal(range(self.mem_depth))
        left = Signal(range(self.max_words + 1))
        due = Signal(range(2 * self.max_words + 2))      # responses of issued requests not yet passed on
        req = self.port.req
        m.d.comb += [self.cmd.ready.eq(left == 0),
                     req.valid.eq(left != 0), req.payload.eq(addr),
                     self.o.valid.eq(self.port.resp.valid), self.o.payload.eq(self.port.resp.payload),
                     self.port.resp.ready.eq(self.o.ready),
                     self.busy.eq((left != 0) | (due != 0))]
        issued = req.valid & req.ready
        passed = self.o.valid & self.o.ready
        m.d.sync += due.eq(due + issued - passed)
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += [addr.eq(self.cmd.payload.base), left.eq(self.cmd.payload.n)]
        with m.Elif(issued):
            m.d.sync += [addr.eq(addr + 1), left.eq(left - 1)]
        return m


class ReadPortMux(wiring.Component):
    """``n`` requesters on one :func:`read_port`; each response returns to its requester.

    Parameters: ``n`` requesters, ``depth`` words of ``width`` bits, ``outstanding`` (default 4)
    requests in flight at most (a request is taken only while the owner FIFO has room; 4 keeps
    one request per cycle behind a :class:`SyncReadPort`).

    Members: ``c0`` … ``c{n−1}``: ``In(read_port(depth, width))``; ``bus``:
    ``Out(read_port(depth, width))``.

    The lowest-numbered requester with a request goes first. The owner of every request is kept
    in a FIFO in request order and the memory's responses (in order) go to the owner at its head.
    Latency 0 (combinational in both directions). Source: DESIGN §4 (one memory shared by the
    engine's parts through stream ports).
    """

    def __init__(self, n, depth, width, outstanding=4):
        if n < 1:
            raise ValueError(f"ReadPortMux needs at least one requester, not {n}")
        self.n, self.outstanding = n, outstanding
        super().__init__({**{f"c{i}": In(read_port(depth, width)) for i in range(n)},
                          "bus": Out(read_port(depth, width))})

    def elaborate(self, platform):
        m = Module()
        n = self.n
        cs = [getattr(self, f"c{i}") for i in range(n)]
        m.submodules.owners = owners = SyncFIFO(width=max(1, (n - 1).bit_length()), depth=self.outstanding)
        pick = Signal(range(max(n, 2)))
        for i in reversed(range(n)):
            with m.If(cs[i].req.valid):
                m.d.comb += pick.eq(i)
        bus = self.bus
        m.d.comb += [bus.req.valid.eq(Cat(c.req.valid for c in cs).any() & owners.w_rdy),
                     bus.req.payload.eq(Array(c.req.payload for c in cs)[pick]),
                     owners.w_en.eq(bus.req.valid & bus.req.ready), owners.w_data.eq(pick)]
        head = owners.r_data
        for i, c in enumerate(cs):
            m.d.comb += [c.req.ready.eq(bus.req.ready & owners.w_rdy & (pick == i)),
                         c.resp.valid.eq(bus.resp.valid & owners.r_rdy & (head == i)),
                         c.resp.payload.eq(bus.resp.payload)]
        m.d.comb += [bus.resp.ready.eq(owners.r_rdy & Array(c.resp.ready for c in cs)[head]),
                     owners.r_en.eq(bus.resp.valid & bus.resp.ready)]
        return m
