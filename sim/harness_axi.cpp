// Simulated device behind a memory-mapped host link: a Verilated design whose host interface is
// an AXI4 slave port, driven by this harness as the PCIe endpoint's (XDMA) AXI master would,
// with commands from stdin and replies on stdout; optionally with a simulated DDR serving the
// design's AXI4 master port (ddr_model.h).
//
// The design (Verilator prefix Vtop) has inputs clk, rst and the slave port s_axi_* (AXI4,
// 32-bit data: awid awaddr awlen awsize awburst awvalid / awready, wdata wstrb wlast wvalid /
// wready, bid bresp bvalid / bready, arid araddr arlen arsize arburst arvalid / arready, rid
// rdata rresp rlast rvalid / rready), and output idle (engine not busy, no transaction in flight).
// Built with -DNIBBLE_DDR_BEAT_BYTES=B (B = 4, 8, 16, 32 or 64: the data width / 8), it also has
// the master port m_axi_* (the same members, 32-bit addresses, B-byte data), served by the DDR
// model at AXI byte addresses [ddr-base, ddr-base + ddr-bytes) (see ddr_model.h for its timing,
// checks and counters). Usage:
//
//     Vsim [--reset-cycles R] [--handshake-cycles H]
//          [--ddr-base A --ddr-bytes N --ddr-latency L --ddr-write-latency W
//           --ddr-bytes-per-cycle X --ddr-outstanding K]
//
// The --ddr-* arguments are decimal: A and N bytes (N > 0, A + N <= 2^32, both multiples of B),
// L and W cycles (>= 1: AR handshake to first R beat, last W beat to B), X bytes per cycle (> 0,
// at most three decimals: the bandwidth shared by reads and writes), K open bursts per direction
// (>= 1). A DDR build needs all six (their values are stated once, in sim/ddr.py); a build
// without the port accepts and ignores them.
//
// Commands (little-endian), each answered in order:
//
//     request:  op (1) | addr (4) | len (4) | payload (len bytes, WRITE and DDR_WRITE only)
//     reply:    status (1) | offset (4) | cycles (8) | payload (READ: len bytes, DDR_READ: len
//               bytes, DDR_STATS: 8 * kDdrStatCount bytes; none for the others)
//
// * op 1 WRITE: len bytes (a multiple of 4) to byte address addr, as INCR bursts of at most 256
//   beats that never cross a 4 KiB boundary (AXI4, ARM IHI 0022, A3.4.1), one burst at a time:
//   AW and the W beats offered together, W a beat per cycle, then B.
// * op 2 READ: len bytes from addr, the same bursts (AR, then R a beat per cycle).
// * op 3 WAIT: addr | len is a cycle limit (u64, low word first); the design runs until idle is 1
//   or the limit passes.
// * op 4 DDR_WRITE: len bytes (any alignment) into the DDR model's memory at AXI byte address
//   addr, straight into the memory: no design cycle elapses (the host's DMA into DDR moves at
//   memory speed in simulation, and its cycles are not the design's). Status DECERR (3), nothing
//   written, when [addr, addr + len) is not inside the DDR window or the design has no DDR port.
// * op 5 DDR_READ: len bytes from the DDR memory at addr, likewise without cycles; the payload
//   is always len bytes (zeros with DECERR).
// * op 6 DDR_STATS: addr and len 0; the payload is the DDR counters as kDdrStatCount u64s in
//   this order: bytes read, bytes written, read bursts, write bursts, busy cycles (at least one
//   burst outstanding), error bursts (answered SLVERR or DECERR), protocol errors of the master
//   (ddr_model.h, nibble_ddr::Stat). Zeros with DECERR without a DDR port.
// * op 7 DDR_CLEAR: the counters are set to zero and the memory bytes [addr, addr + len) too
//   (len 0: the memory is untouched); DECERR (nothing done) for a range outside the window or
//   without a DDR port.
// * status: the first non-OKAY response (2 SLVERR, 3 DECERR) of the transfer, or 0x10 (TIMEOUT:
//   a handshake did not come within H cycles, default 100,000; the transfer is abandoned) or,
//   for WAIT, 0x11 (BUSY: still not idle at the limit); 0x20 a malformed command (then the
//   harness exits with status 4). offset: the byte offset in the transfer of the first failed
//   burst (0 when status is 0, and for the DDR commands). cycles: simulated cycles so far, reset
//   included. A READ's payload is always len bytes (zeros where a beat failed).
// * Between commands the design keeps running while idle is 0 (stdin polled every 1024
//   cycles); when it is idle the harness blocks on stdin, so an idle device costs no CPU time.
//   The DDR model runs in every simulated cycle, reset included.
// * On stdin EOF the harness exits with status 0. Bad arguments exit with status 2, a write
//   error on stdout with status 3.
#include "Vtop.h"
#include "ddr_model.h"
#include "verilated.h"

