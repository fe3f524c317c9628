// The metrics of each role, created once on the process's registry. A worker process calls
// initWorkerMetrics() at start, a coordinator initCoordinatorMetrics(); both then serve
// `.registry` with MetricsServer (http.ts).
import { AllReduceMetrics } from './allreduce';
import { DataMetrics } from './data';
import { MembershipMetrics } from './membership';
import { initProcessRegistry, MetricsRegistry } from './registry';
import { TrainingMetrics } from './training';
import { TrustMetrics } from './trust';

export { AllReduceMetrics, failureReason, ALLREDUCE_FAILURE_REASONS, type AllReduceFailureReason } from './allreduce';
export { MembershipMetrics, RESYNC_REASONS, type ResyncReason } from './membership';
export { MetricsRegistry, initProcessRegistry, processMetricsRegistry, type Role } from './registry';
export { TrainingMetrics } from './training';
export { DataMetrics, DATA_SOURCES, type DataSource } from './data';
export { TrustMetrics, trustFailureReason, TRUST_FAILURE_REASONS } from './trust';

export interface WorkerMetrics {
  registry: MetricsRegistry;
  training: TrainingMetrics;
  allreduce: AllReduceMetrics;
  membership: MembershipMetrics;
  data: DataMetrics;
}

export interface CoordinatorMetrics {
  registry: MetricsRegistry;
  membership: MembershipMetrics;
  trust: TrustMetrics;
}

/** A worker's metrics on `registry` (role 'worker'). */
export function createWorkerMetrics(registry: MetricsRegistry): WorkerMetrics {
  if (registry.role !== 'worker') throw new RangeError(`createWorkerMetrics needs a registry with role worker, not ${registry.role}`);
  return { registry, training: new TrainingMetrics(registry), allreduce: new AllReduceMetrics(registry), membership: new MembershipMetrics(registry), data: new DataMetrics(registry) };
}

/** A coordinator's metrics on `registry` (role 'coordinator'). */
export function createCoordinatorMetrics(registry: MetricsRegistry): CoordinatorMetrics {
  if (registry.role !== 'coordinator') throw new RangeError(`createCoordinatorMetrics needs a registry with role coordinator, not ${registry.role}`);
  return { registry, membership: new MembershipMetrics(registry), trust: new TrustMetrics(registry) };
}

let worker: WorkerMetrics | undefined;
let coordinator: CoordinatorMetrics | undefined;

/** This worker process's metrics, created on first call on the process registry. */
export function initWorkerMetrics(): WorkerMetrics {
  worker ??= createWorkerMetrics(initProcessRegistry('worker'));
  return worker;
}

/** This coordinator process's metrics, created on first call on the process registry. */
export function initCoordinatorMetrics(): CoordinatorMetrics {
  coordinator ??= createCoordinatorMetrics(initProcessRegistry('coordinator'));
  return coordinator;
}
