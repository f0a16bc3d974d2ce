// `kesd import vault` and `kesd restore --from-upstream`: every key under a Vault KV prefix, stored as KES's
// keystore.vault stores them (upstream/vault-keystore.ts), into a kesd enclave with the same key bytes.
import type { Enclave } from '../state/enclave.js';
import type { VaultKeystore } from '../upstream/vault-keystore.js';
import { importKeys, type ImportReport } from './import-keys.js';

export async function importVaultKeys(
  keystore: VaultKeystore,
  enclave: Enclave,
  importedBy: string,
): Promise<ImportReport> {
  const names = await keystore.list();
  return importKeys(
    names.map((name) => ({
      name,
      async read() {
        const value = await keystore.get(name);
        if (value === undefined)
          throw new Error(`'${keystore.location(name)}' was listed but holds no key (deleted meanwhile?)`);
        return Buffer.from(value);
      },
    })),
    enclave,
    importedBy,
  );
}
