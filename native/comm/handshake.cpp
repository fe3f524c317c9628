// The all-reduce handshake (see handshake.h): challenge, hello, welcome, each an ordinary frame.
#include "handshake.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "covenant/crc32c.h"
#include "covenant/hmac.h"
#include "frame.h"

namespace covenant {
namespace comm {

namespace {

void random_nonce(uint8_t* out) {
  std::random_device rd;
  for (size_t i = 0; i < kNonceBytes; i += 4) {
    uint32_t v = rd();
    std::memcpy(out + i, &v, 4);
  }
}

Mac proof(const std::string& secret, const char* label, const CollectiveId& id, int from_rank, int to_rank,
          const uint8_t* nonce) {
  std::vector<uint8_t> msg(label, label + std::strlen(label));
  auto put = [&](const void* p, size_t n) {
    const uint8_t* b = static_cast<const uint8_t*>(p);
    msg.insert(msg.end(), b, b + n);
  };
  uint32_t f = uint32_t(from_rank), t = uint32_t(to_rank);
  put(&id.round, 8);
  put(&id.attempt, 4);
  put(&f, 4);
  put(&t, 4);
  put(nonce, kNonceBytes);
  return hmac_sha256(secret.data(), secret.size(), msg.data(), msg.size());
}

FrameHeader header_for(FrameKind kind, const CollectiveId& id, const void* payload, uint32_t len) {
  return make_header(kind, id, 0, 0, len, crc32c(payload, len));
}

[[noreturn]] void fail(const std::string& what, int peer, const std::string& code) {
  throw CommError(what, peer, "handshake", code);
}


}  // namespace

void handshake_as_connector(TcpConn& conn, const HandshakeContext& ctx, const PeerAddress& peer) {
  const std::string who = "successor rank " + std::to_string(ctx.peer_rank) + " (" + peer.str() + ")";
  FrameHeader h;
  ChallengePayload ch;
  IoResult r = conn.recv_all(&h, sizeof(h), ctx.timeout, ctx.abort_fd);
  if (r.status == IoStatus::Ok) r = h.length == sizeof(ch) ? conn.recv_all(&ch, sizeof(ch), ctx.timeout, ctx.abort_fd) : IoResult{};
  // A successor whose previous collective (an older round or attempt) has not ended yet still listens on
  // its port, or has just closed it: that is a successor that is late, not a wrong one.
  if (r.status == IoStatus::Closed) fail(who + " closed the connection before its challenge", ctx.peer_rank, kSuccessorBusy);
  if (r.status != IoStatus::Ok) fail("waiting for the challenge of " + who + ": " + r.describe(), ctx.peer_rank, io_code(r.status));
  if (h.magic == kFrameMagic && h.version == kFrameVersion && h.kind == uint16_t(FrameKind::Challenge) &&
      (h.round < ctx.id.round || (h.round == ctx.id.round && h.attempt < ctx.id.attempt)))
    fail(who + " is still in round " + std::to_string(h.round) + " attempt " + std::to_string(h.attempt), ctx.peer_rank, kSuccessorBusy);
  std::string bad = frame_mismatch(h, FrameKind::Challenge, ctx.id, sizeof(ch));
  if (bad.empty() && h.crc32c != crc32c(&ch, sizeof(ch))) bad = "challenge CRC mismatch";
  if (bad.empty() && ch.acceptor_rank != uint32_t(ctx.peer_rank))
    bad = "it says it is rank " + std::to_string(ch.acceptor_rank);
  if (!bad.empty()) fail(who + " is not this collective's successor: " + bad, ctx.peer_rank, "COMM_PROTOCOL");

  HelloPayload hello{};
  hello.connector_rank = uint32_t(ctx.my_rank);
  random_nonce(hello.nonce);
  Mac m = proof(*ctx.secret, "covenant/allreduce/hello/v1", ctx.id, ctx.my_rank, ctx.peer_rank, ch.nonce);
  std::memcpy(hello.mac, m.data(), kMacBytes);
  FrameHeader hh = header_for(FrameKind::Hello, ctx.id, &hello, sizeof(hello));
  r = conn.send_all(&hh, sizeof(hh), ctx.timeout, ctx.abort_fd);
  if (r.status == IoStatus::Ok) r = conn.send_all(&hello, sizeof(hello), ctx.timeout, ctx.abort_fd);
  if (r.status != IoStatus::Ok) fail("sending hello to " + who + ": " + r.describe(), ctx.peer_rank, io_code(r.status));

  WelcomePayload w;
  r = conn.recv_all(&h, sizeof(h), ctx.timeout, ctx.abort_fd);
  if (r.status == IoStatus::Ok) r = h.length == sizeof(w) ? conn.recv_all(&w, sizeof(w), ctx.timeout, ctx.abort_fd) : IoResult{};
  if (r.status != IoStatus::Ok)
    fail("waiting for the welcome of " + who + ": " + r.describe() + " (it refused our proof: are both using this round's secret?)",
         ctx.peer_rank, io_code(r.status));
  bad = frame_mismatch(h, FrameKind::Welcome, ctx.id, sizeof(w));
  if (bad.empty() && h.crc32c != crc32c(&w, sizeof(w))) bad = "welcome CRC mismatch";
  if (!bad.empty()) fail(who + " sent a bad welcome: " + bad, ctx.peer_rank, "COMM_PROTOCOL");
  Mac expect = proof(*ctx.secret, "covenant/allreduce/welcome/v1", ctx.id, ctx.peer_rank, ctx.my_rank, hello.nonce);
  Mac got;
  std::memcpy(got.data(), w.mac, kMacBytes);
  if (!mac_equal(expect, got)) fail(who + " failed to prove membership of the collective (wrong secret)", ctx.peer_rank, "COMM_AUTH");
}

namespace {

// One not-yet-trusted incoming connection: we have sent it a challenge and collect its hello.
struct Pending {
  TcpConn conn;
  uint8_t nonce[kNonceBytes];
  uint8_t buf[sizeof(FrameHeader) + sizeof(HelloPayload)];
  size_t have = 0;
  Clock::time_point deadline;
};

}  // namespace

TcpConn accept_predecessor(Listener& listener, const HandshakeContext& ctx, Clock::time_point deadline,
                           const PeerAddress& peer, int* refused) {
  std::vector<std::unique_ptr<Pending>> pending;
  const std::string who = "predecessor rank " + std::to_string(ctx.peer_rank) + " (" + peer.str() + ")";
  for (;;) {
    auto now = Clock::now();
    if (now >= deadline) {
      std::string extra = *refused > 0 ? "; refused " + std::to_string(*refused) + " connection(s) that did not prove membership" : "";
      throw CommError("no connection from " + who + " within the timeout" + extra, ctx.peer_rank, "accept", "COMM_TIMEOUT");
    }
    std::vector<pollfd> fds;
    fds.push_back({listener.fd(), POLLIN, 0});
    fds.push_back({ctx.abort_fd, POLLIN, 0});
    for (auto& p : pending) fds.push_back({p->conn.fd(), POLLIN, 0});
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count();
    int pr = ::poll(fds.data(), fds.size(), int(std::min<long long>(wait, 200)));
    if (pr < 0 && errno != EINTR) throw CommError(std::string("poll(): ") + std::strerror(errno), -1, "accept", "COMM_IO");
    if (fds[1].revents & POLLIN) throw CommError("aborted while waiting for " + who, -1, "accept", "COMM_ABORTED");
    if (fds[0].revents & POLLIN) {
      int fd = ::accept4(listener.fd(), nullptr, nullptr, SOCK_CLOEXEC);
      if (fd >= 0) {
        tune_socket(fd);
        auto p = std::make_unique<Pending>();
        p->conn = TcpConn(fd);
        p->deadline = std::min(deadline, Clock::now() + ctx.timeout);
        random_nonce(p->nonce);
        ChallengePayload ch{};
        ch.acceptor_rank = uint32_t(ctx.my_rank);
        std::memcpy(ch.nonce, p->nonce, kNonceBytes);
        FrameHeader h = header_for(FrameKind::Challenge, ctx.id, &ch, sizeof(ch));
        IoResult r = p->conn.send_all(&h, sizeof(h), std::chrono::milliseconds(1000), ctx.abort_fd);
        if (r.status == IoStatus::Ok) r = p->conn.send_all(&ch, sizeof(ch), std::chrono::milliseconds(1000), ctx.abort_fd);
        if (r.status == IoStatus::Ok) pending.push_back(std::move(p));
      }
    }
    // Read whatever the pending connections have sent; judge each once its hello is complete.
    for (size_t i = 0; i < pending.size();) {
      Pending& p = *pending[i];
      bool drop = Clock::now() >= p.deadline;
      if (!drop) {
        ssize_t n = ::recv(p.conn.fd(), p.buf + p.have, sizeof(p.buf) - p.have, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) drop = true;
        if (n > 0) p.have += size_t(n);
        if (!drop && p.have >= sizeof(FrameHeader)) {
          FrameHeader h;
          std::memcpy(&h, p.buf, sizeof(h));
          if (!frame_mismatch(h, FrameKind::Hello, ctx.id, sizeof(HelloPayload)).empty()) drop = true;
        }
      }
      if (!drop && p.have == sizeof(p.buf)) {
        FrameHeader h;
        HelloPayload hello;
        std::memcpy(&h, p.buf, sizeof(h));
        std::memcpy(&hello, p.buf + sizeof(h), sizeof(hello));
        Mac expect = proof(*ctx.secret, "covenant/allreduce/hello/v1", ctx.id, ctx.peer_rank, ctx.my_rank, p.nonce);
        Mac got;
        std::memcpy(got.data(), hello.mac, kMacBytes);
        bool ok = h.crc32c == crc32c(&hello, sizeof(hello)) && hello.connector_rank == uint32_t(ctx.peer_rank) && mac_equal(expect, got);
        if (ok) {
          WelcomePayload w{};
          Mac m = proof(*ctx.secret, "covenant/allreduce/welcome/v1", ctx.id, ctx.my_rank, ctx.peer_rank, hello.nonce);
          std::memcpy(w.mac, m.data(), kMacBytes);
          FrameHeader wh = header_for(FrameKind::Welcome, ctx.id, &w, sizeof(w));
          IoResult r = p.conn.send_all(&wh, sizeof(wh), ctx.timeout, ctx.abort_fd);
          if (r.status == IoStatus::Ok) r = p.conn.send_all(&w, sizeof(w), ctx.timeout, ctx.abort_fd);
          if (r.status == IoStatus::Ok) {
            TcpConn out = std::move(p.conn);
            (*refused) += int(pending.size()) - 1;  // others still pending were never proven
            return out;
          }
        }
        drop = true;
      }
      if (drop) {
        ++*refused;
        pending.erase(pending.begin() + long(i));
      } else {
        ++i;
      }
    }
  }
}

}  // namespace comm
}  // namespace covenant
