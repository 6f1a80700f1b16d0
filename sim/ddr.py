"""The simulated DDR: where it sits in the AXI address map and how fast it is, stated once.

The VC707 and KC705 carry a DDR3 SODIMM (64-bit data bus) behind a Xilinx MIG 7-series
controller. The simulated PCIe device (``sim/harness_axi.cpp``) serves the design's AXI4 master
port ``m_axi_*`` with the cycle-level model of ``sim/ddr_model.h``, configured by
:class:`DdrParams` (its :meth:`DdrParams.args` are the harness's ``--ddr-*`` arguments); the host
reaches the same memory at the same addresses (DMA on a board: the XDMA's AXI master reaches the
MIG through the interconnect; in simulation the harness's DDR_WRITE/DDR_READ commands, which take
no design cycles).

Address map: the accelerator's own slave decodes byte addresses ``0x0000_0000``–``0x3FFF_FFFF``
(four regions of 256 MiB, ``nibble.hw.accelerator.REGION_BASE``; its bridge answers SLVERR above
them), so the DDR goes at :data:`DDR_BASE` = ``0x8000_0000``: clear of those regions with room to
grow, 1 GiB (the SODIMM of both boards) ending at ``0xBFFF_FFFF``, 2 GiB fitting below 2³², and a
plain high bit for the interconnect to decode.

Timing defaults (DDR3-1600, 64-bit SODIMM, a 7-series MIG at 4:1, engine and MIG UI clock
200 MHz = 800 MHz memory clock / 4), in engine clock cycles:

* Peak bandwidth: 1600 MT/s × 8 bytes = 12.8 GB/s = :data:`DDR_PEAK_BYTES_PER_CYCLE` = 64 bytes
  per 5 ns cycle — the MIG's native 512-bit UI word per cycle (Xilinx UG586, "Zynq-7000 SoC and
  7 Series Devices Memory Interface Solutions", DDR3: 4:1 controller-to-memory clock ratio,
  ``APP_DATA_WIDTH`` = 2 × nCK_PER_CLK × DQ_WIDTH = 512).
* Sustained efficiency :data:`DDR_EFFICIENCY` = 0.8, so :data:`DDR_BYTES_PER_CYCLE` = 51.2.
  Xilinx (Answer Record 36719, "MIG 7 Series and Virtex-6 DDR2/DDR3 Solution Center — memory
  controller efficiency") reports read and write efficiency near 100 % for long bursts of one
  direction, and names what lowers it: activates and precharges at row changes, write-to-read
  recovery and read-to-write bus turnaround, refresh (tRFC / tREFI = 260 ns / 7.8 µs = 3.3 % for
  4 Gb DDR3 devices, JEDEC JESD79-3F), ZQ calibration; AR 63234 ("MIG 7 Series DDR2 and DDR3
  Performance Estimation Guide") defines efficiency = data-transfer cycles / total cycles and
  says it is found by simulating the target traffic. The engine's tile traffic interleaves
  reads and writes of long sequential bursts, so this model takes 80 %: refresh plus a
  turnaround every few bursts. It is a modelling choice, not a measurement.
* Read latency :data:`DDR_READ_LATENCY` = 30 cycles (150 ns) from the AR handshake to the first R
  beat. Xilinx gives no fixed figure (its Answer Record 45644 on the MIG's latency: it depends on
  the configuration, the traffic and the commands already queued, and is to be found by
  simulating the target traffic), so it is built up: the DRAM's own part for a row miss,
  tRCD + CL = 13.75 ns + 13.75 ns (DDR3-1600K, 11-11-11, JESD79-3F) ≈ 6 cycles, plus the BL8
  burst (4 memory clocks, 1 cycle); the MIG's PHY read path (ISERDES, PHASER_IN, IN_FIFO and
  the calibrated read-data alignment) ≈ 10 cycles; its user interface and controller (command
  queue, bank machine, arbiter, read buffer) ≈ 8 cycles; the AXI4 slave shim in front of the UI
  (AR to command, read data to R) ≈ 5 cycles. An estimate, to be replaced by a figure measured
  on a board.
* Write latency :data:`DDR_WRITE_LATENCY` = 10 cycles from the last W beat to B: the MIG's AXI
  shim answers once the UI has taken the command and its data (the write itself reaches the
  DRAM later), so only the shim and UI pipeline count. An estimate likewise.
* :data:`DDR_OUTSTANDING` = 8 bursts per direction: more than the engine's master keeps open
  (4 reads and 4 writes, :class:`nibble.hw.mem.axi_master.AXI4Master`), so the controller's
  queue never limits it.

With the engine's 128-bit port (16-byte beats, ``vc`` = 16) the port (16 bytes per cycle and
direction) is slower than the DDR, so the DDR's bandwidth shows only for ports of 512 bits; the
latency shows at every width.
"""
import dataclasses
from decimal import Decimal, InvalidOperation

