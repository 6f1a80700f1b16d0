// Simulated DDR behind an AXI4 slave port: the memory a Xilinx MIG 7-series controller serves on
// the VC707/KC705, as the Verilated design's AXI4 master (m_axi_*) sees it, at the cycle level.
//
// Two layers:
//
// * nibble_ddr::Model — the memory and its AXI4 slave protocol engine, independent of Verilator:
//   once per clock cycle, step() takes the master's outputs sampled before the rising edge
//   (MasterOut) and computes the slave's outputs for the next cycle (SlaveOut). Beat width is a
//   run-time value here (4..64 bytes, a power of two), so the engine can be tested on its own.
// * nibble_ddr::Port<kBeatBytes, Top> — binds a Model to the Verilated top's m_axi_* members:
//   sample(top) after the inputs settle (clk low, eval) and before the edge, drive(top) after the
//   edge. Data wider than 64 bits is a VlWide<N> (32-bit words, least significant first), 33..64
//   bits a QData, up to 32 an IData; all three are handled.
//
// Port signals (IHI 0022 A2; no cache/prot/lock/qos/region/user): awid awaddr awlen awsize
// awburst awvalid / awready, wdata wstrb wlast wvalid / wready, bid bresp bvalid / bready, arid
// araddr arlen arsize arburst arvalid / arready, rid rdata rresp rlast rvalid / rready.
//
// Behaviour (cycles are clock cycles of the design; "beat" = kBeatBytes bytes):
//
// * Memory: `bytes` bytes at AXI byte addresses [base, base + bytes), zero at start, an anonymous
//   private mapping with MAP_NORESERVE: pages cost memory only once written (a read of an
//   untouched page maps the kernel's shared zero page), so a 1 GiB window costs next to nothing.
// * Read latency: a burst whose AR handshake is in cycle c has its first R beat valid in cycle
//   c + read_latency at the earliest (read_latency >= 1). Write latency: the B response of a
//   burst whose last W beat is taken in cycle c is valid in cycle c + write_latency at the
//   earliest (write_latency >= 1). Bursts are pipelined: the latency of several outstanding
//   bursts overlaps, as in the controller's command queue.
// * Bandwidth: a credit counter in thousandths of a byte gains milli_bytes_per_cycle every cycle
//   (capped at max(milli_bytes_per_cycle, two beats), so an idle spell buys at most two beats
//   ahead). Every beat, read or write, costs beat_bytes * 1000: an R beat is made valid, or
//   WREADY raised for one W beat, only when that much credit is there, then it is spent; reads
//   and writes take turns when both wait. Sustained: min(bytes_per_cycle, one beat per cycle
//   per direction).
// * Outstanding bursts: up to `outstanding` read bursts (from AR to last R beat) and as many
//   write bursts (from AW to B); ARREADY/AWREADY are low while that many are open. Reads are
//   returned in order, writes answered in order (one ID: RID/BID echo the burst's ID).
// * W beats are taken only for a burst whose AW has been accepted, in AW order (a slave may wait
//   for AWVALID before WREADY, IHI 0022 A3.3.1). WSTRB is honoured byte by byte.
// * Back-pressure: RVALID/BVALID, once high, stay high with the same payload until RREADY/BREADY
//   (A3.2.1); nothing of the slave's outputs depends combinationally on the master's.
// * Checks of each burst at its address handshake, in this order: the whole burst inside the
//   window, else DECERR; AxBURST = INCR, AxSIZE = log2(beat bytes) and no 4 KiB crossing
//   (A3.4.1), else SLVERR. A failed burst is still served in full (its W beats taken, its R
//   beats returned with zeros) with that response on every R beat / its B; nothing is written
//   or read. One line on stderr names it. An unaligned INCR start address is legal (A3.4.1):
//   the beats are those of the aligned address; WSTRB says which bytes are written.
// * Master checks (stderr, protocol_errors counter): a VALID dropped before its READY, or its
//   payload changed meanwhile (A3.2.1); WLAST not on the burst's last beat (the burst then
//   answers SLVERR).
// * Counters (Stat): bytes read (R beats of OKAY bursts handed over, the part of a first beat
//   below an unaligned start excluded), bytes written (bytes with their WSTRB bit set, OKAY
//   bursts), read bursts and write bursts (address handshakes), busy cycles (cycles in which at
//   least one burst is outstanding: from the cycle of its address handshake to the cycle of its
//   last R beat or its B handshake, both included), error bursts (answered SLVERR or DECERR),
//   protocol errors.
//
// Source: AMBA AXI and ACE Protocol Specification, ARM IHI 0022E, part A (AXI4): A2 signals,
// A3.2.1 handshake process, A3.3.1 channel dependencies, A3.4.1 address structure (INCR,
// AxSIZE, the 4 KiB boundary), A3.4.4 read and write response structure. Timing defaults and
// their sources: sim/ddr.py.
#pragma once

