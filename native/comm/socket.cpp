// Deadline-bounded, abortable TCP I/O over non-blocking sockets and poll().
#include "socket.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

namespace covenant {
namespace comm {

std::string IoResult::describe() const {
  switch (status) {
    case IoStatus::Ok: return "ok";
    case IoStatus::Timeout: return "timed out";
    case IoStatus::Closed: return "connection closed by peer";
    case IoStatus::Aborted: return "aborted";
    case IoStatus::Error: return std::string(std::strerror(err));
  }
  return "?";
}

std::string io_code(IoStatus s) {
  switch (s) {
    case IoStatus::Timeout: return "COMM_TIMEOUT";
    case IoStatus::Closed: return "COMM_CLOSED";
    case IoStatus::Aborted: return "COMM_ABORTED";
    default: return "COMM_IO";
  }
}

TcpConn::TcpConn(int fd) : fd_(fd) {}
TcpConn::~TcpConn() { close(); }
TcpConn::TcpConn(TcpConn&& o) noexcept : fd_(o.fd_), sent_(o.sent_), received_(o.received_) { o.fd_ = -1; }
TcpConn& TcpConn::operator=(TcpConn&& o) noexcept {
  if (this != &o) {
    close();
    fd_ = o.fd_;
    sent_ = o.sent_;
    received_ = o.received_;
    o.fd_ = -1;
  }
  return *this;
}

void TcpConn::close() {
  if (fd_ >= 0) {
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    fd_ = -1;
  }
}

namespace {

// Waits for `events` on fd or for the abort descriptor; returns Ok when fd is ready.
IoResult wait_for(int fd, short events, Clock::time_point deadline, int abort_fd) {
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return {IoStatus::Timeout, 0};
    pollfd p[2] = {{fd, events, 0}, {abort_fd, POLLIN, 0}};
    int r = ::poll(p, abort_fd >= 0 ? 2 : 1, int(std::min<long long>(left, 1000)));
    if (r < 0) {
      if (errno == EINTR) continue;
      return {IoStatus::Error, errno};
    }
    if (abort_fd >= 0 && (p[1].revents & POLLIN)) return {IoStatus::Aborted, 0};
    if (r > 0 && p[0].revents) return {IoStatus::Ok, 0};
  }
}

}  // namespace

IoResult TcpConn::send_all(const void* data, size_t len, std::chrono::milliseconds timeout, int abort_fd) {
  const char* p = static_cast<const char*>(data);
  auto deadline = Clock::now() + timeout;
  while (len > 0) {
    ssize_t n = ::send(fd_, p, len, MSG_NOSIGNAL);
    if (n > 0) {
      p += n;
      len -= size_t(n);
      sent_ += uint64_t(n);
      deadline = Clock::now() + timeout;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      IoResult w = wait_for(fd_, POLLOUT, deadline, abort_fd);
      if (w.status != IoStatus::Ok) return w;
      continue;
    }
    if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) return {IoStatus::Closed, errno};
    return {IoStatus::Error, errno};
  }
  return {};
}

IoResult TcpConn::recv_all(void* data, size_t len, std::chrono::milliseconds timeout, int abort_fd) {
  char* p = static_cast<char*>(data);
  auto deadline = Clock::now() + timeout;
  while (len > 0) {
    ssize_t n = ::recv(fd_, p, len, 0);
    if (n > 0) {
      p += n;
      len -= size_t(n);
      received_ += uint64_t(n);
      deadline = Clock::now() + timeout;
      continue;
    }
    if (n == 0) return {IoStatus::Closed, 0};
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      IoResult w = wait_for(fd_, POLLIN, deadline, abort_fd);
      if (w.status != IoStatus::Ok) return w;
      continue;
    }
    if (errno == ECONNRESET) return {IoStatus::Closed, errno};
    return {IoStatus::Error, errno};
  }
  return {};
}

