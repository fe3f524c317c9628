// Process lifecycle bounds shared by the code and the deploy files. test/deploy.test.ts checks that the
// systemd units' TimeoutStopSec equals GRACEFUL_STOP_SECONDS.

/**
 * On SIGTERM a worker leaves the swarm gracefully (finishes or abandons its round, persists its state)
 * and exits 0 within this many seconds; the coordinator persists its round log and exits within it too.
 * systemd sends SIGKILL when it has passed (TimeoutStopSec=60s in deploy/systemd/).
 */
export const GRACEFUL_STOP_SECONDS = 60;
