// The native test executable runs inside `npm test`, and the two build descriptions list the same sources.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const root = path.resolve(__dirname, '..', '..');

function cmakeSources(): string[] {
  const text = fs.readFileSync(path.join(root, 'CMakeLists.txt'), 'utf8');
  const lists = ['COVENANT_CORE_SOURCES', 'COVENANT_ADDON_SOURCES'].map((name) => {
    const m = new RegExp(`set\\(${name}([^)]*)\\)`).exec(text);
    if (!m) throw new Error(`CMakeLists.txt has no set(${name} ...)`);
    return m[1].split(/\s+/).filter((s) => s.length > 0);
  });
  return lists.flat();
}

function gypSources(): string[] {
  const gyp = JSON.parse(fs.readFileSync(path.join(root, 'binding.gyp'), 'utf8')) as { targets: Array<{ sources: string[] }> };
  return gyp.targets[0].sources;
}

describe('native build', () => {
  test('binding.gyp lists the same CPU sources as CMakeLists.txt', () => {
    const cm = cmakeSources();
    expect(cm.length).toBeGreaterThan(10);
    expect([...gypSources()].sort()).toEqual([...cm].sort());
    for (const f of cm) expect(fs.existsSync(path.join(root, f))).toBe(true);
  });

  test('every .cpp under native/ (outside tests, bench and cuda) is built', () => {
    const listed = new Set(cmakeSources());
    const walk = (dir: string): string[] =>
      fs.readdirSync(path.join(root, dir), { withFileTypes: true }).flatMap((e) =>
        e.isDirectory() ? walk(path.join(dir, e.name)) : e.name.endsWith('.cpp') ? [path.join(dir, e.name)] : [],
      );
    const sources = walk('native').filter((f) => !/native\/(tests|bench|kernels\/cuda)\//.test(f));
    for (const f of sources) expect(listed.has(f)).toBe(true);
  });

  for (const name of ['covenant_native_tests', 'covenant_native_comm_tests']) {
    test(`${name} passes`, () => {
      const bin = path.join(root, 'build', 'bin', name);
      expect(fs.existsSync(bin)).toBe(true);
      const r = spawnSync(bin, [], { encoding: 'utf8', timeout: 300_000 });
      if (r.status !== 0) console.log(r.stdout, r.stderr);
      expect(r.stdout).toMatch(/\d+ passed, 0 failed/);
      expect(r.status).toBe(0);
    });
  }

  // Where nvcc exists the CUDA kernels are part of the build, so a compile error in them fails here (the
  // install's CPU-only fallback would otherwise hide it). The suite itself skips without a GPU.
  const nvcc = spawnSync('nvcc', ['--version'], { encoding: 'utf8' });
  (nvcc.status === 0 ? test : test.skip)('with nvcc present, the CUDA kernels are built and the GPU suite runs or skips cleanly', () => {
    const bin = path.join(root, 'build', 'bin', 'covenant_native_gpu_tests');
    expect(fs.existsSync(bin)).toBe(true);
    const r = spawnSync(bin, [], { encoding: 'utf8', timeout: 300_000 });
    if (r.status !== 0) console.log(r.stdout, r.stderr);
    expect(r.stdout).toMatch(/GPU suite skipped: no CUDA device|\d+ passed, 0 failed/);
    expect(r.status).toBe(0);
  });
});