#include <sys/mman.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace nibble_ddr {

constexpr unsigned kMaxBeatBytes = 64;  // 512-bit data, the widest MIG AXI port (UG586)
constexpr uint64_t kPage = 4096;        // bursts must not cross it (IHI 0022 A3.4.1)
constexpr uint32_t kIncr = 1;           // AxBURST INCR
constexpr uint32_t kOkay = 0, kSlvErr = 2, kDecErr = 3;

// Counters, in the order DDR_STATS returns them (harness_axi.cpp).
enum Stat : unsigned {
    kStatBytesRead = 0,
    kStatBytesWritten = 1,
    kStatReadBursts = 2,
    kStatWriteBursts = 3,
    kStatBusyCycles = 4,
    kStatErrorBursts = 5,
    kStatProtocolErrors = 6,
    kStatCount = 7,
};

struct Params {
    uint64_t base = 0;                   // AXI byte address of the first byte
    uint64_t bytes = 0;                  // size of the window, bytes
    uint32_t read_latency = 1;           // cycles, AR handshake to first R beat, >= 1
    uint32_t write_latency = 1;          // cycles, last W beat to B, >= 1
    uint64_t milli_bytes_per_cycle = 0;  // bandwidth, 1/1000 byte per cycle, > 0
    uint32_t outstanding = 1;            // open bursts per direction, >= 1
};

// The master's outputs in one cycle, sampled before the rising edge.
struct MasterOut {
    bool arvalid = false, awvalid = false, wvalid = false, wlast = false, rready = false, bready = false;
    uint64_t araddr = 0, awaddr = 0, wstrb = 0;
    uint32_t arlen = 0, arsize = 0, arburst = 0, arid = 0;
    uint32_t awlen = 0, awsize = 0, awburst = 0, awid = 0;
    std::array<uint8_t, kMaxBeatBytes> wdata{};
};

// The slave's outputs, held for the next cycle.
struct SlaveOut {
    bool arready = false, awready = false, wready = false, rvalid = false, rlast = false, bvalid = false;
    uint32_t rresp = 0, rid = 0, bresp = 0, bid = 0;
    std::array<uint8_t, kMaxBeatBytes> rdata{};
};

