// The policy store: per-patient policy inputs and requester facts, cached (SPEC §4, §4.6 cache); and one
// request's facts for the decision (request-facts.ts).
export { PolicyStore, isHarmDetermination, HARM_DETERMINATION_CODE, type PolicyStoreObserver, type PolicyStoreOptions } from './store.ts';
export { LruMap } from './lru.ts';
export { consentPatientReference, consentProvisions } from './references.ts';
export { RequestFacts, type PolicySource, type RequestFactsDeps } from './request-facts.ts';
export { CompiledPolicyCache, requesterKey, type CompileFunction } from './compiled-cache.ts';
export { invalidPolicyResources, policyResourceKey, validatePolicyResource, validationFailure, type PolicyResourceValidity } from './validate.ts';