#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

namespace {

constexpr uint8_t kOpWrite = 1, kOpRead = 2, kOpWait = 3;
constexpr uint8_t kOpDdrWrite = 4, kOpDdrRead = 5, kOpDdrStats = 6, kOpDdrClear = 7;
constexpr uint8_t kOkay = 0, kDecErr = 3, kTimeout = 0x10, kBusy = 0x11, kBadCommand = 0x20;
constexpr unsigned kDdrStatCount = nibble_ddr::kStatCount;
constexpr size_t kHeader = 9;
constexpr unsigned kPollCycles = 1024;
constexpr uint32_t kMaxBeats = 256;
constexpr uint32_t kBoundary = 4096;

std::vector<uint8_t> in_buf;   // bytes read from stdin, not yet consumed
size_t in_pos = 0;
bool in_eof = false;

// Reads what stdin has; timeout_ms as for poll().
void read_input(int timeout_ms) {
    struct pollfd pfd = {0, POLLIN, 0};
    int r;
    do {
        r = poll(&pfd, 1, timeout_ms);
    } while (r < 0 && errno == EINTR);
    if (r <= 0) return;
    uint8_t buf[65536];
    ssize_t n;
    do {
        n = read(0, buf, sizeof buf);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) {
        in_eof = true;
        return;
    }
    if (in_pos > 0 && in_pos == in_buf.size()) {
        in_buf.clear(), in_pos = 0;
    } else if (in_pos > (1u << 20)) {
        in_buf.erase(in_buf.begin(), in_buf.begin() + static_cast<long>(in_pos)), in_pos = 0;
    }
    in_buf.insert(in_buf.end(), buf, buf + n);
}

size_t available() { return in_buf.size() - in_pos; }

uint32_t get_u32(size_t at) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; --i) v = (v << 8) | in_buf[in_pos + at + i];
    return v;
}

void put_bytes(const void* data, size_t n) {
    const uint8_t* p = static_cast<const uint8_t*>(data);
    size_t done = 0;
    while (done < n) {
        ssize_t k = write(1, p + done, n - done);
        if (k < 0) {
            if (errno == EINTR) continue;
            std::fprintf(stderr, "harness: write to stdout failed: %s\n", std::strerror(errno));
            std::exit(3);
        }
        done += static_cast<size_t>(k);
    }
}

void reply(uint8_t status, uint32_t offset, uint64_t cycles, const std::vector<uint8_t>* data) {
    uint8_t head[13];
    head[0] = status;
    for (int i = 0; i < 4; ++i) head[1 + i] = static_cast<uint8_t>(offset >> (8 * i));
    for (int i = 0; i < 8; ++i) head[5 + i] = static_cast<uint8_t>(cycles >> (8 * i));
    if (data && !data->empty()) {
        std::vector<uint8_t> all(head, head + 13);
        all.insert(all.end(), data->begin(), data->end());
        put_bytes(all.data(), all.size());
    } else {
        put_bytes(head, 13);
    }
}

// A reply whose payload is n bytes at data, or n zero bytes when data is null.
void reply_raw(uint8_t status, uint64_t cycles, const uint8_t* data, size_t n) {
    reply(status, 0, cycles, nullptr);
    if (data) {
        put_bytes(data, n);
        return;
    }
    static const uint8_t zeros[65536] = {};
    for (size_t done = 0; done < n;) {
        size_t k = n - done < sizeof zeros ? n - done : sizeof zeros;
        put_bytes(zeros, k);
        done += k;
    }
}

unsigned long parse_arg(const char* name, const char* value) {
    char* end = nullptr;
    errno = 0;
    unsigned long v = value ? std::strtoul(value, &end, 10) : 0;
    if (!value || errno || *end != '\0') {
        std::fprintf(stderr, "harness: %s needs a decimal integer\n", name);
        std::exit(2);
    }
    return v;
}

