// Every endpoint in one place: both KES dialects (v0.22 stateful and newest), one table.
// /v1/api is generated from it, so the docs and the server cannot drift apart.
import { anyone, enclaveRoute, identified, serverRoute, sysadminOnly, sysadminOr, type Authenticator } from './auth.js';
import type { ArgKind, Handler, Route } from './context.js';
import * as backup from './handlers/backup.js';
import * as enclaves from './handlers/enclaves.js';
import * as keys from './handlers/keys.js';
import * as policies from './handlers/policies.js';
import * as secrets from './handlers/secrets.js';
import * as server from './handlers/server.js';

const MiB = 1 << 20;
/** kesd's backup route: servedRoutes may open it to a backup job's identity. */
export const BACKUP_PATH = '/v1/sys/backup';
const GET = ['GET'];
const DELETE = ['DELETE'];
const POST = ['POST'];
// Both clients send POST; the newest server declares PUT and accepts both (kes-protocol §4.2).
const WRITE = ['POST', 'PUT'];

const route = (
  methods: string[],
  path: string,
  arg: ArgKind | undefined,
  maxBody: number,
  auth: Authenticator,
  handle: Handler,
  timeoutMs = 15_000,
): Route => ({ methods, path, arg, maxBody, timeoutMs, auth, handle });

// Who may call each route is its authenticator's decision (api/auth.ts): anyone, identified, serverRoute (the system
// admin, or an identity the named enclave allows), enclaveRoute (the enclave's admin or policy), sysadminOnly.
export const routes: readonly Route[] = [
  route(GET, '/version', undefined, 0, anyone, server.version, 10_000),
  route(GET, '/v1/ready', undefined, 0, serverRoute, server.ready),
  route(GET, '/v1/status', undefined, 0, serverRoute, server.status),
  route(GET, '/v1/metrics', undefined, 0, serverRoute, server.metrics),
  route(GET, '/v1/api', undefined, 0, serverRoute, server.api, 10_000),

  route(WRITE, '/v1/key/create/', 'key name', 0, enclaveRoute, keys.createKey),
  route(WRITE, '/v1/key/import/', 'key name', MiB, enclaveRoute, keys.importKey),
  route(GET, '/v1/key/describe/', 'key name', 0, enclaveRoute, keys.describeKey),
  route(DELETE, '/v1/key/delete/', 'key name', 0, enclaveRoute, keys.deleteKey),
  route(WRITE, '/v1/key/generate/', 'key name', MiB, enclaveRoute, keys.generateKey),
  route(WRITE, '/v1/key/encrypt/', 'key name', MiB, enclaveRoute, keys.encryptKey),
  route(WRITE, '/v1/key/decrypt/', 'key name', MiB, enclaveRoute, keys.decryptKey),
  route(WRITE, '/v1/key/bulk/decrypt/', 'key name', MiB, enclaveRoute, keys.bulkDecryptKey),
  route(WRITE, '/v1/key/hmac/', 'key name', MiB, enclaveRoute, keys.hmacKey),
  route(GET, '/v1/key/list/', 'pattern', 0, enclaveRoute, keys.listKeys),
  // kesd's extensions (KES has no key versions): rotate adds a version; a version's delete path names it, .../<name>/<n>.
  route(WRITE, '/v1/key/rotate/', 'key name', 0, enclaveRoute, keys.rotateKey),
  route(DELETE, '/v1/key/version/delete/', 'key version', 0, enclaveRoute, keys.deleteKeyVersion),

  route(WRITE, '/v1/secret/create/', 'secret name', MiB, enclaveRoute, secrets.createSecret),
  route(GET, '/v1/secret/describe/', 'secret name', 0, enclaveRoute, secrets.describeSecret),
  route(GET, '/v1/secret/read/', 'secret name', 0, enclaveRoute, secrets.readSecret),
  route(DELETE, '/v1/secret/delete/', 'secret name', 0, enclaveRoute, secrets.deleteSecret),
  route(GET, '/v1/secret/list/', 'pattern', 0, enclaveRoute, secrets.listSecrets),

  route(GET, '/v1/policy/describe/', 'policy name', 0, enclaveRoute, policies.describePolicy),
  route(WRITE, '/v1/policy/assign/', 'policy name', 1024, enclaveRoute, policies.assignPolicy),
  route(GET, '/v1/policy/read/', 'policy name', 0, enclaveRoute, policies.readPolicy),
  route(WRITE, '/v1/policy/write/', 'policy name', MiB, enclaveRoute, policies.writePolicy),
  route(GET, '/v1/policy/list/', 'pattern', 0, enclaveRoute, policies.listPolicies),
  route(DELETE, '/v1/policy/delete/', 'policy name', 0, enclaveRoute, policies.deletePolicy),

  route(GET, '/v1/identity/describe/', 'identity', 0, enclaveRoute, policies.describeIdentity),
  route(GET, '/v1/identity/self/describe', undefined, 0, identified, policies.describeSelf),
  route(GET, '/v1/identity/list/', 'pattern', 0, enclaveRoute, policies.listIdentities),
  route(DELETE, '/v1/identity/delete/', 'identity', 0, enclaveRoute, policies.deleteIdentity),

  route(GET, '/v1/log/error', undefined, 0, serverRoute, server.errorLog, 0),
  route(GET, '/v1/log/audit', undefined, 0, serverRoute, server.auditLog, 0),

  route(POST, '/v1/enclave/create/', 'enclave name', MiB, sysadminOnly, enclaves.createEnclave),
  route(GET, '/v1/enclave/describe/', 'enclave name', 0, sysadminOnly, enclaves.describeEnclave),
  route(DELETE, '/v1/enclave/delete/', 'enclave name', 0, sysadminOnly, enclaves.deleteEnclave),
  route(WRITE, '/v1/sys/seal', undefined, 0, sysadminOnly, enclaves.sealSystem),
  // kesd's extension: a sealed backup of the embedded store while it serves (a stream: no route timeout).
  route(GET, BACKUP_PATH, undefined, 0, sysadminOnly, backup.backup, 0),
];

