"""SAC lane, PE and PE array: the TF2-style shift-accumulate datapath (DESIGN §4, ARITHMETIC §4.4).

* :class:`SACLane` — int8 × 4-bit power-of-two code → ``±(x << (E−1))`` or 0. No multiplier.
* :class:`PE` — ``vc`` SAC lanes, an adder tree, an accumulator and its own filter cache.
* :class:`PEArray` — ``m`` PEs in lockstep sharing one broadcast input vector; each PE computes one
  output channel. Peak ``m·vc`` shift-accumulate operations per cycle.
"""
from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["SACLane", "PE", "PEArray", "sac_product_shape", "pe_input_layout"]

#: Shape of one SAC product: −128 << 6 = −8192 and its negation +8192 need 15 signed bits.
sac_product_shape = signed(15)


class SACLane(wiring.Component):
    """One shift-accumulate lane (combinational, latency 0 cycles).

    Members:
      * ``x``: ``In(signed(8))`` — int8 feature.
      * ``code``: ``In(4)`` — weight code ``[s | E2 E1 E0]`` (ARITHMETIC §4.2).
      * ``p``: ``Out(signed(15))`` — ``(−1)^s · (x << (E − 1))`` for ``E ≥ 1``, 0 for ``E = 0``
        (code 0b1000 also gives 0). Range [−8192, 8192].

    Golden model: :func:`nibble.sim.golden.sac`.
    """
    x: In(signed(8))
    code: In(4)
    p: Out(sac_product_shape)

    def elaborate(self, platform):
        m = Module()
        e = self.code[:3]
        mag = Signal(signed(15))
        m.d.comb += mag.eq(self.x << (e - 1)[:3])
        with m.If(e == 0):
            m.d.comb += self.p.eq(0)
        with m.Elif(self.code[3]):
            m.d.comb += self.p.eq(-mag)
        with m.Else():
            m.d.comb += self.p.eq(mag)
        return m


def pe_input_layout(vc, depth, tag_shape=0):
    """Payload of a PE / PE-array input beat.

    * ``x``: ``vc`` int8 features (one feature word, ``vc`` input channels of one pixel).
    * ``addr``: filter-cache word to multiply with (tap · ⌈Cin/vc⌉ + channel block).
    * ``first``: this beat starts a new accumulation (the accumulator restarts from 0).
    * ``last``: this beat ends the accumulation; its result leaves on ``o``.
    * ``tag``: carried unchanged from the ``last`` beat to the result (e.g. the output address).
    """
    fields = {
        "x": data.ArrayLayout(signed(8), vc),
        "addr": range(depth),
        "first": 1,
        "last": 1,
    }
    if tag_shape:
        fields["tag"] = tag_shape
    return data.StructLayout(fields)


def _pe_members(vc, acc_shape, depth, tag_shape, extra):
    """Signature members shared by :class:`PE` and :class:`PEArray`."""
    out_fields = {"acc": acc_shape}
    if tag_shape:
        out_fields["tag"] = tag_shape
    return {
        "i": In(stream.Signature(pe_input_layout(vc, depth, tag_shape))),
        "o": Out(stream.Signature(data.StructLayout(out_fields))),
        "w_en": In(1),
        **extra,
        "w_addr": In(range(depth)),
        "w_data": In(data.ArrayLayout(unsigned(4), vc)),
        "busy": Out(1),
    }


