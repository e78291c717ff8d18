// Rule sets as data (SPEC §4.7): one JSON file per sensitivity category, each naming its source and
// licence. This file reads and checks them at start-up; a file that cannot be loaded stops start-up.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { z } from 'zod';

/** Codes a rule may add: THO v3-ActCode sensitivity codes; never 42CFRPart2 (only a record's source can say that, SPEC §4.7). */
const sensitivityCode = z
  .string()
  .regex(/^[A-Z][A-Z0-9]{1,15}$/, 'a v3-ActCode sensitivity code')
  .refine((code) => code !== '42CFRPart2', 'a computed label is never 42CFRPart2');

const categoryPattern = /^[A-Z][0-9]{2}$/;

const ruleSchema = z
  .object({
    labels: z.array(sensitivityCode).min(1),
    system: z.string().url(),
    /** Hierarchical systems (ICD-10-CM): a code matches when it starts with one of these (dots ignored). */
    prefixes: z.array(z.string().min(1)).optional(),
    /** ICD-10-CM category ranges, inclusive, e.g. ["F10", "F19"]. */
    ranges: z
      .array(z.tuple([z.string().regex(categoryPattern), z.string().regex(categoryPattern)]).refine(([from, to]) => from[0] === to[0] && from <= to, 'a range stays within one ICD-10-CM letter, low to high'))
      .optional(),
    /** Prefixes that never match this rule (F17 nicotine inside F10–F19). */
    exclude: z.array(z.string().min(1)).optional(),
    /** Flat systems (SNOMED CT, LOINC, RxNorm): explicit codes. */
    codes: z.array(z.string().min(1)).optional(),
    source: z.string().min(1).optional(),
  })
  .strict()
  .refine((r) => (r.prefixes?.length ?? 0) + (r.ranges?.length ?? 0) + (r.codes?.length ?? 0) > 0, 'a rule needs prefixes, ranges or codes');

export const ruleSetSchema = z
  .object({
    ruleSet: z.string().regex(/^[a-z0-9][a-z0-9-]*$/),
    title: z.string().min(1),
    source: z.string().min(1),
    licence: z.string().min(1),
    rules: z.array(ruleSchema).min(1),
  })
  .strict();

export type LabelRuleSet = z.infer<typeof ruleSetSchema>;
export type LabelRule = LabelRuleSet['rules'][number];

/** The rule sets shipped with the gateway, one per category. */
export const SHIPPED_RULE_FILES = [
  'substance-use.json',
  'mental-health.json',
  'hiv.json',
  'sexually-transmitted-infections.json',
  'sexual-and-domestic-violence.json',
  'reproductive-health.json',
  'genetic.json',
] as const;

export const SHIPPED_RULES_DIR = join(dirname(fileURLToPath(import.meta.url)), 'rules');

export class RuleSetError extends Error {
  readonly file: string;
  constructor(file: string, detail: string) {
    super(`labeling rule file ${file} cannot be loaded: ${detail}`);
    this.file = file;
    this.name = 'RuleSetError';
  }
}

/** Reads one rule file; any fault names the file (SPEC §4.7: start-up stops). */
export function loadRuleSet(file: string): LabelRuleSet {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new RuleSetError(file, (err as Error).message);
  }
  const parsed = ruleSetSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new RuleSetError(file, `${issue.path.join('.') || '(root)'}: ${issue.message}`);
  }
  return parsed.data;
}

/** The shipped rule sets followed by the policy's extra files (SPEC §4.6 `labeling.rules`). */
export function loadRuleSets(extraFiles: readonly string[] = []): LabelRuleSet[] {
  return [...SHIPPED_RULE_FILES.map((f) => join(SHIPPED_RULES_DIR, f)), ...extraFiles].map(loadRuleSet);
}