void tune_socket(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  int buf = 4 << 20;
  ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
  ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
  int flags = ::fcntl(fd, F_GETFL, 0);
  ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

namespace {
bool resolve(const PeerAddress& addr, bool passive, sockaddr_storage* out, socklen_t* len) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  if (passive) hints.ai_flags = AI_PASSIVE;
  addrinfo* res = nullptr;
  std::string port = std::to_string(addr.port);
  if (::getaddrinfo(addr.host.empty() ? nullptr : addr.host.c_str(), port.c_str(), &hints, &res) != 0 || !res) return false;
  std::memcpy(out, res->ai_addr, res->ai_addrlen);
  *len = res->ai_addrlen;
  ::freeaddrinfo(res);
  return true;
}
}  // namespace

IoResult connect_with_retry(const PeerAddress& addr, Clock::time_point deadline, int abort_fd, TcpConn* out) {
  sockaddr_storage sa;
  socklen_t salen;
  if (!resolve(addr, false, &sa, &salen)) return {IoStatus::Error, EHOSTUNREACH};
  int last_err = ECONNREFUSED;
  int backoff_ms = 1;  // the successor usually listens within a few ms: start short, cap at 20 ms
  while (Clock::now() < deadline) {
    int fd = ::socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return {IoStatus::Error, errno};
    tune_socket(fd);
    int r = ::connect(fd, reinterpret_cast<sockaddr*>(&sa), salen);
    if (r == 0 || errno == EINPROGRESS) {
      IoResult w = r == 0 ? IoResult{} : wait_for(fd, POLLOUT, deadline, abort_fd);
      if (w.status == IoStatus::Ok) {
        int soerr = 0;
        socklen_t l = sizeof(soerr);
        ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &l);
        if (soerr == 0) {
          *out = TcpConn(fd);
          return {};
        }
        last_err = soerr;
      } else {
        ::close(fd);
        return w;
      }
    } else {
      last_err = errno;
    }
    ::close(fd);
    if (last_err != ECONNREFUSED && last_err != ECONNRESET && last_err != ETIMEDOUT) return {IoStatus::Error, last_err};
    // The peer is not listening yet: retry shortly, still watching for an abort.
    pollfd p = {abort_fd, POLLIN, 0};
    if (abort_fd >= 0 && ::poll(&p, 1, backoff_ms) > 0) return {IoStatus::Aborted, 0};
    if (abort_fd < 0) std::this_thread::sleep_for(std::chrono::milliseconds(backoff_ms));
    backoff_ms = std::min(20, backoff_ms * 2);
  }
  return {IoStatus::Timeout, last_err};
}

Listener::~Listener() { close(); }

void Listener::open(const PeerAddress& addr) {
  sockaddr_storage sa;
  socklen_t salen;
  if (!resolve(addr, true, &sa, &salen))
    throw CommError("cannot resolve listen address " + addr.str(), -1, "listen", "COMM_ARGS");
  int fd = ::socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw CommError(std::string("socket(): ") + std::strerror(errno), -1, "listen", "COMM_IO");
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), salen) != 0 || ::listen(fd, 16) != 0) {
    int e = errno;
    ::close(fd);
    throw CommError("cannot listen on " + addr.str() + ": " + std::strerror(e), -1, "listen", "COMM_IO");
  }
  int flags = ::fcntl(fd, F_GETFL, 0);
  ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  fd_ = fd;
}

void Listener::close() {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

}  // namespace comm

std::string PeerAddress::str() const {
  return host.find(':') != std::string::npos ? "[" + host + "]:" + std::to_string(port) : host + ":" + std::to_string(port);
}

AbortToken::AbortToken() {
  if (::pipe2(fds_, O_CLOEXEC | O_NONBLOCK) != 0) fds_[0] = fds_[1] = -1;
}
AbortToken::~AbortToken() {
  if (fds_[0] >= 0) ::close(fds_[0]);
  if (fds_[1] >= 0) ::close(fds_[1]);
}
void AbortToken::abort() {
  char c = 1;
  if (fds_[1] >= 0 && !aborted()) (void)!::write(fds_[1], &c, 1);
}
bool AbortToken::aborted() const {
  pollfd p = {fds_[0], POLLIN, 0};
  return fds_[0] >= 0 && ::poll(&p, 1, 0) > 0;
}

}  // namespace covenant
