"""The accelerator's internal register/memory bus (host bridge → CSRs and device memory).

A deliberately small synchronous bus, 32-bit data, word addressed (one address = 4 bytes).
Driven by a host bridge (:class:`~.bridge.UARTBridge`, or :class:`~.axi.AXI4SlaveBridge` for
PCIe), served by the accelerator's decoder (:class:`~.accelerator.AcceleratorCore`).

Signals, seen from the master (``BusSignature``; the slave side is ``BusSignature.flip()``):

============  =====  =========================================================================
``addr``      Out 30 word address (byte address >> 2)
``w_data``    Out 32 write data
``w_en``      Out 1  write strobe: one word written at ``addr`` in this cycle (always accepted)
``r_en``      Out 1  read strobe: a read of ``addr`` starts in this cycle
``r_data``    In 32  read data, valid when ``r_valid``
``r_valid``   In 1   one cycle per read, exactly ``READ_LATENCY`` cycles after its ``r_en``
``addr_err``  In 1   combinational: ``addr`` is not mapped; the master must not issue the access
============  =====  =========================================================================

Rules:

* at most one of ``w_en``/``r_en`` per cycle, and neither for an ``addr`` with ``addr_err``;
* writes are always accepted and complete in the cycle they are issued (a read issued in a
  later cycle sees them);
* a master may issue a read every cycle; ``r_valid``/``r_data`` come back in order, exactly
  ``READ_LATENCY`` cycles after each ``r_en`` (a pipeline, no handshake: the master must be
  able to take every word it asked for). A read returns the word as it was in its ``r_en``
  cycle, whatever is written while it is in flight. Issuing one read at a time and waiting for
  its ``r_valid`` (the UART bridge) is a special case.
"""
from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["BusSignature", "READ_LATENCY", "ADDR_BITS"]

ADDR_BITS = 30
#: Cycles from ``r_en`` to ``r_valid`` for every region of the accelerator's decoder.
READ_LATENCY = 2


class BusSignature(wiring.Signature):
    """Master-side signature of the internal bus (see the module docstring)."""

    def __init__(self):
        super().__init__({
            "addr": Out(ADDR_BITS),
            "w_data": Out(32),
            "w_en": Out(1),
            "r_en": Out(1),
            "r_data": In(32),
            "r_valid": In(1),
            "addr_err": In(1),
        })
