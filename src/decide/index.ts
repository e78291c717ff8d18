// The decision engine (SPEC §4): pure functions from policy inputs, requester and resource to a decision.
export { compile } from './compile.ts';
export type { CompiledPatientPolicy, PolicyStatus } from './compile.ts';
export { evaluate } from './evaluate.ts';
export { binaryRefusal, launchPatientRefusal, type AccessFacts } from './access.ts';
export { combineDecisions, refusal, storedBundleDecision, ungoverned, withContainedDecided, withholdingLayer } from './combine.ts';
export { decideDisclosure, type DisclosureFacts, type DisclosureOptions } from './disclosure.ts';
export { enforcementStatus, isLegalRestriction } from './consent-shape.ts';
export { harmDeterminationValidity, harmRefusalText } from './harm.ts';
export type { HarmGround } from './harm.ts';
export { clinicalDate } from './resource-facts.ts';
export type * from './types.ts';
