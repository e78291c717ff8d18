// What a refused patient or representative is told (SPEC §4.3; information blocking requires saying why).
import type { OperationOutcome, OperationOutcomeIssue } from '@medplum/fhirtypes';
import type { DecisionPolicy } from '../config/policy.ts';
import type { RequestContext } from '../provenance/context.ts';
import type { DisclosureSession } from './disclose.ts';

const suppressedText =
  'Some records that match this request were withheld under the patient’s privacy choices or applicable law. You may ask the provider to explain or review this.';

/** Outcome entries for a searchset: one per harm determination met, plus a general notice where the policy announces withholding. */
export function withheldNotices(session: DisclosureSession, ctx: RequestContext, policy: DecisionPolicy): OperationOutcome[] {
  const issues: OperationOutcomeIssue[] = session.harmRefusals.map((refusal) => ({
    severity: 'information',
    code: 'suppressed',
    details: { coding: [{ system: 'https://disclosure-gateway.org/fhir/CodeSystem/disclosure', code: refusal.ground }], text: refusal.text },
  }));
  const announced = ctx.purposeOfUse.some((p) => policy.announceWithheld.includes(p));
  if (announced && session.withheldUnstated > 0) issues.push({ severity: 'information', code: 'suppressed', details: { text: suppressedText } });
  return issues.length === 0 ? [] : [{ resourceType: 'OperationOutcome', issue: issues }];
}
