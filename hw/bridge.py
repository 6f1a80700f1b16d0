"""UART bridge: host frames over a serial line → accesses on the internal bus (:mod:`.bus`).

The frame protocol (version 2: sequence numbers, CRC-32, retry-safe writes) is specified once,
in :mod:`nibble.hw.isa`; the host side is :mod:`nibble.host.link`, whose ``BridgeModel`` is
the reference model this gateware is tested against. In short::

    request:  0xA5 | cmd | seq (2) | addr (4) | len (2) | payload (WRITE) | crc32 (4)
    response: 0x5A | status | seq (2) | len (2) | payload (READ, PING) | crc32 (4)

Behaviour:

* Bytes other than 0xA5 are skipped while no frame is in progress.
* A frame is abandoned (back to waiting for 0xA5, no response) when no byte arrives for
  ``TIMEOUT_BITS * divisor`` cycles while it is incomplete, so a lost byte never blocks the
  link; the host's retry then finds the bridge idle.
* The CRC is checked by feeding the received CRC bytes through the same CRC register
  (``amaranth.lib.crc``) and testing for the algorithm's residue.
* WRITE payloads are stored in a buffer of ``max_payload / 4`` words as they arrive and written
  to the bus only after the CRC matched, the frame is not a repetition of the last executed
  WRITE (same ``seq``) and every word of the range passed the ``addr_err`` check: a corrupted,
  repeated or refused frame changes nothing. A WRITE with a bad ``len`` still has its ``len``
  payload bytes consumed (not stored) so the stream stays in step.
* The last executed request's ``seq``, command and status are kept in registers (cleared by
  reset); a repeated WRITE is answered with the stored status. PING reports them.
* READ words are read one at a time over the bus (``r_en`` → ``r_valid`` after
  :data:`~.bus.READ_LATENCY` cycles) while the response is sent, each ahead of its bytes.
* Bytes received while a frame is executed or answered are queued (16 bytes of FIFO plus the
  receiver's output register) and parsed afterwards.

Line rate: within a request the parser takes one byte per cycle, far above the line rate, so
requests may be sent back-to-back at full line rate. Responses are sent at full line rate.
"""
from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.crc import Algorithm
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .bus import ADDR_BITS, BusSignature
from .isa import (CRC32, CRC_BYTES, DEFAULT_MAX_PAYLOAD, LINK_VERSION, PING_WORDS, REQUEST_HEADER,
                  REQUEST_SYNC, RESPONSE_HEADER, RESPONSE_SYNC, SEQ_BITS, TIMEOUT_BITS, Cmd, Status)
from .uart import UARTRx, UARTTx, check_divisor

__all__ = ["UARTBridge", "RX_FIFO_DEPTH", "RX_FIFO_LATENCY"]

#: Bytes queued between the receiver and the frame parser.
RX_FIFO_DEPTH = 16
#: Cycles from the receiver's ``o.valid`` to the parser taking the byte (an empty FIFO).
RX_FIFO_LATENCY = 2


def _crc_parameters():
    return Algorithm(**CRC32)(data_width=8)


