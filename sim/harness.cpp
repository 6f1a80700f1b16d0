// Simulated device: a Verilated design driven through its UART pins from stdin/stdout.
//
// The design (Verilator prefix Vtop) has inputs clk, rst, uart_rx and outputs uart_tx, idle;
// any other input stays 0. Built with -DNIBBLE_BYTE_PHY, it has the bridge's byte streams
// instead of the UART pins (rx_data, rx_valid in, rx_ready out; tx_data, tx_valid out,
// tx_ready in): each input byte is offered until taken, one per cycle at most, every output
// byte is taken at once; everything else below holds alike. Usage:
//
//     Vsim --divisor N [--reset-cycles R] [--drain-cycles D]
//
// * Holds rst high for R cycles (default 8) with uart_rx idle (1).
// * Bytes read from stdin are sent on uart_rx as 8N1 frames of N cycles per bit, back-to-back.
// * uart_tx is decoded (8N1, N cycles per bit, sampled mid-bit) into bytes written to stdout.
//   A byte with a low stop bit is dropped and reported on stderr.
// * When no input byte is pending or being sent, no output byte is being decoded and idle is 1,
//   the harness flushes stdout, reports "cycles=<C> in=<I> out=<O>" on stderr (cycles so far,
//   bytes read from stdin, bytes written to stdout) and blocks in poll() on stdin.
//   Otherwise it polls stdin without blocking: every 1024 cycles, or more often (from every
//   32 cycles, backing off to 1024) while the input queue is short or empty, and every
//   65,536 cycles it reports "progress cycles=<C> in=<I> out=<O>" on stderr, so the host can
//   time out on simulated cycles rather than on wall time.
// * On stdin EOF it keeps simulating until the same quiescent state (at most D more cycles,
//   default 10,000,000), flushes, reports "exit cycles=<C> in=<I> out=<O>" on stderr and exits
//   with status 0.
//   Bad arguments exit with status 2, a write error on stdout with status 3.
#include "Vtop.h"
#include "verilated.h"

#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <vector>

