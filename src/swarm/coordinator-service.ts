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
import { Compression, CoordinatorMethods, GetPlanRequest, HeartbeatRequest, JoinRequest, LeaveRequest, ReportRoundRequest, RoundVerdict } from './proto';
import { PlannerEvent, ReportVerdict, RoundPlanner } from './round-planner';
import { RpcError } from './rpc-error';
import { SealedSecret, sealSecret, secretContext } from './sealed-secret';

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
  /** The committed round whose update this member should upload now (HEARTBEAT_ACTION_UPLOAD), if any. */
  uploadWanted?: (peerId: string) => number | undefined;
  /** Useful-work checks waiting for a validator member (0 for everyone else). */
  checksWaiting?: (peerId: string) => number;
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
        dataServer: req.dataServer,
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
      const checksWaiting = opts.checksWaiting?.(ctx.peer.peerId) ?? 0;
      const uploadRound = opts.uploadWanted?.(ctx.peer.peerId);
      if (uploadRound !== undefined) return { action: 'HEARTBEAT_ACTION_UPLOAD', ...base, uploadRound, checksWaiting };
      return { action: 'HEARTBEAT_ACTION_CONTINUE', ...base, checksWaiting };
    },

    leave(req: LeaveRequest, ctx) {
      membership.leave(ctx.peer.peerId, req.reason);
      return {};
    },
  };
}

// ---------------------------------------------------------------------------------------------------------
// Rounds: GetPlan and ReportRound over a RoundPlanner (round-planner.ts has the rules).

/** The run's hyper-parameters every plan carries. */
export interface RoundServiceOptions {
  /** Inner steps per round (H). */
  innerSteps: number;
  compression: Compression;
  /** int8 quantization block. */
  blockSize: number;
  allreduceTimeoutMs: number;
  /** When given, a caller that is not a member (never joined, left, dropped) gets NOT_FOUND 'unknown-peer': Join. */
  membership?: Membership;
  logger?: Logger;
  /** Sees every report with its verdict; says whether the reporter should upload the round's update and its own Δ. */
  onReport?: (peerId: string, req: ReportRoundRequest, verdict: ReportVerdict) => { uploadUpdate?: boolean; uploadDelta?: boolean; openBlocks?: number[] };
}

/** A RoundPlanner event sink that logs round.plan / round.replan / round.commit / round.abandon lines. */
export function plannerEventSink(logger?: Logger): (event: PlannerEvent) => void {
  return (event) => {
    switch (event.type) {
      case 'plan':
        logger?.info('round.plan', { round: event.round, attempt: event.attempt, ring: event.ring.map((m) => m.peerId) });
        break;
      case 'replan':
        logger?.warn('round.replan', { round: event.round, attempt: event.attempt, ring: event.ring.map((m) => m.peerId), removed: event.removed, reason: event.reason });
        break;
      case 'commit':
        logger?.info('round.commit', {
          round: event.round,
          attempt: event.attempt,
          thetaSha256: event.thetaSha256,
          resync: [...event.verdicts].filter(([, v]) => v === 'resync').map(([p]) => p),
        });
        break;
      case 'abandon':
        logger?.warn('round.abandon', { round: event.round, attempt: event.attempt, reason: event.reason });
        break;
    }
  };
}

const VERDICTS: Readonly<Record<ReportVerdict, RoundVerdict>> = {
  accepted: 'ROUND_VERDICT_ACCEPTED',
  committed: 'ROUND_VERDICT_COMMITTED',
  replan: 'ROUND_VERDICT_REPLAN',
  resync: 'ROUND_VERDICT_RESYNC',
};

/**
 * GetPlan and ReportRound over `planner`. GetPlan: PENDING (with retry_after_ms) until the members are
 * fixed; READY with the ring, the caller's rank and the all-reduce secret for a member; NOT_MEMBER (no
 * ring, no secret) for anyone else, or for a round that is already over; request round 0 means the current
 * round. ReportRound: COMPLETED → the hash report, ALLREDUCE_FAILED → a re-plan without the peer at
 * failure.peer_rank (if the rank names one of the attempt's ring), ABANDONED → a re-plan without the
 * reporter; a report from a peer outside the round is PERMISSION_DENIED 'not-in-round'.
 */
