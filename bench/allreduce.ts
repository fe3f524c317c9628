// The all-reduce bench: covenant's ring all-reduce (src/native.ts allReduce, one node process per rank)
// against its limits and PyTorch's gloo, in the style of nccl-tests.
//
// - Loopback: N = 2 and 4 rank processes on 127.0.0.1, 1-256 MiB of fp32, modes fp32 and int8 (block 128).
//   The limit beside it: single-stream loopback TCP through the all-reduce's own socket code
//   (`covenant_native_bench tcp`). The peer: torch.distributed gloo at the same N and sizes
//   (bench/peers/torch_gloo_allreduce.py, /usr/bin/python3) where torch is installed.
// - Shaped links: 4 ranks as hosts in network namespaces behind a bridge, each host's egress through tbf at
//   1 Gbit/s and at 100 Mbit/s (bench/netns.ts), where the bench runs as root with iproute2; the limit is
//   the link's single-stream goodput, measured (bench/tcp-stream.ts).
//
// Timing: per case one warm-up collective, then timed ones. The bench is a barrier: it starts every rank's
// collective at once and waits for all of them. Each rank reports the `seconds` of the API (from the start
// of the native collective, ring formation included, to its end); a case's time is the slowest rank's
// median. gloo: dist.barrier() before each collective, the clock around all_reduce(SUM) + divide by N
// (gloo refuses ReduceOp.AVG in torch 1.13), the slowest rank's median.
// nccl-tests conventions: algbw = bytes / seconds with bytes = the fp32 tensor (also in int8 mode), and
// busbw = algbw · 2(N−1)/N, the bytes each rank's link carries in an fp32 ring (so busbw is comparable with
// link bandwidth for fp32; int8 moves ~3.9× fewer wire bytes, so its busbw can exceed the link).
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

import { exitOnSignals, JsonLineProc } from './json-proc';
import { loadNote, machine, otherCpuBusy } from './machine';
import { runNative } from './native-bench';
import { SHAPED_IFACE, ShapedNet, shapedAddr, shapedUnavailable } from './netns';
import { BenchOptions } from './options';
import { writeResult } from './out';
import { ROOT } from './root';
import { num, Row } from './row';
import { fmt, printTable } from './table';
import { PYTHON, torchAvailable } from './torch-peer';

const MiB = 1 << 20;
const BLOCK = 128;
const MODES = ['fp32', 'int8'] as const;
type Mode = (typeof MODES)[number];
const RANK_SCRIPT = path.join(__dirname, 'allreduce-rank.js');
const STREAM_SCRIPT = path.join(__dirname, 'tcp-stream.js');
const GLOO_PEER = path.join(ROOT, 'bench', 'peers', 'torch_gloo_allreduce.py');
const SECRET = 'covenant-bench';
const RANK_TIMEOUT_MS = 300_000;  // for one answer of a rank (a collective, an allocation)

interface LinkSpec {
  link: string;
  mbit?: number;  // undefined: loopback
  sizesMiB: number[];
}

export const busFactor = (N: number) => (2 * (N - 1)) / N;
const sumOf = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  return n % 2 ? s[(n - 1) / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
};
/** Timed collectives per case: more for small sizes, where a collective is short and noisier. */
const repsFor = (mib: number, quick: boolean) => (quick ? 3 : mib <= 4 ? 10 : mib <= 16 ? 7 : 5);

