// DEV TOKEN ISSUER — FOR THE EMBEDDED DEMO ONLY (SPEC §2). It signs whatever claims it is given and marks
// every token `dev_issuer: true`. Its ES256 key is kept in `<dataDir>/dev-issuer/key.json` so that
// `npm start` and a later `disclosure-gateway token <persona>` agree. Never point a real gateway at it.
import { randomUUID } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, importJWK, SignJWT, type JSONWebKeySet, type JWK, type JWTPayload } from 'jose';
import { isPersonaName, personaClaims, personaNames } from './personas.ts';

const ALG = 'ES256';

export interface DevIssuerOptions {
  dataDir: string;
  issuer: string;
  audience: string;
  /** Demo patient id the patient and guardian personas are launched for (default `p1`). */
  patientId?: string;
}

export interface DevIssuer {
  readonly issuer: string;
  readonly audience: string;
  /** The public key set the gateway trusts in embedded mode. */
  jwks(): JSONWebKeySet;
  sign(claims: Record<string, unknown>, opts?: { expiresIn?: string; kid?: string }): Promise<string>;
  personaToken(name: string): Promise<string>;
}

interface StoredKey {
  kid: string;
  privateJwk: JWK;
  publicJwk: JWK;
}

function isStoredKey(value: unknown): value is StoredKey {
  const key = value as Partial<StoredKey> | null;
  return !!key && typeof key.kid === 'string' && typeof key.privateJwk === 'object' && typeof key.publicJwk === 'object';
}

async function readStoredKey(path: string): Promise<StoredKey | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  const parsed: unknown = JSON.parse(text);
  if (!isStoredKey(parsed)) throw new Error(`${path} is not a dev issuer key`);
  return parsed;
}

async function loadOrCreateKey(dataDir: string): Promise<StoredKey> {
  const dir = join(dataDir, 'dev-issuer');
  const path = join(dir, 'key.json');
  const existing = await readStoredKey(path);
  if (existing) return existing;
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const { privateKey, publicKey } = await generateKeyPair(ALG, { extractable: true });
  const publicJwk = await exportJWK(publicKey);
  const kid = await calculateJwkThumbprint(publicJwk);
  const stored: StoredKey = { kid, privateJwk: await exportJWK(privateKey), publicJwk };
  try {
    // `wx`: if another process created the key meanwhile, both use that one
    await writeFile(path, JSON.stringify(stored, null, 2), { flag: 'wx', mode: 0o600 });
    return stored;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    const winner = await readStoredKey(path);
    if (!winner) throw err;
    return winner;
  }
}

export async function createDevIssuer(opts: DevIssuerOptions): Promise<DevIssuer> {
  const stored = await loadOrCreateKey(opts.dataDir);
  const privateKey = await importJWK(stored.privateJwk, ALG);
  const publicJwk: JWK = { ...stored.publicJwk, kid: stored.kid, alg: ALG, use: 'sig' };
  const sign = async (claims: Record<string, unknown>, signOpts: { expiresIn?: string; kid?: string } = {}): Promise<string> => {
    const payload: JWTPayload = { jti: randomUUID(), ...claims, dev_issuer: true };
    return new SignJWT(payload)
      .setProtectedHeader({ alg: ALG, kid: signOpts.kid ?? stored.kid, typ: 'at+jwt' })
      .setIssuer(opts.issuer)
      .setAudience(opts.audience)
      .setIssuedAt()
      .setExpirationTime(signOpts.expiresIn ?? '1h')
      .sign(privateKey);
  };
  return {
    issuer: opts.issuer,
    audience: opts.audience,
    jwks: () => ({ keys: [{ ...publicJwk }] }),
    sign,
    async personaToken(name: string): Promise<string> {
      if (!isPersonaName(name)) throw new Error(`unknown persona ${name}; known: ${personaNames.join(', ')}`);
      return sign({ ...personaClaims(name, { patientId: opts.patientId }) });
    },
  };
}