// A decimal number of bytes with at most three decimals, in thousandths of a byte.
uint64_t parse_milli(const char* name, const char* value) {
    uint64_t whole = 0, frac = 0;
    int digits = 0, frac_digits = 0;
    const char* p = value;
    bool ok = p != nullptr;
    for (; ok && *p >= '0' && *p <= '9'; ++p, ++digits) {
        whole = whole * 10 + static_cast<uint64_t>(*p - '0');
        ok = whole < (uint64_t(1) << 40);
    }
    if (ok && *p == '.') {
        for (++p; ok && *p >= '0' && *p <= '9'; ++p, ++frac_digits) {
            frac = frac * 10 + static_cast<uint64_t>(*p - '0');
            ok = frac_digits < 3;
        }
    }
    if (!ok || *p != '\0' || digits + frac_digits == 0) {
        std::fprintf(stderr, "harness: %s needs a decimal number with at most three decimals\n", name);
        std::exit(2);
    }
    for (; frac_digits < 3; ++frac_digits) frac *= 10;
    return whole * 1000 + frac;
}

struct Sim {
    std::unique_ptr<VerilatedContext> context;
    std::unique_ptr<Vtop> top;
    uint64_t cycles = 0;
    unsigned long handshake_cycles = 100000;
#ifdef NIBBLE_DDR_BEAT_BYTES
    std::unique_ptr<nibble_ddr::Port<NIBBLE_DDR_BEAT_BYTES>> ddr;
#endif

    nibble_ddr::Model* ddr_model() {
#ifdef NIBBLE_DDR_BEAT_BYTES
        return ddr ? &ddr->model : nullptr;
#else
        return nullptr;
#endif
    }

    // One clock cycle. Handshakes are sampled after the inputs settle, before the rising edge.
    struct Edge {
        bool aw, w, b, ar, r;
        uint32_t rdata;
        unsigned bresp, rresp, rlast;
    };
    Edge tick() {
        top->clk = 0;
        top->eval();
        Edge e;
        e.aw = top->s_axi_awvalid && top->s_axi_awready;
        e.w = top->s_axi_wvalid && top->s_axi_wready;
        e.b = top->s_axi_bvalid && top->s_axi_bready;
        e.ar = top->s_axi_arvalid && top->s_axi_arready;
        e.r = top->s_axi_rvalid && top->s_axi_rready;
        e.rdata = top->s_axi_rdata;
        e.bresp = top->s_axi_bresp;
        e.rresp = top->s_axi_rresp;
        e.rlast = top->s_axi_rlast;
#ifdef NIBBLE_DDR_BEAT_BYTES
        ddr->sample(top.get());
#endif
        top->clk = 1;
        top->eval();
#ifdef NIBBLE_DDR_BEAT_BYTES
        ddr->step(top.get());
#endif
        ++cycles;
        return e;
    }

    // One INCR write burst of n beats at addr; returns the AXI response or kTimeout.
    uint8_t write_burst(uint32_t addr, const uint8_t* data, uint32_t n) {
        top->s_axi_awid = 0;
        top->s_axi_awaddr = addr;
        top->s_axi_awlen = n - 1;
        top->s_axi_awsize = 2;
        top->s_axi_awburst = 1;
        top->s_axi_awvalid = 1;
        top->s_axi_wstrb = 0xF;
        top->s_axi_bready = 1;
        uint32_t beat = 0;
        auto load_beat = [&]() {
            uint32_t v = 0;
            for (int i = 3; i >= 0; --i) v = (v << 8) | data[4 * beat + i];
            top->s_axi_wdata = v;
            top->s_axi_wlast = beat == n - 1;
            top->s_axi_wvalid = 1;
        };
        load_beat();
        bool aw_done = false;
        unsigned long quiet = 0;
        for (;;) {
            Edge e = tick();
            bool moved = e.aw || e.w || e.b;
            if (e.aw) aw_done = true, top->s_axi_awvalid = 0;
            if (e.w) {
                if (++beat == n) top->s_axi_wvalid = 0, top->s_axi_wlast = 0;
                else load_beat();
            }
            if (e.b) {
                top->s_axi_bready = 0;
                return static_cast<uint8_t>(aw_done && beat == n ? e.bresp : kTimeout);
            }
            quiet = moved ? 0 : quiet + 1;
            if (quiet >= handshake_cycles) {
                top->s_axi_awvalid = 0, top->s_axi_wvalid = 0, top->s_axi_bready = 0;
                return kTimeout;
            }
        }
    }

