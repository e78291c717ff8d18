// The bench's servers run compiled, as the image runs the gateway (Dockerfile: dist/). A process started from
// the TypeScript sources also holds Node's type stripper (amaro: a 3.8 MB module source and its wasm memory),
// 10–20 MB of RSS the deployed gateway does not have (issue 15, sixth session); the CPU is the same.
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
/** tsconfig.bench-build.json's outDir: inside the checkout, so package.json ("type": "module") and node_modules resolve. */
const outDir = join(root, 'node_modules', '.cache', 'disclosure-gateway', 'bench-build');
const stamp = join(outDir, '.built');
/** What the compiled code reads beside itself that tsc does not emit (the Dockerfile copies the same into dist/). */
const dataDirs = ['src/label/rules', 'src/console/static'];

/** The newest modification time of the files under `dir`, in ms. */
function newest(dir: string): number {
  let latest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) latest = Math.max(latest, statSync(join(entry.parentPath, entry.name)).mtimeMs);
  }
  return latest;
}

/** Whether this process has already checked the build: every cell of one bench run forks the same compiled tree. */
let checked = false;

/** A bench script (`serve`, `export`) compiled with the sources it imports, rebuilt when a source is newer than the last build. */
export function compiledBenchScript(name: 'serve' | 'export'): string {
  if (!checked) {
    buildIfStale();
    checked = true;
  }
  return join(outDir, 'bench', `${name}.js`);
}

function buildIfStale(): void {
  // test/ too: a bench module imports test/embedded, which tsc then compiles with it.
  const sourcesChanged = Math.max(...['src', 'bench', 'test'].map((dir) => newest(join(root, dir))), ...['tsconfig.json', 'tsconfig.bench-build.json'].map((f) => statSync(join(root, f)).mtimeMs));
  if (!existsSync(stamp) || statSync(stamp).mtimeMs < sourcesChanged) {
    rmSync(outDir, { recursive: true, force: true });
    const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
    execFileSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.bench-build.json')], { stdio: 'inherit' });
    for (const dir of dataDirs) cpSync(join(root, dir), join(outDir, dir), { recursive: true });
    symlinkSync(join(root, 'fixtures'), join(outDir, 'fixtures')); // the embedded upstream's Synthea bundles
    writeFileSync(stamp, new Date().toISOString());
  }
}
