// `covenant coordinator` as a child process: it logs a listening line, admits a signed Join for its run
// and refuses another run id, exits 0 promptly on SIGTERM, resumes from its state directory (same global
// state hash, loaded rather than re-initialized), and refuses a malformed run config naming the field.
import { ChildProcess, spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as grpc from '@grpc/grpc-js';
import { SignedClient } from '../src/swarm/grpc-client';
import { loadOrCreateIdentity } from '../src/swarm/identity';
import { CoordinatorMethods, coordinatorService } from '../src/swarm/proto';
import { RpcError } from '../src/swarm/rpc-error';
import { parseRunConfig } from '../src/swarm/run-config';

jest.setTimeout(60_000);

const MAIN = path.join(__dirname, '..', 'src', 'cli', 'main.js');
const MANIFEST = 'ab'.repeat(32);
const RUN = 'run-cli-1';

interface Proc {
  child: ChildProcess;
  lines: Record<string, unknown>[];
  stderr: () => string;
  exit: Promise<number | null>;
  waitFor(event: string, timeoutMs?: number): Promise<Record<string, unknown>>;
}

function start(args: string[]): Proc {
  const child = spawn(process.execPath, [MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, COVENANT_LOG_LEVEL: 'info' } });
  const lines: Record<string, unknown>[] = [];
  const waiters: Array<() => void> = [];
  let buf = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => {
    buf += d.toString('utf8');
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      try {
        lines.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // not a log line
      }
      for (const w of waiters.splice(0)) w();
    }
  });
  child.stderr!.on('data', (d: Buffer) => {
    err += d.toString('utf8');
  });
  const exit = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  let exited = false;
  void exit.then(() => {
    exited = true;
    for (const w of waiters.splice(0)) w();
  });
  return {
    child,
    lines,
    stderr: () => err,
    exit,
    waitFor(event, timeoutMs = 30_000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no ${event} line in ${timeoutMs} ms; stdout: ${JSON.stringify(lines)}; stderr: ${err}`)), timeoutMs);
        const check = () => {
          const hit = lines.find((l) => l.event === event);
          if (hit) {
            clearTimeout(timer);
            resolve(hit);
          } else if (exited) {
            clearTimeout(timer);
            reject(new Error(`exited before a ${event} line; stdout: ${JSON.stringify(lines)}; stderr: ${err}`));
          } else {
            waiters.push(check);
          }
        };
        check();
      });
    },
  };
}

describe('covenant coordinator (child process)', () => {
  let dir: string;
  let configFile: string;
  const procs: Proc[] = [];

  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'covenant-coord-cli-'));
    configFile = path.join(dir, 'run.json');
    fs.writeFileSync(configFile, JSON.stringify({ runId: RUN, model: 'tiny', vocabSize: 256, manifestSha256: MANIFEST, seed: 7, innerSteps: 10, planDelayMs: 100, heartbeatTimeoutMs: 3000 }));
  });

  afterAll(() => {
    for (const p of procs) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const launch = (args: string[]) => {
    const p = start(args);
    procs.push(p);
    return p;
  };

  test('serves Join for its run, refuses another run id, stops on SIGTERM, and resumes from its state directory', async () => {
    const stateDir = path.join(dir, 'state');
    const identity = loadOrCreateIdentity(path.join(dir, 'worker'));
    const service = coordinatorService();

    const first = launch(['coordinator', '--config', configFile, '--state', stateDir, '--listen', '127.0.0.1:0', '--metrics', '127.0.0.1:0']);
    const init = await first.waitFor('state.init');
    const listening = await first.waitFor('coordinator.listening');
    expect(listening).toMatchObject({ round: 1, committedRound: 0, thetaSha256: init.thetaSha256 });
    expect(init.thetaSha256).toMatch(/^[0-9a-f]{64}$/);
    const address = `127.0.0.1:${listening.port as number}`;
    const metricsUrl = (await first.waitFor('metrics.listen')).url as string;
    expect((await fetch(`${metricsUrl}/readyz`)).status).toBe(200);
    expect((await fetch(`${metricsUrl}/healthz`)).status).toBe(200);

    const client = new SignedClient(service, { address, identity, runId: RUN, deadlineMs: 5000 });
    const stranger = new SignedClient(service, { address, identity, runId: 'another-run', deadlineMs: 5000 });
    try {
      const joined = await client.call('join', { dataAddress: '127.0.0.1:7301', manifestSha256: MANIFEST, agent: 'test' });
      expect(joined).toMatchObject({ peerId: identity.peerId, round: 1, committedRound: 0, thetaSha256: init.thetaSha256, needsState: false, heartbeatIntervalMs: 1000 });
      expect(parseRunConfig(JSON.parse(joined.runConfigJson))).toMatchObject({ runId: RUN, seed: 7, innerSteps: 10, outerLr: 0.7, outerMomentum: 0.9, compression: 'int8' });
      expect((await client.call('heartbeat', { round: 1 })).action).toBe('HEARTBEAT_ACTION_CONTINUE');
      // minMembers 1: after the plan delay the single member gets a ready plan.
      await new Promise((r) => setTimeout(r, 200));
      const plan = await client.call('getPlan', { round: 1 });
      expect(plan).toMatchObject({ status: 'PLAN_STATUS_READY', id: { round: 1, attempt: 0 }, innerSteps: 10, compression: 'COMPRESSION_INT8', thetaSha256: init.thetaSha256 });

      const scrape = await (await fetch(`${metricsUrl}/metrics`)).text();
      expect(scrape).toMatch(/^covenant_swarm_members\{role="coordinator"\} 1$/m);
      expect(scrape).toMatch(/^covenant_round_number\{role="coordinator"\} 1$/m);
      const refused = (await stranger.call('join', { dataAddress: '127.0.0.1:7302', manifestSha256: MANIFEST }).catch((e: unknown) => e)) as RpcError;
      expect(refused).toBeInstanceOf(RpcError);
      expect(refused.status).toBe(grpc.status.FAILED_PRECONDITION);
      const wrongData = (await client.call('join', { dataAddress: '127.0.0.1:7301', manifestSha256: 'cd'.repeat(32) }).catch((e: unknown) => e)) as RpcError;
      expect([wrongData.status, wrongData.reason]).toEqual([grpc.status.FAILED_PRECONDITION, 'manifest-mismatch']);
    } finally {
      client.close();
      stranger.close();
    }

    const t0 = Date.now();
    first.child.kill('SIGTERM');
    expect(await first.exit).toBe(0);
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(first.lines.some((l) => l.event === 'coordinator.stop')).toBe(true);

    const second = launch(['coordinator', '--config', configFile, '--state', stateDir, '--listen', '127.0.0.1:0']);
    const loaded = await second.waitFor('state.load');
    const relisten = await second.waitFor('coordinator.listening');
    expect(loaded.thetaSha256).toBe(init.thetaSha256);
    expect(relisten.thetaSha256).toBe(init.thetaSha256);
    expect(second.lines.some((l) => l.event === 'state.init')).toBe(false);
    second.child.kill('SIGINT');
    expect(await second.exit).toBe(0);
  });

  test('a malformed run config is refused with a message naming the field', async () => {
    const bad = path.join(dir, 'bad.json');
    fs.writeFileSync(bad, JSON.stringify({ runId: RUN, model: 'tiny', manifestSha256: MANIFEST, outerMomentum: 1.5 }));
    const p = launch(['coordinator', '--config', bad, '--state', path.join(dir, 'state-bad'), '--listen', '127.0.0.1:0']);
    expect(await p.exit).toBe(2);
    expect(p.stderr()).toContain('bad.json.outerMomentum');
    expect(fs.existsSync(path.join(dir, 'state-bad'))).toBe(false);

    const unknown = path.join(dir, 'unknown.json');
    fs.writeFileSync(unknown, JSON.stringify({ runId: RUN, model: 'tiny', manifestSha256: MANIFEST, outerLR: 0.5 }));
    const q = launch(['coordinator', '--config', unknown, '--state', path.join(dir, 'state-bad')]);
    expect(await q.exit).toBe(2);
    expect(q.stderr()).toContain('unknown.json.outerLR');

    const noState = launch(['coordinator', '--config', unknown]);
    expect(await noState.exit).toBe(2);
    expect(noState.stderr()).toContain('--state');
  });
});

describe('parseRunConfig', () => {
  const base = { runId: 'r1', model: 'tiny', manifestSha256: MANIFEST };

  test('defaults and shapes', () => {
    const c = parseRunConfig(base);
    expect(c).toMatchObject({ outerLr: 0.7, outerMomentum: 0.9, compression: 'int8', heartbeatIntervalMs: 10_000, minMembers: 1, maxAttempts: 3 });
    expect(c.model).toEqual({ vocabSize: 50257, maxSeqLen: 64, numLayers: 2, numHeads: 4, channels: 64 });
    const shaped = parseRunConfig({ ...base, model: { vocabSize: 256, maxSeqLen: 32, numLayers: 1, numHeads: 2, channels: 16 }, compression: 'fp32' });
    expect(shaped.model.channels).toBe(16);
    expect(shaped.compression).toBe('fp32');
    // validators: kept when given, left out when empty (so older configs keep their hash).
    const v = 'ab'.repeat(20);
    expect(parseRunConfig({ ...base, validators: [v] }).validators).toEqual([v]);
    expect('validators' in parseRunConfig({ ...base, validators: [] })).toBe(false);
    expect('validators' in c).toBe(false);
    expect(parseRunConfig({ ...base, validatorAudits: 0 }).validatorAudits).toBe(0);
    expect('validatorAudits' in c).toBe(false);
  });

  test.each([
    [{ runId: '' }, 'config.runId'],
    [{ model: 'huge' }, 'config.model'],
    [{ model: { vocabSize: 256, maxSeqLen: 32, numLayers: 1, numHeads: 3, channels: 16 } }, 'config.model.channels'],
    [{ innerSteps: 0 }, 'config.innerSteps'],
    [{ outerLr: 'fast' }, 'config.outerLr'],
    [{ compression: 'int4' }, 'config.compression'],
    [{ heartbeatIntervalMs: 40_000 }, 'config.heartbeatIntervalMs'],
    [{ minMembers: 1.5 }, 'config.minMembers'],
    [{ extra: 1 }, 'config.extra'],
    [{ validators: 'ab'.repeat(20) }, 'config.validators'],
    [{ validatorAudits: -1 }, 'config.validatorAudits'],
    [{ validatorAudits: 1.5 }, 'config.validatorAudits'],
    [{ validators: ['AB'.repeat(20)] }, 'config.validators[0]'],
    [{ validators: ['ab'.repeat(20), 'ab'.repeat(20)] }, 'config.validators[1] repeats'],
  ])('refuses %j naming %s', (over, field) => {
    expect(() => parseRunConfig({ ...base, ...over })).toThrow(field);
  });
});
