// Native tests of the data plane: CRC32C and HMAC vectors, and the ring all-reduce with every rank on a
// thread of this process over loopback TCP (sizes that do not divide, both modes, strangers, dead ranks,
// abort, a hostile predecessor). The multi-process tests (SIGKILL mid-collective) live in test/allreduce.test.ts.
// Usage: covenant_native_comm_tests [filter]
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "covenant/comm.h"
#include "covenant/crc32c.h"
#include "covenant/hmac.h"
#include "covenant/rng.h"
#include "covenant/sha256.h"
#include "../comm/frame.h"
#include "../comm/handshake.h"
#include "../comm/ring_plan.h"
#include "../comm/socket.h"
#include "harness.h"

using namespace covenant;

namespace {

std::string hex(const uint8_t* p, size_t n) {
  static const char* d = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) { s += d[p[i] >> 4]; s += d[p[i] & 15]; }
  return s;
}

void test_crc32c() {
  CHECK(crc32c("123456789", 9) == 0xE3069283u, "check value %08x", crc32c("123456789", 9));
  CHECK(crc32c("", 0) == 0, "empty");
  std::vector<uint8_t> z(32, 0);
  CHECK(crc32c(z.data(), 32) == 0x8A9136AAu, "32 zero bytes %08x", crc32c(z.data(), 32));
  const char* msg = "The quick brown fox jumps over the lazy dog";
  uint32_t whole = crc32c(msg, std::strlen(msg));
  CHECK(crc32c_extend(crc32c(msg, 10), msg + 10, std::strlen(msg) - 10) == whole, "extend in pieces");
  // Large buffers take the three-chain path: it must agree with byte-at-a-time extension.
  Rng g(5);
  std::vector<uint8_t> big(300000);
  for (auto& b : big) b = uint8_t(g.next_u64());
  for (size_t len : {size_t(12287), size_t(12288), size_t(12289), size_t(40000), size_t(262147), size_t(300000)}) {
    uint32_t bytewise = 0;
    for (size_t i = 0; i < len; ++i) bytewise = crc32c_extend(bytewise, big.data() + i, 1);
    CHECK(crc32c(big.data(), len) == bytewise, "len %zu: three-chain %08x vs bytewise %08x", len, crc32c(big.data(), len), bytewise);
    CHECK(crc32c_extend(crc32c(big.data(), 7), big.data() + 7, len - 7) == bytewise, "len %zu: extend after 7 bytes", len);
  }
  // Every implementation this CPU has agrees with the byte-wise table: lengths around the folding path's
  // thresholds (512 bytes, 256-byte steps, 16-byte tail), unaligned starts, and a nonzero initial state.
  for (Crc32cImpl impl : {Crc32cImpl::Sse42, Crc32cImpl::Vpclmul}) {
    if (!crc32c_impl_supported(impl)) {
      std::printf("  (crc32c %s: not on this CPU)\n", crc32c_impl_name(impl));
      continue;
    }
    for (size_t len : {size_t(0), size_t(1), size_t(15), size_t(255), size_t(511), size_t(512), size_t(513), size_t(767),
                       size_t(768), size_t(784), size_t(799), size_t(4097), size_t(65536), size_t(262147)})
      for (size_t off : {size_t(0), size_t(1), size_t(13)})
        for (uint32_t init : {0u, 0xDEADBEEFu}) {
          const uint32_t want = crc32c_extend_with(Crc32cImpl::Portable, init, big.data() + off, len);
          const uint32_t got = crc32c_extend_with(impl, init, big.data() + off, len);
          CHECK(got == want, "%s len %zu offset %zu init %08x: %08x vs portable %08x", crc32c_impl_name(impl), len, off, init, got, want);
        }
  }
}

void test_hmac() {
  // RFC 4231 test case 2
  Mac m = hmac_sha256("Jefe", 4, "what do ya want for nothing?", 28);
  CHECK(hex(m.data(), 32) == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843", "rfc4231 #2 %s", hex(m.data(), 32).c_str());
  std::vector<uint8_t> key(131, 0xaa);
  const char* text = "Test Using Larger Than Block-Size Key - Hash Key First";
  Mac m6 = hmac_sha256(key.data(), key.size(), text, std::strlen(text));
  CHECK(hex(m6.data(), 32) == "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54", "rfc4231 #6 %s", hex(m6.data(), 32).c_str());
}

// Ports that were free a moment ago (bind to 0, read the port, close).
std::vector<int> free_ports(int n) {
  std::vector<int> ports;
  std::vector<int> fds;
  for (int i = 0; i < n; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    socklen_t l = sizeof(a);
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &l);
    ports.push_back(ntohs(a.sin_port));
    fds.push_back(fd);
  }
  for (int fd : fds) ::close(fd);
  return ports;
}

