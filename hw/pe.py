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

__all__ = ["SACLane", "PE", "PEArray", "sac_product_shape", "pe_input_layout",
           "V_WIDTH", "U_WIDTH", "ACC_ENTRIES"]

#: Shape of one SAC product: −128 << 6 = −8192 and its negation +8192 need 15 signed bits.
sac_product_shape = signed(15)
#: Bits of a transformed input ``V = Bᵀ d B`` (ARITHMETIC §2.5: [−512, 510]).
V_WIDTH = 10
#: Bits of a transformed weight ``U = G₂ g G₂ᵀ`` (ARITHMETIC §2.5: [−576, 576] for F2x2_3x3).
U_WIDTH = 11
#: Accumulators per PE in Winograd mode: one per transformed position (α² ≤ 16).
ACC_ENTRIES = 16


class SACLane(wiring.Component):
    """One shift-accumulate lane (combinational, latency 0 cycles).

    Members:
      * ``x``: ``In(signed(8))`` — int8 feature.
      * ``code``: ``In(4)`` — weight code ``[s | E2 E1 E0]`` (ARITHMETIC §4.2).
      * ``p``: ``Out(signed(15))`` — ``(−1)^s · (x << (E − 1))`` for ``E ≥ 1``, 0 for ``E = 0``
        (code 0b1000 also gives 0). Range [−8192, 8192].
      * ``q``: ``Out(signed(15))``, ``neg``: ``Out(1)`` — the same product in one's complement:
        ``p = q + neg`` (``q = ~(x << (E − 1))`` and ``neg = 1`` for a negative code with
        ``E ≥ 1``). The PE adds the lanes' ``q`` in its adder tree and their ``neg`` bits as one
        count at the root, so no lane has a negator of its own (−v = ~v + 1).

    Golden model: :func:`nibble.sim.golden.sac`.
    """
    x: In(signed(8))
    code: In(4)
    p: Out(sac_product_shape)
    q: Out(sac_product_shape)
    neg: Out(1)

    def elaborate(self, platform):
        m = Module()
        e = self.code[:3]
        mag = Signal(signed(15))
        m.d.comb += mag.eq(self.x << (e - 1)[:3])
        nz = e != 0
        m.d.comb += [self.q.eq(Mux(nz, mag ^ self.code[3].replicate(15), 0)), self.neg.eq(nz & self.code[3])]
        m.d.comb += self.p.eq(self.q + self.neg)
        return m


def pe_input_layout(vc, depth, tag_shape=0, winograd=False, vp=1):
    """Payload of a PE / PE-array input beat.

    * ``x``: ``vc`` int8 features (one feature word, ``vc`` input channels of one pixel); with
      ``winograd``, ``vc`` signed ``V_WIDTH``-bit values (the SAC lanes use the low 8 bits).
    * ``addr``: filter-cache word to multiply with (tap · ⌈Cin/vc⌉ + channel block).
    * ``first``: this beat starts a new accumulation (the accumulator restarts from 0).
    * ``last``: this beat ends the accumulation; its result leaves on ``o``.
    * ``idx`` (``winograd`` only): which of the ``ACC_ENTRIES`` accumulators the beat adds to
      (the transformed position ξ·α + ν; 0 in direct mode).
    * ``tag``: carried unchanged from the ``last`` beat to the result (e.g. the output address).
    * ``xl`` (``vp > 1`` output-pixel lanes): the int8 features of pixel lanes 1 … vp − 1, which
      use the same filter-cache word (direct mode only).
    """
    fields = {
        "x": data.ArrayLayout(signed(V_WIDTH if winograd else 8), vc),
        "addr": range(depth),
        "first": 1,
        "last": 1,
    }
    if winograd:
        fields["idx"] = range(ACC_ENTRIES)
    if tag_shape:
        fields["tag"] = tag_shape
    if vp > 1:
        fields["xl"] = data.ArrayLayout(data.ArrayLayout(signed(8), vc), vp - 1)
    return data.StructLayout(fields)


def _pe_members(vc, acc_shape, depth, tag_shape, extra, winograd, vp=1):
    """Signature members shared by :class:`PE` and :class:`PEArray`."""
    out_fields = {"acc": acc_shape}
    if tag_shape:
        out_fields["tag"] = tag_shape
    if vp > 1:
        out_fields["accl"] = data.ArrayLayout(acc_shape, vp - 1)
    if winograd:
        extra = {**extra, "wmode": In(1), "u_en": In(1),
                 "u_data": In(data.ArrayLayout(signed(U_WIDTH), vc))}
    return {
        "i": In(stream.Signature(pe_input_layout(vc, depth, tag_shape, winograd, vp))),
        "o": Out(stream.Signature(data.StructLayout(out_fields))),
        "w_en": In(1),
        **extra,
        "w_addr": In(range(depth)),
        "w_data": In(data.ArrayLayout(unsigned(4), vc)),
        "busy": Out(1),
    }


