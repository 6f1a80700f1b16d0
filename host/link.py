"""Host side of the UART bridge: frame encoding, CRC, a reference model, and :class:`Link`.

Frame format (must match :mod:`nibble.hw.bridge`; all multi-byte fields little-endian)
------------------------------------------------------------------------------------

Request (host → device)::

    0xA5 | cmd (1) | addr (4, byte address) | len (2, bytes) | payload (len bytes, WRITE only) | crc8

Response (device → host)::

    0x5A | status (1) | len (2) | payload (len bytes) | crc8

``crc8`` is CRC-8 with polynomial 0x07, initial value 0x00, no reflection, no final XOR
(CRC-8/SMBUS; ``crc8(b"123456789") == 0xF4``), computed over every byte after the sync byte up to
the end of the payload (request: cmd..payload; response: status..payload).

Commands (:class:`Cmd`): ``WRITE`` (1) writes ``len`` bytes of payload at ``addr``; ``READ`` (2)
returns ``len`` bytes read from ``addr``; ``PING`` (3, ``len`` 0, ``addr`` ignored) answers OK.
Frames with any other command code carry no payload.

Status codes (:class:`Status`), checked in this order: ``BAD_CRC`` (1, the frame is not executed),
``UNKNOWN_COMMAND`` (2), ``BAD_LENGTH`` (4: ``len`` not a multiple of 4, zero for READ/WRITE,
above the device's ``max_payload``, or non-zero for PING), ``BAD_ADDRESS`` (3: ``addr`` not 4-byte
aligned, or any word of ``addr .. addr+len-1`` unmapped; nothing is written), ``OK`` (0).
Only an OK answer to READ has a payload; every other response has ``len`` 0.

Word ``k`` of a transfer is bus word address ``(addr >> 2) + k`` modulo 2**30; byte ``4k + j`` of the
payload is bits ``8j .. 8j+7`` of that word.

The device skips bytes other than 0xA5 between frames and abandons a frame whose bytes stop
arriving for more than 64 bit times. The protocol is strictly request/response: the host waits
for each response before sending the next request.
"""
import enum
import time
from dataclasses import dataclass

__all__ = [
    "REQUEST_SYNC", "RESPONSE_SYNC", "Cmd", "Status", "Response",
    "crc8", "encode_request", "decode_request", "encode_response", "decode_response",
    "BridgeModel", "LinkError", "LinkTimeout", "LinkCRCError", "DeviceError",
    "Link", "open_uart",
]

REQUEST_SYNC = 0xA5
RESPONSE_SYNC = 0x5A
#: Bytes of a request without payload: sync, cmd, addr(4), len(2), crc.
REQUEST_OVERHEAD = 9
#: Bytes of a response without payload: sync, status, len(2), crc.
RESPONSE_OVERHEAD = 5


class Cmd(enum.IntEnum):
    """Request command codes."""
    WRITE = 0x01
    READ = 0x02
    PING = 0x03


class Status(enum.IntEnum):
    """Response status codes."""
    OK = 0
    BAD_CRC = 1
    UNKNOWN_COMMAND = 2
    BAD_ADDRESS = 3
    BAD_LENGTH = 4


def _make_crc_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _make_crc_table()


def crc8(data, init=0):
    """CRC-8 (poly 0x07, init ``init``, no reflection, no final XOR) of ``data`` (bytes-like)."""
    crc = init
    for byte in data:
        crc = _CRC_TABLE[crc ^ byte]
    return crc


def _check_u32(addr):
    if not isinstance(addr, int) or not 0 <= addr < 1 << 32:
        raise ValueError(f"address must be an integer in 0..0xFFFFFFFF, not {addr!r}")


def encode_request(cmd, addr=0, *, payload=b"", length=None):
    """Encode one request frame.

    ``length`` defaults to ``len(payload)``; give it explicitly for READ (no payload). ``cmd`` may
    be any 0..255 value (unknown commands are useful in tests). Raises ``ValueError`` when
    ``addr`` is outside 0..2**32-1, ``length`` outside 0..65535, or ``cmd`` outside 0..255.
    No protocol checks (alignment, max_payload) are made: the device answers those.
    """
    payload = bytes(payload)
    if length is None:
        length = len(payload)
    if not isinstance(cmd, int) or not 0 <= cmd <= 0xFF:
        raise ValueError(f"command must be an integer in 0..255, not {cmd!r}")
    _check_u32(addr)
    if not isinstance(length, int) or not 0 <= length <= 0xFFFF:
        raise ValueError(f"length must be an integer in 0..65535, not {length!r}")
    body = bytes([cmd]) + addr.to_bytes(4, "little") + length.to_bytes(2, "little") + payload
    return bytes([REQUEST_SYNC]) + body + bytes([crc8(body)])


