// Shaped links for the all-reduce bench: K hosts, each a network namespace with one interface (eth0,
// 10.77.0.(i+1)/24) joined by a veth pair to a bridge in a switch namespace; each host's egress goes
// through a tbf qdisc at the link rate. Everything lives in namespaces the bench creates and removes
// itself: traffic to 10.77.0.x never leaves this machine. Needs root and iproute2 (`ip`, `tc`).
//
// Namespaces are named covb<pid>sw and covb<pid>h<i>; ones left by a bench that was killed (its pid gone)
// are removed when the next one starts. Removal runs on normal exit, on an exception (the caller's
// finally), and on SIGINT/SIGTERM (process exit handlers).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';

const PREFIX = 'covb';
export const SHAPED_IFACE = 'eth0';
export const shapedAddr = (i: number) => `10.77.0.${i + 1}`;

function run(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.error) throw new Error(`cannot run ${cmd}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (exit ${r.status}): ${(r.stderr || r.stdout).trim()}`);
  return r.stdout;
}

const which = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).status === 0;

/** Why shaped links cannot be built here (not root, no ip or tc, namespaces refused), or undefined. */
export function shapedUnavailable(): string | undefined {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) return 'not running as root (network namespaces and tc need it)';
  for (const cmd of ['ip', 'tc']) if (!which(cmd)) return `\`${cmd}\` is not installed (apt-get install -y iproute2)`;
  const probe = `${PREFIX}${process.pid}probe`;
  try {
    run('ip', ['netns', 'add', probe]);
  } catch (e) {
    return `cannot create a network namespace: ${(e as Error).message}`;
  } finally {
    spawnSync('ip', ['netns', 'del', probe], { stdio: 'ignore' });
  }
  return undefined;
}

function listOurs(): string[] {
  const out = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout ?? '';
  return out.split('\n').map((l) => l.trim().split(/\s+/)[0]).filter((n) => n && n.startsWith(PREFIX));
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes namespaces left by benches that are no longer running. */
export function removeStale(): void {
  for (const name of listOurs()) {
    const pid = Number(/^covb(\d+)/.exec(name)?.[1]);
    if (Number.isInteger(pid) && pid !== process.pid && !alive(pid)) spawnSync('ip', ['netns', 'del', name], { stdio: 'ignore' });
  }
}

export class ShapedNet {
  readonly hosts: string[];
  private readonly sw: string;
  private removed = false;
  private readonly onExit = () => this.remove();
  private readonly onSignal = (sig: NodeJS.Signals) => {
    this.remove();
    process.exit(sig === 'SIGINT' ? 130 : 143);
  };

  /** Creates k hosts and the switch; the links are unshaped until setRate. Removes what it made on failure. */
  constructor(k: number) {
    removeStale();
    this.sw = `${PREFIX}${process.pid}sw`;
    this.hosts = Array.from({ length: k }, (_, i) => `${PREFIX}${process.pid}h${i}`);
    process.on('exit', this.onExit);
    process.once('SIGINT', this.onSignal);
    process.once('SIGTERM', this.onSignal);
    try {
      run('ip', ['netns', 'add', this.sw]);
      run('ip', ['-n', this.sw, 'link', 'add', 'br0', 'type', 'bridge']);
      run('ip', ['-n', this.sw, 'link', 'set', 'br0', 'up']);
      this.hosts.forEach((h, i) => {
        run('ip', ['netns', 'add', h]);
        run('ip', ['-n', this.sw, 'link', 'add', `p${i}`, 'type', 'veth', 'peer', 'name', SHAPED_IFACE, 'netns', h]);
        run('ip', ['-n', this.sw, 'link', 'set', `p${i}`, 'master', 'br0']);
        run('ip', ['-n', this.sw, 'link', 'set', `p${i}`, 'up']);
        run('ip', ['-n', h, 'addr', 'add', `${shapedAddr(i)}/24`, 'dev', SHAPED_IFACE]);
        run('ip', ['-n', h, 'link', 'set', SHAPED_IFACE, 'up']);
        run('ip', ['-n', h, 'link', 'set', 'lo', 'up']);
      });
    } catch (e) {
      this.remove();
      throw e;
    }
  }

  /**
   * Every host's egress through tbf at `mbit` Mbit/s. The bucket holds 4 ms at the rate (at least 64 KiB, the
   * largest GSO packet veth hands it), and packets wait at most 50 ms in the queue.
   */
  setRate(mbit: number): void {
    const burst = Math.max(64 * 1024, Math.round((mbit * 1e6) / 8 * 0.004));
    for (const h of this.hosts) {
      run('ip', ['netns', 'exec', h, 'tc', 'qdisc', 'replace', 'dev', SHAPED_IFACE, 'root', 'tbf', 'rate', `${mbit}mbit`,
        'burst', String(burst), 'latency', '50ms']);
    }
  }

  /** The qdisc line of host i, for the record. */
  qdisc(i: number): string {
    return run('ip', ['netns', 'exec', this.hosts[i], 'tc', 'qdisc', 'show', 'dev', SHAPED_IFACE]).trim();
  }

  /** `ip netns exec HOST` before a command: how a rank runs on host i. */
  exec(i: number): string[] {
    return ['ip', 'netns', 'exec', this.hosts[i]];
  }

  /** Deletes the namespaces (their veths go with them). Idempotent; safe inside an exit handler. */
  remove(): void {
    if (this.removed) return;
    this.removed = true;
    for (const name of [...this.hosts, this.sw]) {
      if (fs.existsSync(`/run/netns/${name}`)) spawnSync('ip', ['netns', 'del', name], { stdio: 'ignore' });
    }
    process.off('exit', this.onExit);
    process.off('SIGINT', this.onSignal);
    process.off('SIGTERM', this.onSignal);
  }
}