class PE(wiring.Component):
    """Processing element: dot product of ``vc`` SAC lanes into an accumulator (ARITHMETIC §4.4).

    Parameters: ``vc`` lanes (≥ 1), ``acc_width`` accumulator bits (≥ 16), ``depth`` filter-cache
    words (≥ 2), optional ``tag_shape`` carried with each result.

    Members:
      * ``i``: ``In(stream.Signature(pe_input_layout(vc, depth, tag_shape)))``.
      * ``o``: ``Out(stream.Signature(StructLayout{acc: signed(acc_width)[, tag]}))`` — one
        result per accumulation (per ``last`` beat): ``Σ_beats Σ_lanes sac(x[l], cache[addr][l])``,
        wrapped to ``acc_width`` bits (the compiler guarantees it never needs to wrap).
      * ``w_en``, ``w_addr``, ``w_data``: filter-cache write port (``w_data`` is
        ``ArrayLayout(unsigned(4), vc)``); write a word in one cycle. Must not be written while
        beats that read it are in flight.
      * ``busy``: ``Out(1)``, a beat or a result is inside the PE.

    Latency: :attr:`latency` = 3 cycles from the ``last`` beat's transfer to ``o.valid``
    (filter-cache read, lane products and adder tree, accumulate).
    Throughput: one beat per cycle. Backpressure: the whole pipeline holds while ``o.valid`` and
    not ``o.ready``; ``i.ready = ~o.valid | o.ready``.
    """
    latency = 3

    def __init__(self, vc, acc_width, depth, tag_shape=0):
        if vc < 1:
            raise ValueError(f"PE needs at least one lane, not {vc}")
        if acc_width < 16:
            raise ValueError(f"PE accumulator must have at least 16 bits, not {acc_width}")
        if depth < 2:
            raise ValueError(f"PE filter cache must have at least 2 words, not {depth}")
        self.vc, self.acc_width, self.depth, self.tag_shape = vc, acc_width, depth, tag_shape
        super().__init__(_pe_members(vc, signed(acc_width), depth, tag_shape, {}))

    def elaborate(self, platform):
        m = Module()
        vc = self.vc

        m.submodules.cache = cache = Memory(shape=data.ArrayLayout(unsigned(4), vc),
                                            depth=self.depth, init=[])
        wr = cache.write_port()
        rd = cache.read_port(domain="sync")
        m.d.comb += [wr.en.eq(self.w_en), wr.addr.eq(self.w_addr), wr.data.eq(self.w_data)]

        adv = Signal()
        m.d.comb += [adv.eq(~self.o.valid | self.o.ready), self.i.ready.eq(adv)]

        # Stage 1: the filter cache is read while the beat's features wait in registers.
        s1_valid = Signal()
        s1 = Signal(self.i.payload.shape())
        m.d.comb += [rd.addr.eq(self.i.payload.addr), rd.en.eq(adv)]
        with m.If(adv):
            m.d.sync += [s1_valid.eq(self.i.valid), s1.eq(self.i.payload)]

        # Stage 2: lane products and the adder tree.
        prods = []
        for lane in range(vc):
            sac = SACLane()
            m.submodules[f"lane{lane}"] = sac
            m.d.comb += [sac.x.eq(s1.x[lane]), sac.code.eq(rd.data[lane])]
            prods.append(sac.p)
        while len(prods) > 1:
            prods = [prods[k] + prods[k + 1] if k + 1 < len(prods) else prods[k]
                     for k in range(0, len(prods), 2)]
        s2_valid = Signal()
        s2_sum = Signal(signed(15 + max(vc - 1, 1).bit_length()))
        s2_first, s2_last = Signal(), Signal()
        s2_tag = Signal(self.tag_shape) if self.tag_shape else None
        with m.If(adv):
            m.d.sync += [s2_valid.eq(s1_valid), s2_sum.eq(prods[0]),
                         s2_first.eq(s1.first), s2_last.eq(s1.last)]
            if self.tag_shape:
                m.d.sync += s2_tag.eq(s1.tag)

        # Stage 3: accumulate; a last beat publishes the result.
        acc = Signal(signed(self.acc_width))
        acc_next = Signal(signed(self.acc_width))
        m.d.comb += acc_next.eq(Mux(s2_first, 0, acc) + s2_sum)
        with m.If(adv):
            m.d.sync += self.o.valid.eq(s2_valid & s2_last)
            with m.If(s2_valid):
                m.d.sync += acc.eq(acc_next)
                with m.If(s2_last):
                    m.d.sync += self.o.payload.acc.eq(acc_next)
                    if self.tag_shape:
                        m.d.sync += self.o.payload.tag.eq(s2_tag)
        m.d.comb += self.busy.eq(s1_valid | s2_valid | self.o.valid)
        return m


class PEArray(wiring.Component):
    """``m`` PEs sharing one broadcast input stream (TF2 PE array, DESIGN §4).

    PE ``k`` computes output channel ``k`` of the current block of ``m`` output channels from its
    own filter cache. Peak ``m·vc`` SAC operations per cycle.

    Members:
      * ``i``: ``In(stream.Signature(pe_input_layout(vc, depth, tag_shape)))`` — broadcast to all PEs.
      * ``o``: ``Out(stream.Signature(StructLayout{acc: ArrayLayout(signed(acc_width), m)[, tag]}))``.
      * ``w_en``, ``w_pe`` (``range(m)``), ``w_addr``, ``w_data``: filter-cache write into PE ``w_pe``.
      * ``busy``: ``Out(1)``.

    Latency :attr:`latency` = :attr:`PE.latency` = 3 cycles; throughput one beat per cycle;
    backpressure as :class:`PE` (all PEs move in lockstep).
    """
    latency = PE.latency

    def __init__(self, m, vc, acc_width, depth, tag_shape=0):
        if m < 1:
            raise ValueError(f"PE array needs at least one PE, not {m}")
        self.m, self.vc, self.acc_width, self.depth, self.tag_shape = m, vc, acc_width, depth, tag_shape
        self.pes = [PE(vc, acc_width, depth, tag_shape if k == 0 else 0) for k in range(m)]
        super().__init__(_pe_members(vc, data.ArrayLayout(signed(acc_width), m), depth, tag_shape,
                                     {"w_pe": In(range(m))}))

    def elaborate(self, platform):
        m = Module()
        for k, pe in enumerate(self.pes):
            m.submodules[f"pe{k}"] = pe
            m.d.comb += [
                pe.i.valid.eq(self.i.valid),
                pe.i.payload.x.eq(self.i.payload.x),
                pe.i.payload.addr.eq(self.i.payload.addr),
                pe.i.payload.first.eq(self.i.payload.first),
                pe.i.payload.last.eq(self.i.payload.last),
                pe.o.ready.eq(self.o.ready),
                pe.w_en.eq(self.w_en & (self.w_pe == k)),
                pe.w_addr.eq(self.w_addr),
                pe.w_data.eq(self.w_data),
                self.o.payload.acc[k].eq(pe.o.payload.acc),
            ]
        pe0 = self.pes[0]
        if self.tag_shape:
            m.d.comb += [pe0.i.payload.tag.eq(self.i.payload.tag), self.o.payload.tag.eq(pe0.o.payload.tag)]
        m.d.comb += [
            self.i.ready.eq(pe0.i.ready),
            self.o.valid.eq(pe0.o.valid),
            self.busy.eq(pe0.busy),
        ]
        return m
