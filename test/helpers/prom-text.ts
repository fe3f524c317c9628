// A small parser of the Prometheus text exposition format (0.0.4) for tests: HELP and TYPE lines, samples
// `name{label="value",…} value [timestamp]`, and the rules a scraper relies on — every sample belongs to a
// family with a TYPE given before its samples, HELP/TYPE at most once per family, histogram buckets carry
// `le`. Throws an Error naming the line on anything else.

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Family {
  name: string;
  type: string;
  help?: string;
  samples: Sample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const TYPES = ['counter', 'gauge', 'histogram', 'summary', 'untyped'];

function parseValue(s: string, where: string): number {
  if (/^[+-]?inf$/i.test(s)) return s.startsWith('-') ? -Infinity : Infinity;
  if (/^nan$/i.test(s)) return NaN;
  if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(s)) throw new Error(`${where}: bad value ${JSON.stringify(s)}`);
  return Number(s);
}

function parseLabels(s: string, where: string): Record<string, string> {
  const labels: Record<string, string> = {};
  let i = 0;
  while (i < s.length) {
    const m = /^([a-zA-Z_][a-zA-Z0-9_]*)="/.exec(s.slice(i));
    if (!m) throw new Error(`${where}: bad label at ${JSON.stringify(s.slice(i))}`);
    i += m[0].length;
    let v = '';
    for (;;) {
      if (i >= s.length) throw new Error(`${where}: unterminated label value`);
      const c = s[i++];
      if (c === '"') break;
      if (c === '\\') {
        const e = s[i++];
        if (e === 'n') v += '\n';
        else if (e === '\\' || e === '"') v += e;
        else throw new Error(`${where}: bad escape \\${e}`);
      } else v += c;
    }
    if (m[1] in labels) throw new Error(`${where}: label ${m[1]} twice`);
    labels[m[1]] = v;
    if (s[i] === ',') i++;
    else if (i < s.length) throw new Error(`${where}: expected , after label ${m[1]}`);
  }
  return labels;
}

/** The family a sample belongs to: histogram and summary samples carry a suffix. */
function familyOf(sample: string, families: Map<string, Family>): Family | undefined {
  const direct = families.get(sample);
  if (direct) return direct;
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (!sample.endsWith(suffix)) continue;
    const f = families.get(sample.slice(0, -suffix.length));
    if (f && (f.type === 'histogram' || (f.type === 'summary' && suffix !== '_bucket'))) return f;
  }
  return undefined;
}

export function parsePrometheusText(text: string): Map<string, Family> {
  const families = new Map<string, Family>();
  const helps = new Map<string, string>();
  const lines = text.split('\n');
  if (lines[lines.length - 1] !== '') throw new Error('the exposition must end with a newline');
  lines.forEach((line, n) => {
    const where = `line ${n + 1} (${JSON.stringify(line.slice(0, 80))})`;
    if (line.trim() === '') return;
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
      if (!m) return; // a plain comment
      const [, kind, name, rest] = m;
      if (!NAME.test(name)) throw new Error(`${where}: bad metric name`);
      if (kind === 'HELP') {
        if (helps.has(name)) throw new Error(`${where}: second HELP for ${name}`);
        helps.set(name, rest);
        const f = families.get(name);
        if (f) f.help = rest;
        return;
      }
      if (!TYPES.includes(rest)) throw new Error(`${where}: unknown type ${rest}`);
      if (families.has(name)) throw new Error(`${where}: second TYPE for ${name}`);
      families.set(name, { name, type: rest, help: helps.get(name), samples: [] });
      return;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: (-?\d+))?$/.exec(line);
    if (!m) throw new Error(`${where}: not a sample line`);
    const [, name, labelText, valueText] = m;
    const family = familyOf(name, families);
    if (!family) throw new Error(`${where}: sample ${name} has no TYPE line before it`);
    const labels = labelText ? parseLabels(labelText, where) : {};
    if (family.type === 'histogram' && name.endsWith('_bucket') && !('le' in labels)) throw new Error(`${where}: bucket without le`);
    family.samples.push({ name, labels, value: parseValue(valueText, where) });
  });
  return families;
}

/** The value of the one sample `name` whose labels include `labels`; throws if none or several. */
export function sampleValue(families: Map<string, Family>, name: string, labels: Record<string, string> = {}): number {
  const found = [...families.values()]
    .flatMap((f) => f.samples)
    .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  if (found.length !== 1) throw new Error(`expected one sample ${name}${JSON.stringify(labels)}, found ${found.length}`);
  return found[0].value;
}
