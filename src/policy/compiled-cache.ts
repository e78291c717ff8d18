// Compile each patient's policy once per requester and minute (ARCHITECTURE: "compile once, evaluate
// each resource cheaply"), so a search page of 100 resources costs one compile, not 100.
import type { DecisionPolicy } from '../config/policy.ts';
import { compile as compileDecision, type CompiledPatientPolicy } from '../decide/index.ts';
import type { PatientPolicyInputs, Requester } from '../decide/types.ts';
import { LruMap } from './lru.ts';

export type CompileFunction<T> = (inputs: PatientPolicyInputs, requester: Requester, policy: DecisionPolicy, now: Date) => T;

const MINUTE_MS = 60_000;

/**
 * Memoises `compile(inputs, requester, policy, now)` per (inputs object, requester, minute).
 * Keyed weakly on the inputs object: when the PolicyStore replaces or drops a patient's inputs,
 * their compiled forms go with them. `now` is truncated to the minute start, so time-dependent
 * rules (periods) are judged as of that instant — at most 59 s early, well inside the cache bound.
 */
export class CompiledPolicyCache<T = CompiledPatientPolicy> {
  readonly #compile: CompileFunction<T>;
  readonly #policy: DecisionPolicy;
  readonly #maxPerPatient: number;
  readonly #byInputs = new WeakMap<PatientPolicyInputs, LruMap<string, T>>();

  constructor(opts: { policy: DecisionPolicy; compile?: CompileFunction<T>; maxRequestersPerPatient?: number }) {
    this.#policy = opts.policy;
    this.#compile = opts.compile ?? (compileDecision as unknown as CompileFunction<T>);
    this.#maxPerPatient = opts.maxRequestersPerPatient ?? 64;
  }

  get(inputs: PatientPolicyInputs, requester: Requester, nowMs: number): T {
    const minuteStart = Math.floor(nowMs / MINUTE_MS) * MINUTE_MS;
    const key = `${minuteStart}\n${requesterKey(requester)}`;
    let perPatient = this.#byInputs.get(inputs);
    if (!perPatient) {
      perPatient = new LruMap<string, T>(this.#maxPerPatient);
      this.#byInputs.set(inputs, perPatient);
    }
    const hit = perPatient.get(key);
    if (hit !== undefined) return hit;
    const compiled = this.#compile(inputs, requester, this.#policy, new Date(minuteStart));
    perPatient.set(key, compiled);
    return compiled;
  }
}

/** Every requester field compile may read, in a canonical order. */
export function requesterKey(requester: Requester): string {
  return JSON.stringify([
    requester.fhirUser ?? null,
    [...requester.references].sort(),
    [...requester.identifiers].sort(),
    [...requester.purposes].sort(),
    requester.breakGlass,
    requester.clientKind,
    requester.action,
  ]);
}
