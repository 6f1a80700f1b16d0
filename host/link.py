"""Host side of the host-link protocol: frames, CRC-32, a reference model and :class:`Link`.

The protocol (version 2) is specified once, in :mod:`nibble.hw.isa` (frame layout, commands,
status codes, CRC-32/ISO-HDLC, sequence numbers, retry-safe writes); the gateware is
:mod:`nibble.hw.bridge`. This module encodes and decodes frames, models the device side
(:class:`BridgeModel`, the reference the gateware is tested against) and implements the host's
rules in :class:`Link`:

* every new request gets the next 16-bit sequence number; its retries keep it;
* a response is delivered only if its CRC is good and its ``seq`` is the outstanding request's:
  a late response to an earlier request is read and discarded (``Link.stale`` counts them);
* a lost, late or corrupted response, or a ``BAD_CRC`` answer, is retried with the same frame,
  reads and writes alike: the device executes a repeated write only once (it answers the
  stored status), so the start write cannot run the engine twice;
* the device's last executed ``seq`` is learned with PING when the link is first used and after
  a failed transaction, so the next request never repeats a number the device remembers;
* after a failed attempt, later frames are shorter (halved down to :data:`MIN_FRAME_PAYLOAD`
  bytes, grown back after :data:`GROW_AFTER` clean transactions), so a noisy line still
  carries long transfers.
"""
import inspect
import zlib
from dataclasses import dataclass

from .transport import Transport
from ..hw.isa import (CRC_BYTES, DEFAULT_MAX_PAYLOAD, LINK_VERSION, PING_WORDS, REQUEST_HEADER,
                      REQUEST_OVERHEAD, REQUEST_SYNC, RESPONSE_HEADER, RESPONSE_OVERHEAD,
                      RESPONSE_SYNC, SEQ_BITS, Cmd, Status)

__all__ = [
    "REQUEST_SYNC", "RESPONSE_SYNC", "REQUEST_OVERHEAD", "RESPONSE_OVERHEAD", "Cmd", "Status",
    "Response", "crc32", "encode_request", "decode_request", "encode_response", "decode_response",
    "BridgeModel", "LinkError", "LinkTimeout", "LinkCRCError", "DeviceError",
    "Link", "open_uart", "MIN_FRAME_PAYLOAD", "GROW_AFTER",
]

SEQ_MASK = (1 << SEQ_BITS) - 1
#: Shortest frame payload the link falls back to on a noisy line (bytes).
MIN_FRAME_PAYLOAD = 16
#: Clean transactions after which the frame payload is doubled again (up to ``max_payload``).
GROW_AFTER = 16


def crc32(data):
    """CRC-32/ISO-HDLC of ``data`` (bytes-like): ``zlib.crc32`` (:data:`nibble.hw.isa.CRC32`)."""
    return zlib.crc32(bytes(data)) & 0xFFFFFFFF


def _check_u32(addr):
    if not isinstance(addr, int) or not 0 <= addr < 1 << 32:
        raise ValueError(f"address must be an integer in 0..0xFFFFFFFF, not {addr!r}")


def _check_seq(seq):
    if not isinstance(seq, int) or not 0 <= seq <= SEQ_MASK:
        raise ValueError(f"sequence number must be an integer in 0..{SEQ_MASK}, not {seq!r}")


def _seal(body):
    return bytes(body) + crc32(body).to_bytes(CRC_BYTES, "little")


