"""Fault injection between the host's Link and a device (the software model or the RTL).

:class:`FaultyStream` wraps any pyserial-like stream (``write``/``read``/``reset_input_buffer``)
and damages the bytes in both directions with seeded randomness: per byte, with probability
``rate``, one of a bit flip, a dropped byte or a duplicated byte; per frame written, with
probability ``rate``, a truncation; per read, with probability ``rate`` · bytes, the arriving
bytes are held back and delivered only after the host's next request (a late reply).
:class:`Loopback` is a device in a pipe: requests go to a :class:`BridgeModel`; when the host
finds nothing more to read the line has gone quiet, and the model abandons a partial frame as
the hardware does after its inter-byte timeout.
"""
import random

from nibble.hw.config import EngineConfig

__all__ = ["FaultyStream", "Loopback", "LINK_TEST_CONFIG"]

#: The accelerator of the host-link tests on the RTL (faults, the pyserial path, the link
#: bench): the link is what they test, so a small engine (8 PEs × 8 lanes, no Winograd path),
#: whose simulator builds in a quarter of the default's time.
LINK_TEST_CONFIG = EngineConfig(m=8, vc=8, winograd=False)


class Loopback:
    """A :class:`nibble.host.link.BridgeModel` as a byte stream (reads never wait)."""

    def __init__(self, model):
        self.model = model
        self.rx = bytearray()

    def write(self, data):
        self.rx += self.model.feed(bytes(data))
        return len(data)

    def read(self, n):
        data = bytes(self.rx[:n])
        del self.rx[:n]
        if len(data) < n:
            self.model.abandon()             # the host timed out: the line has been quiet
        return data

    def reset_input_buffer(self):
        self.rx.clear()


class FaultyStream:
    """``stream`` with seeded faults at ``rate`` per byte in both directions.

    ``kinds`` is a subset of ``{"flip", "drop", "dup", "truncate", "late"}``; ``counts`` tallies
    the faults injected by kind.
    """

    KINDS = ("flip", "drop", "dup", "truncate", "late")

    def __init__(self, stream, rate, seed, kinds=KINDS):
        self.stream = stream
        self.rate = rate
        self.rng = random.Random(seed)
        self.kinds = set(kinds)
        self.counts = dict.fromkeys(self.KINDS, 0)
        self._rx = bytearray()
        self._late = bytearray()
        self.enabled = True

    def _damage(self, data):
        if not self.enabled:
            return bytes(data)
        byte_kinds = [k for k in ("flip", "drop", "dup") if k in self.kinds]
        out = bytearray()
        for b in data:
            if byte_kinds and self.rng.random() < self.rate:
                kind = self.rng.choice(byte_kinds)
                self.counts[kind] += 1
                if kind == "flip":
                    out.append(b ^ (1 << self.rng.randrange(8)))
                elif kind == "dup":
                    out += bytes([b, b])
                continue                          # "drop": the byte is gone
            out.append(b)
        return bytes(out)

    def write(self, data):
        data = self._damage(data)
        if self.enabled and "truncate" in self.kinds and self.rng.random() < self.rate:
            self.counts["truncate"] += 1
            data = data[:self.rng.randrange(len(data) + 1)]
        if self._late:                            # held-back bytes arrive after this request
            self._rx += self._late
            self._late.clear()
        self.stream.write(data)
        return len(data)

    def read(self, n):
        while len(self._rx) < n:
            chunk = self.stream.read(n - len(self._rx))
            if not chunk:
                break
            chunk = self._damage(chunk)
            if (self.enabled and "late" in self.kinds
                    and self.rng.random() < min(1.0, self.rate * len(chunk))):
                self.counts["late"] += 1
                self._late += chunk
                break
            self._rx += chunk
        data = bytes(self._rx[:n])
        del self._rx[:n]
        return data

    def reset_input_buffer(self):
        self._rx.clear()
        reset = getattr(self.stream, "reset_input_buffer", None)
        if reset:
            reset()

    def __getattr__(self, name):                  # close, in_waiting, ... of the wrapped stream
        return getattr(self.stream, name)