__all__ = ["DDR_BASE", "DDR_BYTES", "DDR_CLK_HZ", "DDR_TRANSFERS_PER_S", "DDR_BUS_BYTES",
           "DDR_PEAK_BYTES_PER_CYCLE", "DDR_EFFICIENCY", "DDR_BYTES_PER_CYCLE", "DDR_READ_LATENCY",
           "DDR_WRITE_LATENCY", "DDR_OUTSTANDING", "STAT_NAMES", "DdrParams"]

#: AXI byte address of the first DDR byte (see the module docstring), defined with the step format.
from ..hw.isa import DDR_BASE  # noqa: E402
from ..hw.config import EngineConfig as _EngineConfig  # noqa: E402
#: DDR size, bytes: the 1 GiB SODIMM of the VC707 and KC705 (``EngineConfig.ddr_bytes``).
DDR_BYTES = _EngineConfig.ddr_bytes
#: Engine clock = MIG UI clock, Hz (``EngineConfig.clk_hz``; 800 MHz memory clock / 4).
DDR_CLK_HZ = 200_000_000
#: DDR3-1600: transfers per second on the data bus.
DDR_TRANSFERS_PER_S = 1_600_000_000
#: Width of the SODIMM's data bus, bytes.
DDR_BUS_BYTES = 8
#: Peak bandwidth, bytes per engine cycle: 1600 MT/s × 8 B / 200 MHz = 64.
DDR_PEAK_BYTES_PER_CYCLE = DDR_TRANSFERS_PER_S * DDR_BUS_BYTES // DDR_CLK_HZ
#: Sustained fraction of the peak (a modelling choice, see the module docstring).
DDR_EFFICIENCY = Decimal("0.8")
#: Sustained bandwidth shared by reads and writes, bytes per cycle (51.2 = 10.24 GB/s).
DDR_BYTES_PER_CYCLE = DDR_PEAK_BYTES_PER_CYCLE * DDR_EFFICIENCY
#: Cycles from an AR handshake to its first R beat (an estimate, see the module docstring).
DDR_READ_LATENCY = 30
#: Cycles from a burst's last W beat to its B response (an estimate).
DDR_WRITE_LATENCY = 10
#: Bursts the controller keeps open per direction.
DDR_OUTSTANDING = 8
#: The DDR counters in the order of the harness's DDR_STATS reply (``ddr_model.h``,
#: ``nibble_ddr::Stat``): bytes read (R beats of OKAY bursts), bytes written (bytes with their
#: WSTRB bit set, OKAY bursts), read bursts, write bursts (address handshakes), busy cycles
#: (cycles with at least one burst outstanding), error bursts (answered SLVERR or DECERR),
#: protocol errors (the master broke an AXI rule; each is also a line on the harness's stderr).
STAT_NAMES = ("bytes_read", "bytes_written", "read_bursts", "write_bursts", "busy_cycles",
              "error_bursts", "protocol_errors")


