"""UART bridge: host frames over a serial line → accesses on the internal bus (:mod:`.bus`).

Frame protocol (the host side is :mod:`nibble.host.link`; all multi-byte fields little-endian)
---------------------------------------------------------------------------------------------

Request (host → device)::

    0xA5 | cmd (1) | addr (4, byte address) | len (2, bytes) | payload (len bytes, WRITE only) | crc8

Response (device → host)::

    0x5A | status (1) | len (2) | payload (len bytes) | crc8

``crc8``: CRC-8, polynomial 0x07, init 0x00, not reflected, no final XOR (CRC-8/SMBUS), over every
byte after the sync byte up to the end of the payload (request: cmd..payload; response:
status..payload).

======  =======  ================================================================================
cmd     name     action
======  =======  ================================================================================
0x01    WRITE    write ``len`` payload bytes as ``len / 4`` words from ``addr``
0x02    READ     answer with ``len`` bytes read as ``len / 4`` words from ``addr``
0x03    PING     answer OK without payload (``len`` must be 0, ``addr`` is ignored)
other   —        answered UNKNOWN_COMMAND; such frames carry no payload
======  =======  ================================================================================

Status, decided in this order once the CRC byte has arrived:

====  ===============  ==========================================================================
1     BAD_CRC          the CRC does not match; nothing is executed
2     UNKNOWN_COMMAND  ``cmd`` is not 1, 2 or 3
4     BAD_LENGTH       READ/WRITE: ``len`` is 0, not a multiple of 4, or above ``max_payload``;
                       PING: ``len`` is not 0
3     BAD_ADDRESS      ``addr`` is not 4-byte aligned, or ``bus.addr_err`` is set for any word
                       of the range (all words are checked before the first access)
0     OK               executed; a READ answer carries ``len`` bytes, every other answer none
====  ===============  ==========================================================================

Word ``k`` of a transfer is bus word address ``(addr >> 2) + k`` (modulo 2**30); payload bytes
``4k .. 4k+3`` are that word, least significant byte first.

Behaviour:

* Bytes other than 0xA5 are skipped while no frame is in progress.
* A frame is abandoned (back to waiting for 0xA5, no response) when no byte arrives for
  ``64 * divisor`` cycles (64 bit times) while it is incomplete, so a lost byte never blocks the
  link; the host's retry then finds the bridge idle.
* WRITE payloads are stored in a buffer of ``max_payload / 4`` words as they arrive and written
  to the bus only after the CRC matched and every word of the range passed the ``addr_err``
  check: a corrupted or refused frame changes nothing. A WRITE with a bad ``len`` still has its
  ``len`` payload bytes consumed (not stored) so the stream stays in step.
* READ words are read one at a time over the bus (``r_en`` → ``r_valid`` after
  :data:`~.bus.READ_LATENCY` cycles) while the response is sent, each ahead of its bytes.
* The protocol is strictly request/response: the host waits for a response before sending the
  next request. Bytes received meanwhile are queued (16 bytes of FIFO plus the receiver's output
  register) and parsed afterwards.

Line rate: within a request the parser takes one byte per cycle, far above the line rate, so
requests may be sent back-to-back at full line rate. Responses are sent at full line rate.
"""
from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .bus import ADDR_BITS, BusSignature
from .uart import UARTRx, UARTTx, check_divisor

__all__ = ["UARTBridge", "REQUEST_SYNC", "RESPONSE_SYNC", "TIMEOUT_BITS", "RX_FIFO_DEPTH",
           "crc8_update"]

REQUEST_SYNC = 0xA5
RESPONSE_SYNC = 0x5A
#: An incomplete frame is abandoned after this many bit times without a byte.
TIMEOUT_BITS = 64
#: Bytes queued between the receiver and the frame parser.
RX_FIFO_DEPTH = 16
#: Cycles from the receiver's ``o.valid`` to the parser taking the byte (an empty FIFO).
RX_FIFO_LATENCY = 2

_CMD_WRITE, _CMD_READ, _CMD_PING = 0x01, 0x02, 0x03
_ST_OK, _ST_BAD_CRC, _ST_BAD_CMD, _ST_BAD_ADDR, _ST_BAD_LEN = 0, 1, 2, 3, 4


def _crc8_matrix():
    # CRC-8 (poly 0x07) of one byte is linear in x = crc ^ byte: output bit j is the XOR of the
    # bits of x listed in row j.
    rows = [[] for _ in range(8)]
    for i in range(8):
        c = 1 << i
        for _ in range(8):
            c = ((c << 1) ^ 0x07) & 0xFF if c & 0x80 else (c << 1) & 0xFF
        for j in range(8):
            if c >> j & 1:
                rows[j].append(i)
    return rows


