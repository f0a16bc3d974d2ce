// A new store whose init.yml names an upstream starts with the keys the upstream already holds: a declared key must
// never shadow a key of the same name in Vault (objects encrypted under Vault's would become unreadable, and the
// sync would only report a conflict). This is also the disaster recovery: wipe the data dir, `kesd init` again.
import type { InitConfig, UpstreamConfig } from '../config/config.js';
import { paths, type KeyRecord } from '../state/records.js';
import { upstreamKey } from '../state/sync-queue.js';
import type { System } from '../state/system.js';
import { importVaultKeys } from '../migrate/vault.js';
import { VaultKeystore } from '../upstream/vault-keystore.js';
import { applyDeclarations } from './declarations.js';

export const SEEDED_PATH = 'sync/seeded';

/**
 * Unless done before in this store: creates the declared enclaves and policies, then imports every key of the
 * upstream. Throws if Vault does not answer (then nothing marks the store seeded, and the next init tries again).
 */
export async function seedFromUpstream(system: System, init: InitConfig): Promise<number> {
  const upstream = init.upstream;
  if (upstream === undefined || (await system.records.get(SEEDED_PATH)) !== undefined) return 0;
  await applyDeclarations(system, { ...init, enclaves: init.enclaves.map((e) => ({ ...e, keys: [] })) });
  const enclave = system.enclaves.get(upstream.enclave)!;
  const keystore = new VaultKeystore(upstream.vault);
  try {
    const report = await importVaultKeys(keystore, enclave, system.sysadmin);
    const problems = [
      ...report.conflicts.map((n) => `'${n}': exists with other key bytes`),
      ...report.failed.map((f) => `'${f.name}': ${f.reason}`),
    ];
    if (problems.length > 0) throw new Error(`cannot take the upstream's keys: ${problems.join('; ')}`);
    await system.records.put(SEEDED_PATH, {
      endpoint: upstream.vault.endpoint,
      imported: report.imported.length,
      at: new Date().toISOString(),
    });
    return report.imported.length;
  } catch (err) {
    throw new Error(
      `initialising a store with an upstream first takes the keys already in Vault (${upstream.vault.endpoint}), so Vault must answer: ${(err as Error).message}`,
      { cause: err },
    );
  } finally {
    keystore.close();
  }
}

/**
 * An upstream added to a store that has keys (init.yml gained an `upstream` section): every key the enclave holds is
 * queued once, so Vault gets the keys made before, not only the later changes. Keys only Vault holds are not taken
 * (`kesd restore --from-upstream` does that). Runs at every start and does nothing once the store is marked.
 */
export async function adoptExistingKeys(system: System, upstream: UpstreamConfig): Promise<number> {
  await refuseKeyVersions(system, upstream);
  if ((await system.records.get(SEEDED_PATH)) !== undefined) return 0;
  const enclave = system.enclaves.get(upstream.enclave);
  const queue = system.upstreamQueue();
  if (enclave === undefined || queue === undefined) return 0;
  let queued = 0;
  for await (const { name } of enclave.listKeys()) {
    const path = paths.key(enclave.info.uid, name);
    const current = await system.records.getSealed<KeyRecord>(path);
    // Queued together with a condition on the key as read: a key deleted meanwhile was queued by its delete.
    if (
      current !== undefined &&
      (await queue.commit(name, [{ path, is: current.sealed }], [], upstreamKey(current.record)))
    )
      queued++;
  }
  await system.records.put(SEEDED_PATH, {
    endpoint: upstream.vault.endpoint,
    adopted: queued,
    at: new Date().toISOString(),
  });
  return queued;
}

/**
 * Vault gets a key's version 1 (KES's layout holds one key per name), so an enclave whose keys were rotated before it
 * was mirrored (or by a replica without the upstream) cannot be: after a restore from Vault, whatever the newer
 * versions sealed would be lost. Checked at every start; the server does not start.
 */
async function refuseKeyVersions(system: System, upstream: UpstreamConfig): Promise<void> {
  const enclave = system.enclaves.get(upstream.enclave);
  if (enclave === undefined) return;
  const scope = paths.keyVersionScope(enclave.info.uid);
  for await (const path of system.records.listPaths(scope)) {
    // Version records a crash left after a key's delete belong to no live key: only a live key with versions counts.
    const name = path.slice(scope.length).split('/')[0]!;
    const key = await enclave.key(name).catch(() => undefined);
    if (key === undefined || key.versions.length < 2) continue;
    throw new Error(
      `upstream: enclave '${upstream.enclave}' has rotated keys ('${name}' has ${key.versions.length} versions), and Vault's KES layout holds one version per key: mirror an enclave whose keys were never rotated`,
    );
  }
}

/**
 * Without an upstream, the store forgets it was ever mirrored: adding one back later queues every key again (changes
 * made in between would otherwise never reach Vault; deletes made in between still do not, see docs/upstream.md).
 */
export async function forgetUpstream(system: System): Promise<void> {
  if ((await system.records.get(SEEDED_PATH)) !== undefined) await system.records.delete(SEEDED_PATH);
}
