// Command line: `disclosure-gateway [serve]`, `disclosure-gateway token <persona>`, `disclosure-gateway audit verify <dir>`.
import { createGateway, type Gateway } from './app.ts';
import { runAuditVerifyCli } from './audit/verify.ts';
import { prepareTrimmedDefinitions } from './fhir/definitions.ts';
import { loadSettings, SettingsError, type Settings } from './config/settings.ts';
import { demoIssuer, startEmbeddedDemo } from './embedded/index.ts';
import { personaNames, personas } from './embedded/personas.ts';
import { createLogger } from './ops/logger.ts';
import { missingNodeFlags } from './ops/runtime.ts';

function publicBase(settings: Settings): string {
  return (settings.PUBLIC_BASE_URL ?? `http://${settings.HOST}:${settings.PORT}`).replace(/\/+$/, '');
}

async function serve(settings: Settings): Promise<void> {
  const logger = createLogger(settings.LOG_LEVEL);
  const base = publicBase(settings);
  const embedded = settings.UPSTREAM_URL ? undefined : await startEmbeddedDemo({ dataDir: settings.DATA_DIR, publicBaseUrl: base });
  let gateway: Gateway;
  try {
    gateway = await createGateway({ settings, embedded, logger });
  } catch (err) {
    await embedded?.close();
    throw err;
  }
  const { server } = await gateway.listen(settings.PORT, settings.HOST);
  logger.info({ fhirBase: gateway.fhirBase, upstream: settings.UPSTREAM_URL ? 'configured' : 'embedded' }, 'gateway listening');
  const missing = missingNodeFlags();
  if (missing.length > 0) logger.warn({ missing }, 'started without Node flags `npm start` and the image use: without the heap flags peak memory at 1,000-entry pages is ~400 MB instead of <300 MB; without --v8-pool-size=1 the latency tail is longer; without --heap-growing-percent V8 marks most of the time');
  if (embedded) {
    const lines = [`Disclosure Gateway (embedded demo) — FHIR base ${gateway.fhirBase}`, '', 'Demo personas (tokens from the DEV issuer — demo only):'];
    for (const name of personaNames) {
      lines.push(`  # ${name}: ${personas[name].description}`);
      lines.push(`  curl -s -H "Authorization: Bearer $(npm run -s gateway -- token ${name})" '${gateway.fhirBase}/${embedded.samplePaths[name] ?? 'Patient'}'`);
    }
    // Bulk Data (SPEC §5.1): the kick-off answers 202 with a Content-Location to poll; the manifest lists the files.
    lines.push('  # integration-engine: Bulk Data $export of the population — poll the Content-Location, then GET each output url');
    lines.push(`  curl -si -H "Authorization: Bearer $(npm run -s gateway -- token integration-engine)" -H 'Prefer: respond-async' '${gateway.fhirBase}/Patient/$export?_type=Patient,Observation'`);
    process.stdout.write(`${lines.join('\n')}\n`);
  }
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'draining requests and flushing the audit journal');
    server.close();
    await gateway.close();
    await embedded?.close();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
}

async function printToken(settings: Settings, name: string | undefined): Promise<number> {
  if (!name || !personaNames.includes(name as never)) {
    process.stderr.write(`usage: disclosure-gateway token <persona>\npersonas: ${personaNames.join(', ')}\n`);
    return 2;
  }
  const issuer = await demoIssuer({ dataDir: settings.DATA_DIR, publicBaseUrl: publicBase(settings) });
  process.stdout.write(`${await issuer.personaToken(name)}\n`);
  return 0;
}

async function main(argv: string[]): Promise<number> {
  const [command = 'serve', ...rest] = argv;
  if (command === 'audit' && rest[0] === 'verify') return runAuditVerifyCli(rest.slice(1));
  if (command === 'prepare-definitions') {
    process.stdout.write(`trimmed FHIR R4 definitions written to ${prepareTrimmedDefinitions()}\n`);
    return 0;
  }
  let settings: Settings;
  try {
    settings = loadSettings();
  } catch (err) {
    if (err instanceof SettingsError) {
      process.stderr.write(`disclosure-gateway: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  if (command === 'serve') {
    await serve(settings);
    return -1; // keeps running
  }
  if (command === 'token') return printToken(settings, rest[0]);
  process.stderr.write('usage: disclosure-gateway [serve] | token <persona> | audit verify <dir> | prepare-definitions\n');
  return 2;
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`disclosure-gateway: ${(err as Error).message}\n`);
    process.exit(1);
  },
);
