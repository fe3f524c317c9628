// Ring all-reduce over TCP (see covenant/comm.h). Two threads per collective: this one receives and
// reduces slice after slice; a sender thread sends each slice as soon as the slice it depends on has
// been received (slice k of step g needs slice k of step g-1). fp32 mode sends the partial sums as they
// are; int8 mode requantizes each hop's fp32 sum and the all-gather forwards the owner's final int8
// slice, which every rank (the owner too) dequantizes, so all ranks end bit-identical.
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cfloat>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "covenant/comm.h"
#include "covenant/crc32c.h"
#include "covenant/quant.h"
#include "covenant/thread_pool.h"
#include "frame.h"
#include "handshake.h"
#include "ring_plan.h"
#include "socket.h"
#include "transcript.h"

namespace covenant {

namespace {

using comm::Clock;
using comm::FrameHeader;
using comm::IoResult;
using comm::IoStatus;
using comm::io_code;
using comm::RingPlan;
using comm::TcpConn;

// Payloads are received (and checksummed) in pieces of this size, so the CRC reads what the kernel just wrote.
constexpr size_t kPieceBytes = 128 << 10;
// int8 reduce-scatter hops run in tiles of this many elements (16 KiB of fp32 scratch: L1-resident).
constexpr size_t kHopTileElems = 4096;

// Buffers are reused across collectives: a fresh n-element buffer per call costs a page fault per 4 KiB
// (and a std::vector would also zero it). At most kPoolSize buffers of each type are kept. Contents are
// uninitialized.
template <class T>
class BufferPool {
 public:
  struct Buffer {
    std::unique_ptr<T[]> data;
    size_t capacity = 0;
    T* get() const { return data.get(); }
  };
  static Buffer acquire(size_t n) {
    std::lock_guard<std::mutex> lock(mu());
    auto& free = list();
    size_t best = free.size();  // the smallest that fits, so a small request does not take a big buffer
    for (size_t i = 0; i < free.size(); ++i)
      if (free[i].capacity >= n && (best == free.size() || free[i].capacity < free[best].capacity)) best = i;
    if (best < free.size()) {
      Buffer b = std::move(free[best]);
      free.erase(free.begin() + long(best));
      return b;
    }
    return Buffer{std::unique_ptr<T[]>(new T[std::max<size_t>(n, 1)]), std::max<size_t>(n, 1)};
  }
  static void release(Buffer b) {
    if (!b.data) return;
    std::lock_guard<std::mutex> lock(mu());
    auto& free = list();
    free.push_back(std::move(b));
    if (free.size() > kPoolSize) free.erase(free.begin());
  }

 private:
  static constexpr size_t kPoolSize = 4;
  static std::mutex& mu() {
    static std::mutex m;
    return m;
  }
  static std::vector<Buffer>& list() {
    static std::vector<Buffer> l;
    return l;
  }
};

// 1 when x is NaN or ±Inf, else 0; no branch, so loops that OR it up stay vectorized.
inline uint32_t non_finite(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  return uint32_t((bits & 0x7f800000u) == 0x7f800000u);
}

bool all_finite(const float* src, size_t n) {
  uint32_t bad = 0;
  for (size_t i = 0; i < n; ++i) bad |= non_finite(src[i]);
  return bad == 0;
}

// One reduce-scatter hop's arithmetic: w = in + own (the same bits as own + in: IEEE addition commutes), and at
// the last step (kMean), where the sum is final, divided by N. Returns nonzero when an own value is not finite
// (the check rides on the one read of own). w may be in.
template <bool kMean>
inline uint32_t sum_own(float* w, const float* own, const float* in, size_t m, float N) {
  uint32_t bad = 0;
  for (size_t i = 0; i < m; ++i) {
    const float sum = in[i] + own[i];
    w[i] = kMean ? sum / N : sum;
    bad |= non_finite(own[i]);
  }
  return bad;
}

// Names the first non-finite value of data[0, n), which starts at tensor index `base`.
[[noreturn]] void throw_not_finite(const float* data, size_t n, size_t base = 0, const char* phase = "setup") {
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(data[i]))
      throw CommError("tensor[" + std::to_string(base + i) + "] is not finite (" + std::to_string(data[i]) + ")", -1, phase, "COMM_ARGS");
  throw CommError("tensor holds a non-finite value", -1, phase, "COMM_ARGS");
}

class RingAllReduce {
 public:
  RingAllReduce(float* data, size_t n, const AllReduceOptions& opt, AbortToken* abort)
      : data_(data), n_(n), opt_(opt), N_(int(opt.peers.size())), r_(opt.rank), abort_(abort),
        int8_(opt.mode == ReduceMode::Int8), block_(size_t(opt.block_size)),
        plan_(N_, r_, n, int8_ ? block_ : 16, opt.slice_bytes / sizeof(float)), pool_(1) {
    pred_ = (r_ + N_ - 1) % N_;
    succ_ = (r_ + 1) % N_;
    timeout_ = std::chrono::milliseconds(opt.timeout_ms);
  }