class Model {
public:
    Model(const Params& p, unsigned beat_bytes) : p_(p), beat_(beat_bytes) {
        if (beat_ < 4 || beat_ > kMaxBeatBytes || (beat_ & (beat_ - 1)))
            throw std::invalid_argument("DDR beat must be a power of two of 4..64 bytes, not " +
                                        std::to_string(beat_));
        if (p_.bytes == 0 || p_.base + p_.bytes > (uint64_t(1) << 32) || p_.base + p_.bytes < p_.base)
            throw std::invalid_argument("DDR window must be non-empty and inside the 32-bit AXI address space");
        if (p_.base % beat_ || p_.bytes % beat_)
            throw std::invalid_argument("DDR base and size must be multiples of the beat (" +
                                        std::to_string(beat_) + " bytes)");
        if (p_.read_latency < 1 || p_.write_latency < 1)
            throw std::invalid_argument("DDR latencies must be at least 1 cycle");
        if (p_.milli_bytes_per_cycle == 0)
            throw std::invalid_argument("DDR bandwidth must be above 0 bytes per cycle");
        if (p_.outstanding < 1)
            throw std::invalid_argument("DDR outstanding bursts must be at least 1");
        void* m = mmap(nullptr, p_.bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED)
            throw std::runtime_error(std::string("cannot map ") + std::to_string(p_.bytes) +
                                     " bytes for the DDR: " + std::strerror(errno));
        mem_ = static_cast<uint8_t*>(m);
        cost_ = uint64_t(beat_) * 1000;
        cap_ = p_.milli_bytes_per_cycle > 2 * cost_ ? p_.milli_bytes_per_cycle : 2 * cost_;
        credit_ = cap_;
        out_.arready = out_.awready = true;
        log2_beat_ = 0;
        while ((1u << log2_beat_) < beat_) ++log2_beat_;
    }
    ~Model() { munmap(mem_, p_.bytes); }
    Model(const Model&) = delete;
    Model& operator=(const Model&) = delete;

    const Params& params() const { return p_; }
    unsigned beat_bytes() const { return beat_; }
    const SlaveOut& out() const { return out_; }
    uint64_t cycles() const { return cycle_; }
    uint64_t stat(unsigned i) const { return stats_[i]; }
    void clear_stats() { stats_.fill(0); }

    // Whether [addr, addr + n) lies inside the window.
    bool inside(uint64_t addr, uint64_t n) const {
        return addr >= p_.base && n <= p_.bytes && addr - p_.base <= p_.bytes - n;
    }
    // Host access straight into the memory (no cycles); false (nothing done) outside the window.
    bool host_write(uint64_t addr, const uint8_t* data, uint64_t n) {
        if (!inside(addr, n)) return false;
        if (n) std::memcpy(mem_ + (addr - p_.base), data, n);
        return true;
    }
    const uint8_t* host_view(uint64_t addr, uint64_t n) const {
        return inside(addr, n) ? mem_ + (addr - p_.base) : nullptr;
    }
    // Zeroes [addr, addr + n): whole pages are given back to the kernel (fresh zero pages).
    bool host_zero(uint64_t addr, uint64_t n) {
        if (!inside(addr, n)) return false;
        uint64_t lo = addr - p_.base, hi = lo + n;
        uint64_t plo = (lo + kPage - 1) / kPage * kPage, phi = hi / kPage * kPage;
        if (plo < phi) {
            std::memset(mem_ + lo, 0, plo - lo);
            if (madvise(mem_ + plo, phi - plo, MADV_DONTNEED) != 0) std::memset(mem_ + plo, 0, phi - plo);
            std::memset(mem_ + phi, 0, hi - phi);
        } else {
            std::memset(mem_ + lo, 0, n);
        }
        return true;
    }

