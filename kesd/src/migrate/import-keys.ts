// Importing keys as KES stored them (kes/stored-key.ts) into a kesd enclave, unchanged: same key bytes, same HMAC key
// where KES had one. Shared by `kesd import kes-fs`, `kesd import vault` and `kesd restore --from-upstream`.
import { ErrKeyExists } from '../kes/errors.js';
import { isValidName } from '../kes/names.js';
import { parseKesStoredKey } from '../kes/stored-key.js';
import type { Enclave } from '../state/enclave.js';

export interface ImportReport {
  imported: string[];
  /** Already in kesd with the same key bytes. */
  unchanged: string[];
  /** Already in kesd with different bytes: never overwritten. */
  conflicts: string[];
  failed: { name: string; reason: string }[];
}

/** A stored key by name; read() gives the value as KES stored it. */
export interface StoredKeySource {
  readonly name: string;
  read(): Promise<Buffer>;
}

export async function importKeys(
  sources: AsyncIterable<StoredKeySource> | Iterable<StoredKeySource>,
  enclave: Enclave,
  importedBy: string,
): Promise<ImportReport> {
  const report: ImportReport = { imported: [], unchanged: [], conflicts: [], failed: [] };
  for await (const { name, read } of sources) {
    if (!isValidName(name)) {
      report.failed.push({ name, reason: 'not a valid key name' });
      continue;
    }
    let key: ReturnType<typeof parseKesStoredKey>;
    try {
      key = parseKesStoredKey(await read());
      await enclave.createKey(name, key.createdBy || importedBy, {
        algorithm: key.algorithm,
        bytes: key.bytes,
        hmac: key.hmac,
        createdAt: key.createdAt,
      });
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
