// `kesd import kes-fs`: moves the keys of a real KES filesystem keystore into a kesd enclave, unchanged
// (same key bytes, same HMAC key where KES had one), so everything KES encrypted still decrypts.
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Enclave } from '../state/enclave.js';
import { importKeys, type ImportReport } from './import-keys.js';

export type { ImportReport } from './import-keys.js';

export async function importKesFsKeystore(dir: string, enclave: Enclave, importedBy: string): Promise<ImportReport> {
  const files = (await readdir(dir, { withFileTypes: true }))
    .filter((e) => e.isFile())
    .sort((a, b) => (a.name < b.name ? -1 : 1));
  return importKeys(
    files.map((e) => ({ name: e.name, read: () => readFile(join(dir, e.name)) })),
    enclave,
    importedBy,
  );
}
