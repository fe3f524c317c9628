// Membership proof between ring neighbours, before any data is read: the acceptor sends a fresh nonce,
// the connector answers with HMAC(secret, hello || collective id || ranks || nonce) and a nonce of its
// own, and the acceptor proves itself back the same way. A replayed, foreign or malformed handshake is
// refused; the acceptor keeps waiting for the real predecessor until its deadline.
#pragma once
#include <string>

#include "covenant/comm.h"
#include "socket.h"

namespace covenant {
namespace comm {

struct HandshakeContext {
  CollectiveId id;
  const std::string* secret;
  int my_rank;
  int peer_rank;  // the successor when connecting, the predecessor when accepting
  std::chrono::milliseconds timeout;
  int abort_fd;
};

// CommError code of a connector whose successor still serves an older collective (or just closed it): the
// caller connects again until its deadline. Never reaches the caller of the all-reduce.
inline const char* const kSuccessorBusy = "COMM_SUCCESSOR_BUSY";

// Connector side, on a fresh connection to the successor. Throws CommError (phase "handshake").
void handshake_as_connector(TcpConn& conn, const HandshakeContext& ctx, const PeerAddress& peer);

// Acceptor side: accepts connections until one proves to be the predecessor of this collective, or
// the deadline passes. Strangers are closed and counted. Throws CommError (phase "accept").
TcpConn accept_predecessor(Listener& listener, const HandshakeContext& ctx, Clock::time_point deadline,
                           const PeerAddress& peer, int* refused);

}  // namespace comm
}  // namespace covenant