def decode_request(frame):
    """Decode one complete request frame into ``(cmd, addr, length, payload, crc_ok)``.

    The payload is present only for ``Cmd.WRITE``. Raises ``ValueError`` if ``frame`` does not
    start with 0xA5 or its size does not match its header.
    """
    frame = bytes(frame)
    if len(frame) < REQUEST_OVERHEAD or frame[0] != REQUEST_SYNC:
        raise ValueError(f"not a request frame: {frame[:16].hex()}")
    cmd = frame[1]
    addr = int.from_bytes(frame[2:6], "little")
    length = int.from_bytes(frame[6:8], "little")
    n_payload = length if cmd == Cmd.WRITE else 0
    if len(frame) != REQUEST_OVERHEAD + n_payload:
        raise ValueError(f"request frame of {len(frame)} bytes, header says {REQUEST_OVERHEAD + n_payload}")
    payload = frame[8:8 + n_payload]
    return cmd, addr, length, payload, crc8(frame[1:-1]) == frame[-1]


def encode_response(status, payload=b""):
    """Encode one response frame (the device's side; used by models and tests)."""
    payload = bytes(payload)
    body = bytes([int(status)]) + len(payload).to_bytes(2, "little") + payload
    return bytes([RESPONSE_SYNC]) + body + bytes([crc8(body)])


@dataclass(frozen=True)
class Response:
    """A decoded response: ``status`` (:class:`Status` or the raw int if unknown) and ``payload``."""
    status: int
    payload: bytes = b""


def _status_name(status):
    try:
        return f"{Status(status).name} ({int(status)})"
    except ValueError:
        return f"unknown status {int(status)}"


