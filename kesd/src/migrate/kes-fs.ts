// `kesd import kes-fs`: moves the keys of a real KES filesystem keystore into a kesd enclave, unchanged
// (same key bytes, same HMAC key where KES had one), so everything KES encrypted still decrypts.
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrKeyExists } from '../kes/errors.js';
import type { Enclave } from '../state/enclave.js';
import { isValidName } from '../kes/names.js';
import { parseKesStoredKey } from './kes-key.js';

export interface ImportReport {
  imported: string[];
  /** Already in kesd with the same key bytes. */
  unchanged: string[];
  /** Already in kesd with different bytes: never overwritten. */
  conflicts: string[];
  failed: { name: string; reason: string }[];
}

export async function importKesFsKeystore(dir: string, enclave: Enclave, importedBy: string): Promise<ImportReport> {
  const report: ImportReport = { imported: [], unchanged: [], conflicts: [], failed: [] };
  for (const entry of (await readdir(dir, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    if (!entry.isFile()) continue;
    const name = entry.name;
    if (!isValidName(name)) {
      report.failed.push({ name, reason: 'not a valid key name' });
      continue;
    }
    let key: ReturnType<typeof parseKesStoredKey>;
    try {
      key = parseKesStoredKey(await readFile(join(dir, name)));
      await enclave.createKey(name, key.createdBy || importedBy, { algorithm: key.algorithm, bytes: key.bytes, hmac: key.hmac, createdAt: key.createdAt });
      report.imported.push(name);
    } catch (err) {
      if (err !== ErrKeyExists) {
        report.failed.push({ name, reason: reasonOf(err) });
        continue;
      }
      try {
        // Version 1 is what was created or imported under the name (later versions are rotations).
        const existing = (await enclave.key(name)).versions.find((v) => v.version === 1)!;
        (existing.secret.bytes.equals(key!.bytes) ? report.unchanged : report.conflicts).push(name);
      } catch (err) {
        report.failed.push({ name, reason: reasonOf(err) });
      }
    }
  }
  return report;
}

/** The error's message, with the store's reason behind a 502 (an etcd outage, say). */
function reasonOf(err: unknown): string {
  const { message, cause } = err as Error;
  return cause instanceof Error ? `${message}: ${cause.message}` : message;
}