/**
 * The routes as served: those named in `api.<path>.skip_auth` (init.yml) are open to anyone; the backup route is
 * open to the identities of `system.backup.identities` besides the system admin.
 */
export function servedRoutes(skipAuth: Iterable<string>, backupIdentities: Iterable<string> = []): readonly Route[] {
  const skip = new Set(skipAuth);
  const backup = new Set(backupIdentities);
  return routes.map((r) =>
    skip.has(r.path)
      ? { ...r, auth: anyone }
      : r.path === BACKUP_PATH && backup.size > 0
        ? { ...r, auth: sysadminOr(backup) }
        : r,
  );
}

/** Some route is open to anyone by configuration, not by nature (/version): the TLS listener lets clients without a certificate in. */
export function skipsAuth(served: readonly Route[]): boolean {
  const declared = new Map(routes.map((r) => [r.path, r.auth]));
  return served.some((r) => r.auth === anyone && declared.get(r.path) !== anyone);
}

/** Looks a request path up: exact routes first, then the longest prefix route ("/v1/key/list" = empty argument). */
export class RouteTable {
  private readonly exact = new Map<string, Route>();
  private readonly prefix = new Map<string, Route>();

  constructor(readonly all: readonly Route[]) {
    for (const r of all) (r.path.endsWith('/') ? this.prefix : this.exact).set(r.path, r);
  }

  lookup(path: string): { route: Route; arg: string } | undefined {
    const exact = this.exact.get(path);
    if (exact !== undefined) return { route: exact, arg: '' };
    for (let i = path.lastIndexOf('/'); i > 0; i = path.lastIndexOf('/', i - 1)) {
      const r = this.prefix.get(path.slice(0, i + 1));
      if (r !== undefined) return { route: r, arg: path.slice(i + 1) };
    }
    const bare = this.prefix.get(path + '/');
    return bare === undefined ? undefined : { route: bare, arg: '' };
  }
}