def _milli(value, what):
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"DdrParams {what} must be a number of bytes per cycle, not {value!r}") from None
    if not d.is_finite() or d <= 0 or (d * 1000) % 1 != 0:
        raise ValueError(f"DdrParams {what} must be above 0 with at most three decimals (the harness "
                         f"counts thousandths of a byte), not {value!r}")
    return d


@dataclasses.dataclass(frozen=True)
class DdrParams:
    """The simulated DDR of one device (defaults: the module's constants).

    :param base: AXI byte address of the first byte (a multiple of the beat; default
        :data:`DDR_BASE`).
    :param bytes: size in bytes (default :data:`DDR_BYTES`); ``base + bytes <= 2**32``.
    :param read_latency: cycles from an AR handshake to its first R beat, >= 1.
    :param write_latency: cycles from a burst's last W beat to its B response, >= 1.
    :param bytes_per_cycle: bandwidth shared by reads and writes, bytes per cycle (> 0, at most
        three decimals; an int, a ``Decimal`` or a string like ``"51.2"``; a float is taken by
        its shortest decimal form). Each beat, read or written, costs its bytes.
    :param outstanding: bursts open at once per direction, >= 1.

    Raises ``ValueError`` naming the field for a value out of range.
    """
    base: int = DDR_BASE
    bytes: int = DDR_BYTES
    read_latency: int = DDR_READ_LATENCY
    write_latency: int = DDR_WRITE_LATENCY
    bytes_per_cycle: Decimal = DDR_BYTES_PER_CYCLE
    outstanding: int = DDR_OUTSTANDING

    def __post_init__(self):
        for name in ("base", "bytes", "read_latency", "write_latency", "outstanding"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool):
                raise ValueError(f"DdrParams {name} must be an int, not {v!r}")
        if self.base < 0 or self.bytes <= 0 or self.base + self.bytes > 1 << 32:
            raise ValueError(f"DdrParams window 0x{self.base:x} + {self.bytes} bytes must be non-empty "
                             f"and inside the 32-bit AXI address space")
        for name in ("read_latency", "write_latency", "outstanding"):
            if not 1 <= getattr(self, name) < 1 << 32:
                raise ValueError(f"DdrParams {name} must be in 1..2**32-1, not {getattr(self, name)}")
        object.__setattr__(self, "bytes_per_cycle", _milli(self.bytes_per_cycle, "bytes_per_cycle"))

    @classmethod
    def from_regmap(cls, regmap, **overrides):
        """The parameters of the DDR a register map describes (``regions["ddr"]``: ``base``,
        ``bytes``), the timing from the defaults or ``overrides``; ``None`` when the map has no
        ``ddr`` region. Raises ``ValueError`` for a ``ddr`` region without integer base/bytes."""
        r = regmap.get("regions", {}).get("ddr")
        if r is None:
            return None
        try:
            base, size = int(r["base"]), int(r["bytes"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"regmap region 'ddr' needs integer 'base' and 'bytes', not {r!r}") from e
        return cls(**{"base": base, "bytes": size, **overrides})

    @property
    def end(self):
        """First byte address past the window."""
        return self.base + self.bytes

    def contains(self, addr, n):
        """Whether bytes [addr, addr + n) are all inside the window."""
        return self.base <= addr and addr + n <= self.end

    def overlaps(self, addr, n):
        """Whether any of bytes [addr, addr + n) is inside the window."""
        return n > 0 and addr < self.end and self.base < addr + n

    def args(self):
        """The harness's command-line arguments for these parameters."""
        return ["--ddr-base", str(self.base), "--ddr-bytes", str(self.bytes),
                "--ddr-latency", str(self.read_latency), "--ddr-write-latency", str(self.write_latency),
                "--ddr-bytes-per-cycle", format(self.bytes_per_cycle.normalize(), "f"),
                "--ddr-outstanding", str(self.outstanding)]