    // One clock cycle: `in` are the master's outputs before the edge; out() is updated to the
    // slave's outputs for the next cycle.
    void step(const MasterOut& in) {
        const uint64_t c = cycle_++;
        const bool ar = in.arvalid && out_.arready, aw = in.awvalid && out_.awready;
        const bool w = in.wvalid && out_.wready, r = out_.rvalid && in.rready, b = out_.bvalid && in.bready;
        check_master(in, c);
        if (!reads_.empty() || !writes_.empty() || !bq_.empty() || ar || aw) ++stats_[kStatBusyCycles];

        if (r) {
            Read& head = reads_.front();
            if (head.resp == kOkay) stats_[kStatBytesRead] += beat_ - head.offset;
            head.offset = 0;
            head.addr += beat_;
            out_.rvalid = false;
            if (--head.beats == 0) reads_.pop_front();
        }
        if (b) {
            bq_.pop_front();
            out_.bvalid = false;
        }
        if (ar) {
            Read rd;
            rd.resp = check("read", in.araddr, in.arlen, in.arsize, in.arburst, rd.addr, rd.offset);
            rd.beats = in.arlen + 1;
            rd.id = in.arid;
            rd.ready_at = c + p_.read_latency;
            reads_.push_back(rd);
            ++stats_[kStatReadBursts];
        }
        if (aw) {
            Write wr;
            uint32_t offset;
            wr.resp = check("write", in.awaddr, in.awlen, in.awsize, in.awburst, wr.addr, offset);
            wr.beats = in.awlen + 1;
            wr.id = in.awid;
            wr.start = in.awaddr;
            writes_.push_back(wr);
            ++stats_[kStatWriteBursts];
        }
        if (w) take_w(in, c);

        // Credit, then the outputs of the next cycle (cycle c + 1).
        credit_ = credit_ + p_.milli_bytes_per_cycle > cap_ ? cap_ : credit_ + p_.milli_bytes_per_cycle;
        const bool want_r = !out_.rvalid && !reads_.empty() && reads_.front().ready_at <= c + 1;
        const bool want_w = !w_paid_ && !writes_.empty();
        for (int pass = 0; pass < 2; ++pass) {
            const bool do_write = (pass == 0) == write_first_;
            if (do_write && want_w && credit_ >= cost_) {
                credit_ -= cost_, w_paid_ = true;
            } else if (!do_write && want_r && credit_ >= cost_) {
                credit_ -= cost_;
                load_r();
            }
        }
        if (want_r && want_w) write_first_ = !write_first_;
        out_.wready = w_paid_;
        if (!out_.bvalid && !bq_.empty() && bq_.front().ready_at <= c + 1) {
            out_.bvalid = true;
            out_.bresp = bq_.front().resp;
            out_.bid = bq_.front().id;
        }
        out_.arready = reads_.size() < p_.outstanding;
        out_.awready = writes_.size() + bq_.size() < p_.outstanding;
        held_ = {in.arvalid && !ar, in.awvalid && !aw, in.wvalid && !w};
        prev_ = in;
    }

private:
    struct Read {
        uint64_t addr = 0;    // aligned address of the next beat
        uint32_t offset = 0;  // bytes of the next beat below the start address (first beat only)
        uint32_t beats = 0;   // beats left
        uint32_t resp = kOkay, id = 0;
        uint64_t ready_at = 0;
    };
    struct Write {
        uint64_t addr = 0, start = 0;
        uint32_t beats = 0, got = 0;
        uint32_t resp = kOkay, id = 0;
    };
    struct Resp {
        uint32_t resp, id;
        uint64_t ready_at;
    };
    struct Held {
        bool ar, aw, w;  // the master's VALID was high and not taken in the previous cycle
    };

    // The response of a burst, and its first beat's aligned address and offset.
    uint32_t check(const char* what, uint64_t addr, uint32_t len, uint32_t size, uint32_t burst,
                   uint64_t& first, uint32_t& offset) {
        const uint64_t beats = uint64_t(len) + 1;
        first = addr & ~uint64_t(beat_ - 1);
        offset = static_cast<uint32_t>(addr - first);
        const char* why = nullptr;
        uint32_t resp = kOkay;
        if (!inside(first, beats * beat_)) {
            resp = kDecErr, why = "outside the DDR window";
        } else if (burst != kIncr) {
            resp = kSlvErr, why = burst == 0 ? "FIXED burst (only INCR is served)" : "WRAP or reserved burst type (only INCR is served)";
        } else if (size != log2_beat_) {
            resp = kSlvErr, why = "AxSIZE is not log2 of the beat bytes";
        } else if ((first % kPage) + beats * beat_ > kPage) {
            resp = kSlvErr, why = "crosses a 4 KiB boundary";
        }
        if (resp != kOkay) {
            ++stats_[kStatErrorBursts];
            std::fprintf(stderr,
                         "ddr: %s burst at 0x%08llx, %llu beats, AxSIZE %u, AxBURST %u (cycle %llu): %s, %s "
                         "(window 0x%08llx..0x%08llx, %u-byte beats)\n",
                         what, (unsigned long long)addr, (unsigned long long)beats, size, burst,
                         (unsigned long long)cycle_ - 1, resp == kDecErr ? "DECERR" : "SLVERR", why,
                         (unsigned long long)p_.base, (unsigned long long)(p_.base + p_.bytes), beat_);
        }
        return resp;
    }