  ~RingAllReduce() {
    BufferPool<int8_t>::release(std::move(codes_buf_));
    BufferPool<float>::release(std::move(scales_buf_));
  }
  RingAllReduce(const RingAllReduce&) = delete;
  RingAllReduce& operator=(const RingAllReduce&) = delete;

  AllReduceStats run() {
    auto t0 = Clock::now();
    // The caller's tensor is only read until the very end, so a failure leaves it untouched. fp32 mode: sums
    // and received chunks go to work_, copied back on success. int8 mode needs no fp32 copy of the tensor:
    // each hop's sum lives in a slice-sized scratch just long enough to be requantized, the agreed codes and
    // scales collect in codes_/scales_, and success dequantizes them once, straight into the tensor.
    buffer_ = BufferPool<float>::acquire(int8_ ? plan_.slice_elems : n_);
    work_ = buffer_.get();
    // Every value of the tensor is checked for finiteness where it is first read: the chunk sent at step 0
    // here, before any connection; every other one in the reduce-scatter hop that adds it, before anything
    // computed from it is sent (a fused check: one pass over the tensor fewer).
    const size_t off = plan_.chunk_off[r_], len = plan_.chunk_len[r_];
    if (int8_) {
      codes_buf_ = BufferPool<int8_t>::acquire(n_);
      scales_buf_ = BufferPool<float>::acquire(n_blocks());
      codes_ = codes_buf_.get();
      scales_ = scales_buf_.get();
      // Step 0 sends this rank's own chunk, quantized.
      try {
        quantize_int8(codes_ + off, scales_ + off / block_, data_ + off, len, int(block_), &pool_);
      } catch (const NonFiniteError& e) {
        throw_not_finite(data_ + off, len, off);
      }
      if (opt_.transcripts) {
        scatter_codes_.assign(n_, 0);
        scatter_scales_.assign(n_blocks(), 0.0f);
      }
    } else if (!all_finite(data_ + off, len)) {
      throw_not_finite(data_ + off, len, off);
    }
    out_crc_.assign(size_t(plan_.steps()) * size_t(plan_.slices), 0);
    connect_ring();
    std::thread sender([this] { send_loop(); });
    try {
      receive_loop();
    } catch (const CommError& e) {
      fail(e);
    } catch (const std::exception& e) {
      fail(CommError(prefix() + e.what(), -1, "reduce", "COMM_PROTOCOL"));
    }
    sender.join();
    if (!error_) {
      if (int8_)
        dequantize_int8_streaming(data_, codes_, scales_, n_, int(block_), &pool_);
      else
        std::memcpy(data_, work_, n_ * sizeof(float));
    }
    work_ = nullptr;
    BufferPool<float>::release(std::move(buffer_));
    if (error_) {
      to_succ_.close();
      from_pred_.close();
      throw *error_;
    }
    AllReduceStats st;
    st.bytes_sent = to_succ_.bytes_sent() + from_pred_.bytes_sent();
    st.bytes_received = to_succ_.bytes_received() + from_pred_.bytes_received();
    if (opt_.transcripts) {
      st.sent_sha256 = sent_log_.root_hex();
      st.received_sha256 = recv_log_.root_hex();
      st.sent_leaves = std::move(sent_log_.leaves());
      st.received_leaves = std::move(recv_log_.leaves());
      if (int8_) {
        st.scatter_codes = std::move(scatter_codes_);
        st.scatter_scales = std::move(scatter_scales_);
        st.final_codes.assign(codes_, codes_ + n_);
        st.final_scales.assign(scales_, scales_ + n_blocks());
      }
    }
    to_succ_.close();
    from_pred_.close();
    st.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    return st;
  }

