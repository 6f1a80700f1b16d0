"""Lane serializer: the PE array's ``vp`` pixel lanes, one pixel after the other (DESIGN §4).

With ``vp > 1`` output-pixel lanes (:attr:`~nibble.hw.config.EngineConfig.vp`) a direct-mode
result of the PE array holds the accumulators of up to ``vp`` neighbouring output pixels of one
row. The residual reader, the output stage and the writer handle one pixel per cycle (the writer
one feature word per cycle, ``k = m/vc`` per pixel), so one of each serves all lanes: this part
hands them the live lanes of every result in lane order, each with its lane number (the output
stage keeps a pool window's running max per lane).
"""
from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import EngineConfig
from . import residual
from .winograd_path import pe_result_layout

__all__ = ["LaneSerializer", "lane_beat_layout"]


def lane_beat_layout(config: EngineConfig):
    """A pixel for the residual reader and the output stage: :func:`.residual.beat_layout`
    (``acc``, ``pool_first``, ``pool_last``, ``skip``, ``tag``) and its ``lane``."""
    return residual.beat_layout(config.m, config.acc_width, range(config.feature_depth), lanes=config.vp)


class LaneSerializer(wiring.Component):
    """Splits each PE-array result into its live pixel lanes.

    Parameter: ``config`` (:class:`EngineConfig`, ``vp > 1``).

    Members:
      * ``i``: ``In(stream.Signature(StructLayout{acc, tag, accl}))`` — the PE array's result
        (lane 0: ``acc`` and the tag's ``addr``/``skip``; lane ``j ≥ 1``: ``accl[j − 1]`` and the
        tag's ``lanes[j − 1]``).
      * ``o``: ``Out(stream.Signature(lane_beat_layout(config)))``.

    The live lanes of a result are a prefix (lane 0 always; lane ``j`` while ``px + j < out_w``).
    A result is taken into a register when the one before has left (or with its last lane), and
    its lanes are offered from there in order, one per cycle: latency 1 cycle, throughput one
    pixel per cycle; the PE array is held only when its next result comes before the previous
    one's lanes have left. ``busy``: a result is held.
    """

    def __init__(self, config: EngineConfig):
        if config.vp < 2:
            raise ValueError("LaneSerializer needs vp ≥ 2 pixel lanes")
        self.config = c = config
        fields = dict(pe_result_layout(c).members)
        fields["accl"] = data.ArrayLayout(data.ArrayLayout(signed(c.acc_width), c.m), c.vp - 1)
        super().__init__({
            "i": In(stream.Signature(data.StructLayout(fields))),
            "o": Out(stream.Signature(lane_beat_layout(c))),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        c = self.config
        i, o = self.i, self.o
        # one result held while its lanes leave, so the PE array runs on meanwhile
        held = Signal()
        r = Signal(i.payload.shape())
        tag = r.tag
        j = Signal(range(c.vp))
        accs = Array([r.acc] + [r.accl[n] for n in range(c.vp - 1)])
        addrs = Array([tag.addr] + [tag.lanes[n].addr for n in range(c.vp - 1)])
        skips = Array([tag.skip] + [tag.lanes[n].skip for n in range(c.vp - 1)])
        # the lane after j is live (lane vp has none)
        more = Array([tag.lanes[n].live for n in range(c.vp - 1)] + [Const(0)])[j]
        done = Signal()            # the held result's last live lane leaves in this cycle
        m.d.comb += [
            o.valid.eq(held),
            o.payload.acc.eq(accs[j]), o.payload.tag.eq(addrs[j]), o.payload.skip.eq(skips[j]),
            o.payload.pool_first.eq(tag.pool_first), o.payload.pool_last.eq(tag.pool_last),
            o.payload.lane.eq(j),
            done.eq(o.valid & o.ready & ~more),
            i.ready.eq(~held | done),
            self.busy.eq(held),
        ]
        with m.If(o.valid & o.ready):
            m.d.sync += j.eq(Mux(more, j + 1, 0))
        with m.If(i.valid & i.ready):
            m.d.sync += [r.eq(i.payload), held.eq(1)]
        with m.Elif(done):
            m.d.sync += held.eq(0)
        return m
