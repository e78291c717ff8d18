// Reads the vendored Synthea transaction bundles (fixtures/synthea/, Apache-2.0, see its README).
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Bundle } from '@medplum/fhirtypes';

/** Directory of the vendored bundles. */
export const SYNTHEA_DIR = fileURLToPath(new URL('../../../fixtures/synthea/', import.meta.url));

/** File names of the vendored bundles, sorted. */
export function syntheaBundleNames(): string[] {
  return readdirSync(SYNTHEA_DIR)
    .filter((f) => f.endsWith('.json'))
    .sort();
}

/**
 * The vendored Synthea bundles (type `transaction`, `urn:uuid:` references). `names` selects files by
 * prefix, e.g. `['Alberto_Atencio']`; every name must match one file. Default: all of them.
 */
export function loadSyntheaBundles(names?: string[]): Bundle[] {
  const files = syntheaBundleNames();
  const selected = names
    ? names.map((name) => {
        const matching = files.filter((f) => f.startsWith(name));
        if (matching.length !== 1) throw new Error(`Synthea bundle '${name}' matches ${matching.length} files in ${SYNTHEA_DIR}`);
        return matching[0];
      })
    : files;
  return selected.map((f) => JSON.parse(readFileSync(`${SYNTHEA_DIR}${f}`, 'utf8')) as Bundle);
}
