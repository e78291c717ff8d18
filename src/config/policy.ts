// The decision policy file (SPEC §4.6): every field optional, unknown fields rejected.
import { z } from 'zod';

export const implicitPolicies = ['all-normal', 'basic-normal', 'break-glass-only', 'deny'] as const;
export type ImplicitPolicy = (typeof implicitPolicies)[number];

const clientKind = z.enum(['patient', 'user', 'system']);

export const policySchema = z
  .object({
    implicitPolicy: z.enum(implicitPolicies).default('all-normal'),
    combiner: z.enum(['most-recent', 'deny-overrides']).default('most-recent'),
    conceal: z.union([z.literal(404), z.literal(403)]).default(404),
    announceWithheld: z.array(z.string().min(1)).default(['PATRQT', 'FAMRQT', 'PWATRNY']),
    defaultPurpose: z
      .object({
        patient: z.string().min(1).optional(),
        user: z.string().min(1).optional(),
        system: z.string().min(1).optional(),
        clients: z.record(z.string(), z.string().min(1)).optional(),
      })
      .strict()
      .default({ user: 'TREAT' }),
    requirePatient: z.array(clientKind).default(['patient', 'user']),
    consentScopes: z.array(z.string().min(1)).default(['patient-privacy']),
    breakGlassScope: z.string().min(1).default('btg'),
    cache: z
      .object({
        ttlSeconds: z.number().int().min(0).max(86_400).default(30),
        maxPatients: z.number().int().min(1).default(10_000),
      })
      .strict()
      .default({ ttlSeconds: 30, maxPatients: 10_000 }),
    allowOperations: z.array(z.string().regex(/^\$[A-Za-z][A-Za-z0-9-]*$/)).default([]),
    // SPEC §4.7: computed sensitivity labels; a partial object keeps `enabled: true`.
    labeling: z
      .object({
        enabled: z.boolean().default(true),
        confidentiality: z.enum(['R', 'V']).optional(),
        /** Extra rule files (JSON, src/label/rules format), relative to the policy file. */
        rules: z.array(z.string().min(1)).optional(),
      })
      .strict()
      .default({ enabled: true }),
  })
  .strict();

export type DecisionPolicy = z.infer<typeof policySchema>;

/** The built-in defaults, as a policy file `{}` would give them. */
export const defaultPolicy: DecisionPolicy = policySchema.parse({});