namespace {

constexpr unsigned kPollSlow = 1024;   // cycles between polls while input is queued
constexpr unsigned kPollFast = 32;     // first poll interval while the input queue runs low
constexpr size_t kReadChunk = 65536;
constexpr uint64_t kProgressCycles = 65536;  // cycles between progress reports while running

std::vector<uint8_t> out_buf;
uint64_t bytes_in = 0, bytes_out = 0;

void flush_out() {
    size_t done = 0;
    while (done < out_buf.size()) {
        ssize_t n = write(1, out_buf.data() + done, out_buf.size() - done);
        if (n < 0) {
            if (errno == EINTR) continue;
            std::fprintf(stderr, "harness: write to stdout failed: %s\n", std::strerror(errno));
            std::exit(3);
        }
        done += static_cast<size_t>(n);
    }
    bytes_out += out_buf.size();
    out_buf.clear();
}

// Reads what stdin has; timeout_ms as for poll(). Returns false on EOF.
bool read_input(std::deque<uint8_t>& inq, int timeout_ms) {
    struct pollfd pfd = {0, POLLIN, 0};
    int r;
    do {
        r = poll(&pfd, 1, timeout_ms);
    } while (r < 0 && errno == EINTR);
    if (r <= 0) return true;
    static uint8_t buf[kReadChunk];
    ssize_t n;
    do {
        n = read(0, buf, sizeof buf);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) return false;
    inq.insert(inq.end(), buf, buf + n);
    bytes_in += static_cast<uint64_t>(n);
    return true;
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

}  // namespace

int main(int argc, char** argv) {
    unsigned long divisor = 0, reset_cycles = 8, drain_cycles = 10000000;
    for (int i = 1; i < argc; ++i) {
        const char* value = i + 1 < argc ? argv[i + 1] : nullptr;
        if (!std::strcmp(argv[i], "--divisor")) {
            divisor = parse_arg(argv[i], value), ++i;
        } else if (!std::strcmp(argv[i], "--reset-cycles")) {
            reset_cycles = parse_arg(argv[i], value), ++i;
        } else if (!std::strcmp(argv[i], "--drain-cycles")) {
            drain_cycles = parse_arg(argv[i], value), ++i;
        } else {
            std::fprintf(stderr, "harness: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (divisor < 4) {
        std::fprintf(stderr, "usage: %s --divisor N (N >= 4) [--reset-cycles R] [--drain-cycles D]\n",
                     argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);

    auto context = std::make_unique<VerilatedContext>();
    context->randReset(0);  // every variable starts at zero (the stripped zero initial values)
    auto top = std::make_unique<Vtop>(context.get());
    uint64_t cycles = 0;
    auto tick = [&]() {
        top->clk = 0;
        top->eval();
        top->clk = 1;
        top->eval();
        ++cycles;
    };

#ifndef NIBBLE_BYTE_PHY
    top->uart_rx = 1;
#else
    top->rx_valid = 0;
    top->tx_ready = 1;
#endif
    top->rst = 1;
    for (unsigned long i = 0; i < reset_cycles; ++i) tick();
    top->rst = 0;

    std::deque<uint8_t> inq;
    bool eof = false;
    uint64_t eof_cycle = 0;

    // Serialiser (stdin → uart_rx): remaining bits of the current frame, LSB first.
    unsigned ser_bits = 0, ser_timer = 0, ser_shift = 0;
    // Deserialiser (uart_tx → stdout): bit index 0 = start, 1..8 data, 9 stop.
    bool des_busy = false;
    unsigned des_timer = 0, des_bit = 0, des_byte = 0;

    unsigned poll_interval = kPollFast, poll_countdown = kPollFast;
#ifndef NIBBLE_BYTE_PHY
    const size_t low_water = 2 * kPollSlow / (10 * divisor) + 1;
#else
    const size_t low_water = 2 * kPollSlow + 1;
    (void)ser_timer;
    (void)des_timer, (void)des_bit, (void)des_byte;
#endif

    for (;;) {
#ifdef NIBBLE_BYTE_PHY
        // Byte streams: offer the next input byte; a transfer happens at the rising edge when
        // valid and ready are both high (sampled after the inputs settle, before the edge).
        top->rx_valid = !inq.empty();
        top->rx_data = inq.empty() ? 0 : inq.front();
        top->tx_ready = 1;
        top->clk = 0;
        top->eval();
        const bool rx_taken = top->rx_valid && top->rx_ready;
        const bool tx_taken = top->tx_valid;
        const uint8_t tx_byte = static_cast<uint8_t>(top->tx_data);
        top->clk = 1;
        top->eval();
        ++cycles;
        if (rx_taken) inq.pop_front();
        if (tx_taken) {
            out_buf.push_back(tx_byte);
            if (out_buf.size() >= kReadChunk) flush_out();
        }
#else
        if (ser_bits == 0 && !inq.empty()) {
            ser_shift = (1u << 9) | (static_cast<unsigned>(inq.front()) << 1);
            inq.pop_front();
            ser_bits = 10;
            ser_timer = static_cast<unsigned>(divisor);
        }
        top->uart_rx = ser_bits ? (ser_shift & 1u) : 1u;
        tick();
        if (ser_bits && --ser_timer == 0) {
            ser_shift >>= 1;
            ser_timer = static_cast<unsigned>(divisor);
            --ser_bits;
        }

        const unsigned txv = top->uart_tx & 1u;
        if (!des_busy) {
            if (!txv) {
                des_busy = true;
                des_timer = static_cast<unsigned>(divisor / 2);
                des_bit = 0;
                des_byte = 0;
            }
        } else if (--des_timer == 0) {
            des_timer = static_cast<unsigned>(divisor);
            if (des_bit == 0) {
                if (txv) des_busy = false;  // glitch, not a start bit
            } else if (des_bit <= 8) {
                des_byte |= txv << (des_bit - 1);
            } else {
                if (txv) {
                    out_buf.push_back(static_cast<uint8_t>(des_byte));
                    if (out_buf.size() >= kReadChunk) flush_out();
                } else {
                    std::fprintf(stderr, "harness: framing error on uart_tx at cycle %" PRIu64 "\n",
                                 cycles);
                }
                des_busy = false;
            }
            ++des_bit;
        }
#endif

        const bool starved = inq.empty() && ser_bits == 0;
        if (starved && !des_busy && top->idle) {
            flush_out();
            if (eof) break;
            std::fprintf(stderr, "cycles=%" PRIu64 " in=%" PRIu64 " out=%" PRIu64 "\n", cycles,
                         bytes_in, bytes_out);
            std::fflush(stderr);
            eof = !read_input(inq, -1);
            if (eof) eof_cycle = cycles;
            poll_interval = poll_countdown = kPollFast;
            continue;
        }
        if ((cycles & (kProgressCycles - 1)) == 0) {
            std::fprintf(stderr, "progress cycles=%" PRIu64 " in=%" PRIu64 " out=%" PRIu64 "\n",
                         cycles, bytes_in, bytes_out);
            std::fflush(stderr);
        }
        if (eof) {
            if (cycles - eof_cycle >= drain_cycles) {
                flush_out();
                std::fprintf(stderr, "harness: design not idle %lu cycles after EOF\n", drain_cycles);
                break;
            }
            continue;
        }
        if (--poll_countdown == 0) {
            flush_out();
            const size_t before = inq.size();
            eof = !read_input(inq, 0);
            if (eof) eof_cycle = cycles;
            if (inq.size() > before) {
                poll_interval = kPollFast;
            } else if (poll_interval < kPollSlow) {
                poll_interval *= 2;
            }
            poll_countdown = inq.size() < low_water ? poll_interval : kPollSlow;
        }
    }

    flush_out();
    std::fprintf(stderr, "exit cycles=%" PRIu64 " in=%" PRIu64 " out=%" PRIu64 "\n", cycles,
                 bytes_in, bytes_out);
    std::fflush(stderr);
    top->final();
    return 0;
}