def decode_response(frame):
    """Decode one complete response frame.

    Raises :class:`LinkCRCError` on a CRC mismatch and :class:`LinkError` if the frame does not
    start with 0x5A or its size does not match its ``len`` field.
    """
    frame = bytes(frame)
    if len(frame) < RESPONSE_OVERHEAD or frame[0] != RESPONSE_SYNC:
        raise LinkError(f"not a response frame: {frame[:16].hex()}")
    length = int.from_bytes(frame[2:4], "little")
    if len(frame) != RESPONSE_OVERHEAD + length:
        raise LinkError(f"response frame of {len(frame)} bytes, header says {RESPONSE_OVERHEAD + length}")
    if crc8(frame[1:-1]) != frame[-1]:
        raise LinkCRCError(f"bad CRC in response: got 0x{frame[-1]:02x}, "
                           f"computed 0x{crc8(frame[1:-1]):02x}")
    status = frame[1]
    try:
        status = Status(status)
    except ValueError:
        pass
    return Response(status, frame[4:-1])


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

    :meth:`feed` takes request bytes and returns the response bytes the device sends, skipping
    garbage between frames exactly like the hardware. Frame abandonment on a timeout is modelled
    by :meth:`abandon` (the caller knows when the line went quiet).
    """

    def __init__(self, mapped, max_payload=1024, memory=None):
        self.mapped = mapped
        self.max_payload = max_payload
        self.memory = {} if memory is None else memory
        self._buf = bytearray()

    def abandon(self):
        """Drop a partially received frame (the device's inter-byte timeout expired)."""
        self._buf.clear()

    def feed(self, data):
        """Consume request bytes; return the concatenated responses of the completed frames."""
        out = bytearray()
        for byte in bytes(data):
            if not self._buf and byte != REQUEST_SYNC:
                continue
            self._buf.append(byte)
            if len(self._buf) >= 8:
                cmd = self._buf[1]
                length = int.from_bytes(self._buf[6:8], "little")
                total = REQUEST_OVERHEAD + (length if cmd == Cmd.WRITE else 0)
                if len(self._buf) == total:
                    out += self.execute(bytes(self._buf))
                    self._buf.clear()
        return bytes(out)

    def execute(self, frame):
        """Execute one complete request frame; return the response frame."""
        cmd, addr, length, payload, crc_ok = decode_request(frame)
        if not crc_ok:
            return encode_response(Status.BAD_CRC)
        if cmd not in (Cmd.WRITE, Cmd.READ, Cmd.PING):
            return encode_response(Status.UNKNOWN_COMMAND)
        if cmd == Cmd.PING:
            return encode_response(Status.OK if length == 0 else Status.BAD_LENGTH)
        if length == 0 or length % 4 or length > self.max_payload:
            return encode_response(Status.BAD_LENGTH)
        if addr % 4:
            return encode_response(Status.BAD_ADDRESS)
        words = [((addr >> 2) + k) % (1 << 30) for k in range(length // 4)]
        if not all(self.mapped(w) for w in words):
            return encode_response(Status.BAD_ADDRESS)
        if cmd == Cmd.WRITE:
            for k, w in enumerate(words):
                self.memory[w] = int.from_bytes(payload[4 * k:4 * k + 4], "little")
            return encode_response(Status.OK)
        data = b"".join(self.memory.get(w, 0).to_bytes(4, "little") for w in words)
        return encode_response(Status.OK, data)


class LinkError(Exception):
    """A transfer over the bridge failed (after retries where they apply)."""


class LinkTimeout(LinkError):
    """No complete response arrived in time."""


class LinkCRCError(LinkError):
    """A response arrived with a bad CRC (or a corrupted header)."""


class DeviceError(LinkError):
    """The device answered with a status other than OK. ``status`` holds the code."""

    def __init__(self, message, status):
        super().__init__(message)
        self.status = status


class Link:
    """Register/memory access to the device through the UART bridge.

    Parameters
    ----------
    stream : object with ``write(bytes)`` and ``read(n) -> bytes``
        The byte transport (``serial.Serial``, :class:`nibble.sim.verilator.SimDevice`, ...).
        A read returning fewer than ``n`` bytes is a timeout.
    max_payload : int
        Largest payload per frame; must equal the device's ``max_payload`` (a multiple of 4,
        4..65532). Longer transfers are split into frames of at most this size.
    retries : int
        Extra attempts per frame after a timeout, a response with a bad CRC, or a ``BAD_CRC``
        answer (the request was corrupted on the line). Writes are re-sent as well, so a retried
        write to a register with side effects may take effect twice.
    timeout_s : float
        Read timeout in seconds, set as ``stream.timeout`` when the stream has that attribute.
        It must cover the transmission of the longest response (``max_payload + 5`` bytes at
        10 bit times each: 0.09 s for 1 KiB at 115200 baud).

    Errors
    ------
    ``ValueError`` for unaligned addresses or lengths (before anything is sent);
    :class:`DeviceError` (a :class:`LinkError`) for any non-OK status other than ``BAD_CRC``
    (not retried: the request is wrong); :class:`LinkError` after ``retries + 1`` failed attempts,
    naming the operation, the address and the last failure.
    """

    def __init__(self, stream, max_payload=1024, retries=3, timeout_s=2.0):
        if not isinstance(max_payload, int) or max_payload % 4 or not 4 <= max_payload <= 65532:
            raise ValueError(f"max_payload must be a multiple of 4 in 4..65532, not {max_payload!r}")
        if not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be a non-negative integer, not {retries!r}")
        self.stream = stream
        self.max_payload = max_payload
        self.retries = retries
        self.timeout_s = timeout_s
        #: Total attempts that failed and were retried, for diagnostics.
        self.retried = 0
        if hasattr(stream, "timeout"):
            stream.timeout = timeout_s

    def close(self):
        """Close the underlying stream if it has a ``close`` method."""
        if hasattr(self.stream, "close"):
            self.stream.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- transport ---------------------------------------------------------------------------

    def _read_exact(self, n, what):
        data = self.stream.read(n)
        if len(data) < n:
            raise LinkTimeout(f"timeout waiting for the response to {what} "
                              f"(got {len(data)} of {n} bytes after {self.timeout_s} s)")
        return bytes(data)

    def _read_response(self, what):
        skipped = 0
        while True:
            byte = self._read_exact(1, what)[0]
            if byte == RESPONSE_SYNC:
                break
            skipped += 1
            if skipped > self.max_payload + RESPONSE_OVERHEAD:
                raise LinkCRCError(f"no response sync byte in {skipped} bytes received for {what}")
        header = self._read_exact(3, what)
        length = int.from_bytes(header[1:3], "little")
        if length > self.max_payload:
            raise LinkCRCError(f"corrupted response to {what}: length {length} > max_payload "
                               f"{self.max_payload}")
        rest = self._read_exact(length + 1, what)
        try:
            return decode_response(bytes([RESPONSE_SYNC]) + header + rest)
        except LinkCRCError as e:
            raise LinkCRCError(f"{e} to {what}") from None

    def _flush_input(self):
        reset = getattr(self.stream, "reset_input_buffer", None)
        if reset is not None:
            reset()

    def transact(self, frame, what):
        """Send one request frame and return its OK :class:`Response`, retrying as documented.

        ``what`` names the operation in error messages (e.g. ``"read of 16 bytes at 0x100"``).
        """
        last = None
        for attempt in range(self.retries + 1):
            if attempt:
                self.retried += 1
                self._flush_input()
            self.stream.write(frame)
            try:
                response = self._read_response(what)
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
        raise LinkError(f"{what} failed after {self.retries + 1} attempts: {last}") from last

    # -- operations --------------------------------------------------------------------------

    @staticmethod
    def _check_aligned(addr, n):
        _check_u32(addr)
        if addr % 4:
            raise ValueError(f"address 0x{addr:08x} is not 4-byte aligned")
        if n % 4:
            raise ValueError(f"length {n} is not a multiple of 4")

    def ping(self):
        """Check the link: send PING and wait for its OK answer. Raises :class:`LinkError`."""
        self.transact(encode_request(Cmd.PING, 0), "ping")

    def write(self, addr, data):
        """Write ``data`` (bytes, length a multiple of 4) at byte address ``addr`` (aligned).

        Split into frames of at most ``max_payload`` bytes, sent in address order; a failure
        raises :class:`LinkError` with earlier frames already written.
        """
        data = bytes(data)
        self._check_aligned(addr, len(data))
        for off in range(0, len(data), self.max_payload):
            chunk = data[off:off + self.max_payload]
            a = (addr + off) & 0xFFFFFFFF
            self.transact(encode_request(Cmd.WRITE, a, payload=chunk),
                          f"write of {len(chunk)} bytes at 0x{a:08x}")

    def read(self, addr, nbytes):
        """Read ``nbytes`` (a multiple of 4) from byte address ``addr`` (aligned); return bytes."""
        self._check_aligned(addr, nbytes)
        out = bytearray()
        for off in range(0, nbytes, self.max_payload):
            n = min(self.max_payload, nbytes - off)
            a = (addr + off) & 0xFFFFFFFF
            what = f"read of {n} bytes at 0x{a:08x}"
            response = self.transact(encode_request(Cmd.READ, a, length=n), what)
            if len(response.payload) != n:
                raise LinkError(f"{what}: device returned {len(response.payload)} bytes")
            out += response.payload
        return bytes(out)

    def write_u32(self, addr, value):
        """Write one 32-bit word ``value`` at byte address ``addr`` (aligned)."""
        if not isinstance(value, int) or not 0 <= value < 1 << 32:
            raise ValueError(f"value must be an integer in 0..0xFFFFFFFF, not {value!r}")
        self.write(addr, value.to_bytes(4, "little"))

    def read_u32(self, addr):
        """Read one 32-bit word at byte address ``addr`` (aligned)."""
        return int.from_bytes(self.read(addr, 4), "little")


def open_uart(port, baud, **link_kwargs):
    """Open serial port ``port`` at ``baud`` (8N1, no flow control) with pyserial; return a
    :class:`Link` over it. ``port`` is a device (``/dev/ttyUSB1``, ``COM3``) or a pyserial URL
    (``socket://host:port``, ``rfc2217://…``). ``link_kwargs`` go to :class:`Link`
    (``max_payload``, ``retries``, ``timeout_s``)."""
    import serial

    ser = serial.serial_for_url(port, baudrate=baud, bytesize=serial.EIGHTBITS,
                                parity=serial.PARITY_NONE, stopbits=serial.STOPBITS_ONE,
                                timeout=link_kwargs.get("timeout_s", 2.0))
    return Link(ser, **link_kwargs)
