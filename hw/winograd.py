"""Winograd transform blocks and the element-wise multiplier lane (ARITHMETIC §2).

* :class:`WinogradPrePE` — input tile transform ``V = Bᵀ d B``: int8 α×α tile → 10-bit α×α tile.
* :class:`WinogradPostPE` — output tile transform ``Y = Aᵀ M A``: α×α accumulators → m×m outputs.
* :class:`MultiplierLane` — one signed ``a × b`` product per cycle for ``M = Σ U ⊙ V``
  (one DSP48E1 for operands up to 25×18 bits).

Variants (ARITHMETIC §2.2, §2.3): ``"F2x2_3x3"`` (α = 4, output scaled by 4 through ``G₂ = 2G``,
which lives in the offline weight transform) and ``"F2x2_2x2"`` (α = 3, scale 1). Every entry of
``Bᵀ`` and ``Aᵀ`` is 0 or ±1, so both transforms are adders and subtractors only.

The constant tables below are the hardware's own copy; the tests compare every block bit for bit
with the golden model :mod:`nibble.sim.winograd`, which holds the other copy.
"""
from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["WinogradPrePE", "WinogradPostPE", "MultiplierLane", "WINOGRAD_VARIANTS",
           "WINOGRAD_G", "winograd_tile_layout", "code_value", "weight_transform_tile"]

#: ``name: (m, Bᵀ, Aᵀ)`` of the variants the transform blocks implement (ARITHMETIC §2.2).
WINOGRAD_VARIANTS = {
    "F2x2_3x3": (2,
                 ((1, 0, -1, 0),
                  (0, 1, 1, 0),
                  (0, -1, 1, 0),
                  (0, 1, 0, -1)),
                 ((1, 1, 1, 0),
                  (0, 1, -1, -1))),
    "F2x2_2x2": (2,
                 ((1, -1, 0),
                  (0, 1, 0),
                  (0, -1, 1)),
                 ((1, 1, 0),
                  (0, 1, 1))),
}


#: Integer ``G`` of each variant (``G₂ = 2G`` for F2x2_3x3, ARITHMETIC §2.3): ``U = G g Gᵀ``.
WINOGRAD_G = {
    "F2x2_3x3": ((2, 0, 0),
                 (1, 1, 1),
                 (1, -1, 1),
                 (0, 0, 2)),
    "F2x2_2x2": ((1, 0),
                 (1, 1),
                 (0, 1)),
}


def _variant(name):
    if name not in WINOGRAD_VARIANTS:
        known = ", ".join(repr(k) for k in WINOGRAD_VARIANTS)
        raise ValueError(f"unknown Winograd variant {name!r}; expected one of {known}")
    return WINOGRAD_VARIANTS[name]


def winograd_tile_layout(shape, rows, cols):
    """``rows × cols`` tile of ``shape`` elements: ``ArrayLayout(ArrayLayout(shape, cols), rows)``,
    indexed ``tile[row][col]``."""
    return data.ArrayLayout(data.ArrayLayout(shape, cols), rows)


def _row_range(coefs, lo, hi):
    """Exact range of ``Σ c·x`` over independent ``x`` in ``[lo, hi]``."""
    top = sum(c * hi if c > 0 else c * lo for c in coefs)
    bot = sum(c * lo if c > 0 else c * hi for c in coefs)
    return bot, top


def _signed_bits(lo, hi):
    """Fewest bits of a signed two's complement value holding every integer in ``[lo, hi]``."""
    n = 1
    while not (-(1 << (n - 1)) <= lo and hi < (1 << (n - 1))):
        n += 1
    return n


def _transform_ranges(mat, lo, hi):
    """Ranges after the column pass ``mat·x`` and after the row pass ``(mat·x)·matᵀ``."""
    r1 = [_row_range(row, lo, hi) for row in mat]
    lo1, hi1 = min(r[0] for r in r1), max(r[1] for r in r1)
    coef2 = [[a * b for a in ra for b in rb] for ra in mat for rb in mat]
    r2 = [_row_range(c, lo, hi) for c in coef2]
    return (lo1, hi1), (min(r[0] for r in r2), max(r[1] for r in r2))