    void load_r() {
        const Read& head = reads_.front();
        if (head.resp == kOkay) std::memcpy(out_.rdata.data(), mem_ + (head.addr - p_.base), beat_);
        else std::memset(out_.rdata.data(), 0, beat_);
        out_.rvalid = true;
        out_.rresp = head.resp;
        out_.rid = head.id;
        out_.rlast = head.beats == 1;
    }

    void take_w(const MasterOut& in, uint64_t c) {
        w_paid_ = false;
        Write& wr = writes_.front();
        const bool last = wr.got + 1 == wr.beats;
        if (in.wlast != last) {
            protocol(c, "WLAST %u on beat %u of the %u-beat write burst at 0x%08llx (IHI 0022 A3.4.1)",
                     unsigned(in.wlast), wr.got + 1, wr.beats, (unsigned long long)wr.start);
            if (wr.resp == kOkay) {
                wr.resp = kSlvErr;
                ++stats_[kStatErrorBursts];
            }
        }
        if (wr.resp == kOkay) {
            uint8_t* dst = mem_ + (wr.addr - p_.base);
            for (unsigned i = 0; i < beat_; ++i) {
                if (in.wstrb >> i & 1) {
                    dst[i] = in.wdata[i];
                    ++stats_[kStatBytesWritten];
                }
            }
        }
        wr.addr += beat_;
        if (++wr.got == wr.beats) {
            bq_.push_back({wr.resp, wr.id, c + p_.write_latency});
            writes_.pop_front();
        }
    }

    void check_master(const MasterOut& in, uint64_t c) {
        const Held& h = held_;
        if (h.ar && (!in.arvalid || in.araddr != prev_.araddr || in.arlen != prev_.arlen ||
                     in.arsize != prev_.arsize || in.arburst != prev_.arburst || in.arid != prev_.arid))
            protocol(c, "ARVALID dropped or AR payload changed before ARREADY (IHI 0022 A3.2.1)");
        if (h.aw && (!in.awvalid || in.awaddr != prev_.awaddr || in.awlen != prev_.awlen ||
                     in.awsize != prev_.awsize || in.awburst != prev_.awburst || in.awid != prev_.awid))
            protocol(c, "AWVALID dropped or AW payload changed before AWREADY (IHI 0022 A3.2.1)");
        if (h.w && (!in.wvalid || in.wlast != prev_.wlast || in.wstrb != prev_.wstrb ||
                    std::memcmp(in.wdata.data(), prev_.wdata.data(), beat_) != 0))
            protocol(c, "WVALID dropped or W payload changed before WREADY (IHI 0022 A3.2.1)");
    }

    template <typename... A>
    void protocol(uint64_t c, const char* fmt, A... args) {
        ++stats_[kStatProtocolErrors];
        std::fprintf(stderr, "ddr: protocol error in cycle %llu: ", (unsigned long long)c);
        if constexpr (sizeof...(A) == 0) std::fputs(fmt, stderr);
        else std::fprintf(stderr, fmt, args...);
        std::fputc('\n', stderr);
    }