def encode_request(cmd, addr=0, *, seq=0, payload=b"", length=None):
    """Encode one request frame (``0xA5 | cmd | seq | addr | len | payload | crc32``).

    ``length`` defaults to ``len(payload)``; give it explicitly for READ (no payload). ``cmd`` may
    be any 0..255 value (unknown commands are useful in tests). Raises ``ValueError`` when
    ``addr`` is outside 0..2**32-1, ``length`` outside 0..65535, ``seq`` outside 0..65535 or
    ``cmd`` outside 0..255. No protocol checks (alignment, max_payload) are made: the device
    answers those.
    """
    payload = bytes(payload)
    if length is None:
        length = len(payload)
    if not isinstance(cmd, int) or not 0 <= cmd <= 0xFF:
        raise ValueError(f"command must be an integer in 0..255, not {cmd!r}")
    _check_u32(addr)
    _check_seq(seq)
    if not isinstance(length, int) or not 0 <= length <= 0xFFFF:
        raise ValueError(f"length must be an integer in 0..65535, not {length!r}")
    body = (bytes([cmd]) + seq.to_bytes(2, "little") + addr.to_bytes(4, "little")
            + length.to_bytes(2, "little") + payload)
    return bytes([REQUEST_SYNC]) + _seal(body)


@dataclass(frozen=True)
class Request:
    """A decoded request frame."""
    cmd: int
    seq: int
    addr: int
    length: int
    payload: bytes
    crc_ok: bool


def decode_request(frame):
    """Decode one complete request frame into a :class:`Request`.

    The payload is present only for ``Cmd.WRITE``. Raises ``ValueError`` if ``frame`` does not
    start with 0xA5 or its size does not match its header.
    """
    frame = bytes(frame)
    if len(frame) < REQUEST_OVERHEAD or frame[0] != REQUEST_SYNC:
        raise ValueError(f"not a request frame: {frame[:16].hex()}")
    cmd = frame[1]
    seq = int.from_bytes(frame[2:4], "little")
    addr = int.from_bytes(frame[4:8], "little")
    length = int.from_bytes(frame[8:10], "little")
    n_payload = length if cmd == Cmd.WRITE else 0
    if len(frame) != REQUEST_OVERHEAD + n_payload:
        raise ValueError(f"request frame of {len(frame)} bytes, header says {REQUEST_OVERHEAD + n_payload}")
    payload = frame[1 + REQUEST_HEADER:1 + REQUEST_HEADER + n_payload]
    crc_ok = crc32(frame[1:-CRC_BYTES]) == int.from_bytes(frame[-CRC_BYTES:], "little")
    return Request(cmd, seq, addr, length, payload, crc_ok)


def encode_response(status, payload=b"", *, seq=0):
    """Encode one response frame (``0x5A | status | seq | len | payload | crc32``; the device's
    side, used by models and tests)."""
    payload = bytes(payload)
    _check_seq(seq)
    body = bytes([int(status)]) + seq.to_bytes(2, "little") + len(payload).to_bytes(2, "little") + payload
    return bytes([RESPONSE_SYNC]) + _seal(body)


@dataclass(frozen=True)
class Response:
    """A decoded response: ``status`` (:class:`Status` or the raw int if unknown), ``payload``
    and the echoed ``seq``."""
    status: int
    payload: bytes = b""
    seq: int = 0


def _status_name(status):
    try:
        return f"{Status(status).name} ({int(status)})"
    except ValueError:
        return f"unknown status {int(status)}"


def decode_response(frame):
    """Decode one complete response frame into a :class:`Response`.

    Raises :class:`LinkCRCError` on a CRC mismatch and :class:`LinkError` if the frame does not
    start with 0x5A or its size does not match its ``len`` field.
    """
    frame = bytes(frame)
    if len(frame) < RESPONSE_OVERHEAD or frame[0] != RESPONSE_SYNC:
        raise LinkError(f"not a response frame: {frame[:16].hex()}")
    length = int.from_bytes(frame[4:6], "little")
    if len(frame) != RESPONSE_OVERHEAD + length:
        raise LinkError(f"response frame of {len(frame)} bytes, header says {RESPONSE_OVERHEAD + length}")
    got = int.from_bytes(frame[-CRC_BYTES:], "little")
    want = crc32(frame[1:-CRC_BYTES])
    if got != want:
        raise LinkCRCError(f"bad CRC in response: got 0x{got:08x}, computed 0x{want:08x}")
    status = frame[1]
    try:
        status = Status(status)
    except ValueError:
        pass
    seq = int.from_bytes(frame[2:4], "little")
    return Response(status, frame[1 + RESPONSE_HEADER:-CRC_BYTES], seq)