AllReduceOptions options(int rank, const std::vector<int>& ports, ReduceMode mode, uint64_t round, int timeout_ms = 5000) {
  AllReduceOptions o;
  o.rank = rank;
  for (int p : ports) o.peers.push_back({"127.0.0.1", p});
  o.mode = mode;
  o.block_size = 64;
  o.timeout_ms = timeout_ms;
  o.id = {round, 0};
  o.secret = "round-secret";
  o.slice_bytes = 4096;  // many slices, so pipelining is exercised on small tensors
  return o;
}

struct RankResult {
  std::vector<float> data;
  std::string error, code;
  int peer = -2;
  double seconds = 0;
};

// Runs one collective with N threads; rank i's input is inputs[i]. `skip` ranks never start.
std::vector<RankResult> run_ring(const std::vector<std::vector<float>>& inputs, ReduceMode mode, uint64_t round,
                                 std::vector<int> skip = {}, int timeout_ms = 5000,
                                 std::function<void(int, AllReduceOptions&)> tweak = nullptr) {
  int N = int(inputs.size());
  auto ports = free_ports(N);
  std::vector<RankResult> out(N);
  std::vector<std::thread> ts;
  for (int r = 0; r < N; ++r) {
    out[r].data = inputs[r];
    if (std::find(skip.begin(), skip.end(), r) != skip.end()) continue;
    ts.emplace_back([&, r] {
      AllReduceOptions o = options(r, ports, mode, round, timeout_ms);
      if (tweak) tweak(r, o);
      auto t0 = std::chrono::steady_clock::now();
      try {
        ring_allreduce(out[r].data.data(), out[r].data.size(), o, nullptr);
      } catch (const CommError& e) {
        out[r].error = e.what();
        out[r].code = e.code;
        out[r].peer = e.peer_rank;
      }
      out[r].seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    });
  }
  for (auto& t : ts) t.join();
  return out;
}

std::vector<std::vector<float>> random_inputs(int N, size_t n, uint64_t seed) {
  std::vector<std::vector<float>> v(N, std::vector<float>(n));
  for (int r = 0; r < N; ++r) {
    Rng g(seed * 31 + r);
    for (auto& x : v[r]) x = g.normal();
  }
  return v;
}

void test_allreduce_fp32_and_int8() {
  const size_t sizes[] = {0, 1, 7, 63, 64, 65, 1000, 4099, 100003};
  for (ReduceMode mode : {ReduceMode::Fp32, ReduceMode::Int8}) {
    for (int N = 1; N <= 5; ++N) {
      for (size_t n : sizes) {
        auto in = random_inputs(N, n, n + N);
        auto res = run_ring(in, mode, 7);
        std::string h0;
        for (int r = 0; r < N; ++r) {
          CHECK(res[r].error.empty(), "N=%d n=%zu rank %d: %s", N, n, r, res[r].error.c_str());
          std::string h = Sha256::hex(res[r].data.data(), n * sizeof(float));
          if (r == 0) h0 = h;
          CHECK(h == h0, "N=%d n=%zu mode %d: rank %d differs from rank 0", N, n, int(mode), r);
        }
        // fp32: within fp32 rounding of the fp64 mean; int8: each hop's requantization adds at most half
        // a step (scale/2) of that hop's block, over N-1 reduce hops plus the final quantization.
        double worst = 0, bound_worst = 1;
        for (size_t i = 0; i < n; ++i) {
          double mean = 0, absmax_sum = 0;
          for (int r = 0; r < N; ++r) mean += in[r][i];
          mean /= N;
          double err = std::fabs(res[0].data[i] - mean);
          if (mode == ReduceMode::Fp32) {
            worst = std::max(worst, err / (1e-6 * (1 + std::fabs(mean)) * N));
          } else {
            // bound per element: sum over hops of scale/2, where a block's scale <= (sum of |x| block maxima)/127
            size_t b0 = i / 64 * 64, b1 = std::min(n, b0 + 64);
            for (int r = 0; r < N; ++r) {
              double m = 0;
              for (size_t j = b0; j < b1; ++j) m = std::max(m, (double)std::fabs(in[r][j]));
              absmax_sum += m;
            }
            double bound = N == 1 ? 0 : N * (absmax_sum / 127.0) / 2.0 / N + 1e-6;
            worst = std::max(worst, err / bound);
          }
        }
        CHECK(worst <= bound_worst, "N=%d n=%zu mode %s: error %.3g of its bound", N, n, mode == ReduceMode::Fp32 ? "fp32" : "int8", worst);
      }
    }
  }
}