def _lin(coefs, xs):
    """``Σ c·x`` for ``c`` in {0, ±1}: adders and subtractors only."""
    pos = [x for c, x in zip(coefs, xs) if c == 1]
    neg = [x for c, x in zip(coefs, xs) if c == -1]
    assert len(pos) + len(neg) == sum(c != 0 for c in coefs), "transform entries must be 0 or ±1"
    expr = None
    for x in pos:
        expr = x if expr is None else expr + x
    for x in neg:
        expr = -x if expr is None else expr - x
    return Const(0) if expr is None else expr


class _TileTransform(wiring.Component):
    """Two-stage pipelined ``T x Tᵀ`` for a constant {0, ±1} matrix ``T`` (rows × cols).

    Stage 1 registers the column pass ``T·x`` (rows × cols), stage 2 the row pass ``(T·x)·Tᵀ``
    (rows × rows) into ``o.payload``. Intermediate and output widths are the exact ranges of the
    linear forms, so nothing wraps. With ``tag_shape``, ``tag_i`` (sampled with ``i``) comes out
    on ``tag_o`` with the transformed tile. ``busy``: a tile is inside.
    """
    latency = 2

    def __init__(self, mat, in_width, tag_shape=0):
        self._mat = mat
        self.tag_shape = tag_shape
        rows, cols = len(mat), len(mat[0])
        lo, hi = -(1 << (in_width - 1)), (1 << (in_width - 1)) - 1
        (lo1, hi1), (lo2, hi2) = _transform_ranges(mat, lo, hi)
        self._mid_width = _signed_bits(lo1, hi1)
        self.o_range = (lo2, hi2)
        self.o_width = _signed_bits(lo2, hi2)
        i_layout = winograd_tile_layout(signed(in_width), cols, cols)
        o_layout = winograd_tile_layout(signed(self.o_width), rows, rows)
        members = {"busy": Out(1)}
        if tag_shape:
            members["tag_i"] = In(tag_shape)
            members["tag_o"] = Out(tag_shape)
        super().__init__({
            "i": In(stream.Signature(i_layout)),
            "o": Out(stream.Signature(o_layout)),
            **members,
        })

    def elaborate(self, platform):
        m = Module()
        mat = self._mat
        rows, cols = len(mat), len(mat[0])
        adv = Signal()
        m.d.comb += [adv.eq(~self.o.valid | self.o.ready), self.i.ready.eq(adv)]

        # Stage 1: column pass t = T·x (rows × cols).
        s1_valid = Signal()
        t = [[Signal(signed(self._mid_width), name=f"t{a}_{l}") for l in range(cols)]
             for a in range(rows)]
        x = self.i.payload
        s1_tag = Signal(self.tag_shape) if self.tag_shape else None
        with m.If(adv):
            m.d.sync += s1_valid.eq(self.i.valid)
            if self.tag_shape:
                m.d.sync += [s1_tag.eq(self.tag_i)]
                with m.If(s1_valid):
                    m.d.sync += self.tag_o.eq(s1_tag)
            for a in range(rows):
                for l in range(cols):
                    m.d.sync += t[a][l].eq(_lin(mat[a], [x[k][l] for k in range(cols)]))

        # Stage 2: row pass y = t·Tᵀ (rows × rows).
        with m.If(adv):
            m.d.sync += self.o.valid.eq(s1_valid)
            with m.If(s1_valid):
                for a in range(rows):
                    for b in range(rows):
                        m.d.sync += self.o.payload[a][b].eq(_lin(mat[b], t[a]))
        m.d.comb += self.busy.eq(s1_valid | self.o.valid)
        return m


