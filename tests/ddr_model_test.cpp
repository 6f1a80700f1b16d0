// Unit test of the DDR model (sim/ddr_model.h) without Verilator: a scripted AXI4 master, one
// Model::step per cycle, checking the cycle of every handshake against the model's rules. Built
// and run by tests/test_ddr_sim.py (g++ -std=c++17); prints "ddr_model_test: N checks passed"
// or the first failure, naming its line, and exits 1.
#include "ddr_model.h"

#include <cstdio>
#include <cstdlib>
#include <vector>

using namespace nibble_ddr;

static int checks = 0;
#define CHECK(cond)                                                                   \
    do {                                                                              \
        ++checks;                                                                     \
        if (!(cond)) {                                                                \
            std::fprintf(stderr, "ddr_model_test: line %d: CHECK(%s) failed\n", __LINE__, #cond); \
            std::exit(1);                                                             \
        }                                                                             \
    } while (0)

constexpr uint64_t kBase = 0x80000000ull;

static Params params(uint32_t rl = 5, uint32_t wl = 3, uint64_t milli = 64000, uint32_t outstanding = 4) {
    Params p;
    p.base = kBase, p.bytes = 1 << 20, p.read_latency = rl, p.write_latency = wl;
    p.milli_bytes_per_cycle = milli, p.outstanding = outstanding;
    return p;
}

// A master that raises one AR and keeps it until taken; returns the cycle of the handshake.
static uint64_t issue_ar(Model& m, MasterOut& in, uint64_t addr, uint32_t beats, uint32_t size = 4, uint32_t burst = 1) {
    in.arvalid = true, in.araddr = addr, in.arlen = beats - 1, in.arsize = size, in.arburst = burst;
    for (;;) {
        const bool taken = m.out().arready;
        const uint64_t c = m.cycles();
        m.step(in);
        if (taken) {
            in.arvalid = false;
            return c;
        }
    }
}

// Collects n R beats with RREADY high; returns the cycle of each handshake and the data.
static std::vector<uint64_t> take_r(Model& m, MasterOut& in, uint32_t n, std::vector<uint8_t>* data = nullptr,
                                    std::vector<uint32_t>* resp = nullptr, unsigned beat = 16) {
    std::vector<uint64_t> at;
    in.rready = true;
    while (at.size() < n) {
        const SlaveOut o = m.out();
        const uint64_t c = m.cycles();
        if (o.rvalid) {
            at.push_back(c);
            if (data) data->insert(data->end(), o.rdata.begin(), o.rdata.begin() + beat);
            if (resp) resp->push_back(o.rresp);
            CHECK(o.rlast == (at.size() == n));
        }
        m.step(in);
        CHECK(m.cycles() < 100000);
    }
    in.rready = false;
    return at;
}

static void test_read_latency_order_and_hold() {
    Model m(params(), 16);
    MasterOut in;
    std::vector<uint8_t> pattern(64);
    for (unsigned i = 0; i < 64; ++i) pattern[i] = static_cast<uint8_t>(i * 7 + 1);
    CHECK(m.host_write(kBase + 0x100, pattern.data(), 64));
    const uint64_t c = issue_ar(m, in, kBase + 0x100, 4);
    // RREADY low: the first beat appears at c + latency and stays, unchanged, until taken.
    SlaveOut first;
    while (m.cycles() < c + 5) m.step(in);
    first = m.out();
    CHECK(first.rvalid && !first.rlast && first.rresp == kOkay);
    for (int k = 0; k < 6; ++k) {
        m.step(in);
        CHECK(m.out().rvalid && m.out().rdata == first.rdata);
    }
    std::vector<uint8_t> got;
    auto at = take_r(m, in, 4, &got);
    CHECK(got == pattern);
    for (unsigned i = 1; i < at.size(); ++i) CHECK(at[i] == at[i - 1] + 1);     // a beat per cycle
    CHECK(m.stat(kStatBytesRead) == 64 && m.stat(kStatReadBursts) == 1);
    // busy: from the AR cycle to the last beat's, both included
    CHECK(m.stat(kStatBusyCycles) == at.back() - c + 1);
}

static void test_exact_latency() {
    Model m(params(9), 16);
    MasterOut in;
    in.rready = true;
    const uint64_t c = issue_ar(m, in, kBase, 2);
    auto at = take_r(m, in, 2);
    CHECK(at[0] == c + 9 && at[1] == c + 10);
    CHECK(m.stat(kStatBusyCycles) == 11);
}

static void test_write_before_aw_and_strobes() {
    Model m(params(5, 3), 16);
    MasterOut in;
    in.wvalid = true, in.wlast = false, in.wstrb = 0xFFFF;
    for (unsigned i = 0; i < 16; ++i) in.wdata[i] = static_cast<uint8_t>(0xA0 + i);
    for (int k = 0; k < 5; ++k) {  // no AW yet: W waits
        CHECK(!m.out().wready);
        m.step(in);
    }
    in.awvalid = true, in.awaddr = kBase + 0x40, in.awlen = 1, in.awsize = 4, in.awburst = 1;
    uint32_t beats = 0;
    uint64_t last_w = 0;
    while (beats < 2) {
        const SlaveOut o = m.out();
        const uint64_t c = m.cycles();
        const bool aw = in.awvalid && o.awready, w = in.wvalid && o.wready;
        m.step(in);
        if (aw) in.awvalid = false;
        if (w) {
            ++beats, last_w = c;
            in.wlast = beats == 1;
            in.wstrb = beats == 1 ? 0x00F0 : 0xFFFF;   // the second beat: bytes 4..7 only
            for (unsigned i = 0; i < 16; ++i) in.wdata[i] = static_cast<uint8_t>(0xB0 + i);
            if (beats == 2) in.wvalid = false;
        }
    }
    in.bready = true;
    uint64_t b_at = 0;
    for (;;) {
        const bool b = m.out().bvalid;
        const uint64_t c = m.cycles();
        if (b) {
            CHECK(m.out().bresp == kOkay);
            b_at = c;
        }
        m.step(in);
        if (b) break;
    }
    CHECK(b_at == last_w + 3);
    const uint8_t* mem = m.host_view(kBase + 0x40, 32);
    for (unsigned i = 0; i < 16; ++i) CHECK(mem[i] == 0xA0 + i);
    for (unsigned i = 0; i < 16; ++i) CHECK(mem[16 + i] == ((i >= 4 && i < 8) ? 0xB0 + i : 0));
    CHECK(m.stat(kStatBytesWritten) == 20 && m.stat(kStatWriteBursts) == 1 && m.stat(kStatProtocolErrors) == 0);
}

static void test_bandwidth() {
    // 4 bytes per cycle, 16-byte beats: after the two-beat allowance, one beat every 4 cycles.
    Model m(params(2, 1, 4000), 16);
    MasterOut in;
    issue_ar(m, in, kBase, 16);
    auto at = take_r(m, in, 16);
    for (unsigned i = 3; i < at.size(); ++i) CHECK(at[i] - at[i - 1] == 4);
    // 24 bytes per cycle (1.5 beats): reads alone still go at one beat per cycle
    Model fast(params(2, 1, 24000), 16);
    issue_ar(fast, in, kBase, 16);
    at = take_r(fast, in, 16);
    for (unsigned i = 1; i < at.size(); ++i) CHECK(at[i] == at[i - 1] + 1);
}

static void test_errors() {
    Model m(params(), 16);
    MasterOut in;
    struct Case {
        uint64_t addr;
        uint32_t beats, size, burst, resp;
    } cases[] = {
        {kBase + (1 << 20) - 16, 2, 4, 1, kDecErr},   // runs past the window
        {kBase - 16, 1, 4, 1, kDecErr},               // below it
        {kBase, 4, 4, 0, kSlvErr},                    // FIXED
        {kBase, 4, 4, 2, kSlvErr},                    // WRAP
        {kBase, 4, 3, 1, kSlvErr},                    // 8-byte beats on a 16-byte port
        {kBase + 4096 - 32, 4, 4, 1, kSlvErr},        // across 4 KiB
    };
    std::vector<uint8_t> pattern(64, 0x5A);
    m.host_write(kBase, pattern.data(), 64);
    uint64_t n = 0;
    for (const Case& k : cases) {
        issue_ar(m, in, k.addr, k.beats, k.size, k.burst);
        std::vector<uint8_t> got;
        std::vector<uint32_t> resp;
        take_r(m, in, k.beats, &got, &resp);
        for (uint32_t r : resp) CHECK(r == k.resp);
        for (uint8_t b : got) CHECK(b == 0);
        CHECK(m.stat(kStatErrorBursts) == ++n);
    }
    CHECK(m.stat(kStatBytesRead) == 0);
    // a write burst answered DECERR: its beats are taken, nothing is written
    in.awvalid = true, in.awaddr = kBase + (1 << 20), in.awlen = 0, in.awsize = 4, in.awburst = 1;
    in.wvalid = true, in.wlast = true, in.wstrb = 0xFFFF, in.bready = true;
    bool b = false;
    while (!b) {
        const SlaveOut o = m.out();
        b = o.bvalid;
        if (b) CHECK(o.bresp == kDecErr);
        const bool aw = in.awvalid && o.awready, w = in.wvalid && o.wready;
        m.step(in);
        if (aw) in.awvalid = false;
        if (w) in.wvalid = false;
    }
    CHECK(m.stat(kStatBytesWritten) == 0 && m.stat(kStatErrorBursts) == n + 1);
    CHECK(m.stat(kStatProtocolErrors) == 0);
}

static void test_outstanding_and_protocol() {
    Model m(params(20, 1, 64000, 2), 16);
    MasterOut in;
    issue_ar(m, in, kBase, 1);
    issue_ar(m, in, kBase + 16, 1);
    CHECK(!m.out().arready);                     // two open: the third waits
    in.arvalid = true, in.araddr = kBase + 32, in.arlen = 0, in.arsize = 4, in.arburst = 1;
    m.step(in);
    in.arvalid = false;                          // dropped before ARREADY: a protocol error
    m.step(in);
    CHECK(m.stat(kStatProtocolErrors) == 1);
    take_r(m, in, 1);
    take_r(m, in, 1);
    CHECK(m.out().arready);
    // WLAST on the wrong beat: SLVERR and a protocol error
    in.awvalid = true, in.awaddr = kBase, in.awlen = 1, in.awsize = 4, in.awburst = 1;
    in.wvalid = true, in.wlast = true, in.wstrb = 0xFFFF, in.bready = true;
    int beats = 0;
    bool b = false;
    while (!b) {
        const SlaveOut o = m.out();
        b = o.bvalid;
        if (b) CHECK(o.bresp == kSlvErr);
        const bool aw = in.awvalid && o.awready, w = in.wvalid && o.wready;
        m.step(in);
        if (aw) in.awvalid = false;
        if (w && ++beats == 2) in.wvalid = false;
    }
    CHECK(m.stat(kStatProtocolErrors) == 2 && m.stat(kStatErrorBursts) == 1);
}

static void test_unaligned_start() {
    Model m(params(), 16);
    MasterOut in;
    std::vector<uint8_t> pattern(32);
    for (unsigned i = 0; i < 32; ++i) pattern[i] = static_cast<uint8_t>(i + 1);
    m.host_write(kBase + 0x200, pattern.data(), 32);
    issue_ar(m, in, kBase + 0x205, 2);
    std::vector<uint8_t> got;
    take_r(m, in, 2, &got);
    CHECK(got == pattern);                       // the beats of the aligned address
    CHECK(m.stat(kStatBytesRead) == 11 + 16);    // the bytes below the start are not counted
}

static void test_host_access() {
    Model m(params(), 16);
    std::vector<uint8_t> ones(3 * 4096 + 100, 0xFF);
    CHECK(m.host_write(kBase + 10, ones.data(), ones.size()));
    CHECK(m.host_zero(kBase + 20, 2 * 4096 + 50));   // crosses whole pages (given back) and parts
    const uint8_t* v = m.host_view(kBase, 4 * 4096);
    for (uint64_t i = 0; i < 4 * 4096; ++i) {
        const bool one = i >= 10 && i < 10 + ones.size() && !(i >= 20 && i < 20 + 2 * 4096 + 50);
        CHECK(v[i] == (one ? 0xFF : 0));
    }
    CHECK(!m.host_write(kBase + (1 << 20) - 4, ones.data(), 8));
    CHECK(!m.host_view(kBase - 1, 2) && m.host_view(kBase + (1 << 20), 0));
    CHECK(!m.inside(0xFFFFFFFFull, 0xFFFFFFFFull));
}

// Verilator's types: IData/QData integers and VlWide<N> (32-bit words behind data()).
template <unsigned N>
struct FakeWide {
    uint32_t m[N] = {};
    uint32_t* data() { return m; }
    const uint32_t* data() const { return m; }
};

template <typename Data, typename Strb, unsigned kBeat>
struct FakeTop {
    uint8_t m_axi_awid = 0, m_axi_awlen = 0, m_axi_awsize = 0, m_axi_awburst = 0, m_axi_awvalid = 0, m_axi_awready = 0;
    uint32_t m_axi_awaddr = 0, m_axi_araddr = 0;
    Data m_axi_wdata{}, m_axi_rdata{};
    Strb m_axi_wstrb = 0;
    uint8_t m_axi_wlast = 0, m_axi_wvalid = 0, m_axi_wready = 0;
    uint8_t m_axi_bid = 0, m_axi_bresp = 0, m_axi_bvalid = 0, m_axi_bready = 0;
    uint8_t m_axi_arid = 0, m_axi_arlen = 0, m_axi_arsize = 0, m_axi_arburst = 0, m_axi_arvalid = 0, m_axi_arready = 0;
    uint8_t m_axi_rid = 0, m_axi_rresp = 0, m_axi_rlast = 0, m_axi_rvalid = 0, m_axi_rready = 0;
};

// One beat written and read back through Port<kBeat> on a top with those member types.
template <typename Data, typename Strb, unsigned kBeat>
static void test_port() {
    unsigned log2 = 0;
    while ((1u << log2) < kBeat) ++log2;
    Port<kBeat> port(params(3, 2));
    FakeTop<Data, Strb, kBeat> t;
    port.drive(&t);
    uint8_t beat[kBeat];
    for (unsigned i = 0; i < kBeat; ++i) beat[i] = static_cast<uint8_t>(0x11 * (i + 1));
    store_bytes(t.m_axi_wdata, beat, kBeat);
    t.m_axi_awvalid = 1, t.m_axi_awaddr = static_cast<uint32_t>(kBase), t.m_axi_awsize = static_cast<uint8_t>(log2);
    t.m_axi_awburst = 1, t.m_axi_wvalid = 1, t.m_axi_wlast = 1, t.m_axi_bready = 1;
    t.m_axi_wstrb = static_cast<Strb>(kBeat == 64 ? ~Strb(0) : (Strb(1) << kBeat) - 1);
    for (int c = 0; c < 20 && !t.m_axi_bvalid; ++c) {
        const bool aw = t.m_axi_awvalid && t.m_axi_awready, w = t.m_axi_wvalid && t.m_axi_wready;
        port.sample(&t);
        port.step(&t);
        if (aw) t.m_axi_awvalid = 0;
        if (w) t.m_axi_wvalid = 0;
    }
    CHECK(t.m_axi_bvalid && t.m_axi_bresp == kOkay);
    CHECK(std::memcmp(port.model.host_view(kBase, kBeat), beat, kBeat) == 0);
    t.m_axi_arvalid = 1, t.m_axi_araddr = static_cast<uint32_t>(kBase), t.m_axi_arsize = static_cast<uint8_t>(log2);
    t.m_axi_arburst = 1, t.m_axi_rready = 1;
    for (int c = 0; c < 20 && !t.m_axi_rvalid; ++c) {
        const bool ar = t.m_axi_arvalid && t.m_axi_arready;
        port.sample(&t);
        port.step(&t);
        if (ar) t.m_axi_arvalid = 0;
    }
    uint8_t back[kBeat];
    load_bytes(t.m_axi_rdata, back, kBeat);
    CHECK(t.m_axi_rvalid && t.m_axi_rlast && std::memcmp(back, beat, kBeat) == 0);
}

int main() {
    test_read_latency_order_and_hold();
    test_exact_latency();
    test_write_before_aw_and_strobes();
    test_bandwidth();
    test_errors();
    test_outstanding_and_protocol();
    test_unaligned_start();
    test_host_access();
    test_port<uint32_t, uint8_t, 4>();          // 32-bit data: IData, 4 strobes in a CData
    test_port<uint64_t, uint8_t, 8>();          // 64-bit: QData
    test_port<FakeWide<4>, uint16_t, 16>();     // 128-bit: VlWide<4>, SData strobes
    test_port<FakeWide<16>, uint64_t, 64>();    // 512-bit: VlWide<16>, QData strobes
    std::printf("ddr_model_test: %d checks passed\n", checks);
    return 0;
}
