// Reference walking shared by enforcement (include justification) and the policy store (`related` data).
const referencePattern = /^(?:.*\/)?([A-Z][A-Za-z]+\/[A-Za-z0-9\-.]{1,64})(?:\/_history\/.*)?$/;

/** Every `Type/id` a resource refers to, anywhere in it. */
export function referencesIn(value: unknown, into = new Set<string>()): Set<string> {
  if (Array.isArray(value)) for (const item of value) referencesIn(item, into);
  else if (value && typeof value === 'object') {
    for (const [key, inner] of Object.entries(value)) {
      if (key === 'reference' && typeof inner === 'string') {
        const match = referencePattern.exec(inner);
        if (match) into.add(match[1]);
      } else if (typeof inner === 'object') referencesIn(inner, into);
    }
  }
  return into;
}
