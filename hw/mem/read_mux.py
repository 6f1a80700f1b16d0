"""Two read clients on one AXI4 master: commands merged, read beats returned to their issuer.

The master (:class:`~nibble.hw.mem.axi_master.AXI4Master`) returns the beats of its read
commands in command order, each command's final beat marked ``last``. :class:`ReadMux` records
which client issued each command in a small tag FIFO and hands every beat to the client at its
head, popping the tag on ``last``. Used by the step sequencer (fetching steps) and the tile DMA
(LOADs), which run at the same time.
"""
from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from .axi_master import command_layout, read_beat_layout

__all__ = ["ReadMux"]


class ReadMux(wiring.Component):
    """Merges the read commands of clients ``a`` and ``b`` (``a`` first when both ask).

    Parameters: ``addr_width``, ``data_width`` (of the master), ``depth`` (commands in flight
    at most, default 8: a command is taken only while the tag FIFO has room).

    Members: ``a_cmd``, ``b_cmd``: In(stream.Signature(command_layout(addr_width))); ``a_data``,
    ``b_data``: Out(stream.Signature(read_beat_layout(data_width))); ``cmd``:
    Out(stream.Signature(command_layout)) and ``data``: In(stream.Signature(read_beat_layout)),
    to the master's ``rd_cmd``/``rd_data``.

    A client's command goes through in the cycle it is offered (``cmd.ready`` reaches
    ``x_cmd.ready`` combinationally); a beat reaches its client combinationally, so the
    client's ready paces the master's buffer. A zero-beat command must not be issued (no beat
    would pop its tag).
    """

    def __init__(self, addr_width, data_width, depth=8):
        self.depth = depth
        cmd, beat = command_layout(addr_width), read_beat_layout(data_width)
        super().__init__({
            "a_cmd": In(stream.Signature(cmd)), "b_cmd": In(stream.Signature(cmd)),
            "a_data": Out(stream.Signature(beat)), "b_data": Out(stream.Signature(beat)),
            "cmd": Out(stream.Signature(cmd)), "data": In(stream.Signature(beat)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.tags = tags = SyncFIFO(width=1, depth=self.depth)
        pick_b = ~self.a_cmd.valid
        m.d.comb += [
            self.cmd.payload.eq(Mux(pick_b, self.b_cmd.payload, self.a_cmd.payload)),
            self.cmd.valid.eq((self.a_cmd.valid | self.b_cmd.valid) & tags.w_rdy),
            self.a_cmd.ready.eq(self.cmd.ready & tags.w_rdy),
            self.b_cmd.ready.eq(self.cmd.ready & tags.w_rdy & pick_b),
            tags.w_en.eq(self.cmd.valid & self.cmd.ready),
            tags.w_data.eq(pick_b),
        ]
        head_b = tags.r_data[0]
        for client, sel in ((self.a_data, ~head_b), (self.b_data, head_b)):
            m.d.comb += [client.payload.eq(self.data.payload),
                         client.valid.eq(self.data.valid & tags.r_rdy & sel)]
        m.d.comb += self.data.ready.eq(tags.r_rdy & Mux(head_b, self.b_data.ready, self.a_data.ready))
        m.d.comb += tags.r_en.eq(self.data.valid & self.data.ready & self.data.payload.last)
        return m