class WinogradPrePE(_TileTransform):
    """Winograd input transform ``V = Bᵀ d B`` of one int8 α×α tile per cycle (ARITHMETIC §2.1).

    Parameters: ``variant`` — ``"F2x2_3x3"`` (α = 4) or ``"F2x2_2x2"`` (α = 3); ``tag_shape``
    — optional tag carried from ``tag_i`` to ``tag_o`` alongside the tile (0 = none).

    Members:
      * ``i``: ``In(stream.Signature(ArrayLayout(ArrayLayout(signed(8), α), α)))`` — input tile
        ``d[row][col]``, int8.
      * ``o``: ``Out(stream.Signature(ArrayLayout(ArrayLayout(signed(10), α), α)))`` —
        ``V = Bᵀ d B``. Width :attr:`o_width` = 10 for both variants (ARITHMETIC §2.5: V in
        [−512, 510] for F2x2_3x3 and [−510, 510] for F2x2_2x2, the range in :attr:`o_range`).

    Adders only (entries of ``Bᵀ`` are 0 or ±1): F2x2_3x3 uses 32 add/subtract operations per
    tile, F2x2_2x2 12 (ARITHMETIC §2.1 table).
    Latency :attr:`latency` = 2 cycles (column pass, row pass); throughput one tile per cycle;
    backpressure: the whole pipeline holds while ``o.valid & ~o.ready``
    (``i.ready = ~o.valid | o.ready``).
    Golden model: :func:`nibble.sim.winograd.input_transform`.
    """

    def __init__(self, variant, tag_shape=0):
        _, bt, _ = _variant(variant)
        self.variant = variant
        self.alpha = len(bt)
        super().__init__(bt, 8, tag_shape)


class WinogradPostPE(_TileTransform):
    """Winograd output transform ``Y = Aᵀ M A`` of one α×α accumulator tile per cycle (ARITHMETIC §2.1).

    Parameters: ``variant`` — ``"F2x2_3x3"`` or ``"F2x2_2x2"``; ``acc_width`` — bits of the
    signed accumulators ``M`` (≥ 2); ``tag_shape`` — optional tag as :class:`WinogradPrePE`.

    Members:
      * ``i``: ``In(stream.Signature(ArrayLayout(ArrayLayout(signed(acc_width), α), α)))`` —
        ``M[row][col]``, any value of ``acc_width`` bits.
      * ``o``: ``Out(stream.Signature(ArrayLayout(ArrayLayout(signed(acc_width + growth), m), m)))``
        — ``Y = Aᵀ M A`` exactly, never wrapped. :attr:`growth` = 4 bits for F2x2_3x3 (each
        output sums 9 accumulators), 2 for F2x2_2x2 (4 accumulators). The result is still scaled
        (×4 for F2x2_3x3, ARITHMETIC §2.3); the requantizer divides it out (``sh + 2``, §4.5).
        When ``acc_width`` already holds the final scaled ``Y`` the low ``acc_width`` bits of ``o``
        are the wrapped result (ARITHMETIC §2.5, wrap-around datapath).

    Adders only: 24 add/subtract operations per tile for F2x2_3x3, 10 for F2x2_2x2.
    Latency :attr:`latency` = 2 cycles; throughput one tile per cycle; backpressure as
    :class:`WinogradPrePE`. Golden model: :func:`nibble.sim.winograd.output_transform`.
    """

    def __init__(self, variant, acc_width, tag_shape=0):
        m, _, at = _variant(variant)
        if acc_width < 2:
            raise ValueError(f"Winograd output transform needs at least 2 accumulator bits, not {acc_width}")
        self.variant, self.acc_width = variant, acc_width
        self.alpha, self.m = len(at[0]), m
        super().__init__(at, acc_width, tag_shape)
        self.growth = self.o_width - acc_width