export function createRoundHandlers(planner: RoundPlanner, opts: RoundServiceOptions): Pick<Handlers<CoordinatorMethods>, 'getPlan' | 'reportRound'> {
  if (!(planner instanceof RoundPlanner)) throw new TypeError(invalidParameter('planner', 'a RoundPlanner', planner));
  for (const k of ['innerSteps', 'blockSize', 'allreduceTimeoutMs'] as const) {
    const v = opts[k];
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) throw new RangeError(invalidParameter(k, 'a positive integer', v));
  }
  const knownPeer = (peerId: string) => {
    if (opts.membership && !opts.membership.has(peerId)) {
      throw new RpcError(grpc.status.NOT_FOUND, `peer ${peerId} is not a member (never joined, left, or dropped for missed heartbeats); Join again`, UNKNOWN_PEER_REASON);
    }
  };

  return {
    getPlan(req: GetPlanRequest, ctx) {
      knownPeer(ctx.peer.peerId);
      const view = planner.getPlan(ctx.peer.peerId, req.round);
      switch (view.status) {
        case 'pending':
          return { status: 'PLAN_STATUS_PENDING', retryAfterMs: view.retryAfterMs, id: { round: view.round, attempt: 0 } };
        case 'not-member':
          return { status: 'PLAN_STATUS_NOT_MEMBER', id: { round: view.round, attempt: view.attempt } };
        case 'ready': {
          // Sealed to the caller's X25519 key when it sent one (the worker always does), else in the clear.
          let sealed: SealedSecret | null = null;
          if (req.x25519PublicKey && req.x25519PublicKey.length > 0) {
            try {
              sealed = sealSecret(view.secret, req.x25519PublicKey, secretContext(req.meta?.runId ?? '', view.id.round, view.id.attempt, ctx.peer.peerId));
            } catch (e) {
              throw new RpcError(grpc.status.INVALID_ARGUMENT, (e as Error).message, 'bad-x25519-key');
            }
          }
          return {
            status: 'PLAN_STATUS_READY',
            id: view.id,
            ring: view.ring,
            rank: view.rank,
            allreduceSecret: sealed ? Buffer.alloc(0) : view.secret,
            sealedSecret: sealed,
            deadlineMs: view.deadlineMs,
            thetaSha256: view.thetaSha256,
            innerSteps: opts.innerSteps,
            compression: opts.compression,
            blockSize: opts.blockSize,
            allreduceTimeoutMs: opts.allreduceTimeoutMs,
          };
        }
      }
    },

    reportRound(req: ReportRoundRequest, ctx) {
      const peerId = ctx.peer.peerId;
      if (!req.id) throw new RpcError(grpc.status.INVALID_ARGUMENT, 'ReportRound needs the collective id of the plan it is about', 'no-collective-id');
      const { round, attempt } = req.id;
      let verdict: ReportVerdict;
      switch (req.outcome) {
        case 'ROUND_OUTCOME_COMPLETED':
          verdict = planner.reportHash(peerId, round, req.thetaSha256, attempt).verdict;
          break;
        case 'ROUND_OUTCOME_ALLREDUCE_FAILED': {
          const suspects: string[] = [];
          const rank = req.failure?.peerRank ?? -1;
          const view = planner.getPlan(peerId, round);
          if (rank >= 0 && view.status === 'ready' && view.id.attempt === attempt && rank < view.ring.length && view.ring[rank].peerId !== peerId) {
            suspects.push(view.ring[rank].peerId);
          }
          opts.logger?.warn('round.failure', { peerId, round, attempt, code: req.failure?.code ?? '', phase: req.failure?.phase ?? '', peerRank: rank, suspects });
          verdict = planner.reportFailure(peerId, round, attempt, suspects).verdict;
          break;
        }
        case 'ROUND_OUTCOME_ABANDONED':
          verdict = planner.reportFailure(peerId, round, attempt, [peerId]).verdict;
          break;
        default:
          throw new RpcError(grpc.status.INVALID_ARGUMENT, `ReportRound outcome ${JSON.stringify(req.outcome)} is not one of COMPLETED, ALLREDUCE_FAILED, ABANDONED`, 'bad-outcome');
      }
      const asks = opts.onReport?.(peerId, req, verdict) ?? {};
      return { verdict: VERDICTS[verdict], committedRound: planner.committedRound, uploadUpdate: asks.uploadUpdate ?? false, uploadDelta: asks.uploadDelta ?? false, openBlocks: asks.openBlocks ?? [] };
    },
  };
}
