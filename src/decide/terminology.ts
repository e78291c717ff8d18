// Terminology the engine needs, loaded once from JSON data (terminology/README.md says where it came from).
import actReason from './terminology/v3-ActReason.json' with { type: 'json' };
import confidentiality from './terminology/v3-Confidentiality.json' with { type: 'json' };
import sensitivity from './terminology/v3-ActCode-sensitivity.json' with { type: 'json' };

const purposeParent: Readonly<Record<string, string | null>> = actReason.parentOf;

/** True when purpose `code` is-a `ancestor` (reflexive), SPEC §4.1 purpose subsumption. */
export function purposeIsA(code: string, ancestor: string): boolean {
  let current: string | null | undefined = code;
  for (let guard = 0; current && guard < 16; guard++) {
    if (current === ancestor) return true;
    current = purposeParent[current];
  }
  return false;
}

const confidentialityOrder: readonly string[] = confidentiality.order;
/** Rank of a v3-Confidentiality code (U=0 … V=5), -1 when unknown. */
export function confidentialityRank(code: string | undefined): number {
  return code === undefined ? -1 : confidentialityOrder.indexOf(code);
}
export const RANK_N = confidentialityOrder.indexOf('N');
export const RANK_R = confidentialityOrder.indexOf('R');
export const RANK_V = confidentialityOrder.indexOf('V');

const sensitivityParents: Readonly<Record<string, readonly string[]>> = sensitivity.parentsOf;

const sensitivitySameAs: Readonly<Record<string, string>> = sensitivity.sameAs;

/** A sensitivity code and every code below it (SUD → SUD, ETHUD, OPIOIDUD), SPEC §4.1; ETH ≡ SUD (§4.7). */
export function sensitivityWithDescendants(code: string): string[] {
  const out = new Set<string>([code]);
  for (const [older, current] of Object.entries(sensitivitySameAs)) {
    if (code === older || code === current) out.add(older).add(current);
  }
  let grew = true;
  while (grew) {
    grew = false;
    for (const [child, parents] of Object.entries(sensitivityParents)) {
      if (!out.has(child) && parents.some((p) => out.has(p))) {
        out.add(child);
        grew = true;
      }
    }
  }
  return [...out];
}

/** Labels whose permit releases 42 CFR Part 2 data (SPEC §4.4). */
export const part2ReleaseCodes: ReadonlySet<string> = new Set(sensitivity.part2Release);