class UARTBridge(wiring.Component):
    """Bus master driven by request frames on a UART (protocol in :mod:`nibble.hw.isa`).

    Parameters
    ----------
    divisor : int
        Clock cycles per bit of the serial line, at least 4.
    max_payload : int
        Largest ``len`` of one frame in bytes, a multiple of 4 in 4..65532 (default 1024). Sets the
        write buffer size: ``max_payload / 4`` words of 32 bits.

    phy : ``"uart"`` or ``"stream"``
        The physical layer. ``"uart"``: the 8N1 serial pins ``rx``/``tx`` (a board).
        ``"stream"``: byte streams ``i``/``o`` instead of the UART (the simulated device: the
        same frames, one byte per cycle instead of ``10 * divisor`` cycles).

    Members
    -------
    rx : In(1), init 1
        (``phy="uart"``) Serial line from the host (idle high); synchronised inside.
    tx : Out(1), init 1
        (``phy="uart"``) Serial line to the host (idle high), registered.
    i : In(stream.Signature(8))
        (``phy="stream"``) Bytes from the host.
    o : Out(stream.Signature(8))
        (``phy="stream"``) Bytes to the host.
    bus : Out(BusSignature())
        Internal bus master (:mod:`.bus`). ``w_en`` and ``r_en`` are only raised for words whose
        ``addr_err`` was checked low.
    idle : Out(1)
        1 when no byte is being received or queued, no frame is in progress and nothing is being
        sent: the bridge will do nothing until the next start bit on ``rx``.

    Latency, in cycles (``n = len / 4``):

    * receive: a byte is taken by the parser ``UARTRx.latency + 2``
      (``9 * divisor + divisor // 2 + 5``) cycles after its start bit begins on ``rx``;
    * execute, from the cycle the last CRC byte is taken to the cycle the response's sync byte
      is offered to the transmitter: 2 for PING, a repeated WRITE and frames refused without a
      bus check, ``k + 3`` when word ``k`` of the range has ``addr_err``, ``n + 2`` for READ
      (then each word is read, ``1 + READ_LATENCY`` cycles, before its 4 bytes are sent) and
      ``2 * n + 3`` for WRITE (``n`` ``addr_err`` checks, one buffer read, ``n`` bus writes);
    * transmit: the sync byte's start bit appears on ``tx`` 1 cycle after it is offered
      (``UARTTx.latency``); the response then runs at full line rate, ``10 * divisor`` cycles
      per byte. (With ``phy="stream"``: bytes are taken from ``i`` and offered on ``o`` at up to
      one per cycle.)

    Throughput: requests are accepted at full line rate; one request is executed at a time.

    Raises
    ------
    ValueError
        ``"UART divisor must be an integer >= 4, not ..."``,
        ``"max_payload must be a multiple of 4 in 4..65532, not ..."`` or
        ``"phy must be 'uart' or 'stream', not ..."``.
    """

    def __init__(self, divisor, max_payload=DEFAULT_MAX_PAYLOAD, *, phy="uart"):
        self.divisor = check_divisor(divisor)
        if (not isinstance(max_payload, int) or isinstance(max_payload, bool)
                or max_payload % 4 or not 4 <= max_payload <= 65532):
            raise ValueError(f"max_payload must be a multiple of 4 in 4..65532, not {max_payload!r}")
        if phy not in ("uart", "stream"):
            raise ValueError(f"phy must be 'uart' or 'stream', not {phy!r}")
        self.max_payload = max_payload
        self.phy = phy
        members = {"bus": Out(BusSignature()), "idle": Out(1)}
        if phy == "uart":
            members.update(rx=In(1, init=1), tx=Out(1, init=1))
        else:
            members.update(i=In(stream.Signature(8)), o=Out(stream.Signature(8)))
        super().__init__(members)

    def response_latency(self, cmd, n_words=0, ok=True, addr_err_at=None):
        """Cycles from the first cycle of a request's last CRC byte start bit on ``rx`` to the
        first cycle of the response's start bit on ``tx``, for an idle bridge.

        ``cmd``: 1 (WRITE), 2 (READ) or anything else; ``n_words = len / 4``; ``ok``: whether a
        WRITE/READ passes all checks and is executed (one refused before the bus check, or a
        repeated WRITE, answers as fast as a PING); ``addr_err_at``: index of the first word
        with ``addr_err``, for a frame refused by the bus check.
        """
        execute = 2
        if addr_err_at is not None:
            execute = addr_err_at + 3
        elif ok and cmd == Cmd.WRITE:
            execute = 2 * n_words + 3
        elif ok and cmd == Cmd.READ:
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

        m.submodules.rx_fifo = fifo = SyncFIFOBuffered(width=8, depth=RX_FIFO_DEPTH)
        if self.phy == "uart":
            m.submodules.uart_rx = urx = UARTRx(self.divisor)
            m.submodules.uart_tx = utx = UARTTx(self.divisor)
            m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx)]
            rx_bytes, tx_stream = urx.o, utx.i
            phy_busy = urx.busy | urx.o.valid | utx.busy
        else:
            rx_bytes, tx_stream = self.i, self.o
            phy_busy = self.i.valid
        m.submodules.buffer = buf = Memory(shape=32, depth=max_words, init=[])
        m.submodules.rx_crc = rx_crc = _crc_parameters().create()
        m.submodules.tx_crc = tx_crc = _crc_parameters().create()
        w_port = buf.write_port()
        r_port = buf.read_port()

        m.d.comb += [
            fifo.w_data.eq(rx_bytes.payload),
            fifo.w_en.eq(rx_bytes.valid),
            rx_bytes.ready.eq(fifo.w_rdy),
        ]

        in_byte = fifo.r_data
        in_valid = fifo.r_rdy
        take = Signal()                             # consume in_byte this cycle
        m.d.comb += fifo.r_en.eq(take)
        got = Signal()
        m.d.comb += got.eq(take & in_valid)

        hdr_bits = 8 * REQUEST_HEADER
        hdr = Signal(hdr_bits)                      # cmd, seq (2), addr (4), len (2), little-endian
        hdr_next = Signal(hdr_bits)
        m.d.comb += [
            hdr_next.eq(Cat(hdr[8:], in_byte)),
            rx_crc.data.eq(in_byte),
            tx_crc.data.eq(tx_stream.payload),
        ]
        cmd = hdr[0:8]
        seq = hdr[8:8 + SEQ_BITS]
        addr = hdr[24:56]
        length = hdr[56:72]
        n_words = length[2:]
        base = addr[2:2 + ADDR_BITS]

        count = Signal(16)                          # header / payload / CRC byte index
        word = Signal(32)                           # payload word being assembled
        crc_ok = Signal()
        status = Signal(3)
        k = Signal(range(max(max_words, PING_WORDS) + 1))   # word index: check / commit / send
        k_last = Signal()
        m.d.comb += k_last.eq(k == n_words - 1)
        timeout = Signal(range(self.timeout_cycles + 1))
        rdata = Signal(32)
        byte_ix = Signal(2)
        resp_len = Signal(16)
        resp_last = Signal()
        m.d.comb += resp_last.eq(k == resp_len[2:] - 1)
        is_ping = Signal()

        # The last executed request (not PING, CRC good, not a repetition): retry-safe writes.
        have_last = Signal()
        last_seq = Signal(SEQ_BITS)
        last_write = Signal()
        last_status = Signal(3)
        record = Signal()                           # the frame being answered is remembered

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

        ping_word = [C(LINK_VERSION | self.max_payload << 16, 32),
                     Cat(last_seq, have_last, C(0, 32 - SEQ_BITS - 1))]
        assert len(ping_word) == PING_WORDS

        resp_hdr = Cat(status, C(0, 5), seq, resp_len)      # status, seq (2), len (2)
        assert len(resp_hdr) == 8 * RESPONSE_HEADER

        with m.FSM(name="bridge_fsm") as fsm:
            with m.State("IDLE"):
                m.d.comb += take.eq(1)
                with m.If(got & (in_byte == REQUEST_SYNC)):
                    m.d.comb += rx_crc.start.eq(1)
                    m.d.sync += count.eq(0)
                    m.next = "HEADER"

            with m.State("HEADER"):
                m.d.comb += [take.eq(1), receiving.eq(1), rx_crc.valid.eq(got)]
                with m.If(got):
                    m.d.sync += [hdr.eq(hdr_next), count.eq(count + 1)]
                    with m.If(count == REQUEST_HEADER - 1):
                        m.d.sync += count.eq(0)
                        with m.If((hdr_next[0:8] == Cmd.WRITE) & (hdr_next[56:72] != 0)):
                            m.next = "PAYLOAD"
                        with m.Else():
                            m.next = "CRC"
                with m.Elif(timed_out):
                    m.next = "IDLE"

            with m.State("PAYLOAD"):
                m.d.comb += [take.eq(1), receiving.eq(1), rx_crc.valid.eq(got)]
                with m.If(got):
                    m.d.sync += [word.eq(Cat(word[8:], in_byte)), count.eq(count + 1)]
                    m.d.comb += w_port.en.eq((count[:2] == 3) & (count < self.max_payload))
                    with m.If(count == length - 1):
                        m.d.sync += count.eq(0)
                        m.next = "CRC"
                with m.Elif(timed_out):
                    m.next = "IDLE"

            with m.State("CRC"):
                m.d.comb += [take.eq(1), receiving.eq(1), rx_crc.valid.eq(got)]
                with m.If(got):
                    m.d.sync += count.eq(count + 1)
                    with m.If(count == CRC_BYTES - 1):
                        m.next = "DECIDE"
                with m.Elif(timed_out):
                    m.next = "IDLE"

            with m.State("DECIDE"):                 # rx_crc has taken every byte of the frame
                m.d.sync += [k.eq(0), resp_len.eq(0), is_ping.eq(0), record.eq(0)]
                bad_len = (length == 0) | (length[:2] != 0) | (length > self.max_payload)
                repeated = have_last & last_write & (seq == last_seq)
                with m.If(~rx_crc.match_detected):
                    m.d.sync += status.eq(Status.BAD_CRC)
                    m.next = "RESP_SYNC"
                with m.Elif(cmd == Cmd.PING):
                    with m.If(length == 0):
                        m.d.sync += [status.eq(Status.OK), is_ping.eq(1),
                                     resp_len.eq(4 * PING_WORDS)]
                    with m.Else():
                        m.d.sync += status.eq(Status.BAD_LENGTH)
                    m.next = "RESP_SYNC"
                with m.Elif((cmd == Cmd.WRITE) & repeated):
                    m.d.sync += status.eq(last_status)
                    m.next = "RESP_SYNC"
                with m.Else():
                    m.d.sync += record.eq(1)
                    with m.If((cmd != Cmd.WRITE) & (cmd != Cmd.READ)):
                        m.d.sync += status.eq(Status.UNKNOWN_COMMAND)
                        m.next = "RESP_SYNC"
                    with m.Elif(bad_len):
                        m.d.sync += status.eq(Status.BAD_LENGTH)
                        m.next = "RESP_SYNC"
                    with m.Elif(addr[:2] != 0):
                        m.d.sync += status.eq(Status.BAD_ADDRESS)
                        m.next = "RESP_SYNC"
                    with m.Else():
                        m.d.sync += status.eq(Status.OK)
                        m.next = "CHECK"

            with m.State("CHECK"):                  # addr_err for every word, no access
                with m.If(self.bus.addr_err):
                    m.d.sync += status.eq(Status.BAD_ADDRESS)
                    m.next = "RESP_SYNC"
                with m.Elif(k_last):
                    m.d.sync += k.eq(0)
                    with m.If(cmd == Cmd.WRITE):
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
                    m.d.comb += tx_crc.start.eq(1)
                    m.d.sync += [k.eq(0), count.eq(0)]
                    with m.If(record):
                        m.d.sync += [have_last.eq(1), last_seq.eq(seq),
                                     last_write.eq(cmd == Cmd.WRITE), last_status.eq(status)]
                    m.next = "RESP_HDR"

            # The header and payload states send one byte each and fold it into the CRC.

            with m.State("RESP_HDR"):
                m.d.comb += [tx_stream.valid.eq(1),
                             tx_stream.payload.eq(resp_hdr.word_select(count[:3], 8)),
                             tx_crc.valid.eq(tx_stream.ready)]
                with m.If(tx_stream.ready):
                    m.d.sync += count.eq(count + 1)
                    with m.If(count == RESPONSE_HEADER - 1):
                        m.d.sync += count.eq(0)
                        with m.If(resp_len != 0):
                            m.next = "READ_ISSUE"
                        with m.Else():
                            m.next = "RESP_CRC"

            with m.State("READ_ISSUE"):
                with m.If(is_ping):
                    m.d.sync += [rdata.eq(Mux(k == 0, ping_word[0], ping_word[1])), byte_ix.eq(0)]
                    m.next = "READ_SEND"
                with m.Else():
                    m.d.comb += self.bus.r_en.eq(1)
                    m.next = "READ_WAIT"

            with m.State("READ_WAIT"):
                with m.If(self.bus.r_valid):
                    m.d.sync += [rdata.eq(self.bus.r_data), byte_ix.eq(0)]
                    m.next = "READ_SEND"

            with m.State("READ_SEND"):
                m.d.comb += [tx_stream.valid.eq(1), tx_stream.payload.eq(rdata[:8]),
                             tx_crc.valid.eq(tx_stream.ready)]
                with m.If(tx_stream.ready):
                    m.d.sync += [rdata.eq(rdata >> 8), byte_ix.eq(byte_ix + 1)]
                    with m.If(byte_ix == 3):
                        with m.If(resp_last):
                            m.next = "RESP_CRC"
                        with m.Else():
                            m.d.sync += k.eq(k + 1)
                            m.next = "READ_ISSUE"

            with m.State("RESP_CRC"):               # tx_crc.crc is final: no byte is added now
                m.d.comb += [tx_stream.valid.eq(1),
                             tx_stream.payload.eq(tx_crc.crc.word_select(count[:2], 8))]
                with m.If(tx_stream.ready):
                    m.d.sync += count.eq(count + 1)
                    with m.If(count == CRC_BYTES - 1):
                        m.next = "IDLE"

        m.d.comb += self.idle.eq(
            fsm.ongoing("IDLE") & (fifo.level == 0) & ~phy_busy)

        return m
