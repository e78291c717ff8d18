// Settings from the environment and an optional GATEWAY_CONFIG file (SPEC §2), validated with zod.
import { readFileSync } from 'node:fs';
import { dirname, resolve as resolvePath } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { policySchema, type DecisionPolicy } from './policy.ts';
import { DEFAULT_PAGE_BUDGET_BYTES } from '../upstream/page-budget.ts';

const url = z.string().url();
const port = z.coerce.number().int().min(0).max(65_535);
const positiveInt = z.coerce.number().int().positive();

export const settingsSchema = z
  .object({
    PORT: port.default(8080),
    HOST: z.string().min(1).default('127.0.0.1'),
    PUBLIC_BASE_URL: url.optional(),
    UPSTREAM_URL: url.optional(),
    UPSTREAM_BEARER_TOKEN: z.string().min(1).optional(),
    AUTH_JWKS_URL: url.optional(),
    AUTH_ISSUER: z.string().min(1).optional(),
    AUTH_AUDIENCE: z.string().min(1).optional(),
    AUTH_INTROSPECTION_URL: url.optional(),
    AUTH_INTROSPECTION_CLIENT_ID: z.string().min(1).optional(),
    AUTH_INTROSPECTION_CLIENT_SECRET: z.string().min(1).optional(),
    POLICY_FILE: z.string().min(1).optional(),
    UPSTREAM_TIMEOUT_MS: positiveInt.default(15_000),
    UPSTREAM_MAX_BYTES: positiveInt.default(50 * 1024 * 1024),
    /** Bytes of search pages all requests may hold parsed at once; a request's first page waits past it (issue 15). */
    UPSTREAM_PAGE_BUDGET_BYTES: positiveInt.default(DEFAULT_PAGE_BUDGET_BYTES),
    AUDIT_DIR: z.string().min(1).default('./data/audit'),
    /** Key for paging cursors; set the same value on every instance behind one load balancer. */
    CURSOR_SECRET: z.string().min(32).optional(),
    /** Where the embedded demo keeps its dev issuer key. */
    DATA_DIR: z.string().min(1).default('./data'),
    LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    /** Forward the audit journal to the upstream as AuditEvent resources. */
    AUDIT_FORWARD: z.enum(['true', 'false']).default('true').transform((v) => v === 'true'),
  })
  .strict();

export type Settings = z.infer<typeof settingsSchema> & { readonly policy: DecisionPolicy };

export class SettingsError extends Error {
  override readonly name = 'SettingsError';
}

const settingNames = Object.keys(settingsSchema.shape);

function describe(error: z.ZodError, source: string): string {
  return error.issues.map((issue) => `${source}${issue.path.join('.') || '(root)'}: ${issue.message}`).join('; ');
}

function readStructured(path: string, what: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new SettingsError(`${what} ${path} cannot be read: ${(err as Error).message}`);
  }
  try {
    return /\.json$/i.test(path) ? JSON.parse(text) : parseYaml(text);
  } catch (err) {
    throw new SettingsError(`${what} ${path} is not valid JSON or YAML: ${(err as Error).message}`);
  }
}

/** Environment wins over the GATEWAY_CONFIG file; only known settings are read from the environment. */
export function loadSettings(env: NodeJS.ProcessEnv = process.env): Settings {
  const fromFile = env.GATEWAY_CONFIG ? readStructured(env.GATEWAY_CONFIG, 'GATEWAY_CONFIG') : {};
  if (fromFile === null || typeof fromFile !== 'object' || Array.isArray(fromFile)) {
    throw new SettingsError('GATEWAY_CONFIG must hold an object of settings');
  }
  const fromEnv = Object.fromEntries(settingNames.filter((name) => env[name] !== undefined && env[name] !== '').map((name) => [name, env[name]]));
  const parsed = settingsSchema.safeParse({ ...fromFile, ...fromEnv });
  if (!parsed.success) throw new SettingsError(`invalid setting: ${describe(parsed.error, '')}`);
  const policy = loadPolicy(parsed.data.POLICY_FILE);
  return { ...parsed.data, policy };
}

export function loadPolicy(path: string | undefined): DecisionPolicy {
  if (!path) return policySchema.parse({});
  const parsed = policySchema.safeParse(readStructured(path, 'POLICY_FILE'));
  if (!parsed.success) throw new SettingsError(`invalid POLICY_FILE ${path}: ${describe(parsed.error, 'policy.')}`);
  const rules = parsed.data.labeling.rules?.map((file) => resolvePath(dirname(path), file));
  return rules ? { ...parsed.data, labeling: { ...parsed.data.labeling, rules } } : parsed.data;
}
