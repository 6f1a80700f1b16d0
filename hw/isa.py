"""The device's interface facts, defined once: the host-link protocol (DESIGN §4, §6).

Everything a host needs to talk to the accelerator and everything the gateware implements of
it comes from here: the gateware (:mod:`nibble.hw.bridge`, :mod:`nibble.hw.accelerator`), the
host (:mod:`nibble.host.link`, :mod:`nibble.host.driver`), the exported register map and the
tests import these names; none of the numbers is written anywhere else. Pure Python (no
Amaranth), so the host may import it.

Host-link protocol, version 2 (:data:`LINK_VERSION`)
====================================================

All multi-byte fields are little-endian. Request (host → device)::

    0xA5 | cmd (1) | seq (2) | addr (4, byte address) | len (2, bytes) | payload (len, WRITE only) | crc (4)

Response (device → host)::

    0x5A | status (1) | seq (2) | len (2) | payload (len bytes) | crc (4)

``crc`` is CRC-32/ISO-HDLC (:data:`CRC32`: the CRC of Ethernet, zip and ``zlib.crc32``) over
every byte after the sync byte up to the end of the payload, sent least significant byte first.
Its Hamming distance is 4 for frames of up to 91,607 bits (Koopman, "32-bit cyclic redundancy
codes for Internet applications", DSN 2002, table 1), far above the longest frame here
(``(max_payload + 14) · 8`` = 8,304 bits at the default 1,024-byte payload), so every frame with
1, 2 or 3 flipped bits is detected, as is every error burst of up to 32 bits; any other
corruption passes with probability 2⁻³². ``tests/test_link.py`` checks the distance for the
longest frame by computing ``xⁱ mod G``.

``seq`` is a 16-bit sequence number chosen by the host; the response echoes it. The host
increments it for every new request and keeps it for the retries of one request, and it
discards (never delivers) a response whose ``seq`` is not that of the request it waits for.

Commands (:class:`Cmd`):

* ``WRITE`` (1): write ``len`` payload bytes as ``len / 4`` bus words from ``addr``.
* ``READ`` (2): answer with ``len`` bytes read as ``len / 4`` words from ``addr``. Reads have no
  side effects on any register, so a repeated READ is executed again.
* ``PING`` (3, ``len`` 0): answer OK with :data:`PING_WORDS` words: word 0 = ``LINK_VERSION |
  max_payload << 16``; word 1 = the ``seq`` of the last executed request ``| 1 << 16`` once a
  request has been executed since reset (bit 16 is 0 before). PING changes nothing.

Retry-safe writes: the device remembers the ``seq``, command and status of the last request
it executed (any command but PING, CRC good). A WRITE whose ``seq`` equals that of the last
executed request, itself a WRITE, is not executed again: it is answered with the stored status.
So a write whose response was lost or corrupted can be re-sent with its ``seq`` and takes effect
exactly once — the engine's start write cannot run the engine twice. The host learns the
device's last ``seq`` with PING when it opens the link (and after a failed transaction) and
continues from the next number, so a new host process never collides with the remembered one.

Status codes (:class:`Status`), decided in this order: ``BAD_CRC`` (the frame is not executed
and not remembered), PING (``OK``, or ``BAD_LENGTH`` if ``len`` ≠ 0), a repeated WRITE (the
stored status), ``UNKNOWN_COMMAND``, ``BAD_LENGTH`` (``len`` 0, not a multiple of 4, or above
``max_payload``), ``BAD_ADDRESS`` (``addr`` not aligned, or any word of the range unmapped;
nothing is written), ``OK``. Only OK answers to READ and PING carry a payload.

Word ``k`` of a transfer is bus word address ``(addr >> 2) + k`` modulo 2³⁰; payload bytes
``4k .. 4k+3`` are that word, least significant byte first.

The device skips bytes other than 0xA5 between frames and abandons a frame whose bytes stop
arriving for :data:`TIMEOUT_BITS` bit times. The protocol is request/response: the host sends
the next request only after the response to the last one, or after giving up on it.
"""
import enum

__all__ = [
    "LINK_VERSION", "REQUEST_SYNC", "RESPONSE_SYNC", "Cmd", "Status", "SEQ_BITS",
    "REQUEST_HEADER", "RESPONSE_HEADER", "CRC_BYTES", "REQUEST_OVERHEAD", "RESPONSE_OVERHEAD",
    "CRC32", "CRC_HAMMING_DISTANCE", "CRC_HD_MAX_BITS", "TIMEOUT_BITS", "PING_WORDS",
    "DEFAULT_MAX_PAYLOAD", "CTRL_START", "CTRL_ACK", "SH_MIN", "SH_MAX",
]

#: Version of the host-link protocol (word 0 of a PING answer, ``link_version`` in the regmap).
LINK_VERSION = 2

REQUEST_SYNC = 0xA5
RESPONSE_SYNC = 0x5A

#: Bits of the sequence number.
SEQ_BITS = 16

#: Request header bytes after the sync byte: cmd (1), seq (2), addr (4), len (2).
REQUEST_HEADER = 9
#: Response header bytes after the sync byte: status (1), seq (2), len (2).
RESPONSE_HEADER = 5
#: Bytes of the frame check sequence.
CRC_BYTES = 4
#: Bytes of a request without payload.
REQUEST_OVERHEAD = 1 + REQUEST_HEADER + CRC_BYTES
#: Bytes of a response without payload.
RESPONSE_OVERHEAD = 1 + RESPONSE_HEADER + CRC_BYTES

#: CRC-32/ISO-HDLC in the parameterisation of the reveng catalogue (and of
#: ``amaranth.lib.crc.Algorithm``): equal to ``zlib.crc32``; check value 0xCBF43926.
CRC32 = dict(crc_width=32, polynomial=0x04C11DB7, initial_crc=0xFFFFFFFF,
             reflect_input=True, reflect_output=True, xor_output=0xFFFFFFFF)
#: Minimum Hamming distance of :data:`CRC32` for frames of up to :data:`CRC_HD_MAX_BITS` bits.
CRC_HAMMING_DISTANCE = 4
CRC_HD_MAX_BITS = 91_607

#: An incomplete frame is abandoned after this many bit times without a byte.
TIMEOUT_BITS = 64
#: Words of a PING answer.
PING_WORDS = 2
#: Largest payload of one frame, by default (bytes; the bridge's write buffer).
DEFAULT_MAX_PAYLOAD = 1024

#: ``ctrl`` CSR bits: start the engine; acknowledge the finished run (clears ``done``/``error``).
CTRL_START = 1 << 0
CTRL_ACK = 1 << 1


#: Smallest requantization shift the output stage supports (an exact left shift by 16;
#: descriptor field ``sh``, ARITHMETIC §4.5).
SH_MIN = -16
#: Largest requantization shift the output stage supports.
SH_MAX = 47


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