void test_strangers_are_refused() {
  const int N = 3;
  auto in = random_inputs(N, 5000, 3);
  auto ports = free_ports(N);
  std::vector<RankResult> out(N);
  std::vector<std::thread> ts;
  // Strangers connect to rank 1's port before and while the ring forms.
  std::thread stranger([&] {
    auto connect_and = [&](const std::function<void(int)>& act) {
      for (int tries = 0; tries < 200; ++tries) {
        int fd = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(ports[1]);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0) {
          act(fd);
          ::close(fd);
          return;
        }
        ::close(fd);
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    };
    connect_and([](int fd) { const char junk[] = "GET / HTTP/1.1\r\n\r\n garbage garbage garbage garbage garbage garbage garbage garbage"; (void)!::write(fd, junk, sizeof(junk)); std::this_thread::sleep_for(std::chrono::milliseconds(50)); });
    connect_and([](int fd) { std::this_thread::sleep_for(std::chrono::milliseconds(300)); });  // silent
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  for (int r = 0; r < N; ++r) {
    out[r].data = in[r];
    ts.emplace_back([&, r] {
      AllReduceOptions o = options(r, ports, ReduceMode::Fp32, 11);
      try { ring_allreduce(out[r].data.data(), out[r].data.size(), o, nullptr); } catch (const CommError& e) { out[r].error = e.what(); }
    });
  }
  for (auto& t : ts) t.join();
  stranger.join();
  for (int r = 0; r < N; ++r) CHECK(out[r].error.empty(), "rank %d failed despite strangers: %s", r, out[r].error.c_str());
  for (size_t i = 0; i < 5000; i += 97) {
    float mean = 0;
    CHECK(std::fabs(out[0].data[i] - (in[0][i] + in[1][i] + in[2][i]) / 3) < 1e-5, "wrong result at %zu", i);
    (void)mean;
  }
}

void test_wrong_secret_and_wrong_collective() {
  // Rank 0 uses another secret: rank 1 refuses it, and everyone fails cleanly.
  auto in = random_inputs(3, 1000, 4);
  auto res = run_ring(in, ReduceMode::Fp32, 12, {}, 1500, [](int r, AllReduceOptions& o) { if (r == 0) o.secret = "wrong"; });
  for (int r = 0; r < 3; ++r) {
    CHECK(!res[r].error.empty(), "rank %d succeeded with a wrong secret in the ring", r);
    CHECK(res[r].data == in[r], "rank %d: input changed on failure", r);
  }
  // Rank 2 is in another attempt of the same round: nobody reduces anything.
  auto res2 = run_ring(in, ReduceMode::Fp32, 13, {}, 1500, [](int r, AllReduceOptions& o) { if (r == 2) o.id.attempt = 1; });
  for (int r = 0; r < 3; ++r) CHECK(!res2[r].error.empty(), "rank %d succeeded across collective ids", r);
}

void test_missing_rank_fails_within_timeout() {
  auto in = random_inputs(4, 20000, 5);
  auto res = run_ring(in, ReduceMode::Int8, 14, {2}, 800);
  for (int r : {0, 1, 3}) {
    CHECK(!res[r].error.empty(), "rank %d succeeded without rank 2", r);
    CHECK(res[r].seconds < 0.8 + 1.0, "rank %d took %.2f s to fail (timeout 0.8 s)", r, res[r].seconds);
    CHECK(res[r].data == in[r], "rank %d: input changed on failure", r);
  }
  CHECK(res[1].peer == 2 || res[3].peer == 2, "no error names rank 2 (%d, %d): %s | %s", res[1].peer, res[3].peer, res[1].error.c_str(), res[3].error.c_str());
}

void test_abort() {
  auto in = random_inputs(2, 1000, 6);
  auto ports = free_ports(2);
  AbortToken token;
  std::string err, code;
  auto t0 = std::chrono::steady_clock::now();
  std::thread t([&] {
    AllReduceOptions o = options(0, ports, ReduceMode::Fp32, 15, 10000);
    try { ring_allreduce(in[0].data(), in[0].size(), o, &token); } catch (const CommError& e) { err = e.what(); code = e.code; }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  token.abort();
  t.join();
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK(code == "COMM_ABORTED", "abort gave code %s: %s", code.c_str(), err.c_str());
  CHECK(s < 1.0, "abort took %.2f s", s);
}

void test_non_finite_refused() {
  // In the chunk this rank sends at step 0 (rank 1 of 2 owns all of a 3-element fp32 tensor): refused before
  // any connection, so it fails at once although rank 0 never starts.
  std::vector<float> x = {1.f, NAN, 2.f};
  AllReduceOptions o = options(1, free_ports(2), ReduceMode::Fp32, 1);
  std::string code, err;
  try { ring_allreduce(x.data(), x.size(), o, nullptr); } catch (const CommError& e) { code = e.code; err = e.what(); }
  CHECK(code == "COMM_ARGS" && err.find("tensor[1]") != std::string::npos, "NaN input gave code '%s': %s", code.c_str(), err.c_str());
  // Elsewhere: found in the reduce-scatter hop that would add it, before anything computed from it is sent.
  // The rank fails naming the index, its neighbour at once (not after the timeout), and no input changes.
  for (ReduceMode mode : {ReduceMode::Fp32, ReduceMode::Int8}) {
    auto in = random_inputs(2, 5000, 9);
    in[0][4000] = mode == ReduceMode::Int8 ? INFINITY : NAN;
    auto res = run_ring(in, mode, 2, {}, 5000);
    CHECK(res[0].code == "COMM_ARGS" && res[0].error.find("tensor[4000] is not finite") != std::string::npos,
          "mode %d rank 0: code '%s': %s", int(mode), res[0].code.c_str(), res[0].error.c_str());
    CHECK(!res[1].error.empty() && res[1].peer == 0, "mode %d rank 1: peer %d: %s", int(mode), res[1].peer, res[1].error.c_str());
    for (int r = 0; r < 2; ++r) {
      CHECK(res[r].seconds < 2.0, "mode %d rank %d took %.2f s to fail (timeout 5 s)", int(mode), r, res[r].seconds);
      CHECK(std::memcmp(res[r].data.data(), in[r].data(), in[r].size() * sizeof(float)) == 0, "mode %d rank %d: input changed", int(mode), r);
    }
  }
}

// Rank 1 of a 2-rank ring played by the test itself: it forms the ring like a real rank, then sends every
// frame well-formed (zero values, unit scales) except where `tamper` changes a payload or its CRC. What
// rank 0 sends is drained and ignored.
using Tamper = std::function<void(int g, int k, std::vector<uint8_t>& payload, uint32_t& crc)>;
void play_rank1(const std::vector<int>& ports, ReduceMode mode, uint64_t round, size_t n, const Tamper& tamper) {
  const AllReduceOptions o = options(1, ports, mode, round);
  const bool int8 = mode == ReduceMode::Int8;
  const size_t block = size_t(o.block_size);
  comm::Listener listener;
  listener.open(o.peers[1]);
  const auto deadline = comm::Clock::now() + std::chrono::seconds(5);
  comm::HandshakeContext ctx{o.id, &o.secret, 1, 0, std::chrono::milliseconds(o.timeout_ms), -1};
  comm::TcpConn to, from;
  std::thread connector([&] {
    if (comm::connect_with_retry(o.peers[0], deadline, -1, &to).status == comm::IoStatus::Ok) {
      try { comm::handshake_as_connector(to, ctx, o.peers[0]); } catch (const CommError&) { to.close(); }
    }
  });
  int refused = 0;
  try { from = comm::accept_predecessor(listener, ctx, deadline, o.peers[0], &refused); } catch (const CommError&) {}
  connector.join();
  if (!to.valid() || !from.valid()) return;
  std::thread drain([&] {
    char sink[4096];
    while (from.recv_all(sink, 1, std::chrono::milliseconds(3000), -1).status == comm::IoStatus::Ok) {}
  });
  comm::RingPlan plan(2, 1, n, int8 ? block : 16, o.slice_bytes / sizeof(float));
  for (int g = 0; g < plan.steps(); ++g)
    for (int k = 0; k < plan.slices; ++k) {
      size_t b, e;
      plan.slice_range(plan.send_chunk(g), k, &b, &e);
      const size_t m = e - b, nb = (m + block - 1) / block;
      std::vector<uint8_t> payload(int8 ? m + nb * sizeof(float) : m * sizeof(float), 0);
      const float one = 1.0f;
      if (int8)
        for (size_t i = 0; i < nb; ++i) std::memcpy(payload.data() + m + i * sizeof(float), &one, sizeof(float));
      uint32_t crc = crc32c(payload.data(), payload.size());
      tamper(g, k, payload, crc);
      comm::FrameHeader h = comm::make_header(comm::FrameKind::Data, o.id, uint32_t(g), uint32_t(k), uint32_t(payload.size()), crc);
      if (to.send_all(&h, sizeof(h), std::chrono::milliseconds(3000), -1).status != comm::IoStatus::Ok ||
          to.send_all(payload.data(), payload.size(), std::chrono::milliseconds(3000), -1).status != comm::IoStatus::Ok)
        g = plan.steps();  // rank 0 hung up: stop sending
    }
  to.close();
  drain.join();
}

void test_hostile_predecessor() {
  const size_t n = 3000;
  struct Case {
    const char* name;
    ReduceMode mode;
    Tamper tamper;
    const char* expect;
  };
  const Case cases[] = {
      {"fp32 reduce-scatter payload with a wrong CRC", ReduceMode::Fp32,
       [](int g, int k, std::vector<uint8_t>& p, uint32_t&) { if (g == 0 && k == 1) p[5] ^= 1; }, "CRC32C mismatch"},
      {"int8 all-gather frame with a NaN scale (CRC matching)", ReduceMode::Int8,
       [](int g, int k, std::vector<uint8_t>& p, uint32_t& crc) {
         if (g == 1 && k == 0) {
           const float nan = NAN;
           std::memcpy(p.data() + p.size() - sizeof(float), &nan, sizeof(float));
           crc = crc32c(p.data(), p.size());
         }
       },
       "block scale"},
      {"int8 reduce-scatter frame with a negative scale (CRC matching)", ReduceMode::Int8,
       [](int g, int k, std::vector<uint8_t>& p, uint32_t& crc) {
         if (g == 0 && k == 0) {
           const float neg = -2.0f;
           std::memcpy(p.data() + p.size() - sizeof(float), &neg, sizeof(float));
           crc = crc32c(p.data(), p.size());
         }
       },
       "block scale"},
  };
  uint64_t round = 40;
  for (const Case& c : cases) {
    auto in = random_inputs(1, n, round);
    std::vector<float> x = in[0];
    auto ports = free_ports(2);
    std::thread fake([&] { play_rank1(ports, c.mode, round, n, c.tamper); });
    std::string err, code;
    int peer = -2;
    const auto t0 = std::chrono::steady_clock::now();
    try {
      ring_allreduce(x.data(), n, options(0, ports, c.mode, round), nullptr);
    } catch (const CommError& e) {
      err = e.what();
      code = e.code;
      peer = e.peer_rank;
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    fake.join();
    CHECK(code == "COMM_PROTOCOL" && peer == 1, "%s: code '%s', peer %d: %s", c.name, code.c_str(), peer, err.c_str());
    CHECK(err.find(c.expect) != std::string::npos, "%s: the error does not say '%s': %s", c.name, c.expect, err.c_str());
    CHECK(x == in[0], "%s: the input changed on failure", c.name);
    CHECK(s < 2.0, "%s: took %.2f s to fail", c.name, s);
    ++round;
  }
}

}  // namespace

int main(int argc, char** argv) {
  const covenant_test::Test tests[] = {
      {"crc32c", test_crc32c},
      {"hmac", test_hmac},
      {"allreduce_fp32_and_int8", test_allreduce_fp32_and_int8},
      {"strangers_are_refused", test_strangers_are_refused},
      {"wrong_secret_and_wrong_collective", test_wrong_secret_and_wrong_collective},
      {"missing_rank_fails_within_timeout", test_missing_rank_fails_within_timeout},
      {"abort", test_abort},
      {"non_finite_refused", test_non_finite_refused},
      {"hostile_predecessor", test_hostile_predecessor},
  };
  return covenant_test::run_tests(tests, argc, argv);
}
