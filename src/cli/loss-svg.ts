// A loss curve as a hand-written SVG document (no dependencies): one polyline per series over shared axes
// with "nice" ticks, a legend and labels. Pure: series in, SVG text out; the demo writes it to a file.

export interface Series {
  name: string;
  /** A CSS colour. */
  color: string;
  /** (x, y) points; non-finite values are skipped. */
  points: Array<[number, number]>;
}

export interface LossChart {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  /** x ticks at whole numbers only (rounds). */
  integerX?: boolean;
  width?: number;
  height?: number;
}

/** Text for an SVG text node or attribute. */
export function escapeXml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** About `count` round tick values covering [lo, hi] (steps of 1, 2 or 5 × 10^k, at least `minStep`). */
export function niceTicks(lo: number, hi: number, count = 5, minStep = 0): number[] {
  if (!(hi > lo)) return [lo];
  const raw = Math.max(minStep, (hi - lo) / Math.max(1, count));
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw)!;
  const ticks: number[] = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

function fmt(v: number): string {
  return Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(4)));
}

export function lossCurveSvg(chart: LossChart): string {
  const W = chart.width ?? 640;
  const H = chart.height ?? 400;
  const m = { left: 64, right: 24, top: 40, bottom: 56 };
  const pw = W - m.left - m.right;
  const ph = H - m.top - m.bottom;
  const series = chart.series.map((s) => ({ ...s, points: s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y)) }));
  const all = series.flatMap((s) => s.points);

  // Ranges: x from the data, y padded by 5% so the curves do not touch the frame.
  let [x0, x1] = all.length ? [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))] : [0, 1];
  let [y0, y1] = all.length ? [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))] : [0, 1];
  if (x1 === x0) [x0, x1] = [x0 - 1, x1 + 1];
  if (chart.integerX && x1 - x0 < 1) x1 = x0 + 1;
  if (y1 === y0) [y0, y1] = [y0 - 0.5, y1 + 0.5];
  const pad = (y1 - y0) * 0.05;
  [y0, y1] = [y0 - pad, y1 + pad];
  const sx = (x: number) => m.left + ((x - x0) / (x1 - x0)) * pw;
  const sy = (y: number) => m.top + ph - ((y - y0) / (y1 - y0)) * ph;
  const n = (v: number) => v.toFixed(1);

  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="22" text-anchor="middle" font-size="15">${escapeXml(chart.title)}</text>`,
  ];
  // Grid and ticks.
  for (const t of niceTicks(x0, x1, 6, chart.integerX ? 1 : 0).filter((t) => t >= x0 && t <= x1)) {
    out.push(`<line x1="${n(sx(t))}" y1="${m.top}" x2="${n(sx(t))}" y2="${m.top + ph}" stroke="#eee"/>`);
    out.push(`<text x="${n(sx(t))}" y="${m.top + ph + 16}" text-anchor="middle">${fmt(t)}</text>`);
  }
  for (const t of niceTicks(y0, y1, 5).filter((t) => t >= y0 && t <= y1)) {
    out.push(`<line x1="${m.left}" y1="${n(sy(t))}" x2="${m.left + pw}" y2="${n(sy(t))}" stroke="#eee"/>`);
    out.push(`<text x="${m.left - 6}" y="${n(sy(t) + 4)}" text-anchor="end">${fmt(t)}</text>`);
  }
  // Axes and their labels.
  out.push(`<polyline points="${m.left},${m.top} ${m.left},${m.top + ph} ${m.left + pw},${m.top + ph}" fill="none" stroke="black"/>`);
  out.push(`<text x="${m.left + pw / 2}" y="${H - 14}" text-anchor="middle">${escapeXml(chart.xLabel)}</text>`);
  out.push(`<text x="16" y="${m.top + ph / 2}" text-anchor="middle" transform="rotate(-90 16 ${m.top + ph / 2})">${escapeXml(chart.yLabel)}</text>`);
  // Curves (a dot per point, so a single point still shows) and the legend.
  series.forEach((s, i) => {
    const color = escapeXml(s.color);
    out.push(`<polyline points="${s.points.map(([x, y]) => `${n(sx(x))},${n(sy(y))}`).join(' ')}" fill="none" stroke="${color}" stroke-width="2"/>`);
    for (const [x, y] of s.points) out.push(`<circle cx="${n(sx(x))}" cy="${n(sy(y))}" r="2.5" fill="${color}"/>`);
    const ly = m.top + 8 + i * 16;
    out.push(`<line x1="${m.left + pw - 130}" y1="${ly}" x2="${m.left + pw - 110}" y2="${ly}" stroke="${color}" stroke-width="2"/>`);
    out.push(`<text x="${m.left + pw - 104}" y="${ly + 4}">${escapeXml(s.name)}</text>`);
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
