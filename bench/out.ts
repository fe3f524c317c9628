// Writing a bench's record, { machine, rows }, to bench/out/NAME.json (DESIGN.md, "Tests and benches").
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { ROOT } from './root';
import { Row } from './row';

const OUT_DIR = path.join(ROOT, 'bench', 'out');

/** Adds the load average at the end to the machine record, writes the file and says where. */
export function writeResult(name: string, mach: Row, rows: Row[]): void {
  fs.mkdirSync(OUT_DIR, { recursive: true });
  const file = path.join(OUT_DIR, `${name}.json`);
  const record = { machine: { ...mach, loadavg_end: os.loadavg().map((x) => Number(x.toFixed(2))) }, rows };
  fs.writeFileSync(file, `${JSON.stringify(record, null, 2)}\n`);
  console.log(`\nwrote ${path.relative(process.cwd(), file) || file}`);
}
