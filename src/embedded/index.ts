// The embedded demo (SPEC §2): an in-memory FHIR R4 upstream seeded with demo data and a few Synthea
// patients, and a DEV token issuer the gateway trusts. Never used when UPSTREAM_URL is set.
import express from 'express';
import type { EmbeddedParts } from '../app.ts';
import { createDevIssuer, type DevIssuer } from './issuer.ts';
import { demoResources, demoSamplePaths, DEMO_PATIENT } from './demo-data.ts';
import { isPersonaName } from './personas.ts';
import { loadSyntheaBundles, startEmbeddedUpstream } from './upstream/index.ts';

export interface EmbeddedDemo extends EmbeddedParts {
  readonly samplePaths: Readonly<Record<string, string>>;
  readonly issuerInstance: DevIssuer;
  close(): Promise<void>;
}

export async function demoIssuer(opts: { dataDir: string; publicBaseUrl: string }): Promise<DevIssuer> {
  return createDevIssuer({ dataDir: opts.dataDir, issuer: `${opts.publicBaseUrl}/dev-issuer`, audience: `${opts.publicBaseUrl}/fhir`, patientId: DEMO_PATIENT });
}

/** The dev issuer's JWKS and a persona token endpoint — demo only, clearly not an authorization server. */
function devIssuerRoutes(issuer: DevIssuer): express.Router {
  const router = express.Router();
  router.get('/jwks.json', (_req, res) => {
    res.json(issuer.jwks());
  });
  router.post('/token', express.urlencoded({ extended: false }), async (req, res) => {
    const persona = String((req.body as Record<string, unknown>)?.persona ?? '');
    if (!isPersonaName(persona)) {
      res.status(400).json({ error: 'invalid_request', error_description: 'persona must name a demo persona' });
      return;
    }
    res.json({ access_token: await issuer.personaToken(persona), token_type: 'Bearer', expires_in: 3600, dev_issuer: true });
  });
  return router;
}

export async function startEmbeddedDemo(opts: { dataDir: string; publicBaseUrl: string; synthea?: boolean }): Promise<EmbeddedDemo> {
  const upstream = await startEmbeddedUpstream({
    resources: demoResources(),
    bundles: opts.synthea === false ? [] : loadSyntheaBundles(),
  });
  const issuer = await demoIssuer(opts);
  return {
    upstreamUrl: upstream.url,
    jwks: issuer.jwks(),
    issuer: issuer.issuer,
    issuerInstance: issuer,
    routes: devIssuerRoutes(issuer),
    samplePaths: demoSamplePaths,
    close: () => upstream.close(),
  };
}
