"""The memory system: latency-tolerant ports and the path to external memory.

Every port here is a request stream and a response stream (``amaranth.lib.stream``, valid/ready),
so a block reading or writing memory tolerates any latency and back-pressure, and an on-chip
buffer and the DDR path are interchangeable behind it.

* :mod:`.port`: the port signatures, :class:`~.port.SyncReadPort` (before an on-chip block RAM),
  :class:`~.port.BurstReader`, :class:`~.port.ReadPortMux` — the engine's memory ports.
* :mod:`.axi_master`: :class:`AXI4Master`, beat commands (byte address, beat count) turned into
  AXI4 INCR bursts towards DDR3 behind a Xilinx MIG.
"""
from .axi_master import (AXI_ID, AXI4Master, BEATS_WIDTH, BurstSplitter, DATA_WIDTHS, ErrorCode,
                         MAX_BURST, PAGE_BYTES, WRITE_DONE_LAYOUT, burst_layout, command_layout,
                         read_beat_layout)

__all__ = ["AXI_ID", "AXI4Master", "BEATS_WIDTH", "BurstSplitter", "DATA_WIDTHS", "ErrorCode",
           "MAX_BURST", "PAGE_BYTES", "WRITE_DONE_LAYOUT", "burst_layout", "command_layout",
           "read_beat_layout"]