 private:
  std::string prefix() const {
    return "all-reduce round " + std::to_string(opt_.id.round) + " attempt " + std::to_string(opt_.id.attempt) +
           ", rank " + std::to_string(r_) + ": ";
  }
  std::string with_prefix(const std::string& m) const { return m.rfind("all-reduce", 0) == 0 ? m : prefix() + m; }
  std::string phase(int g) const { return plan_.reduce_scatter(g) ? "reduce-scatter" : "all-gather"; }
  std::string peer(int rank) const { return "rank " + std::to_string(rank) + " (" + opt_.peers[rank].str() + ")"; }

  // Records the first failure, wakes the other thread and drops both connections so the neighbours
  // notice at once.
  void fail(const CommError& e) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!error_) error_ = std::make_unique<CommError>(e);
      failed_ = true;
    }
    cv_.notify_all();
    abort_->abort();
    ::shutdown(to_succ_.fd(), SHUT_RDWR);
    ::shutdown(from_pred_.fd(), SHUT_RDWR);
  }

  void connect_ring() {
    comm::Listener listener;
    PeerAddress bind = opt_.listen;
    if (bind.host.empty()) bind.host = opt_.peers[r_].host;
    if (bind.port == 0) bind.port = opt_.peers[r_].port;
    listener.open(bind);
    auto deadline = Clock::now() + timeout_;
    comm::HandshakeContext to{opt_.id, &opt_.secret, r_, succ_, timeout_, abort_->wait_fd()};
    comm::HandshakeContext from{opt_.id, &opt_.secret, r_, pred_, timeout_, abort_->wait_fd()};
    std::unique_ptr<CommError> connect_error;
    // Connect and accept at the same time: every rank does both, so doing them in turn would deadlock.
    std::thread connector([&] {
      try {
        for (;;) {
          IoResult r = comm::connect_with_retry(opt_.peers[succ_], deadline, abort_->wait_fd(), &to_succ_);
          if (r.status != IoStatus::Ok)
            throw CommError(prefix() + "cannot connect to successor " + peer(succ_) + ": " + r.describe(), succ_, "connect", io_code(r.status));
          try {
            comm::handshake_as_connector(to_succ_, to, opt_.peers[succ_]);
            break;
          } catch (const CommError& e) {
            if (e.code != comm::kSuccessorBusy) throw;
            to_succ_ = comm::TcpConn();
            if (Clock::now() + std::chrono::milliseconds(20) >= deadline)
              throw CommError(std::string(e.what()) + " until the timeout", succ_, "connect", "COMM_TIMEOUT");
            pollfd pf{abort_->wait_fd(), POLLIN, 0};
            if (::poll(&pf, 1, 20) > 0)
              throw CommError("aborted while waiting for successor " + peer(succ_), -1, "connect", "COMM_ABORTED");
          }
        }
      } catch (const CommError& e) {
        connect_error = std::make_unique<CommError>(with_prefix(e.what()), e.peer_rank, e.phase, e.code);
        abort_->abort();
      }
    });
    try {
      from_pred_ = comm::accept_predecessor(listener, from, deadline, opt_.peers[pred_], &refused_);
    } catch (const CommError& e) {
      abort_->abort();
      connector.join();
      if (connect_error && e.code == "COMM_ABORTED") throw *connect_error;
      throw CommError(with_prefix(e.what()), e.peer_rank, e.phase, e.code);
    }
    connector.join();
    if (connect_error) throw *connect_error;
  }

  size_t n_blocks() const { return (n_ + block_ - 1) / block_; }

  size_t payload_bytes(size_t b, size_t e) const {
    if (!int8_) return (e - b) * sizeof(float);
    return (e - b) + ((e - b) + block_ - 1) / block_ * sizeof(float);
  }

  void send_loop() {
    const int S = plan_.slices;
    for (int g = 0; g < plan_.steps(); ++g) {
      for (int k = 0; k < S; ++k) {
        {
          std::unique_lock<std::mutex> lock(mu_);
          int64_t need = g == 0 ? 0 : int64_t(g - 1) * S + k + 1;
          cv_.wait(lock, [&] { return failed_ || recv_done_ >= need; });
          if (failed_) return;
        }
        int c = plan_.send_chunk(g);
        size_t b, e;
        plan_.slice_range(c, k, &b, &e);
        FrameHeader h = comm::make_header(comm::FrameKind::Data, opt_.id, uint32_t(g), uint32_t(k),
                                          uint32_t(payload_bytes(b, e)), 0);
        const void* p1;
        size_t l1, l2 = 0;
        const void* p2 = nullptr;
        if (int8_) {
          p1 = codes_ + b;
          l1 = e - b;
          p2 = scales_ + b / block_;
          l2 = (e - b + block_ - 1) / block_ * sizeof(float);
        } else {
          p1 = (g == 0 ? data_ : work_) + b;  // step 0 sends this rank's own values
          l1 = (e - b) * sizeof(float);
        }
        // Step 0 sends this rank's own data; every later payload was received or computed by the receiver
        // thread one step earlier, which took its CRC while the bytes were in cache.
        h.crc32c = g == 0 ? crc32c_extend(crc32c(p1, l1), p2, l2) : out_crc_[size_t(g) * size_t(S) + size_t(k)];
        if (opt_.transcripts) record_sent(g, k, b, e, p1, l1);
        IoResult r = to_succ_.send_all(&h, sizeof(h), timeout_, abort_->wait_fd());
        if (r.status == IoStatus::Ok && l1) r = to_succ_.send_all(p1, l1, timeout_, abort_->wait_fd());
        if (r.status == IoStatus::Ok && l2) r = to_succ_.send_all(p2, l2, timeout_, abort_->wait_fd());
        if (r.status != IoStatus::Ok) {
          if (r.status == IoStatus::Aborted && failed_) return;
          fail(CommError(prefix() + "send to successor " + peer(succ_) + " in " + phase(g) + " step " + std::to_string(g) +
                             " slice " + std::to_string(k) + ": " + r.describe(),
                         r.status == IoStatus::Aborted ? -1 : succ_, phase(g), io_code(r.status)));
          return;
        }
      }
    }
  }

  // Receives len bytes into dst in pieces, extending *crc over each piece while it is still in cache; fp32
  // reduce-scatter pieces are also summed into the work buffer at once (sum_at: element offset of dst's
  // first float in the tensor; extends *out_crc over the sums). A failure throws (or returns false when
  // the collective already failed elsewhere).
  bool receive_payload(uint8_t* dst, size_t len, uint32_t* crc, const std::string& where, int g, size_t sum_at = SIZE_MAX,
                       uint32_t* out_crc = nullptr) {
    for (size_t off = 0; off < len; off += kPieceBytes) {
      const size_t piece = std::min(kPieceBytes, len - off);
      IoResult r = from_pred_.recv_all(dst + off, piece, timeout_, abort_->wait_fd());
      if (r.status != IoStatus::Ok) {
        if (r.status == IoStatus::Aborted && failed_) return false;
        throw CommError(prefix() + "receive" + where + ": " + r.describe(), r.status == IoStatus::Aborted ? -1 : pred_, phase(g),
                        io_code(r.status));
      }
      *crc = crc32c_extend(*crc, dst + off, piece);
      if (sum_at != SIZE_MAX) {
        const size_t i0 = sum_at + off / sizeof(float), m = piece / sizeof(float);
        float* w = work_ + i0;
        const float* own = data_ + i0;
        const float* in = reinterpret_cast<const float*>(dst + off);
        const uint32_t bad = g == N_ - 2 ? sum_own<true>(w, own, in, m, float(N_)) : sum_own<false>(w, own, in, m, float(N_));
        if (bad) throw_not_finite(own, m, i0, "reduce-scatter");
        *out_crc = crc32c_extend(*out_crc, w, piece);
      }
    }
    return true;
  }

  void receive_loop() {
    const int S = plan_.slices;
    std::vector<float> buf;  // floats, so that fp32 payloads are aligned
    for (int g = 0; g < plan_.steps(); ++g) {
      const bool rs = plan_.reduce_scatter(g);
      for (int k = 0; k < S; ++k) {
        int c = plan_.recv_chunk(g);
        size_t b, e;
        plan_.slice_range(c, k, &b, &e);
        const std::string where = " from predecessor " + peer(pred_) + " in " + phase(g) + " step " + std::to_string(g) +
                                  " slice " + std::to_string(k);
        FrameHeader h;
        IoResult r = from_pred_.recv_all(&h, sizeof(h), timeout_, abort_->wait_fd());
        if (r.status != IoStatus::Ok) {
          if (r.status == IoStatus::Aborted && failed_) return;
          throw CommError(prefix() + "receive" + where + ": " + r.describe(), r.status == IoStatus::Aborted ? -1 : pred_, phase(g),
                          io_code(r.status));
        }
        const uint32_t want = uint32_t(payload_bytes(b, e));
        std::string bad = comm::frame_mismatch(h, comm::FrameKind::Data, opt_.id, want);
        if (bad.empty() && (h.step != uint32_t(g) || h.slice != uint32_t(k)))
          bad = "frame for step " + std::to_string(h.step) + " slice " + std::to_string(h.slice) + " out of order";
        if (!bad.empty()) throw CommError(prefix() + "rejected a frame" + where + ": " + bad, pred_, phase(g), "COMM_PROTOCOL");
        // Where the payload lands: fp32 all-gather slices straight in the work buffer and int8 ones straight in
        // the agreed codes and scales (both internal copies: a bad frame fails the collective anyway); reduce-
        // scatter slices in buf, to be combined with this rank's own values.
        const size_t m = e - b, nb = int8_ ? (m + block_ - 1) / block_ : 0;
        uint8_t* codes = nullptr;
        const uint8_t* scale_bytes = nullptr;
        uint32_t crc = 0, out_crc = 0;
        if (!int8_) {
          uint8_t* dst;
          if (rs) {
            buf.resize(m);
            dst = reinterpret_cast<uint8_t*>(buf.data());
          } else {
            dst = reinterpret_cast<uint8_t*>(work_ + b);
          }
          if (!receive_payload(dst, want, &crc, where, g, rs ? b : SIZE_MAX, &out_crc)) return;
          codes = dst;
        } else if (rs) {
          buf.resize((want + sizeof(float) - 1) / sizeof(float));
          codes = reinterpret_cast<uint8_t*>(buf.data());
          if (!receive_payload(codes, want, &crc, where, g)) return;
          scale_bytes = codes + m;
        } else {
          codes = reinterpret_cast<uint8_t*>(codes_ + b);
          scale_bytes = reinterpret_cast<const uint8_t*>(scales_ + b / block_);
          if (!receive_payload(codes, m, &crc, where, g) ||
              !receive_payload(const_cast<uint8_t*>(scale_bytes), nb * sizeof(float), &crc, where, g))
            return;
        }
        if (crc != h.crc32c)
          throw CommError(prefix() + "rejected a frame" + where + ": payload CRC32C mismatch", pred_, phase(g), "COMM_PROTOCOL");
        if (int8_) {
          const size_t bad_scale = invalid_scale(scale_bytes, nb);
          if (bad_scale != SIZE_MAX)
            throw CommError(prefix() + "rejected a frame" + where + ": block scale " + std::to_string(b / block_ + bad_scale) +
                                " is not a finite number >= 0",
                            pred_, phase(g), "COMM_PROTOCOL");
        }
        if (opt_.transcripts) record_received(g, k, b, e, codes, scale_bytes);
        if (int8_ && rs) out_crc = reduce_int8(g, b, e, codes, scale_bytes);
        if (!rs) out_crc = crc;  // all-gather slices are forwarded as received
        if (g + 1 < plan_.steps()) out_crc_[size_t(g + 1) * size_t(S) + size_t(k)] = out_crc;
        {
          std::lock_guard<std::mutex> lock(mu_);
          ++recv_done_;
        }
        cv_.notify_all();
      }
    }
  }

  // Index of the first of nb scales (stored unaligned at p) that is not a finite number >= 0, or SIZE_MAX.
  static size_t invalid_scale(const uint8_t* p, size_t nb) {
    for (size_t i = 0; i < nb; ++i) {
      float s;
      std::memcpy(&s, p + i * sizeof(float), sizeof(float));
      if (!(s >= 0.0f && s <= FLT_MAX)) return i;
    }
    return SIZE_MAX;
  }

  // Transcripts: the sent traffic of a frame as leaves (and, in int8 mode, what the reduce-scatter sent, kept
  // for openings: those bytes are overwritten by the all-gather).
  void record_sent(int g, int k, size_t b, size_t e, const void* payload, size_t len) {
    if (!int8_) {
      sent_log_.add_frame(uint32_t(g), uint32_t(k), payload, len);
      return;
    }
    for (size_t i = b; i < e; i += block_) {
      const size_t bi = i / block_, m = std::min(block_, e - i);
      sent_log_.add_int8_block(uint32_t(g), uint32_t(bi), scales_[bi], codes_ + i, m);
    }
    if (plan_.reduce_scatter(g) && e > b) {
      std::memcpy(scatter_codes_.data() + b, codes_ + b, e - b);
      std::memcpy(scatter_scales_.data() + b / block_, scales_ + b / block_, (e - b + block_ - 1) / block_ * sizeof(float));
    }
  }

  // fp32: payload is the frame's bytes; int8: the frame's codes and its scales (stored unaligned).
  void record_received(int g, int k, size_t b, size_t e, const uint8_t* payload, const uint8_t* scale_bytes) {
    if (!int8_) {
      recv_log_.add_frame(uint32_t(g), uint32_t(k), payload, (e - b) * sizeof(float));
      return;
    }
    for (size_t i = b; i < e; i += block_) {
      float scale;
      std::memcpy(&scale, scale_bytes + (i - b) / block_ * sizeof(float), sizeof(float));
      recv_log_.add_int8_block(uint32_t(g), uint32_t(i / block_), scale, reinterpret_cast<const int8_t*>(payload) + (i - b),
                               std::min(block_, e - i));
    }
  }

  // int8 reduce-scatter hop: this rank's codes and scales of [b, e) become quantize(dequant(received) + own)
  // (divided by N at the last step, where the sum is final). The slice goes through in tiles of whole blocks
  // that fit L1, so the four passes (dequantize, add, divide, requantize) and the CRC of the result read
  // cache; quantization is per block, so tiling changes no bit. Returns the CRC32C of the new codes and
  // scales: the payload this rank sends at the next step.
  uint32_t reduce_int8(int g, size_t b, size_t e, const uint8_t* codes_in, const uint8_t* scale_bytes) {
    const size_t m = e - b, nb = (m + block_ - 1) / block_;
    scale_scratch_.resize(nb);
    std::memcpy(scale_scratch_.data(), scale_bytes, nb * sizeof(float));
    int8_t* q = codes_ + b;
    float* s = scales_ + b / block_;
    const size_t tile = std::max(block_, kHopTileElems / block_ * block_);
    float* w = work_;
    const bool owner_step = g == N_ - 2;
    uint32_t crc = 0;
    for (size_t t0 = 0; t0 < m; t0 += tile) {
      const size_t len = std::min(tile, m - t0);
      dequantize_int8(w, reinterpret_cast<const int8_t*>(codes_in) + t0, scale_scratch_.data() + t0 / block_, len, int(block_), nullptr);
      const float* own = data_ + b + t0;
      const uint32_t bad = owner_step ? sum_own<true>(w, own, w, len, float(N_)) : sum_own<false>(w, own, w, len, float(N_));
      if (bad) throw_not_finite(own, len, b + t0, "reduce-scatter");
      quantize_int8(q + t0, s + t0 / block_, w, len, int(block_), nullptr);
      crc = crc32c_extend(crc, q + t0, len);
    }
    return crc32c_extend(crc, s, nb * sizeof(float));
  }

  float* data_;
  size_t n_;
  const AllReduceOptions& opt_;
  int N_, r_, pred_ = 0, succ_ = 0;
  AbortToken* abort_;
  bool int8_;
  size_t block_;
  RingPlan plan_;
  ThreadPool pool_;
  std::chrono::milliseconds timeout_;
  BufferPool<float>::Buffer buffer_;
  float* work_ = nullptr;
  std::vector<float> scale_scratch_;
  std::vector<uint32_t> out_crc_;  // CRC32C of the payload sent at (step g, slice k), index g*S+k, g >= 1
  // int8: this rank's codes and scales of the whole tensor (own chunk at step 0, then each hop's), pooled.
  BufferPool<int8_t>::Buffer codes_buf_;
  BufferPool<float>::Buffer scales_buf_;
  int8_t* codes_ = nullptr;
  float* scales_ = nullptr;
  comm::TranscriptLog sent_log_, recv_log_;  // the sender thread owns the first, the receiver the second
  std::vector<int8_t> scatter_codes_;         // transcripts, int8: what the reduce-scatter sent, by position
  std::vector<float> scatter_scales_;
  TcpConn to_succ_, from_pred_;
  int refused_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  int64_t recv_done_ = 0;
  bool failed_ = false;
  std::unique_ptr<CommError> error_;
};