class MultiplierLane(wiring.Component):
    """One signed multiplier ``p = a × b`` per cycle: the element-wise ``U ⊙ V`` of ARITHMETIC §2.1.

    Parameters: ``a_width``, ``b_width`` — operand bits (≥ 2 each); ``tag_shape`` — optional
    payload carried unchanged alongside the product.

    Members:
      * ``i``: ``In(stream.Signature(StructLayout{a: signed(a_width), b: signed(b_width)[, tag]}))``.
      * ``o``: ``Out(stream.Signature(StructLayout{p: signed(a_width + b_width)[, tag]}))`` — the
        exact product (``(−2^(a−1))·(−2^(b−1))`` fits). For Winograd, ``a`` is V (10 bits) and
        ``b`` is U (11 bits for F2x2_3x3, 10 for F2x2_2x2 with dE = 6, ARITHMETIC §2.5): 21 and
        20-bit products.

    The registers are the DSP48E1's: operand registers (AREG/BREG = 1) and the product register
    (MREG = 1), all on one clock enable (the advance signal), so a product up to 25×18 bits maps
    to one DSP48E1; wider operands take several.
    Latency :attr:`latency` = 2 cycles; throughput one product per cycle; backpressure: the
    pipeline holds while ``o.valid & ~o.ready`` (``i.ready = ~o.valid | o.ready``).
    """
    latency = 2

    def __init__(self, a_width, b_width, tag_shape=0):
        if a_width < 2 or b_width < 2:
            raise ValueError(f"multiplier operands need at least 2 bits each, not {a_width} and {b_width}")
        self.a_width, self.b_width, self.tag_shape = a_width, b_width, tag_shape
        in_fields = {"a": signed(a_width), "b": signed(b_width)}
        out_fields = {"p": signed(a_width + b_width)}
        if tag_shape:
            in_fields["tag"] = out_fields["tag"] = tag_shape
        super().__init__({
            "i": In(stream.Signature(data.StructLayout(in_fields))),
            "o": Out(stream.Signature(data.StructLayout(out_fields))),
        })

    def elaborate(self, platform):
        m = Module()
        adv = Signal()
        m.d.comb += [adv.eq(~self.o.valid | self.o.ready), self.i.ready.eq(adv)]

        # Stage 1: operand registers (AREG, BREG).
        s1_valid = Signal()
        a = Signal(signed(self.a_width))
        b = Signal(signed(self.b_width))
        s1_tag = Signal(self.tag_shape) if self.tag_shape else None
        with m.If(adv):
            m.d.sync += [s1_valid.eq(self.i.valid), a.eq(self.i.payload.a), b.eq(self.i.payload.b)]
            if self.tag_shape:
                m.d.sync += s1_tag.eq(self.i.payload.tag)

        # Stage 2: product register (MREG).
        with m.If(adv):
            m.d.sync += [self.o.valid.eq(s1_valid), self.o.payload.p.eq(a * b)]
            if self.tag_shape:
                m.d.sync += self.o.payload.tag.eq(s1_tag)
        return m


def code_value(code):
    """Value of a 4-bit weight code ``[s | E2 E1 E0]`` in units of ``2^n2`` as an Amaranth
    expression: ``(−1)^s · 2^(E−1)`` for ``E ≥ 1``, 0 for ``E = 0`` (ARITHMETIC §4.2), signed(8).
    Golden model: :func:`nibble.sim.golden.code_to_int`."""
    e = code[:3]
    mag = Mux(e == 0, 0, Const(1, 8) << (e - 1)[:3])
    return Mux(code[3], -mag, mag).as_signed()


def weight_transform_tile(g, variant):
    """``U = G g Gᵀ`` of one ``r×r`` integer tile ``g[row][col]`` (Amaranth values) as α×α
    expressions (ARITHMETIC §2.1, §2.3). The entries of ``G`` are 0, ±1 or ±2 (shifts and adds).
    For F2x2_3x3 with 4-bit codes (``|g| ≤ 64``) every ``U`` is in [−576, 576] (11 bits, §2.5).
    Golden model: :func:`nibble.sim.winograd.weight_transform`."""
    G = WINOGRAD_G[variant]

    def lin(coefs, xs):
        expr = None
        for c, x in zip(coefs, xs):
            if c == 0:
                continue
            term = x if abs(c) == 1 else x * abs(c)
            if expr is None:
                expr = term if c > 0 else -term
            else:
                expr = expr + term if c > 0 else expr - term
        return Const(0) if expr is None else expr

    r = len(G[0])
    t = [[lin(G[a], [g[k][col] for k in range(r)]) for col in range(r)] for a in range(len(G))]
    return [[lin(G[b], t[a]) for b in range(len(G))] for a in range(len(G))]