class BridgeModel:
    """Reference model of the device side of the bridge (the golden model for tests).

    Parameters
    ----------
    mapped : callable(word_addr) -> bool
        Whether a bus word address (0 .. 2**30-1) is mapped (the inverse of ``addr_err``).
    max_payload : int
        Largest ``len`` accepted, a multiple of 4.
    memory : dict, optional
        Word address → 32-bit value; unmapped words read as 0 if present in neither.
    on_write : callable(word_addr, value), optional
        Called for every word the bus writes (after ``memory`` is updated): a register with
        side effects in tests (e.g. a start register that counts).

    :meth:`feed` takes request bytes and returns the response bytes the device sends, skipping
    garbage between frames exactly like the hardware. Frame abandonment on a timeout is modelled
    by :meth:`abandon` (the caller knows when the line went quiet). ``executed`` counts the
    frames that reached the bus (READ or WRITE executed, not repeated).
    """

    def __init__(self, mapped, max_payload=DEFAULT_MAX_PAYLOAD, memory=None, on_write=None):
        self.mapped = mapped
        self.max_payload = max_payload
        self.memory = {} if memory is None else memory
        self.on_write = on_write
        self.last = None                # (seq, cmd, status) of the last executed request
        self.executed = 0
        self._buf = bytearray()

    def abandon(self):
        """Drop a partially received frame (the device's inter-byte timeout expired)."""
        self._buf.clear()

    @property
    def receiving(self):
        """Whether a frame is partly received."""
        return bool(self._buf)

    def feed(self, data):
        """Consume request bytes; return the concatenated responses of the completed frames."""
        out = bytearray()
        for byte in bytes(data):
            if not self._buf and byte != REQUEST_SYNC:
                continue
            self._buf.append(byte)
            if len(self._buf) >= 1 + REQUEST_HEADER:
                cmd = self._buf[1]
                length = int.from_bytes(self._buf[8:10], "little")
                total = REQUEST_OVERHEAD + (length if cmd == Cmd.WRITE else 0)
                if len(self._buf) == total:
                    out += self.execute(bytes(self._buf))
                    self._buf.clear()
        return bytes(out)

    def _status(self, r):
        if r.cmd not in (Cmd.WRITE, Cmd.READ):
            return Status.UNKNOWN_COMMAND, None
        if r.length == 0 or r.length % 4 or r.length > self.max_payload:
            return Status.BAD_LENGTH, None
        if r.addr % 4:
            return Status.BAD_ADDRESS, None
        words = [((r.addr >> 2) + k) % (1 << 30) for k in range(r.length // 4)]
        if not all(self.mapped(w) for w in words):
            return Status.BAD_ADDRESS, None
        return Status.OK, words

    def execute(self, frame):
        """Execute one complete request frame; return the response frame."""
        r = decode_request(frame)
        if not r.crc_ok:
            return encode_response(Status.BAD_CRC, seq=r.seq)
        if r.cmd == Cmd.PING:
            if r.length:
                return encode_response(Status.BAD_LENGTH, seq=r.seq)
            last_seq, valid = (self.last[0], 1) if self.last else (0, 0)
            words = [LINK_VERSION | self.max_payload << 16, last_seq | valid << 16]
            assert len(words) == PING_WORDS
            return encode_response(Status.OK, b"".join(w.to_bytes(4, "little") for w in words),
                                   seq=r.seq)
        if r.cmd == Cmd.WRITE and self.last and self.last[:2] == (r.seq, Cmd.WRITE):
            return encode_response(self.last[2], seq=r.seq)          # repeated: not executed
        status, words = self._status(r)
        self.last = (r.seq, r.cmd, status)
        if status != Status.OK:
            return encode_response(status, seq=r.seq)
        self.executed += 1
        if r.cmd == Cmd.WRITE:
            for k, w in enumerate(words):
                value = int.from_bytes(r.payload[4 * k:4 * k + 4], "little")
                self.memory[w] = value
                if self.on_write:
                    self.on_write(w, value)
            return encode_response(Status.OK, seq=r.seq)
        data = b"".join(self.memory.get(w, 0).to_bytes(4, "little") for w in words)
        return encode_response(Status.OK, data, seq=r.seq)


class LinkError(Exception):
    """A transfer over the link failed (after retries where they apply)."""


class LinkTimeout(LinkError):
    """No complete response arrived in time."""


class LinkCRCError(LinkError):
    """A response arrived with a bad CRC (or a corrupted header)."""


class DeviceError(LinkError):
    """The device answered with a status other than OK. ``status`` holds the code."""

    def __init__(self, message, status):
        super().__init__(message)
        self.status = status


class Link(Transport):
    """Register/memory access to the device through the host-link protocol (a
    :class:`nibble.host.transport.Transport`: ``wait`` returns at once, the driver polls).

    Parameters
    ----------
    stream : object with ``write(bytes)`` and ``read(n) -> bytes``
        The byte transport (``serial.Serial``, :class:`nibble.sim.verilator.SimDevice`, ...).
        A read returning fewer than ``n`` bytes is a timeout. Each frame is one ``write``.
    max_payload : int, optional
        Largest payload per frame (a multiple of 4, 4..65532); by default the device's, learned
        with PING. A value above the device's is an error. Longer transfers are split.
    retries : int
        Extra attempts per frame after a timeout, a response with a bad CRC, or a ``BAD_CRC``
        answer (default 8). Writes are safe to retry (see the module docstring).
    timeout_s : float or None
        Read timeout in seconds, set as ``stream.timeout`` when the stream has that attribute
        (a real board: it must cover the longest response, ``max_payload + 10`` bytes at 10 bit
        times each, 0.09 s for 1 KiB at 115200 baud). ``None`` leaves the stream's own timeout
        (the simulated device times out on simulated cycles, not wall time).

    Errors
    ------
    ``ValueError`` for unaligned addresses or lengths (before anything is sent);
    :class:`DeviceError` (a :class:`LinkError`) for any non-OK status other than ``BAD_CRC``
    (not retried: the request is wrong); :class:`LinkError` after ``retries + 1`` failed attempts,
    naming the operation, the address and the last failure; a :class:`LinkError` when the device
    speaks another protocol version.

    Counters: ``retried`` (attempts that failed and were retried), ``stale`` (responses
    discarded for a wrong ``seq``), ``frames`` (requests sent, retries included), ``syncs``.
    """

    def __init__(self, stream, max_payload=None, retries=8, timeout_s=2.0):
        if max_payload is not None and (not isinstance(max_payload, int) or max_payload % 4
                                        or not 4 <= max_payload <= 65532):
            raise ValueError(f"max_payload must be a multiple of 4 in 4..65532, not {max_payload!r}")
        if not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be a non-negative integer, not {retries!r}")
        self.stream = stream
        self.requested_payload = max_payload
        self.max_payload = max_payload or DEFAULT_MAX_PAYLOAD
        self.frame_payload = self.max_payload
        self.retries = retries
        self.timeout_s = timeout_s
        self.retried = self.stale = self.frames = self.syncs = 0
        self.bytes_read = self.bytes_written = 0
        self.device_payload = None
        self._seq = 0
        self._synced = False
        self._clean = 0
        if timeout_s is not None and hasattr(stream, "timeout"):
            stream.timeout = timeout_s

    def close(self, kill=False):
        """Close the underlying stream if it has a ``close`` method (passing ``kill`` to a
        simulated device: end it at once, after an error or an interrupt)."""
        close = getattr(self.stream, "close", None)
        if close is not None:
            if kill and "kill" in inspect.signature(close).parameters:
                close(kill=True)
            else:
                close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- transport ---------------------------------------------------------------------------

    def _read_exact(self, n, what):
        data = self.stream.read(n)
        if len(data) < n:
            after = f" after {self.timeout_s} s" if self.timeout_s is not None else ""
            raise LinkTimeout(f"timeout waiting for the response to {what} "
                              f"(got {len(data)} of {n} bytes{after})")
        return bytes(data)

    def _read_frame(self, what):
        skipped = 0
        while True:
            byte = self._read_exact(1, what)[0]
            if byte == RESPONSE_SYNC:
                break
            skipped += 1
            if skipped > self.max_payload + RESPONSE_OVERHEAD:
                raise LinkCRCError(f"no response sync byte in {skipped} bytes received for {what}")
        header = self._read_exact(RESPONSE_HEADER, what)
        length = int.from_bytes(header[3:5], "little")
        if length > self.max_payload:
            raise LinkCRCError(f"corrupted response to {what}: length {length} > max_payload "
                               f"{self.max_payload}")
        rest = self._read_exact(length + CRC_BYTES, what)
        try:
            return decode_response(bytes([RESPONSE_SYNC]) + header + rest)
        except LinkCRCError as e:
            raise LinkCRCError(f"{e} to {what}") from None

    def _read_response(self, seq, what):
        """The response with ``seq``; responses to earlier requests are discarded."""
        while True:
            response = self._read_frame(what)
            if response.seq == seq:
                return response
            self.stale += 1

    def _flush_input(self):
        reset = getattr(self.stream, "reset_input_buffer", None)
        if reset is not None:
            reset()

    def _attempts(self, frame, seq, what):
        last = None
        for attempt in range(self.retries + 1):
            if attempt:
                self.retried += 1
                self._clean = 0
                self.frame_payload = max(MIN_FRAME_PAYLOAD, self.frame_payload // 2)
                self._flush_input()
            self.frames += 1
            self.stream.write(frame)
            try:
                response = self._read_response(seq, what)
            except (LinkTimeout, LinkCRCError) as e:
                last = e
                continue
            if response.status == Status.OK:
                return response
            if response.status == Status.BAD_CRC:
                last = DeviceError(f"device reported BAD_CRC (1) for {what}", response.status)
                continue
            raise DeviceError(f"device answered {_status_name(response.status)} to {what}",
                              response.status)
        self._synced = False
        raise LinkError(f"{what} failed after {self.retries + 1} attempts: {last}") from last

    def _next_seq(self):
        seq = self._seq
        self._seq = (self._seq + 1) & SEQ_MASK
        return seq

    def _sync(self):
        """PING: check the protocol version and payload size, continue after the device's
        last executed sequence number."""
        seq = self._next_seq()
        response = self._attempts(encode_request(Cmd.PING, seq=seq), seq, "ping")
        if len(response.payload) != 4 * PING_WORDS:
            raise LinkError(f"ping: device returned {len(response.payload)} bytes, "
                            f"expected {4 * PING_WORDS}")
        w0 = int.from_bytes(response.payload[:4], "little")
        w1 = int.from_bytes(response.payload[4:8], "little")
        if w0 & 0xFF != LINK_VERSION:
            raise LinkError(f"the device speaks link protocol version {w0 & 0xFF}, "
                            f"this host version {LINK_VERSION}")
        self.device_payload = w0 >> 16
        if self.requested_payload is not None and self.requested_payload > self.device_payload:
            raise LinkError(f"max_payload {self.requested_payload} is above the device's "
                            f"{self.device_payload}")
        self.max_payload = self.requested_payload or self.device_payload
        self.frame_payload = min(self.frame_payload, self.max_payload)
        if w1 >> 16 & 1:
            self._seq = ((w1 & SEQ_MASK) + 1) & SEQ_MASK
        self._synced = True
        self.syncs += 1

    def transact(self, cmd, addr, what, *, payload=b"", length=None):
        """Send one request (a new ``seq``) and return its OK :class:`Response`, retrying as
        documented. ``what`` names the operation in error messages (e.g. ``"read of 16 bytes at
        0x00000100"``)."""
        if not self._synced:
            self._sync()
        seq = self._next_seq()
        frame = encode_request(cmd, addr, seq=seq, payload=payload, length=length)
        response = self._attempts(frame, seq, what)
        self._clean += 1
        if self._clean >= GROW_AFTER and self.frame_payload < self.max_payload:
            self.frame_payload = min(self.max_payload, 2 * self.frame_payload)
            self._clean = 0
        return response

    # -- operations --------------------------------------------------------------------------

    @staticmethod
    def _check_aligned(addr, n):
        _check_u32(addr)
        if addr % 4:
            raise ValueError(f"address 0x{addr:08x} is not 4-byte aligned")
        if n % 4:
            raise ValueError(f"length {n} is not a multiple of 4")

    def ping(self):
        """Check the link: PING, the protocol version and the payload size. Raises
        :class:`LinkError`."""
        self._sync()

    def write(self, addr, data):
        """Write ``data`` (bytes, length a multiple of 4) at byte address ``addr`` (aligned).

        Split into frames of at most ``frame_payload`` bytes, sent in address order; a failure
        raises :class:`LinkError` with earlier frames already written (each exactly once).
        """
        data = bytes(data)
        self._check_aligned(addr, len(data))
        off = 0
        while off < len(data):
            if not self._synced:
                self._sync()
            chunk = data[off:off + self.frame_payload]
            a = (addr + off) & 0xFFFFFFFF
            self.transact(Cmd.WRITE, a, f"write of {len(chunk)} bytes at 0x{a:08x}", payload=chunk)
            off += len(chunk)
            self.bytes_written += len(chunk)

    def read(self, addr, nbytes):
        """Read ``nbytes`` (a multiple of 4) from byte address ``addr`` (aligned); return bytes."""
        self._check_aligned(addr, nbytes)
        out = bytearray()
        while len(out) < nbytes:
            if not self._synced:
                self._sync()
            n = min(self.frame_payload, nbytes - len(out))
            a = (addr + len(out)) & 0xFFFFFFFF
            what = f"read of {n} bytes at 0x{a:08x}"
            response = self.transact(Cmd.READ, a, what, length=n)
            if len(response.payload) != n:
                raise LinkError(f"{what}: device returned {len(response.payload)} bytes")
            out += response.payload
            self.bytes_read += n
        return bytes(out)

    def write_u32(self, addr, value):
        """Write one 32-bit word ``value`` at byte address ``addr`` (aligned)."""
        if not isinstance(value, int) or not 0 <= value < 1 << 32:
            raise ValueError(f"value must be an integer in 0..0xFFFFFFFF, not {value!r}")
        self.write(addr, value.to_bytes(4, "little"))

    def read_u32(self, addr):
        """Read one 32-bit word at byte address ``addr`` (aligned)."""
        return int.from_bytes(self.read(addr, 4), "little")


def open_uart(port, baud, timeout_s=2.0, **link_kwargs):
    """Open serial port ``port`` at ``baud`` (8N1, no flow control) with pyserial; return a
    :class:`Link` over it. ``port`` is a device (``/dev/ttyUSB1``, ``COM3``) or a pyserial URL
    (``socket://host:port``, ``rfc2217://…``). ``timeout_s`` (seconds) is the read timeout;
    ``link_kwargs`` go to :class:`Link` (``max_payload``, ``retries``)."""
    import serial

    ser = serial.serial_for_url(port, baudrate=baud, bytesize=serial.EIGHTBITS,
                                parity=serial.PARITY_NONE, stopbits=serial.STOPBITS_ONE,
                                timeout=timeout_s)
    return Link(ser, timeout_s=timeout_s, **link_kwargs)