void check_options(const float* data, size_t n, const AllReduceOptions& opt) {
  auto bad = [](const std::string& m) { throw CommError(m, -1, "setup", "COMM_ARGS"); };
  const int N = int(opt.peers.size());
  if (N < 1) bad("peers must list at least one rank");
  if (opt.rank < 0 || opt.rank >= N) bad("rank " + std::to_string(opt.rank) + " is outside [0, " + std::to_string(N) + ")");
  if (opt.timeout_ms <= 0) bad("timeoutMs must be positive");
  if (opt.mode == ReduceMode::Int8 && opt.block_size <= 0) bad("blockSize must be positive");
  if (N > 1 && opt.secret.empty()) bad("secret must not be empty");
  for (int i = 0; i < N; ++i)
    if (opt.peers[i].port <= 0 || opt.peers[i].port > 65535) bad("peers[" + std::to_string(i) + "] has no valid port");
}

}  // namespace

AllReduceStats ring_allreduce(float* data, size_t n, const AllReduceOptions& opt, AbortToken* abort) {
  check_options(data, n, opt);
  if (opt.peers.size() == 1) {
    for (size_t i = 0; i < n; ++i)
      if (!std::isfinite(data[i])) throw_not_finite(data, n);
    return AllReduceStats{};
  }
  AbortToken local;
  RingAllReduce job(data, n, opt, abort ? abort : &local);
  return job.run();
}

}  // namespace covenant
