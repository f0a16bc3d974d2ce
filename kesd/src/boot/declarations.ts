// What an init.yml declares (enclaves, policies, assignments, keys), applied to a System: at init, and at every start
// with `server --init`.
import { ErrEnclaveExists, ErrKeyExists } from '../kes/errors.js';
import type { InitConfig } from '../config/config.js';
import type { System } from '../state/system.js';

/**
 * Brings a System in line with an init.yml: creates missing enclaves, writes policies that differ, assigns declared
 * identities, creates missing keys. Idempotent, so it runs at init and (with `server --init`) at every start;
 * what was created through the API is left alone.
 */
export async function applyDeclarations(system: System, init: InitConfig): Promise<number> {
  let changes = 0;
  for (const e of init.enclaves) {
    let enclave = system.enclaves.get(e.name);
    if (enclave === undefined) {
      try {
        enclave = await system.createEnclave(e.name, e.admin, init.sysadmin);
        changes++;
      } catch (err) {
        // On a shared store (etcd) another replica applying the same init.yml created it first: load theirs.
        if (err !== ErrEnclaveExists) throw err;
        await system.apply({ kind: 'enclave', enclave: e.name });
        enclave = system.enclaves.get(e.name);
        if (enclave === undefined) throw err;
      }
    }
    if (enclave.info.admin !== e.admin) {
      throw new Error(
        `enclave '${e.name}' exists with admin ${enclave.info.admin}, but init.yml names ${e.admin}; an enclave admin cannot change`,
      );
    }
    for (const p of e.policies) {
      const current = enclave.policies.get(p.name);
      if (current === undefined || !sameList(current.allow, p.allow) || !sameList(current.deny, p.deny)) {
        await enclave.writePolicy(p.name, { allow: p.allow, deny: p.deny }, init.sysadmin);
        changes++;
      }
      for (const id of p.identities) {
        if (enclave.identities.get(id)?.policy === p.name) continue;
        await enclave.assignPolicy(p.name, id, init.sysadmin);
        changes++;
      }
    }
    changes += await ensureDeclaredKeys(system, { [e.name]: e.keys }, init.sysadmin);
  }
  return changes;
}

const sameList = (a: readonly string[], b: readonly string[]) => a.length === b.length && a.every((x, i) => x === b[i]);

/** Creates every declared key that is missing; existing keys are left alone. */
export async function ensureDeclaredKeys(
  system: System,
  declared: Record<string, string[]>,
  sysadmin: string,
): Promise<number> {
  let created = 0;
  for (const [enclaveName, names] of Object.entries(declared)) {
    const enclave = system.enclaves.get(enclaveName);
    if (enclave === undefined) continue;
    for (const name of names) {
      try {
        await enclave.createKey(name, sysadmin);
        created++;
      } catch (err) {
        if (err !== ErrKeyExists) throw err;
      }
    }
  }
  return created;
}
