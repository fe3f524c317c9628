// Printing a bench's results as an aligned text table.

export function fmt(x: unknown, digits = 1): string {
  if (typeof x !== 'number' || !Number.isFinite(x)) return '-';
  return x.toFixed(digits);
}

/** Numeric columns (digits, '-', a trailing × or %) align right, the rest left. */
export function printTable(title: string, header: string[], body: string[][]): void {
  console.log(`\n${title}`);
  const width = header.map((h, c) => Math.max(h.length, ...body.map((r) => r[c].length)));
  const numeric = header.map((_, c) => body.every((r) => /^[-+]?[\d.]+[×%]?$|^-$/.test(r[c])));
  const line = (cells: string[]) =>
    cells.map((s, c) => (numeric[c] ? s.padStart(width[c]) : s.padEnd(width[c]))).join('  ').trimEnd();
  console.log(line(header));
  console.log(width.map((w) => '-'.repeat(w)).join('  '));
  for (const r of body) console.log(line(r));
}
