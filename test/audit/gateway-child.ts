// A whole gateway in a child process, for the SIGKILL test: argv = upstream URL, audit dir, port,
// issuer, JWKS (JSON), forward ('true'|'false'). Prints "ready" once it listens.
import { createGateway } from '../../src/app.ts';
import { policySchema } from '../../src/config/policy.ts';
import { settingsSchema } from '../../src/config/settings.ts';
import { createLogger } from '../../src/ops/logger.ts';

const [upstreamUrl, auditDir, port, issuer, jwks, forward] = process.argv.slice(2);
const settings = settingsSchema.parse({ PORT: port, UPSTREAM_URL: upstreamUrl, AUDIT_DIR: auditDir, LOG_LEVEL: 'silent', AUDIT_FORWARD: forward });
const gateway = await createGateway({
  settings: { ...settings, policy: policySchema.parse({}), AUTH_ISSUER: issuer },
  embedded: { upstreamUrl, jwks: JSON.parse(jwks), issuer },
  logger: createLogger('silent'),
  publicBaseUrl: `http://127.0.0.1:${port}`,
});
await gateway.listen(Number(port), '127.0.0.1');
process.stdout.write('ready\n');
process.on('SIGTERM', () => void gateway.close().then(() => process.exit(0)));
