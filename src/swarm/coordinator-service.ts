// The Coordinator service's membership handlers (Join, Heartbeat, Leave) over a Membership table. Rounds,
// plans and state streaming come later: SignedServer answers UNIMPLEMENTED for the methods left out here.
// Requests reach these handlers already verified (signature, run id, protocol version, replay), so the
// peer id and key come from ctx.peer, never from the request body.
import * as grpc from '@grpc/grpc-js';
import { Logger } from '../log';
import type { MembershipMetrics } from '../metrics/membership';
import { invalidParameter } from '../train/model-config';
import { Handlers } from './grpc-server';
import { Membership, MembershipEvent, UNKNOWN_PEER_REASON } from './membership';
import { CoordinatorMethods, HeartbeatRequest, JoinRequest, LeaveRequest } from './proto';
import { RpcError } from './rpc-error';

/** The run's current state as the membership handlers report it (rounds come from the round logic later). */
export interface CoordinatorRunView {
  /** The round a joining worker takes part in first. */
  round(): number;
  /** Latest committed round (0: none). */
  committedRound(): number;
  /** Sync hash of the latest committed state ('' : none). */
  thetaSha256(): string;
  /** Attempt of the current round's plan. */
  planAttempt(): number;
}

export interface CoordinatorServiceOptions {
  /** Interval the workers are told to heartbeat at; must be below the membership's heartbeat timeout. */
  heartbeatIntervalMs: number;
  /** The run's data manifest hash; a Join with another is refused (FAILED_PRECONDITION, 'manifest-mismatch'). Empty: not checked. */
  manifestSha256?: string;
  /** The run's validated config as canonical JSON, handed to every joining worker. */
  runConfigJson?: string;
  /** Round state; default: round 0, nothing committed. */
  run?: Partial<CoordinatorRunView>;
  /** Logger for member.join / member.leave / member.drop / member.rejoin-needed lines. */
  logger?: Logger;
  /** Membership metrics to bump (joins, leaves, drops) and bind (members). */
  metrics?: MembershipMetrics;
  /** Server clock for HeartbeatResponse.server_time_ms; default Date.now. */
  now?: () => number;
}

/**
 * A Membership event sink that logs and counts: pass it as the Membership's onEvent (drops are seen only
 * there, from sweep()).
 */
export function membershipEventSink(logger?: Logger, metrics?: MembershipMetrics): (event: MembershipEvent) => void {
  return (event) => {
    const m = event.member;
    switch (event.type) {
      case 'join':
        if (!event.rejoin) metrics?.join();
        logger?.info('member.join', { peerId: m.peerId, address: m.address, agent: m.info.agent, device: m.info.device, stateRound: m.info.stateRound, rejoin: event.rejoin });
        break;
      case 'leave':
        metrics?.leave();
        logger?.info('member.leave', { peerId: m.peerId, reason: event.reason });
        break;
      case 'drop':
        metrics?.drop();
        logger?.warn('member.drop', { peerId: m.peerId, address: m.address, silentMs: event.silentMs });
        break;
    }
  };
}

/** Join, Heartbeat and Leave over `membership`, for SignedServer.addService(coordinatorService(), ...). */
export function createCoordinatorHandlers(
  membership: Membership,
  opts: CoordinatorServiceOptions,
): Pick<Handlers<CoordinatorMethods>, 'join' | 'heartbeat' | 'leave'> {
  if (!(membership instanceof Membership)) throw new TypeError(invalidParameter('membership', 'a Membership', membership));
  const hb = opts.heartbeatIntervalMs;
  if (typeof hb !== 'number' || !Number.isInteger(hb) || hb <= 0 || hb >= membership.heartbeatTimeoutMs) {
    throw new RangeError(invalidParameter('heartbeatIntervalMs', `a positive integer below the heartbeat timeout (${membership.heartbeatTimeoutMs} ms)`, hb));
  }
  const now = opts.now ?? Date.now;
  const run: CoordinatorRunView = {
    round: opts.run?.round ?? (() => 0),
    committedRound: opts.run?.committedRound ?? (() => 0),
    thetaSha256: opts.run?.thetaSha256 ?? (() => ''),
    planAttempt: opts.run?.planAttempt ?? (() => 0),
  };
  const manifest = opts.manifestSha256 ?? '';
  opts.metrics?.bindMembers(() => membership.size);

  return {
    join(req: JoinRequest, ctx) {
      if (manifest !== '' && req.manifestSha256 !== manifest) {
        opts.logger?.warn('member.refused', { peerId: ctx.peer.peerId, reason: 'manifest-mismatch', manifestSha256: req.manifestSha256 });
        throw new RpcError(
          grpc.status.FAILED_PRECONDITION,
          `data manifest ${JSON.stringify(req.manifestSha256)} differs from the run's ${JSON.stringify(manifest)}; prepare the run's data set`,
          'manifest-mismatch',
        );
      }
      const member = membership.join(ctx.peer.peerId, ctx.peer.publicKey, req.dataAddress, {
        agent: req.agent,
        device: req.device,
        stateRound: req.stateRound,
        thetaSha256: req.thetaSha256,
      });
      const committedRound = run.committedRound();
      const theta = run.thetaSha256();
      const needsState = committedRound > 0 && (req.stateRound !== committedRound || req.thetaSha256 !== theta);
      return {
        peerId: member.peerId,
        round: run.round(),
        committedRound,
        thetaSha256: theta,
        needsState,
        heartbeatIntervalMs: hb,
        runConfigJson: opts.runConfigJson ?? '',
      };
    },

    heartbeat(req: HeartbeatRequest, ctx) {
      const base = { round: run.round(), planAttempt: run.planAttempt(), serverTimeMs: now() };
      try {
        membership.heartbeat(ctx.peer.peerId, { round: req.round, phase: req.phase, innerStep: req.innerStep });
      } catch (e) {
        if (e instanceof RpcError && e.reason === UNKNOWN_PEER_REASON) {
          // The proto's answer for an unknown peer: an action, not an error, so the worker just re-joins.
          opts.logger?.info('member.rejoin-needed', { peerId: ctx.peer.peerId });
          return { action: 'HEARTBEAT_ACTION_REJOIN', ...base };
        }
        throw e;
      }
      return { action: 'HEARTBEAT_ACTION_CONTINUE', ...base };
    },

    leave(req: LeaveRequest, ctx) {
      membership.leave(ctx.peer.peerId, req.reason);
      return {};
    },
  };
}
