// `covenant demo`: the loss-curve SVG (points, escaping, ticks), the view model fed by log lines (table,
// plain lines, summary), and one end-to-end run of the swarm demo with the tiny preset.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { applyLine, describeEvent, fp32WireBytes, newDemoState, processExited, renderSummary, renderView, summarize, workerStarted } from '../src/cli/demo-view';
import { escapeXml, lossCurveSvg, niceTicks } from '../src/cli/loss-svg';

const MAIN = path.join(__dirname, '..', 'src', 'cli', 'main.js');

describe('lossCurveSvg', () => {
  it('draws one polyline per series with one point per finite value, and escapes text', () => {
    const svg = lossCurveSvg({
      title: 'a <b> & "c"',
      xLabel: 'round',
      yLabel: 'loss',
      integerX: true,
      series: [
        { name: 'train', color: 'blue', points: [[1, 3.2], [2, 3.0], [3, 2.9], [4, NaN]] },
        { name: 'val <x>', color: 'red', points: [[1, 3.3], [3, 3.1]] },
      ],
    });
    const polylines = [...svg.matchAll(/<polyline points="([^"]*)"/g)].map((m) => m[1].split(' ').length);
    expect(polylines).toEqual([3, 3, 2]); // the axes, then the two series
    expect(svg).toContain('a &lt;b&gt; &amp; &quot;c&quot;');
    expect(svg).toContain('val &lt;x&gt;');
    expect(svg).not.toContain('<b>');
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    // Whole-round x ticks only.
    const xTicks = [...svg.matchAll(/<text x="[\d.]+" y="360" text-anchor="middle">([^<]*)</g)].map((m) => m[1]);
    expect(xTicks.every((t) => Number.isInteger(Number(t)))).toBe(true);
  });

  it('still draws a single point and an empty chart', () => {
    expect(lossCurveSvg({ title: 't', xLabel: 'x', yLabel: 'y', series: [{ name: 's', color: 'red', points: [[1, 2]] }] })).toContain('<circle');
    expect(lossCurveSvg({ title: 't', xLabel: 'x', yLabel: 'y', series: [] })).toContain('</svg>');
  });

  it('niceTicks and escapeXml', () => {
    expect(niceTicks(0, 1, 5)).toEqual([0, 0.2, 0.4, 0.6, 0.8, 1]);
    expect(niceTicks(1, 3, 6, 1)).toEqual([1, 2, 3]);
    expect(escapeXml(`<&>"'`)).toBe('&lt;&amp;&gt;&quot;&#39;');
  });
});

describe('demo view', () => {
  const time = (s: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, s)).toISOString();
  function fed() {
    const s = newDemoState({ preset: 'tiny', numParams: 1000, tokensPerRound: 1280, targetRounds: 2, startedMs: 0 });
    workerStarted(s, 'w1');
    workerStarted(s, 'w2');
    applyLine(s, 'coordinator', { event: 'metrics.listen', url: 'http://127.0.0.1:9000' });
    applyLine(s, 'w1', { event: 'metrics.listen', url: 'http://127.0.0.1:9001' });
    applyLine(s, 'w1', { event: 'worker.join', peerId: 'abcdef0123456789' });
    applyLine(s, 'w2', { event: 'worker.join', peerId: '0123456789abcdef' });
    applyLine(s, 'coordinator', { event: 'round.plan', round: 1, attempt: 0, ring: ['a', 'b'], time: time(0) });
    applyLine(s, 'w1', { event: 'round.start', round: 1 });
    applyLine(s, 'coordinator', { event: 'round.commit', round: 1, attempt: 0, time: time(4) });
    for (const [w, loss] of [['w1', 3.5], ['w2', 3.7]] as const) {
      applyLine(s, w, { event: 'round.commit', round: 1, members: 2, meanLoss: loss, valLoss: 3.4, seconds: 2, bytesSent: 1200 });
    }
    applyLine(s, 'coordinator', { event: 'round.plan', round: 2, attempt: 0, ring: ['a', 'b'], time: time(5) });
    applyLine(s, 'coordinator', { event: 'round.commit', round: 2, attempt: 0, time: time(7) });
    applyLine(s, 'w1', { event: 'round.commit', round: 2, members: 2, meanLoss: 3.1, valLoss: 3.0, seconds: 1, bytesSent: 1000 });
    return s;
  }

  it('renders workers, rounds and metrics URLs', () => {
    const s = fed();
    processExited(s, 'w2', null, 'SIGKILL', true);
    const text = renderView(s, 10_000).join('\n');
    expect(text).toContain('round 2/2');
    expect(text).toMatch(/w1\s+abcdef01\s+committed\s+2\s+3\.100\s+1280\s+http:\/\/127\.0\.0\.1:9001\/metrics/);
    expect(text).toMatch(/w2\s+01234567\s+killed\s+1\s+3\.700\s+640/);
    expect(text).toMatch(/^1\s+2\s+4\.0s\s+1\.2 kB\s+4\.0 kB\s+3\.600\s+3\.400$/m);
    expect(text).toContain('coordinator metrics: http://127.0.0.1:9000/metrics');
  });

  it('describes events in one line and summarizes the run', () => {
    const s = fed();
    expect(describeEvent(s, 'coordinator', { event: 'round.commit', round: 1 })).toBe('round 1: committed in 4.0s');
    expect(describeEvent(s, 'w1', { event: 'round.commit', round: 2, members: 2, meanLoss: 3.1, valLoss: 3.0, seconds: 1, bytesSent: 1000 })).toBe(
      'w1: round 2 loss 3.100 val 3.000 1.0s 1280 tok/s sent 1.0 kB (fp32 4.0 kB)',
    );
    expect(describeEvent(s, 'w1', { event: 'heartbeat' })).toBeUndefined();
    expect(fp32WireBytes(1000, 2)).toBe(4000);
    expect(fp32WireBytes(1000, 1)).toBe(0);
    const x = summarize(s);
    expect(x).toMatchObject({ rounds: 2, firstVal: { round: 1, loss: 3.4 }, lastVal: { round: 2, loss: 3.0 }, bytesSent: 3400, bytesSaved: 12000 - 3400 });
    expect(x.curve).toEqual([{ round: 1, train: 3.6, val: 3.4 }, { round: 2, train: 3.1, val: 3.0 }]);
    expect(renderSummary(x)[0]).toBe('summary: 2 round(s) committed; val loss 3.400 (round 1) → 3.000 (round 2)');
  });
});

describe('covenant demo end to end', () => {
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'covenant-demo-'));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('trains 2 rounds with 2 workers, prints the summary and writes the loss curve', () => {
    const r = spawnSync(process.execPath, [MAIN, 'demo', '--preset', 'tiny', '--workers', '2', '--rounds', '2', '--plain', '--dir', dir], {
      encoding: 'utf8',
      timeout: 120_000,
    });
    expect(`${r.stderr}`).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^summary: 2 round\(s\) committed; val loss [\d.]+ \(round 1\) → [\d.]+ \(round 2\)$/m);
    expect(r.stdout).toMatch(/^coordinator: metrics at http:\/\/127\.0\.0\.1:\d+\/metrics$/m);
    expect(r.stdout).toMatch(/^wire: .* sent per worker per round vs .* in fp32/m);
    const svg = path.join(dir, 'loss.svg');
    expect(r.stdout).toContain(`loss curve: ${svg}`);
    expect(fs.readFileSync(svg, 'utf8')).toMatch(/<polyline points="[^"]+ [^"]+"/);
  }, 120_000);
});
