// Simulated device behind a memory-mapped host link: a Verilated design whose host interface is
// an AXI4 slave port, driven by this harness as the PCIe endpoint's (XDMA) AXI master would,
// with commands from stdin and replies on stdout.
//
// The design (Verilator prefix Vtop) has inputs clk, rst and the slave port s_axi_* (AXI4,
// 32-bit data: awid awaddr awlen awsize awburst awvalid / awready, wdata wstrb wlast wvalid /
// wready, bid bresp bvalid / bready, arid araddr arlen arsize arburst arvalid / arready, rid
// rdata rresp rlast rvalid / rready), and output idle (engine not busy, no transaction in flight).
// Usage:
//
//     Vsim [--reset-cycles R] [--handshake-cycles H]
//
// Commands (little-endian), each answered in order:
//
//     request:  op (1) | addr (4) | len (4) | payload (len bytes, WRITE only)
//     reply:    status (1) | offset (4) | cycles (8) | payload (len bytes, READ only)
//
// * op 1 WRITE: len bytes (a multiple of 4) to byte address addr, as INCR bursts of at most 256
//   beats that never cross a 4 KiB boundary (AXI4, ARM IHI 0022, A3.4.1), one burst at a time:
//   AW and the W beats offered together, W a beat per cycle, then B.
// * op 2 READ: len bytes from addr, the same bursts (AR, then R a beat per cycle).
// * op 3 WAIT: addr | len is a cycle limit (u64, low word first); the design runs until idle is 1
//   or the limit passes.
// * status: the first non-OKAY response (2 SLVERR, 3 DECERR) of the transfer, or 0x10 (TIMEOUT:
//   a handshake did not come within H cycles, default 100,000; the transfer is abandoned) or,
//   for WAIT, 0x11 (BUSY: still not idle at the limit); 0x20 a malformed command (then the
//   harness exits with status 4). offset: the byte offset in the transfer of the first failed
//   burst (0 when status is 0). cycles: simulated cycles so far, reset included. A READ's payload
//   is always len bytes (zeros where a beat failed).
// * Between commands the design keeps running while idle is 0 (stdin polled every 1024
//   cycles); when it is idle the harness blocks on stdin, so an idle device costs no CPU time.
// * On stdin EOF the harness exits with status 0. Bad arguments exit with status 2, a write
//   error on stdout with status 3.
#include "Vtop.h"
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
constexpr uint8_t kOkay = 0, kTimeout = 0x10, kBusy = 0x11, kBadCommand = 0x20;
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

struct Sim {
    std::unique_ptr<VerilatedContext> context;
    std::unique_ptr<Vtop> top;
    uint64_t cycles = 0;
    unsigned long handshake_cycles = 100000;

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
        top->clk = 1;
        top->eval();
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
    for (int i = 1; i < argc; ++i) {
        const char* value = i + 1 < argc ? argv[i + 1] : nullptr;
        if (!std::strcmp(argv[i], "--reset-cycles")) {
            reset_cycles = parse_arg(argv[i], value), ++i;
        } else if (!std::strcmp(argv[i], "--handshake-cycles")) {
            handshake_cycles = parse_arg(argv[i], value), ++i;
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
    top->rst = 1;
    for (unsigned long i = 0; i < reset_cycles; ++i) sim.tick();
    top->rst = 0;

    for (;;) {
        // A whole command in the buffer: run it.
        if (available() >= kHeader) {
            const uint8_t op = in_buf[in_pos];
            const uint32_t addr = get_u32(1), len = get_u32(5);
            if (op == kOpWrite && available() < kHeader + static_cast<size_t>(len)) {
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
