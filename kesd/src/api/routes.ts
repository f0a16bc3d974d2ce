// Every endpoint in one place: both KES dialects (v0.22 stateful and newest), one table.
// /v1/api is generated from it, so the docs and the server cannot drift apart.
import type { AuthMode, Handler, Route } from './context.js';
import * as enclaves from './handlers/enclaves.js';
import * as keys from './handlers/keys.js';
import * as policies from './handlers/policies.js';
import * as secrets from './handlers/secrets.js';
import * as server from './handlers/server.js';

const MiB = 1 << 20;
const GET = ['GET'];
const DELETE = ['DELETE'];
const POST = ['POST'];
// Both clients send POST; the newest server declares PUT and accepts both (kes-protocol §4.2).
const WRITE = ['POST', 'PUT'];

const route = (methods: string[], path: string, maxBody: number, auth: AuthMode, handle: Handler, timeoutMs = 15_000): Route =>
  ({ methods, path, maxBody, timeoutMs, auth, handle });

export const routes: readonly Route[] = [
  route(GET, '/version', 0, 'none', server.version, 10_000),
  route(GET, '/v1/ready', 0, 'server', server.ready),
  route(GET, '/v1/status', 0, 'server', server.status),
  route(GET, '/v1/metrics', 0, 'server', server.metrics),
  route(GET, '/v1/api', 0, 'server', server.api, 10_000),

  route(WRITE, '/v1/key/create/', 0, 'enclave', keys.createKey),
  route(WRITE, '/v1/key/import/', MiB, 'enclave', keys.importKey),
  route(GET, '/v1/key/describe/', 0, 'enclave', keys.describeKey),
  route(DELETE, '/v1/key/delete/', 0, 'enclave', keys.deleteKey),
  route(WRITE, '/v1/key/generate/', MiB, 'enclave', keys.generateKey),
  route(WRITE, '/v1/key/encrypt/', MiB, 'enclave', keys.encryptKey),
  route(WRITE, '/v1/key/decrypt/', MiB, 'enclave', keys.decryptKey),
  route(WRITE, '/v1/key/bulk/decrypt/', MiB, 'enclave', keys.bulkDecryptKey),
  route(WRITE, '/v1/key/hmac/', MiB, 'enclave', keys.hmacKey),
  route(GET, '/v1/key/list/', 0, 'enclave', keys.listKeys),

  route(WRITE, '/v1/secret/create/', MiB, 'enclave', secrets.createSecret),
  route(GET, '/v1/secret/describe/', 0, 'enclave', secrets.describeSecret),
  route(GET, '/v1/secret/read/', 0, 'enclave', secrets.readSecret),
  route(DELETE, '/v1/secret/delete/', 0, 'enclave', secrets.deleteSecret),
  route(GET, '/v1/secret/list/', 0, 'enclave', secrets.listSecrets),

  route(GET, '/v1/policy/describe/', 0, 'enclave', policies.describePolicy),
  route(WRITE, '/v1/policy/assign/', 1024, 'enclave', policies.assignPolicy),
  route(GET, '/v1/policy/read/', 0, 'enclave', policies.readPolicy),
  route(WRITE, '/v1/policy/write/', MiB, 'enclave', policies.writePolicy),
  route(GET, '/v1/policy/list/', 0, 'enclave', policies.listPolicies),
  route(DELETE, '/v1/policy/delete/', 0, 'enclave', policies.deletePolicy),

  route(GET, '/v1/identity/describe/', 0, 'enclave', policies.describeIdentity),
  route(GET, '/v1/identity/self/describe', 0, 'identify', policies.describeSelf),
  route(GET, '/v1/identity/list/', 0, 'enclave', policies.listIdentities),
  route(DELETE, '/v1/identity/delete/', 0, 'enclave', policies.deleteIdentity),

  route(GET, '/v1/log/error', 0, 'server', server.errorLog, 0),
  route(GET, '/v1/log/audit', 0, 'server', server.auditLog, 0),

  route(POST, '/v1/enclave/create/', MiB, 'sysadmin', enclaves.createEnclave),
  route(GET, '/v1/enclave/describe/', 0, 'sysadmin', enclaves.describeEnclave),
  route(DELETE, '/v1/enclave/delete/', 0, 'sysadmin', enclaves.deleteEnclave),
  route(WRITE, '/v1/sys/seal', 0, 'sysadmin', enclaves.sealSystem),
];

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
