// The security labeling service (SPEC §4.7): rule sets as data, a pure labeling step before deciding.
import type { DecisionPolicy } from '../config/policy.ts';
import { SecurityLabeler } from './label.ts';
import { loadRuleSets } from './rule-set.ts';

export { SecurityLabeler, NO_LABELS, ICD10CM } from './label.ts';
export type { ComputedLabels, LabelReason, LabelingOptions } from './label.ts';
export { loadRuleSets, loadRuleSet, RuleSetError, SHIPPED_RULE_FILES, SHIPPED_RULES_DIR } from './rule-set.ts';
export type { LabelRuleSet, LabelRule } from './rule-set.ts';

/** The labeler a policy asks for: shipped rule sets plus its extra files, each of which must load (SPEC §4.7). */
export function labelerFromPolicy(labeling: DecisionPolicy['labeling']): SecurityLabeler {
  return new SecurityLabeler(loadRuleSets(labeling.rules), labeling);
}