    // One INCR read burst of n beats at addr into out; returns the first non-OKAY rresp or kTimeout.
    uint8_t read_burst(uint32_t addr, uint8_t* out, uint32_t n) {
        top->s_axi_arid = 0;
        top->s_axi_araddr = addr;
        top->s_axi_arlen = n - 1;
        top->s_axi_arsize = 2;
        top->s_axi_arburst = 1;
        top->s_axi_arvalid = 1;
        top->s_axi_rready = 1;
        uint32_t beat = 0;
        uint8_t status = kOkay;
        unsigned long quiet = 0;
        for (;;) {
            Edge e = tick();
            bool moved = e.ar || e.r;
            if (e.ar) top->s_axi_arvalid = 0;
            if (e.r) {
                for (int i = 0; i < 4; ++i) out[4 * beat + i] = static_cast<uint8_t>(e.rdata >> (8 * i));
                if (e.rresp != kOkay && status == kOkay) status = static_cast<uint8_t>(e.rresp);
                ++beat;
                if (e.rlast || beat == n) {
                    top->s_axi_rready = 0;
                    return (e.rlast && beat == n) ? status : kTimeout;
                }
            }
            quiet = moved ? 0 : quiet + 1;
            if (quiet >= handshake_cycles) {
                top->s_axi_arvalid = 0, top->s_axi_rready = 0;
                return kTimeout;
            }
        }
    }

    // Splits [addr, addr + len) into bursts; runs fn(addr, byte offset, beats) until one fails.
    template <typename F>
    void bursts(uint32_t addr, uint32_t len, uint8_t& status, uint32_t& offset, F fn) {
        uint32_t done = 0;
        status = kOkay, offset = 0;
        while (done < len) {
            uint32_t a = addr + done;
            uint32_t room = (kBoundary - (a % kBoundary)) / 4;
            uint32_t beats = (len - done) / 4;
            if (beats > kMaxBeats) beats = kMaxBeats;
            if (beats > room) beats = room;
            uint8_t s = fn(a, done, beats);
            if (s != kOkay) {
                status = s, offset = done;
                return;
            }
            done += 4 * beats;
        }
    }
};

}  // namespace

