// Load generation with wrk (scripts/install-wrk.sh) and the child-process servers of bench/serve.ts.
import { execFile, fork, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { GATEWAY_NODE_FLAGS } from '../src/ops/runtime.ts';
import type { ServeRequest, ServeStats } from './serve.ts';
import { compiledBenchScript } from './build.ts';

const run = promisify(execFile);

export interface WrkResult {
  readonly requests: number;
  readonly rps: number;
  readonly p50: number;
  readonly p99: number;
  /** Responses that were not 2xx/3xx, plus socket errors. */
  readonly errors: number;
}

const unitMs: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000 };

function duration(text: string): number {
  const match = /^([\d.]+)(us|ms|s|m)$/.exec(text);
  if (!match) throw new Error(`wrk latency not understood: ${text}`);
  return Number(match[1]) * unitMs[match[2]];
}

export async function wrkAvailable(): Promise<boolean> {
  try {
    await run('wrk', ['--version']).catch((err: { stdout?: string }) => {
      // `wrk --version` prints its banner and exits 1.
      if (!err.stdout?.includes('wrk')) throw err;
    });
    return true;
  } catch {
    return false;
  }
}

let scriptDir: string | undefined;

/**
 * A wrk Lua script whose `delay()` makes each connection wait between `paceMs / 2` and `3 × paceMs / 2`
 * (uniform, mean `paceMs`) after a response before sending its next request, and before its first one.
 * The jitter keeps the connections from arriving in lock-step; wrk times each request from its send, so
 * the wait is not counted as latency. Offered load is at most connections × 1000 / paceMs req/s.
 */
function pacingScript(paceMs: number): string {
  if (!scriptDir) {
    const dir = mkdtempSync(join(tmpdir(), 'dg-bench-wrk-'));
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
    scriptDir = dir;
  }
  const path = join(scriptDir, `pace-${paceMs}.lua`);
  const low = Math.max(0, Math.round(paceMs / 2));
  writeFileSync(path, `function delay()\n  return math.random(${low}, ${low + Math.round(paceMs)})\nend\n`);
  return path;
}

/**
 * `wrk -t<threads> -c<connections> -d<seconds>s --latency` against one URL with the given headers: closed
 * loop (each connection sends its next request as soon as the last is answered), or paced with `paceMs`.
 */
export async function wrk(url: string, opts: { connections: number; seconds: number; threads?: number; headers?: Record<string, string>; paceMs?: number }): Promise<WrkResult> {
  const args = [`-t${opts.threads ?? 1}`, `-c${opts.connections}`, `-d${opts.seconds}s`, '--latency', '--timeout', '10s'];
  if (opts.paceMs !== undefined) args.push('-s', pacingScript(opts.paceMs));
  for (const [name, value] of Object.entries(opts.headers ?? {})) args.push('-H', `${name}: ${value}`);
  args.push(url);
  const { stdout } = await run('wrk', args, { maxBuffer: 1 << 20 });
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(stdout)?.[1] ?? NaN);
  const requests = Number(/(\d+) requests in/.exec(stdout)?.[1] ?? NaN);
  const p50 = /\s50%\s+(\S+)/.exec(stdout)?.[1];
  const p99 = /\s99%\s+(\S+)/.exec(stdout)?.[1];
  const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(stdout)?.[1] ?? 0);
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(stdout);
  const socketErrors = socket ? socket.slice(1).reduce((a, b) => a + Number(b), 0) : 0;
  if (!Number.isFinite(rps) || !p50 || !p99) throw new Error(`wrk output not understood:\n${stdout}`);
  return { requests, rps, p50: duration(p50), p99: duration(p99), errors: non2xx + socketErrors };
}

export interface Child {
  readonly url: string;
  readonly pid: number;
  /** Peak resident set size so far (VmHWM), in MB. */
  peakRssMb(): number;
  /** CPU time the process has used so far (user + system, all its threads), in ms. */
  cpuMs(): number;
  /** Of it, V8's background threads (`node-V8Worker`: concurrent marking, parallel scavenge, sweeping), in ms. */
  v8HelperCpuMs(): number;
  stats(): Promise<ServeStats>;
  stop(): Promise<void>;
}

/** USER_HZ: 100 on Linux for every architecture Node runs on. */
const CLOCK_TICKS = 100;

/** utime + stime of a /proc `stat` file (fields 14 and 15, in clock ticks, after the parenthesised name), in ms. */
function statCpuMs(path: string): number {
  const fields = readFileSync(path, 'utf8').split(') ')[1].split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS;
}

/** Forks bench/serve.ts, compiled as the image runs the gateway (bench/build.ts), and starts one server in it; `profileDir` adds `--cpu-prof` there. */
export async function startChild(req: ServeRequest, opts: { profileDir?: string } = {}): Promise<Child> {
  const execArgv: string[] = [];
  if (opts.profileDir) execArgv.push('--cpu-prof', `--cpu-prof-dir=${opts.profileDir}`);
  // The gateway runs as `npm start` and the image run it (src/ops/runtime.ts); the baselines as plain Node.
  if (req.role === 'gateway') execArgv.push(...GATEWAY_NODE_FLAGS);
  // A Node flag to try on the gateway without editing src/ops/runtime.ts (later flags win): BENCH_GATEWAY_NODE_FLAGS='--v8-pool-size=4'.
  if (req.role === 'gateway' && process.env.BENCH_GATEWAY_NODE_FLAGS) execArgv.push(...process.env.BENCH_GATEWAY_NODE_FLAGS.trim().split(/\s+/));
  const child: ChildProcess = fork(compiledBenchScript('serve'), [], { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const url = await new Promise<string>((ok, fail) => {
    const onMessage = (msg: { url?: string; error?: string }): void => {
      if (msg.url) ok(msg.url);
      else if (msg.error) fail(new Error(`bench server ${req.role} failed: ${msg.error}`));
    };
    child.on('message', onMessage);
    child.once('exit', (code) => fail(new Error(`bench server ${req.role} exited (${code})`)));
    child.send(req);
  });
  const pid = child.pid as number;
  return {
    url,
    pid,
    peakRssMb() {
      const status = readFileSync(`/proc/${pid}/status`, 'utf8');
      const kb = Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? NaN);
      return kb / 1024;
    },
    cpuMs() {
      return statCpuMs(`/proc/${pid}/stat`);
    },
    v8HelperCpuMs() {
      let ms = 0;
      for (const tid of readdirSync(`/proc/${pid}/task`)) {
        if (readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim() === 'node-V8Worker') ms += statCpuMs(`/proc/${pid}/task/${tid}/stat`);
      }
      return ms;
    },
    stats() {
      return new Promise((ok) => {
        const onMessage = (msg: { stats?: ServeStats }): void => {
          if (!msg.stats) return;
          child.off('message', onMessage);
          ok(msg.stats);
        };
        child.on('message', onMessage);
        child.send('stats');
      });
    },
    stop() {
      return new Promise((ok) => {
        if (child.exitCode !== null) return ok();
        const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        child.once('exit', () => {
          clearTimeout(timer);
          ok();
        });
        child.send('stop');
      });
    },
  };
}
