// The data plane: a fault-tolerant ring all-reduce over plain TCP (no NCCL, no MPI).
// Ranks 0..N-1 form a ring in the order given; each listens on its own address, connects to its
// successor (rank+1) and accepts its predecessor (rank-1). Reduce-scatter then all-gather, each chunk
// pipelined in slices; a sender thread and a receive/reduce thread per collective. Every blocking
// socket operation has a deadline; any failure closes both connections at once, so it travels around the
// ring as an end-of-stream instead of a timeout.
#pragma once
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace covenant {

struct PeerAddress {
  std::string host;  // IPv4 or IPv6 literal, or a name resolved with getaddrinfo
  int port = 0;
  std::string str() const;
};

enum class ReduceMode { Fp32, Int8 };

struct CollectiveId {
  uint64_t round = 0;
  uint32_t attempt = 0;
};

struct AllReduceOptions {
  int rank = 0;
  std::vector<PeerAddress> peers;  // ring order; peers[rank] is this rank's advertised address
  PeerAddress listen;              // where to bind (host may be "0.0.0.0"); port 0 = peers[rank].port
  ReduceMode mode = ReduceMode::Fp32;
  int block_size = 128;            // int8 mode: elements per absmax scale
  int timeout_ms = 10000;          // per socket operation without progress, and for setting up the ring
  CollectiveId id;
  std::string secret;              // per-round secret from the control plane (HMAC key)
  size_t slice_bytes = 1024 * 1024; // pipelining granularity (fp32 bytes of a slice)
  bool transcripts = false;        // Merkle transcripts of the traffic each way (AllReduceStats); a SHA-256 pass per byte
};

struct AllReduceStats {
  double seconds = 0;
  uint64_t bytes_sent = 0;      // wire bytes including frame headers and the handshake
  uint64_t bytes_received = 0;
  // Transcripts (native/comm/transcript.h): hex Merkle roots over the traffic sent to the successor and
  // received from the predecessor, one leaf per int8 block of a frame (per frame in fp32 mode). On an honest
  // hop, a rank's sent root is its successor's received root.
  std::string sent_sha256;
  std::string received_sha256;
  std::vector<uint8_t> sent_leaves, received_leaves;  // 32-byte leaf hashes in traffic order
  // int8 mode with transcripts: what this rank sent in the reduce-scatter, by element position (zero where it
  // sent nothing: the chunk it owns), and the agreed int8 result (what it sent in the all-gather).
  std::vector<int8_t> scatter_codes, final_codes;
  std::vector<float> scatter_scales, final_scales;
};

// Thrown by ring_allreduce. peer_rank is -1 when no single peer is at fault (bad options, abort).
class CommError : public std::runtime_error {
 public:
  CommError(const std::string& what, int peer_rank, std::string phase, std::string code)
      : std::runtime_error(what), peer_rank(peer_rank), phase(std::move(phase)), code(std::move(code)) {}
  int peer_rank;
  std::string phase;  // "connect", "accept", "handshake", "reduce-scatter", "all-gather"
  std::string code;   // "COMM_TIMEOUT", "COMM_CLOSED", "COMM_PROTOCOL", "COMM_AUTH", "COMM_ABORTED", "COMM_IO", "COMM_ARGS"
};

// Cancels a collective from another thread. One token per collective; abort() is idempotent.
class AbortToken {
 public:
  AbortToken();
  ~AbortToken();
  AbortToken(const AbortToken&) = delete;
  AbortToken& operator=(const AbortToken&) = delete;
  void abort();
  bool aborted() const;
  int wait_fd() const { return fds_[0]; }  // readable once aborted
 private:
  int fds_[2];
};

// Replaces data[0..n) by the mean over all ranks, bit-identical on every rank. On failure throws
// CommError and leaves data untouched (the work happens in a copy).
AllReduceStats ring_allreduce(float* data, size_t n, const AllReduceOptions& opt, AbortToken* abort);

}  // namespace covenant