_CRC8_ROWS = _crc8_matrix()


def crc8_update(crc, byte):
    """Amaranth expression: CRC-8 (poly 0x07, MSB first, not reflected) register ``crc`` after
    one ``byte`` (an XOR network of depth 3)."""
    x = crc ^ byte
    bits = []
    for row in _CRC8_ROWS:
        bit = C(0, 1)
        for i in row:
            bit = bit ^ x[i]
        bits.append(bit)
    return Cat(*bits)


class UARTBridge(wiring.Component):
    """Bus master driven by request frames on a UART (protocol in the module docstring).

    Parameters
    ----------
    divisor : int
        Clock cycles per bit of the serial line, at least 4.
    max_payload : int
        Largest ``len`` of one frame in bytes, a multiple of 4 in 4..65532 (default 1024). Sets the
        write buffer size: ``max_payload / 4`` words of 32 bits.

    Members
    -------
    rx : In(1), init 1
        Serial line from the host (idle high); synchronised inside.
    tx : Out(1), init 1
        Serial line to the host (idle high), registered.
    bus : Out(BusSignature())
        Internal bus master (:mod:`.bus`). ``w_en`` and ``r_en`` are only raised for words whose
        ``addr_err`` was checked low.
    idle : Out(1)
        1 when no byte is being received or queued, no frame is in progress and nothing is being
        sent: the bridge will do nothing until the next start bit on ``rx``.

    Latency, in cycles (``n = len / 4``):

    * receive: a byte is taken by the parser ``UARTRx.latency + 2``
      (``9 * divisor + divisor // 2 + 5``) cycles after its start bit begins on ``rx``;
    * execute, from the cycle the CRC byte is taken to the cycle the response's sync byte is
      offered to the transmitter: 2 for PING and frames refused without a bus check,
      ``k + 3`` when word ``k`` of the range has ``addr_err``, ``n + 2`` for READ (then each
      word is read, ``1 + READ_LATENCY`` cycles, before its 4 bytes are sent) and
      ``2 * n + 3`` for WRITE (``n`` ``addr_err`` checks, one buffer read, ``n`` bus writes);
    * transmit: the sync byte's start bit appears on ``tx`` 1 cycle after it is offered
      (``UARTTx.latency``); the response then runs at full line rate, ``10 * divisor`` cycles
      per byte.

    Throughput: requests are accepted at full line rate; one request is executed at a time.

    Raises
    ------
    ValueError
        ``"UART divisor must be an integer >= 4, not ..."`` or
        ``"max_payload must be a multiple of 4 in 4..65532, not ..."``.
    """

    rx: In(1, init=1)
    tx: Out(1, init=1)
    bus: Out(BusSignature())
    idle: Out(1)

    def __init__(self, divisor, max_payload=1024):
        self.divisor = check_divisor(divisor)
        if (not isinstance(max_payload, int) or isinstance(max_payload, bool)
                or max_payload % 4 or not 4 <= max_payload <= 65532):
            raise ValueError(f"max_payload must be a multiple of 4 in 4..65532, not {max_payload!r}")
        self.max_payload = max_payload
        super().__init__()

    def response_latency(self, cmd, n_words=0, ok=True, addr_err_at=None):
        """Cycles from the first cycle of a request's CRC byte start bit on ``rx`` to the first
        cycle of the response's start bit on ``tx``, for an idle bridge.

        ``cmd``: 1 (WRITE), 2 (READ) or anything else; ``n_words = len / 4``; ``ok``: whether a
        WRITE/READ passes all checks (one refused before the bus check answers as fast as a
        PING); ``addr_err_at``: index of the first word with ``addr_err``, for a frame refused
        by the bus check.
        """
        execute = 2
        if addr_err_at is not None:
            execute = addr_err_at + 3
        elif ok and cmd == _CMD_WRITE:
            execute = 2 * n_words + 3
        elif ok and cmd == _CMD_READ:
            execute = n_words + 2
        receive = UARTRx(self.divisor).latency + RX_FIFO_LATENCY
        return receive + execute + UARTTx(self.divisor).latency

    @property
    def timeout_cycles(self):
        """Cycles without a byte after which an incomplete frame is abandoned."""
        return TIMEOUT_BITS * self.divisor

    def elaborate(self, platform):
        m = Module()
        max_words = self.max_payload // 4

        m.submodules.uart_rx = urx = UARTRx(self.divisor)
        m.submodules.uart_tx = utx = UARTTx(self.divisor)
        m.submodules.rx_fifo = fifo = SyncFIFOBuffered(width=8, depth=RX_FIFO_DEPTH)
        m.submodules.buffer = buf = Memory(shape=32, depth=max_words, init=[])
        w_port = buf.write_port()
        r_port = buf.read_port()

        m.d.comb += [
            urx.rx.eq(self.rx),
            self.tx.eq(utx.tx),
            fifo.w_data.eq(urx.o.payload),
            fifo.w_en.eq(urx.o.valid),
            urx.o.ready.eq(fifo.w_rdy),
        ]

        in_byte = fifo.r_data
        in_valid = fifo.r_rdy
        take = Signal()                             # consume in_byte this cycle
        m.d.comb += fifo.r_en.eq(take)
        got = Signal()
        m.d.comb += got.eq(take & in_valid)

        crc = Signal(8)
        crc_next = Signal(8)
        hdr = Signal(56)                            # cmd, addr (4), len (2), little-endian
        hdr_next = Signal(56)
        tx_stream = utx.i
        tx_crc_next = Signal(8)
        m.d.comb += [
            crc_next.eq(crc8_update(crc, in_byte)),
            tx_crc_next.eq(crc8_update(crc, tx_stream.payload)),
            hdr_next.eq(Cat(hdr[8:], in_byte)),
        ]
        cmd = hdr[0:8]
        addr = hdr[8:40]
        length = hdr[40:56]
        n_words = length[2:]
        base = addr[2:2 + ADDR_BITS]

        count = Signal(16)                          # header / payload byte index
        word = Signal(32)                           # payload word being assembled
        crc_ok = Signal()
        status = Signal(3)
        k = Signal(range(max_words + 1))            # word index for check / commit / read
        k_last = Signal()
        m.d.comb += k_last.eq(k == n_words - 1)
        timeout = Signal(range(self.timeout_cycles + 1))
        rdata = Signal(32)
        byte_ix = Signal(2)
        resp_len = Signal(16)

        m.d.comb += [
            self.bus.addr.eq((base + k)[:ADDR_BITS]),
            self.bus.w_data.eq(r_port.data),
            w_port.addr.eq(count[2:]),
            w_port.data.eq(Cat(word[8:], in_byte)),
        ]

        receiving = Signal()
        with m.If(receiving & ~got):
            m.d.sync += timeout.eq(timeout + 1)
        with m.Else():
            m.d.sync += timeout.eq(0)
        timed_out = Signal()
        m.d.comb += timed_out.eq(timeout == self.timeout_cycles)

        with m.FSM(name="bridge_fsm") as fsm:
            with m.State("IDLE"):
                m.d.comb += take.eq(1)
                with m.If(got & (in_byte == REQUEST_SYNC)):
                    m.d.sync += [crc.eq(0), count.eq(0)]
                    m.next = "HEADER"

            with m.State("HEADER"):
                m.d.comb += [take.eq(1), receiving.eq(1)]
                with m.If(got):
                    m.d.sync += [crc.eq(crc_next), hdr.eq(hdr_next), count.eq(count + 1)]
                    with m.If(count == 6):
                        m.d.sync += count.eq(0)
                        with m.If((hdr_next[0:8] == _CMD_WRITE) & (hdr_next[40:56] != 0)):
                            m.next = "PAYLOAD"
                        with m.Else():
                            m.next = "CRC"
                with m.Elif(timed_out):
                    m.next = "IDLE"

            with m.State("PAYLOAD"):
                m.d.comb += [take.eq(1), receiving.eq(1)]
                with m.If(got):
                    m.d.sync += [
                        crc.eq(crc_next),
                        word.eq(Cat(word[8:], in_byte)),
                        count.eq(count + 1),
                    ]
                    m.d.comb += w_port.en.eq((count[:2] == 3) & (count < self.max_payload))
                    with m.If(count == length - 1):
                        m.next = "CRC"
                with m.Elif(timed_out):
                    m.next = "IDLE"

            with m.State("CRC"):
                m.d.comb += [take.eq(1), receiving.eq(1)]
                with m.If(got):
                    m.d.sync += crc_ok.eq(in_byte == crc)
                    m.next = "DECIDE"
                with m.Elif(timed_out):
                    m.next = "IDLE"

            with m.State("DECIDE"):
                m.d.sync += [k.eq(0), resp_len.eq(0)]
                bad_len = (length == 0) | (length[:2] != 0) | (length > self.max_payload)
                with m.If(~crc_ok):
                    m.d.sync += status.eq(_ST_BAD_CRC)
                    m.next = "RESP_SYNC"
                with m.Elif(cmd == _CMD_PING):
                    m.d.sync += status.eq(Mux(length == 0, _ST_OK, _ST_BAD_LEN))
                    m.next = "RESP_SYNC"
                with m.Elif((cmd != _CMD_WRITE) & (cmd != _CMD_READ)):
                    m.d.sync += status.eq(_ST_BAD_CMD)
                    m.next = "RESP_SYNC"
                with m.Elif(bad_len):
                    m.d.sync += status.eq(_ST_BAD_LEN)
                    m.next = "RESP_SYNC"
                with m.Elif(addr[:2] != 0):
                    m.d.sync += status.eq(_ST_BAD_ADDR)
                    m.next = "RESP_SYNC"
                with m.Else():
                    m.d.sync += status.eq(_ST_OK)
                    m.next = "CHECK"

            with m.State("CHECK"):                  # addr_err for every word, no access
                with m.If(self.bus.addr_err):
                    m.d.sync += status.eq(_ST_BAD_ADDR)
                    m.next = "RESP_SYNC"
                with m.Elif(k_last):
                    m.d.sync += k.eq(0)
                    with m.If(cmd == _CMD_WRITE):
                        m.next = "PRIME"
                    with m.Else():
                        m.d.sync += resp_len.eq(length)
                        m.next = "RESP_SYNC"
                with m.Else():
                    m.d.sync += k.eq(k + 1)

            with m.State("PRIME"):                  # buffer word 0 → r_port.data
                m.d.comb += r_port.addr.eq(0)
                m.next = "COMMIT"

            with m.State("COMMIT"):                 # one word per cycle
                m.d.comb += [
                    r_port.addr.eq(k + 1),
                    self.bus.w_en.eq(1),
                ]
                with m.If(k_last):
                    m.next = "RESP_SYNC"
                with m.Else():
                    m.d.sync += k.eq(k + 1)

            with m.State("RESP_SYNC"):
                m.d.comb += [tx_stream.valid.eq(1), tx_stream.payload.eq(RESPONSE_SYNC)]
                with m.If(tx_stream.ready):
                    m.d.sync += [crc.eq(0), k.eq(0)]
                    m.next = "RESP_STATUS"

            # The remaining response states send one byte each and fold it into the CRC.

            with m.State("RESP_STATUS"):
                m.d.comb += [tx_stream.valid.eq(1), tx_stream.payload.eq(status)]
                with m.If(tx_stream.ready):
                    m.d.sync += crc.eq(tx_crc_next)
                    m.next = "RESP_LEN0"

            with m.State("RESP_LEN0"):
                m.d.comb += [tx_stream.valid.eq(1), tx_stream.payload.eq(resp_len[:8])]
                with m.If(tx_stream.ready):
                    m.d.sync += crc.eq(tx_crc_next)
                    m.next = "RESP_LEN1"

            with m.State("RESP_LEN1"):
                m.d.comb += [tx_stream.valid.eq(1), tx_stream.payload.eq(resp_len[8:])]
                with m.If(tx_stream.ready):
                    m.d.sync += crc.eq(tx_crc_next)
                    with m.If(resp_len != 0):
                        m.next = "READ_ISSUE"
                    with m.Else():
                        m.next = "RESP_CRC"

            with m.State("READ_ISSUE"):
                m.d.comb += self.bus.r_en.eq(1)
                m.next = "READ_WAIT"

            with m.State("READ_WAIT"):
                with m.If(self.bus.r_valid):
                    m.d.sync += [rdata.eq(self.bus.r_data), byte_ix.eq(0)]
                    m.next = "READ_SEND"

            with m.State("READ_SEND"):
                m.d.comb += [tx_stream.valid.eq(1), tx_stream.payload.eq(rdata[:8])]
                with m.If(tx_stream.ready):
                    m.d.sync += [
                        crc.eq(tx_crc_next),
                        rdata.eq(rdata >> 8),
                        byte_ix.eq(byte_ix + 1),
                    ]
                    with m.If(byte_ix == 3):
                        with m.If(k_last):
                            m.next = "RESP_CRC"
                        with m.Else():
                            m.d.sync += k.eq(k + 1)
                            m.next = "READ_ISSUE"

            with m.State("RESP_CRC"):
                m.d.comb += [tx_stream.valid.eq(1), tx_stream.payload.eq(crc)]
                with m.If(tx_stream.ready):
                    m.next = "IDLE"

        m.d.comb += self.idle.eq(
            fsm.ongoing("IDLE") & (fifo.level == 0) & ~urx.busy & ~urx.o.valid & ~utx.busy)

        return m