int main(int argc, char** argv) {
    unsigned long reset_cycles = 8, handshake_cycles = 100000;
    nibble_ddr::Params ddr_params;
    const char* ddr_names[] = {"--ddr-base", "--ddr-bytes", "--ddr-latency", "--ddr-write-latency",
                               "--ddr-bytes-per-cycle", "--ddr-outstanding"};
    bool ddr_given[6] = {};
    for (int i = 1; i < argc; ++i) {
        const char* value = i + 1 < argc ? argv[i + 1] : nullptr;
        int ddr_arg = -1;
        for (int k = 0; k < 6; ++k)
            if (!std::strcmp(argv[i], ddr_names[k])) ddr_arg = k;
        if (!std::strcmp(argv[i], "--reset-cycles")) {
            reset_cycles = parse_arg(argv[i], value), ++i;
        } else if (!std::strcmp(argv[i], "--handshake-cycles")) {
            handshake_cycles = parse_arg(argv[i], value), ++i;
        } else if (ddr_arg >= 0) {
            ddr_given[ddr_arg] = true;
            if (ddr_arg == 4) {
                ddr_params.milli_bytes_per_cycle = parse_milli(argv[i], value);
            } else {
                const unsigned long v = parse_arg(argv[i], value);
                if (ddr_arg >= 2 && v > 0xFFFFFFFFul) {
                    std::fprintf(stderr, "harness: %s %lu is above 2^32 - 1\n", argv[i], v);
                    return 2;
                }
                if (ddr_arg == 0) ddr_params.base = v;
                else if (ddr_arg == 1) ddr_params.bytes = v;
                else if (ddr_arg == 2) ddr_params.read_latency = static_cast<uint32_t>(v);
                else if (ddr_arg == 3) ddr_params.write_latency = static_cast<uint32_t>(v);
                else ddr_params.outstanding = static_cast<uint32_t>(v);
            }
            ++i;
        } else {
            std::fprintf(stderr, "harness: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (handshake_cycles < 1) {
        std::fprintf(stderr, "harness: --handshake-cycles must be at least 1\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);

    Sim sim;
    sim.context = std::make_unique<VerilatedContext>();
    sim.context->randReset(0);  // every variable starts at zero (the stripped zero initial values)
    sim.top = std::make_unique<Vtop>(sim.context.get());
    sim.handshake_cycles = handshake_cycles;
    Vtop* top = sim.top.get();
#ifdef NIBBLE_DDR_BEAT_BYTES
    for (int k = 0; k < 6; ++k) {
        if (!ddr_given[k]) {
            std::fprintf(stderr, "harness: this device has a DDR port (NIBBLE_DDR_BEAT_BYTES=%u) and needs %s "
                         "(the values are in sim/ddr.py)\n", unsigned(NIBBLE_DDR_BEAT_BYTES), ddr_names[k]);
            return 2;
        }
    }
    try {
        sim.ddr = std::make_unique<nibble_ddr::Port<NIBBLE_DDR_BEAT_BYTES>>(ddr_params);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "harness: %s\n", e.what());
        return 2;
    }
    sim.ddr->drive(top);
#else
    (void)ddr_given;
#endif
    top->rst = 1;
    for (unsigned long i = 0; i < reset_cycles; ++i) sim.tick();
    top->rst = 0;

    for (;;) {
        // A whole command in the buffer: run it.
        if (available() >= kHeader) {
            const uint8_t op = in_buf[in_pos];
            const uint32_t addr = get_u32(1), len = get_u32(5);
            if ((op == kOpWrite || op == kOpDdrWrite) && available() < kHeader + static_cast<size_t>(len)) {
                if (in_eof) return 0;
                read_input(-1);
                continue;
            }
            uint8_t status = kOkay;
            uint32_t offset = 0;
            if ((op == kOpWrite || op == kOpRead) && (len % 4 || addr % 4)) {
                std::fprintf(stderr, "harness: unaligned transfer of %u bytes at 0x%08x\n", len, addr);
                reply(kBadCommand, 0, sim.cycles, nullptr);
                return 4;
            }
            if (op == kOpWrite) {
                const uint8_t* data = &in_buf[in_pos + kHeader];
                sim.bursts(addr, len, status, offset, [&](uint32_t a, uint32_t off, uint32_t n) {
                    return sim.write_burst(a, data + off, n);
                });
                in_pos += kHeader + len;
                reply(status, offset, sim.cycles, nullptr);
            } else if (op == kOpRead) {
                in_pos += kHeader;
                std::vector<uint8_t> data(len, 0);
                sim.bursts(addr, len, status, offset, [&](uint32_t a, uint32_t off, uint32_t n) {
                    return sim.read_burst(a, data.data() + off, n);
                });
                reply(status, offset, sim.cycles, &data);
            } else if (op == kOpWait) {
                in_pos += kHeader;
                const uint64_t limit = static_cast<uint64_t>(addr) | (static_cast<uint64_t>(len) << 32);
                uint64_t n = 0;
                top->clk = 0;
                top->eval();
                while (!top->idle && n < limit) sim.tick(), ++n;
                reply(top->idle ? kOkay : kBusy, 0, sim.cycles, nullptr);
            } else if (op == kOpDdrWrite) {
                nibble_ddr::Model* ddr = sim.ddr_model();
                const bool ok = ddr && ddr->host_write(addr, in_buf.data() + in_pos + kHeader, len);
                in_pos += kHeader + len;
                reply(ok ? kOkay : kDecErr, 0, sim.cycles, nullptr);
            } else if (op == kOpDdrRead) {
                in_pos += kHeader;
                nibble_ddr::Model* ddr = sim.ddr_model();
                const uint8_t* view = ddr ? ddr->host_view(addr, len) : nullptr;
                reply_raw(view ? kOkay : kDecErr, sim.cycles, view, len);
            } else if (op == kOpDdrStats) {
                if (addr != 0 || len != 0) {
                    std::fprintf(stderr, "harness: DDR_STATS takes addr 0 and len 0, not 0x%08x and %u\n", addr, len);
                    reply(kBadCommand, 0, sim.cycles, nullptr);
                    return 4;
                }
                in_pos += kHeader;
                nibble_ddr::Model* ddr = sim.ddr_model();
                uint8_t words[8 * kDdrStatCount] = {};
                for (unsigned k = 0; ddr && k < kDdrStatCount; ++k)
                    for (int j = 0; j < 8; ++j) words[8 * k + j] = static_cast<uint8_t>(ddr->stat(k) >> (8 * j));
                reply_raw(ddr ? kOkay : kDecErr, sim.cycles, words, sizeof words);
            } else if (op == kOpDdrClear) {
                in_pos += kHeader;
                nibble_ddr::Model* ddr = sim.ddr_model();
                const bool ok = ddr && ddr->inside(addr, len);
                if (ok) ddr->clear_stats(), ddr->host_zero(addr, len);
                reply(ok ? kOkay : kDecErr, 0, sim.cycles, nullptr);
            } else {
                std::fprintf(stderr, "harness: unknown command %u\n", op);
                reply(kBadCommand, 0, sim.cycles, nullptr);
                return 4;
            }
            continue;
        }
        if (in_eof) return 0;
        // No command: run while the design is busy, polling stdin; block when it is idle.
        top->clk = 0;
        top->eval();
        if (top->idle) {
            read_input(-1);
        } else {
            for (unsigned i = 0; i < kPollCycles && !top->idle; ++i) sim.tick();
            read_input(0);
        }
    }
}
