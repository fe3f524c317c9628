// A TCP connection whose every operation has a deadline and wakes up when the collective is aborted.
// Sockets are non-blocking; waits go through poll() on the socket and the abort descriptor.
#pragma once
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

#include "covenant/comm.h"

namespace covenant {
namespace comm {

using Clock = std::chrono::steady_clock;

// Why an I/O call returned without finishing; the caller turns it into a CommError naming peer and phase.
enum class IoStatus { Ok, Timeout, Closed, Aborted, Error };

// The CommError code for a failed I/O status ("COMM_TIMEOUT", "COMM_CLOSED", "COMM_ABORTED", "COMM_IO").
std::string io_code(IoStatus s);

struct IoResult {
  IoStatus status = IoStatus::Ok;
  int err = 0;  // errno for Error
  std::string describe() const;
};

class TcpConn {
 public:
  TcpConn() = default;
  explicit TcpConn(int fd);
  ~TcpConn();
  TcpConn(TcpConn&& o) noexcept;
  TcpConn& operator=(TcpConn&& o) noexcept;
  TcpConn(const TcpConn&) = delete;
  TcpConn& operator=(const TcpConn&) = delete;

  bool valid() const { return fd_ >= 0; }
  int fd() const { return fd_; }
  // Sends/receives exactly len bytes. The deadline moves forward by timeout whenever bytes move, so only
  // a stall (no progress for timeout) fails.
  IoResult send_all(const void* data, size_t len, std::chrono::milliseconds timeout, int abort_fd);
  IoResult recv_all(void* data, size_t len, std::chrono::milliseconds timeout, int abort_fd);
  // Shuts down both directions at once (neighbours see end-of-stream) and closes.
  void close();
  uint64_t bytes_sent() const { return sent_; }
  uint64_t bytes_received() const { return received_; }

 private:
  int fd_ = -1;
  uint64_t sent_ = 0, received_ = 0;
};

// Sets TCP_NODELAY, large buffers and non-blocking mode.
void tune_socket(int fd);

// Connects to addr, retrying refused connections until the deadline (the peer may not listen yet).
IoResult connect_with_retry(const PeerAddress& addr, Clock::time_point deadline, int abort_fd, TcpConn* out);

class Listener {
 public:
  Listener() = default;
  ~Listener();
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;
  // Binds and listens (SO_REUSEADDR); throws CommError (COMM_IO) naming the address on failure.
  void open(const PeerAddress& addr);
  int fd() const { return fd_; }
  void close();

 private:
  int fd_ = -1;
};

}  // namespace comm
}  // namespace covenant