async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(Array.from({ length: n }, () => new Promise<net.Server>((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => resolve(s));
  })));
  const ports = servers.map((s) => (s.address() as net.AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

// ---------------------------------------------------------------------------------------------------------
// covenant: N rank processes driven in lockstep

class Ring {
  readonly ranks: JsonLineProc[];
  private round = 0;

  /** exec(i): a command prefix for rank i (`ip netns exec HOST`), or none. */
  constructor(readonly N: number, readonly peers: string[], exec?: (i: number) => string[]) {
    this.ranks = peers.map((_, r) => {
      const args = ['--expose-gc', RANK_SCRIPT, JSON.stringify({ rank: r, peers, secret: SECRET, timeoutMs: 60000 })];
      const pre = exec?.(r) ?? [];
      const [cmd, ...rest] = pre.length ? [...pre, process.execPath, ...args] : [process.execPath, ...args];
      return new JsonLineProc(`all-reduce rank ${r}`, cmd, rest);
    });
  }

  private async all(cmd: object): Promise<Row[]> {
    for (const p of this.ranks) p.send(cmd);
    return Promise.all(this.ranks.map((p) => p.next(RANK_TIMEOUT_MS)));
  }

  async alloc(n: number): Promise<void> {
    await this.all({ op: 'alloc', n });
  }

  /** One warm-up collective (checked: every rank bit-identical and within the error bound of the mean),
   * then `reps` timed ones; returns the case's row. */
  async time(link: string, bytes: number, mode: Mode, reps: number): Promise<Row> {
    const N = this.N;
    const round = ++this.round;
    const perRank: number[][] = this.ranks.map(() => []);
    const wall: number[][] = this.ranks.map(() => []);
    const cpu: number[][] = this.ranks.map(() => []);
    const slowest: number[] = [];
    let wire = 0;
    for (let i = 0; i <= reps; i++) {
      const res = await this.all({ op: 'run', mode, blockSize: BLOCK, round, attempt: i, check: i === 0 });
      const bad = res.find((r) => r.event !== 'done');
      if (bad) throw new Error(`all-reduce ${link} N=${N} ${bytes / MiB} MiB ${mode} failed: ${String(bad.code)} ${String(bad.message)}`);
      if (i === 0) {
        const shas = new Set(res.map((r) => r.sha256));
        if (shas.size !== 1) throw new Error(`all-reduce ${link} N=${N} ${bytes / MiB} MiB ${mode}: the ranks' results differ (${shas.size} distinct SHA-256)`);
        // README "Accuracy": int8 error ≤ Σ_ranks absmax(block)/254; rank r's values are u + (r−(N−1)/2)·w, |u|,|w| < 1.
        let sumAbs = 0;
        for (let r = 0; r < N; r++) sumAbs += 1 + Math.abs(r - (N - 1) / 2);
        const tol = mode === 'int8' ? (sumAbs / 254) * 1.001 + 1e-6 : 1e-5;
        const err = Math.max(...res.map((r) => num(r, 'max_err')));
        if (!(err <= tol)) throw new Error(`all-reduce ${link} N=${N} ${bytes / MiB} MiB ${mode}: error ${err} against the mean exceeds ${tol}`);
        continue;
      }
      res.forEach((r, k) => {
        perRank[k].push(num(r, 'seconds'));
        wall[k].push(num(r, 'wall_seconds'));
        cpu[k].push(num(r, 'cpu_seconds'));
      });
      slowest.push(Math.max(...res.map((r) => num(r, 'seconds'))));
      wire = num(res[0], 'bytesSent');
    }
    const medians = perRank.map(median);
    const seconds = Math.max(...medians);
    const algbw = bytes / seconds / 1e9;
    return {
      impl: 'covenant', link, N, n: bytes / 4, bytes, mode, ...(mode === 'int8' ? { block: BLOCK } : {}), warmup: 1, reps,
      seconds, seconds_fastest_rank: Math.min(...medians), seconds_min: Math.min(...slowest),
      wall_seconds: Math.max(...wall.map(median)), cpu_seconds_all_ranks: sumOf(cpu.map(median)), algbw_GBps: algbw, busbw_GBps: algbw * busFactor(N),
      wire_bytes_sent_per_rank: wire, wire_GBps: wire / seconds / 1e9,
    };
  }

  async close(): Promise<void> {
    await Promise.all(this.ranks.map((p) => p.close()));
  }

  kill(): void {
    for (const p of this.ranks) p.kill();
  }
}

async function benchCovenant(link: string, N: number, peers: string[], sizesMiB: number[], quick: boolean,
  exec?: (i: number) => string[]): Promise<Row[]> {
  const ring = new Ring(N, peers, exec);
  const rows: Row[] = [];
  try {
    for (const mib of sizesMiB) {
      const bytes = Math.round(mib * MiB);
      await ring.alloc(bytes / 4);
      for (const mode of MODES) {
        const reps = repsFor(mib, quick);
        process.stderr.write(`allreduce: covenant ${link} N=${N} ${mib} MiB ${mode} (1 warm-up + ${reps})... `);
        const row = await ring.time(link, bytes, mode, reps);
        process.stderr.write(`${fmt(num(row, 'seconds') * 1e3, 1)} ms, busbw ${fmt(num(row, 'busbw_GBps'), 3)} GB/s\n`);
        rows.push(row);
      }
    }
    await ring.close();
  } finally {
    ring.kill();
  }
  return rows;
}

// ---------------------------------------------------------------------------------------------------------
// gloo: N python processes, one process group for all sizes

async function benchGloo(link: string, N: number, host: (i: number) => string, iface: string, sizesMiB: number[],
  quick: boolean, exec?: (i: number) => string[]): Promise<Row[]> {
  const port = link === 'loopback' ? (await freePorts(1))[0] : 29500;
  const reps = sizesMiB.map((m) => repsFor(m, quick));
  process.stderr.write(`allreduce: gloo ${link} N=${N} ${sizesMiB.join(', ')} MiB (1 warm-up + ${reps.join(', ')} timed)...\n`);
  const env = { ...process.env, GLOO_SOCKET_IFNAME: iface, OMP_NUM_THREADS: '1' };
  const procs = Array.from({ length: N }, (_, r) => {
    const args = [GLOO_PEER, '--rank', String(r), '--world', String(N), '--init', `tcp://${host(0)}:${port}`,
      '--sizes-mib', sizesMiB.join(','), '--warmup', '1', '--reps', reps.join(','), '--threads', '1'];
    const pre = exec?.(r) ?? [];
    const [cmd, ...rest] = pre.length ? [...pre, PYTHON, ...args] : [PYTHON, ...args];
    return new JsonLineProc(`gloo rank ${r}`, cmd, rest, env);
  });
  const rows: Row[] = [];
  try {
    for (const mib of sizesMiB) {
      const res = await Promise.all(procs.map((p) => p.next(RANK_TIMEOUT_MS)));
      const bytes = num(res[0], 'bytes');
      const seconds = Math.max(...res.map((r) => num(r, 'seconds')));
      const algbw = bytes / seconds / 1e9;
      rows.push({ impl: 'gloo', link, N, n: bytes / 4, bytes, mode: 'fp32', op: String(res[0].op), warmup: 1, reps: num(res[0], 'reps'),
        seconds, seconds_fastest_rank: Math.min(...res.map((r) => num(r, 'seconds'))),
        seconds_min: Math.min(...res.map((r) => num(r, 'seconds_min'))), cpu_seconds_all_ranks: sumOf(res.map((r) => num(r, 'cpu_seconds'))), algbw_GBps: algbw, busbw_GBps: algbw * busFactor(N),
        torch_version: res[0].torch_version });
      process.stderr.write(`allreduce: gloo ${link} N=${N} ${mib} MiB: ${fmt(seconds * 1e3, 1)} ms, busbw ${fmt(algbw * busFactor(N), 3)} GB/s\n`);
    }
    await Promise.all(procs.map((p) => p.close(30000)));
  } finally {
    for (const p of procs) p.kill();
  }
  return rows;
}

// ---------------------------------------------------------------------------------------------------------
// Shaped links

/** Single-stream goodput from host 0 to host 1 (median of 3 transfers of `bytes`). */
async function measureLink(shaped: ShapedNet, link: string, mbit: number, bytes: number): Promise<Row> {
  const ts: number[] = [];
  for (let rep = 0; rep < 3; rep++) {
    const port = 29600 + rep;
    const rx = new JsonLineProc('tcp-stream recv', 'ip', [...shaped.exec(1).slice(1), process.execPath, STREAM_SCRIPT, 'recv', String(port), String(bytes)]);
    await rx.next(10000);
    const tx = new JsonLineProc('tcp-stream send', 'ip', [...shaped.exec(0).slice(1), process.execPath, STREAM_SCRIPT, 'send', shapedAddr(1), String(port), String(bytes)]);
    const done = await rx.next(120000);
    ts.push(num(done, 'seconds'));
    await Promise.all([rx.close(), tx.close()]);
  }
  const seconds = median(ts);
  return { impl: 'limit', case: 'tcp_shaped', link, rate_mbit: mbit, rate_GBps: (mbit * 1e6) / 8 / 1e9, streams: 1, bytes,
    seconds, seconds_min: Math.min(...ts), reps: ts.length, GBps: bytes / seconds / 1e9, qdisc: shaped.qdisc(0) };
}

// ---------------------------------------------------------------------------------------------------------
// Report

const sizeLabel = (bytes: number) => fmt(bytes / MiB, bytes < MiB ? 3 : 0);

function caseTable(title: string, rows: Row[], limits: Array<[string, (r: Row) => number]>): void {
  printTable(title, ['link', 'N', 'MiB', 'impl', 'mode', 'ms', 'ms fastest rank', 'algbw GB/s', 'busbw GB/s',
    ...limits.map(([name]) => `busbw % ${name}`), 'wire MiB/rank', 'CPU ms'],
  rows.map((r) => [String(r.link), String(r.N), sizeLabel(num(r, 'bytes')), String(r.impl), String(r.mode),
    fmt(num(r, 'seconds') * 1e3, 1), fmt(num(r, 'seconds_fastest_rank') * 1e3, 1), fmt(num(r, 'algbw_GBps'), 3), fmt(num(r, 'busbw_GBps'), 3),
    ...limits.map(([, lim]) => `${fmt((100 * num(r, 'busbw_GBps')) / lim(r), 0)}%`), fmt(num(r, 'wire_bytes_sent_per_rank') / MiB, 1),
    fmt(num(r, 'cpu_seconds_all_ranks') * 1e3, 1)]));
}

interface Target {
  text: string;
  value: number;
  met: boolean;
  shown: string;
}

export async function benchAllreduce(opts: BenchOptions): Promise<void> {
  const quick = opts.quick;
  const releaseSignals = exitOnSignals();
  try {
    await run(quick);
  } finally {
    releaseSignals();
  }
}

async function run(quick: boolean): Promise<void> {
  const busy = otherCpuBusy();
  const loopSizes = quick ? [1 / 256, 1, 4] : [1 / 256, 1, 4, 16, 64, 256];  // 4 KiB: the fixed cost of one collective
  const shapedSpecs: LinkSpec[] = quick
    ? [{ link: 'tbf_1gbit', mbit: 1000, sizesMiB: [4] }, { link: 'tbf_100mbit', mbit: 100, sizesMiB: [1] }]
    : [{ link: 'tbf_1gbit', mbit: 1000, sizesMiB: [16, 64] }, { link: 'tbf_100mbit', mbit: 100, sizesMiB: [4, 16] }];
  const torchVersion = torchAvailable();
  let distOk = false;
  if (torchVersion) {
    const { spawnSync } = await import('node:child_process');
    distOk = spawnSync(PYTHON, ['-c', 'import torch.distributed as d; assert d.is_available() and d.is_gloo_available()'], { stdio: 'ignore' }).status === 0;
  }
  const glooNote = !torchVersion ? `${PYTHON} cannot import torch` : !distOk ? `${PYTHON}'s torch has no torch.distributed with gloo` : undefined;
  const shapedNote = shapedUnavailable();
  const mach = machine({ other_cpu_busy_start: busy, torch_version: torchVersion ?? 'unavailable', gloo: glooNote ?? 'available',
    shaped_links: shapedNote ?? 'available', block: BLOCK });
  const rows: Row[] = [];

  // The loopback limit first, on the idle machine.
  process.stderr.write('allreduce: single-stream loopback TCP (the limit)...\n');
  let tcp: Row;
  try {
    [tcp] = runNative(['tcp', '--mib', quick ? '256' : '1024', '--reps', quick ? '3' : '5']);
  } catch (e) {
    throw new Error(`${(e as Error).message}. HINT: a covenant_native_bench without the tcp subcommand predates this bench; rebuild it (npm run build:native)`);
  }
  rows.push(tcp);
  const tcpGBps = num(tcp, 'GBps');
  // One stream keeps cores_busy of the machine's hardware threads busy (the kernel's copies, mostly); a ring
  // of N ranks on this one machine runs N such streams at once, so if it did nothing but TCP its busbw could
  // reach at most (what the whole machine moves through loopback TCP) / N.
  const machineTcpGBps = (tcpGBps * os.availableParallelism()) / Math.max(1, num(tcp, 'cores_busy'));
  const ceiling = (N: number) => machineTcpGBps / N;
  for (const N of [2, 4]) {
    rows.push({ impl: 'limit', case: 'tcp_loopback_ring_ceiling', link: 'loopback', N, machine_tcp_GBps: machineTcpGBps, busbw_GBps: ceiling(N) });
  }

  for (const N of [2, 4]) {
    const ports = await freePorts(N);
    rows.push(...await benchCovenant('loopback', N, ports.map((p) => `127.0.0.1:${p}`), loopSizes, quick));
  }
  if (!glooNote) for (const N of [2, 4]) rows.push(...await benchGloo('loopback', N, () => '127.0.0.1', 'lo', loopSizes, quick));

  const linkRows = new Map<string, Row>();
  if (!shapedNote) {
    const K = 4;
    const shaped = new ShapedNet(K);
    try {
      const peers = Array.from({ length: K }, (_, i) => `${shapedAddr(i)}:29400`);
      for (const spec of shapedSpecs) {
        const mbit = spec.mbit ?? 0;
        shaped.setRate(mbit);
        process.stderr.write(`allreduce: shaped links at ${mbit} Mbit/s (${shaped.qdisc(0)})\n`);
        const lr = await measureLink(shaped, spec.link, mbit, (quick ? 2 : 8) * (mbit >= 1000 ? 8 : 1) * MiB);
        linkRows.set(spec.link, lr);
        rows.push(lr);
        process.stderr.write(`allreduce: ${spec.link} single stream ${fmt(num(lr, 'GBps') * 8e3, 0)} Mbit/s\n`);
        rows.push(...await benchCovenant(spec.link, K, peers, spec.sizesMiB, quick, (i) => shaped.exec(i)));
        if (!glooNote) rows.push(...await benchGloo(spec.link, K, shapedAddr, SHAPED_IFACE, spec.sizesMiB, quick, (i) => shaped.exec(i)));
      }
    } finally {
      shaped.remove();
    }
  }
  loadNote(mach);

  // ---- tables
  const ar = rows.filter((r) => r.impl === 'covenant' || r.impl === 'gloo');
  console.log(`\nRing all-reduce, mean of N fp32 tensors (covenant: src/native.ts allReduce, int8 block ${BLOCK}; gloo: torch ${torchVersion ?? '-'} ` +
    'all_reduce SUM then divide, gloo refuses AVG in torch 1.13)');
  console.log('ms = the slowest rank\'s median (covenant: the API\'s seconds, ring formation included; gloo: barrier then all_reduce + divide); ' +
    '"ms fastest rank" = the other end: the spread is start skew between processes.');
  console.log('algbw = fp32 bytes / time; busbw = algbw · 2(N−1)/N (nccl-tests), what an fp32 ring moves per link; int8 moves ~3.9× fewer wire bytes.');
  console.log('CPU ms = CPU time of one collective summed over the rank processes (every thread, kernel time included; medians).');
  if (glooNote) console.log(`note: the gloo rows are missing: ${glooNote} (Debian: apt-get install python3-torch)`);
  caseTable(`Loopback 127.0.0.1, one process per rank on this ${os.availableParallelism()}-thread machine. Limits: single-stream loopback TCP ` +
    `${fmt(tcpGBps, 2)} GB/s (native/comm sockets, 1 MiB writes; it keeps ${fmt(num(tcp, 'cores_busy'), 2)} hardware threads busy), and the ` +
    `ring ceiling: the N links share the machine, which moves at most ${fmt(machineTcpGBps, 2)} GB/s through loopback TCP, so ` +
    `busbw ≤ ${fmt(ceiling(2), 2)} GB/s at N=2 and ${fmt(ceiling(4), 2)} GB/s at N=4`,
  ar.filter((r) => r.link === 'loopback'), [['TCP', () => tcpGBps], ['ceiling', (r) => ceiling(num(r, 'N'))]]);
  if (shapedNote) {
    console.log(`\nnote: no shaped-link rows: ${shapedNote}`);
  } else {
    caseTable('Shaped links: 4 hosts (network namespaces, veth to a bridge), each host\'s egress through tbf; limit: the link\'s measured ' +
      `single-stream goodput (${[...linkRows.values()].map((l) => `${l.link} ${fmt(num(l, 'GBps') * 8e3, 0)} Mbit/s`).join(', ')})`,
      ar.filter((r) => r.link !== 'loopback'), [['link', (r) => num(linkRows.get(String(r.link)), 'GBps')]]);
  }

  const find = (impl: string, link: string, N: number, mib: number, mode: Mode) =>
    ar.find((r) => r.impl === impl && r.link === link && r.N === N && r.bytes === mib * MiB && r.mode === mode);
  const cases = [...new Set(ar.filter((r) => r.impl === 'covenant').map((r) => `${String(r.link)}|${String(r.N)}|${num(r, 'bytes') / MiB}`))]
    .map((k) => k.split('|')).map(([link, N, mib]) => ({ link, N: Number(N), mib: Number(mib) }));
  printTable('int8 against fp32 and gloo, per case (time ratios: < 1 is faster)',
    ['link', 'N', 'MiB', 'fp32 ms', 'int8 ms', 'gloo ms', 'int8/fp32', 'fp32 busbw ÷ gloo', 'int8 time ÷ gloo'],
    cases.map(({ link, N, mib }) => {
      const f = find('covenant', link, N, mib, 'fp32');
      const q = find('covenant', link, N, mib, 'int8');
      const g = find('gloo', link, N, mib, 'fp32');
      return [link, String(N), sizeLabel(mib * MiB), fmt(num(f, 'seconds') * 1e3, 1), fmt(num(q, 'seconds') * 1e3, 1), fmt(num(g, 'seconds') * 1e3, 1),
        fmt(num(q, 'seconds') / num(f, 'seconds'), 3), `${fmt(num(f, 'busbw_GBps') / num(g, 'busbw_GBps'), 2)}×`,
        fmt(num(q, 'seconds') / num(g, 'seconds'), 3)];
    }));

  // ---- targets (issue 3): N = 4, 64 MiB loopback against gloo; the 100 Mbit/s ring at its largest size
  const tMib = quick ? 4 : 64;
  const f64 = find('covenant', 'loopback', 4, tMib, 'fp32');
  const q64 = find('covenant', 'loopback', 4, tMib, 'int8');
  const g64 = find('gloo', 'loopback', 4, tMib, 'fp32');
  const slowMib = Math.max(...(shapedSpecs.find((s) => s.link === 'tbf_100mbit')?.sizesMiB ?? [0]));
  const fs100 = find('covenant', 'tbf_100mbit', 4, slowMib, 'fp32');
  const qs100 = find('covenant', 'tbf_100mbit', 4, slowMib, 'int8');
  const targets: Target[] = [];
  const busRatio = num(f64, 'busbw_GBps') / num(g64, 'busbw_GBps');
  targets.push({ text: `N=4, ${tMib} MiB loopback: fp32 busbw ≥ 1.3× gloo`, value: busRatio, met: busRatio >= 1.3, shown: `${fmt(busRatio, 2)}×` });
  const timeRatio = num(q64, 'seconds') / num(g64, 'seconds');
  targets.push({ text: `N=4, ${tMib} MiB loopback: int8 wall time ≤ 1/3 of gloo's`, value: timeRatio, met: timeRatio <= 1 / 3, shown: `${fmt(timeRatio, 2)} of gloo` });
  const slowRatio = num(fs100, 'seconds') / num(qs100, 'seconds');
  targets.push({ text: `100 Mbit/s shaped ring (N=4, ${slowMib} MiB): int8 ≥ 3.5× faster than fp32`, value: slowRatio, met: slowRatio >= 3.5, shown: `${fmt(slowRatio, 2)}×` });
  // On a machine where the ranks share H hardware threads, a collective cannot take less than its CPU time / H.
  const H = os.availableParallelism();
  const cpuFloor = (r: Row | undefined) => `${fmt(num(r, 'cpu_seconds_all_ranks') * 1e3, 1)} CPU ms (≥ ${fmt((num(r, 'cpu_seconds_all_ranks') * 1e3) / H, 1)} ms wall on ${H} threads)`;
  console.log(`\nN=4, ${tMib} MiB loopback, CPU per collective over all ranks: covenant fp32 ${cpuFloor(f64)}, int8 ${cpuFloor(q64)}; gloo ${cpuFloor(g64)}`);
  console.log(`\nTargets (issue 3)${quick ? ' — --quick: at 4 MiB and the small shaped sizes, not the targets\' sizes' : ''}:`);
  for (const t of targets) {
    console.log(`  ${t.text}: ${t.shown} — ${Number.isFinite(t.value) ? (t.met ? 'met' : 'not met') : 'not measured'}`);
  }
  mach.targets = targets.map((t) => ({ target: t.text, value: Number.isFinite(t.value) ? t.value : null, met: Number.isFinite(t.value) ? t.met : null }));
  writeResult('allreduce', mach, rows);
}