    Params p_;
    unsigned beat_, log2_beat_ = 0;
    uint8_t* mem_ = nullptr;
    uint64_t cost_ = 0, cap_ = 0, credit_ = 0, cycle_ = 0;
    bool w_paid_ = false, write_first_ = false;
    SlaveOut out_;
    MasterOut prev_;
    Held held_{false, false, false};
    std::deque<Read> reads_;
    std::deque<Write> writes_;
    std::deque<Resp> bq_;
    std::array<uint64_t, kStatCount> stats_{};
};

// Verilator's port types: IData/QData (integers) or VlWide<N> (32-bit words, .data()).
template <typename T>
inline void load_bytes(const T& v, uint8_t* out, unsigned n) {
    if constexpr (std::is_integral_v<T>) {
        for (unsigned i = 0; i < n; ++i) out[i] = static_cast<uint8_t>(uint64_t(v) >> (8 * i));
    } else {
        const auto* words = v.data();
        for (unsigned i = 0; i < n; ++i) out[i] = static_cast<uint8_t>(words[i / 4] >> (8 * (i % 4)));
    }
}

template <typename T>
inline void store_bytes(T& v, const uint8_t* in, unsigned n) {
    if constexpr (std::is_integral_v<T>) {
        uint64_t x = 0;
        for (unsigned i = 0; i < n; ++i) x |= uint64_t(in[i]) << (8 * i);
        v = static_cast<T>(x);
    } else {
        auto* words = v.data();
        for (unsigned i = 0; i < (n + 3) / 4; ++i) words[i] = 0;
        for (unsigned i = 0; i < n; ++i) words[i / 4] |= static_cast<uint32_t>(in[i]) << (8 * (i % 4));
    }
}

// A Model on the m_axi_* members of a Verilated top with kBeatBytes-byte data.
template <unsigned kBeatBytes>
class Port {
    static_assert(kBeatBytes >= 4 && kBeatBytes <= kMaxBeatBytes && (kBeatBytes & (kBeatBytes - 1)) == 0,
                  "NIBBLE_DDR_BEAT_BYTES must be a power of two of 4..64");

public:
    explicit Port(const Params& p) : model(p, kBeatBytes) {}

    // Before the rising edge, the design's outputs settled.
    template <class Top>
    void sample(const Top* t) {
        in_.arvalid = t->m_axi_arvalid, in_.araddr = t->m_axi_araddr, in_.arlen = t->m_axi_arlen;
        in_.arsize = t->m_axi_arsize, in_.arburst = t->m_axi_arburst, in_.arid = t->m_axi_arid;
        in_.awvalid = t->m_axi_awvalid, in_.awaddr = t->m_axi_awaddr, in_.awlen = t->m_axi_awlen;
        in_.awsize = t->m_axi_awsize, in_.awburst = t->m_axi_awburst, in_.awid = t->m_axi_awid;
        in_.wvalid = t->m_axi_wvalid, in_.wlast = t->m_axi_wlast;
        in_.wstrb = static_cast<uint64_t>(t->m_axi_wstrb);
        load_bytes(t->m_axi_wdata, in_.wdata.data(), kBeatBytes);
        in_.rready = t->m_axi_rready, in_.bready = t->m_axi_bready;
    }

    // After the rising edge: the model's cycle, then its outputs onto the design's inputs.
    template <class Top>
    void step(Top* t) {
        model.step(in_);
        drive(t);
    }

    template <class Top>
    void drive(Top* t) const {
        const SlaveOut& o = model.out();
        t->m_axi_arready = o.arready, t->m_axi_awready = o.awready, t->m_axi_wready = o.wready;
        t->m_axi_rvalid = o.rvalid, t->m_axi_rlast = o.rlast, t->m_axi_rresp = o.rresp, t->m_axi_rid = o.rid;
        store_bytes(t->m_axi_rdata, o.rdata.data(), kBeatBytes);
        t->m_axi_bvalid = o.bvalid, t->m_axi_bresp = o.bresp, t->m_axi_bid = o.bid;
    }

    Model model;

private:
    MasterOut in_;
};

}  // namespace nibble_ddr