def _adder_tree(values):
    """Pairwise sum of ``values`` (a balanced tree of adders, comb)."""
    while len(values) > 1:
        values = [values[k] + values[k + 1] if k + 1 < len(values) else values[k]
                  for k in range(0, len(values), 2)]
    return values[0]


class PE(wiring.Component):
    """Processing element: dot product of ``vc`` SAC lanes into an accumulator (ARITHMETIC §4.4).

    Parameters: ``vc`` lanes (≥ 1), ``acc_width`` accumulator bits (≥ 16), ``depth`` filter-cache
    words (≥ 2), optional ``tag_shape`` carried with each result, ``winograd`` (bool): add the
    multiplier-lane mode.

    Multiplier-lane (Winograd) mode, with ``winograd``: a second cache of ``depth`` words of
    ``vc`` signed ``U_WIDTH``-bit transformed weights (``u_en``/``u_data`` write port, sharing
    ``w_addr``), ``vc`` multiplier lanes ``V × U`` (10 × 11 bits → 21 bits, one DSP48E1 each,
    ARITHMETIC §2.5), and ``ACC_ENTRIES`` accumulators selected by the beat's ``idx``. ``wmode``
    (a layer constant) selects the multiplier lanes instead of the SAC lanes; both share the adder
    tree and the accumulators (direct mode uses accumulator ``idx`` = 0).

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

    def __init__(self, vc, acc_width, depth, tag_shape=0, winograd=False, vp=1):
        if vc < 1:
            raise ValueError(f"PE needs at least one lane, not {vc}")
        if acc_width < 16:
            raise ValueError(f"PE accumulator must have at least 16 bits, not {acc_width}")
        if depth < 2:
            raise ValueError(f"PE filter cache must have at least 2 words, not {depth}")
        self.vc, self.acc_width, self.depth, self.tag_shape = vc, acc_width, depth, tag_shape
        self.winograd, self.vp = winograd, vp
        super().__init__(_pe_members(vc, signed(acc_width), depth, tag_shape, {}, winograd, vp))

    def elaborate(self, platform):
        m = Module()
        vc = self.vc

        m.submodules.cache = cache = Memory(shape=data.ArrayLayout(unsigned(4), vc),
                                            depth=self.depth, init=[])
        wr = cache.write_port()
        rd = cache.read_port(domain="sync")
        m.d.comb += [wr.en.eq(self.w_en), wr.addr.eq(self.w_addr), wr.data.eq(self.w_data)]
        if self.winograd:
            m.submodules.ucache = ucache = Memory(shape=data.ArrayLayout(signed(U_WIDTH), vc),
                                                  depth=self.depth, init=[])
            uwr = ucache.write_port()
            urd = ucache.read_port(domain="sync")
            m.d.comb += [uwr.en.eq(self.u_en), uwr.addr.eq(self.w_addr), uwr.data.eq(self.u_data)]

        adv = Signal()
        m.d.comb += [adv.eq(~self.o.valid | self.o.ready), self.i.ready.eq(adv)]

        # Stage 1: the filter cache is read while the beat's features wait in registers.
        s1_valid = Signal()
        s1 = Signal(self.i.payload.shape())
        m.d.comb += [rd.addr.eq(self.i.payload.addr), rd.en.eq(adv)]
        if self.winograd:
            m.d.comb += [urd.addr.eq(self.i.payload.addr), urd.en.eq(adv)]
        with m.If(adv):
            m.d.sync += [s1_valid.eq(self.i.valid), s1.eq(self.i.payload)]

        # Stage 2: lane products and the adder tree.
        prods, negs = [], []
        for lane in range(vc):
            sac = SACLane()
            m.submodules[f"lane{lane}"] = sac
            m.d.comb += [sac.x.eq(s1.x[lane][:8]), sac.code.eq(rd.data[lane])]
            if self.winograd:
                mul = Signal(signed(V_WIDTH + U_WIDTH), name=f"mul{lane}")
                m.d.comb += mul.eq(s1.x[lane] * urd.data[lane])
                prods.append(Mux(self.wmode, mul, sac.q))
                negs.append(sac.neg & ~self.wmode)
            else:
                prods.append(sac.q)
                negs.append(sac.neg)
        p_width = V_WIDTH + U_WIDTH if self.winograd else 15
        s2_sum = Signal(signed(p_width + max(vc - 1, 1).bit_length()))
        # pixel lanes 1 … vp − 1: their own SAC lanes on the same filter-cache word (direct mode)
        lane_sums = []
        for j in range(1, self.vp):
            lp, ln = [], []
            for lane in range(vc):
                sac = SACLane()
                m.submodules[f"px{j}_lane{lane}"] = sac
                m.d.comb += [sac.x.eq(s1.xl[j - 1][lane]), sac.code.eq(rd.data[lane])]
                lp.append(sac.q)
                ln.append(sac.neg)
            lane_sums.append((_adder_tree(lp) + _adder_tree(ln),
                              Signal(signed(15 + max(vc - 1, 1).bit_length()), name=f"s2_sum{j}")))
        prods = [_adder_tree(prods) + _adder_tree(negs)]
        s2_valid = Signal()
        s2_first, s2_last = Signal(), Signal()
        s2_idx = Signal(range(ACC_ENTRIES))
        s2_tag = Signal(self.tag_shape) if self.tag_shape else None
        with m.If(adv):
            m.d.sync += [s2_valid.eq(s1_valid), s2_sum.eq(prods[0]),
                         s2_first.eq(s1.first), s2_last.eq(s1.last)]
            m.d.sync += [reg.eq(tree) for tree, reg in lane_sums]
            if self.winograd:
                m.d.sync += s2_idx.eq(s1.idx)
            if self.tag_shape:
                m.d.sync += s2_tag.eq(s1.tag)

        # Stage 3: accumulate; a last beat publishes the result.
        acc_next = Signal(signed(self.acc_width))
        if self.winograd:
            accs = Array(Signal(signed(self.acc_width), name=f"acc{j}") for j in range(ACC_ENTRIES))
            acc = accs[s2_idx]
        else:
            acc = Signal(signed(self.acc_width))
        m.d.comb += acc_next.eq(Mux(s2_first, 0, acc) + s2_sum)
        lane_accs = []
        for j, (_, reg) in enumerate(lane_sums, start=1):
            a, a_next = Signal(signed(self.acc_width), name=f"acc_px{j}"), Signal(signed(self.acc_width), name=f"acc_px{j}_next")
            m.d.comb += a_next.eq(Mux(s2_first, 0, a) + reg)
            lane_accs.append((a, a_next))
        with m.If(adv):
            m.d.sync += self.o.valid.eq(s2_valid & s2_last)
            with m.If(s2_valid):
                m.d.sync += acc.eq(acc_next)
                m.d.sync += [a.eq(a_next) for a, a_next in lane_accs]
                with m.If(s2_last):
                    m.d.sync += self.o.payload.acc.eq(acc_next)
                    m.d.sync += [self.o.payload.accl[j].eq(a_next) for j, (_, a_next) in enumerate(lane_accs)]
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
      * With ``w_buses = 2``: ``w2_en``, ``w2_pe``, ``w2_addr``, ``w2_data`` — a second write, into
        PE ``w2_pe`` of the upper half (``m/2 … m − 1``; the first bus then writes the lower half),
        in the same cycle.
      * With ``winograd``: ``wmode``, ``u_en``, ``u_data`` as :class:`PE` (``u_en`` writes the
        transformed-weight cache of PE ``w_pe``); the input payload has ``idx``.
      * ``busy``: ``Out(1)``.

    Latency :attr:`latency` = :attr:`PE.latency` = 3 cycles; throughput one beat per cycle;
    backpressure as :class:`PE` (all PEs move in lockstep).
    """
    latency = PE.latency

    def __init__(self, m, vc, acc_width, depth, tag_shape=0, winograd=False, vp=1, w_buses=1):
        if m < 1:
            raise ValueError(f"PE array needs at least one PE, not {m}")
        if w_buses not in (1, 2) or (w_buses == 2 and m % 2):
            raise ValueError(f"PE array: {w_buses} filter-cache write buses for {m} PEs (1, or 2 for an even m)")
        self.m, self.vc, self.acc_width, self.depth, self.tag_shape = m, vc, acc_width, depth, tag_shape
        self.winograd, self.vp, self.w_buses = winograd, vp, w_buses
        self.pes = [PE(vc, acc_width, depth, tag_shape if k == 0 else 0, winograd, vp) for k in range(m)]
        second = {"w2_en": In(1), "w2_pe": In(range(m)), "w2_addr": In(range(depth)),
                  "w2_data": In(data.ArrayLayout(unsigned(4), vc))} if w_buses == 2 else {}
        super().__init__(_pe_members(vc, data.ArrayLayout(signed(acc_width), m), depth, tag_shape,
                                     {"w_pe": In(range(m)), **second}, winograd, vp))

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
                self.o.payload.acc[k].eq(pe.o.payload.acc),
            ]
            if self.w_buses == 2 and k >= self.m // 2:      # the upper half from the second bus
                # (a transformed-weight write, u_en, still takes the first bus's address)
                m.d.comb += [pe.w_en.eq(self.w2_en & (self.w2_pe == k)),
                             pe.w_addr.eq(Mux(self.w2_en, self.w2_addr, self.w_addr)), pe.w_data.eq(self.w2_data)]
            else:
                m.d.comb += [pe.w_en.eq(self.w_en & (self.w_pe == k)), pe.w_addr.eq(self.w_addr),
                             pe.w_data.eq(self.w_data)]
            if self.vp > 1:
                m.d.comb += pe.i.payload.xl.eq(self.i.payload.xl)
                m.d.comb += [self.o.payload.accl[j][k].eq(pe.o.payload.accl[j]) for j in range(self.vp - 1)]
            if self.winograd:
                m.d.comb += [
                    pe.i.payload.idx.eq(self.i.payload.idx),
                    pe.wmode.eq(self.wmode),
                    pe.u_en.eq(self.u_en & (self.w_pe == k)),
                    pe.u_data.eq(self.u_data),
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
