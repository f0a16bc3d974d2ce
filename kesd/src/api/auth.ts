// Who may call a route: the one place that decides it (after KES's Route.Auth). Each route in the table names an
// authenticator; the dispatcher runs it before the body is read and hands the handler its verdict (a Caller).
// Handlers never check permissions again.
import type { TLSSocket } from 'node:tls';
import { identityOf } from '../identity/connection.js';
import { ErrEnclaveNotFound, ErrNotAllowed, ErrSealed, invalidName, KesError } from '../kes/errors.js';
import { isValidName } from '../kes/names.js';
import type { Enclave } from '../state/enclave.js';
import type { System } from '../state/system.js';

/** What an authenticator sees of a request. */
export interface AuthRequest {
  /** The TLS connection: its identity was computed at the handshake (identity/connection.ts). */
  readonly socket: TLSSocket;
  /** The decoded path, as policies see it. */
  readonly path: string;
  /** `?enclave=`, else the Kes-Enclave header, else 'default'. */
  readonly enclaveName: () => string;
}

/** The verdict: who calls, and in which enclave it may act (when the route acts in one). */
export interface Caller {
  /** '' for routes anyone may call, and when the client has no usable certificate. */
  readonly identity: string;
  readonly enclaveName: string | undefined;
  readonly enclave: Enclave | undefined;
  /** Set when the request is refused: the KES error to answer (the audit still records who asked). */
  readonly refusal?: KesError;
}

export interface Authenticator {
  /** 'none' routes need no client certificate (the TLS listener relies on it for verify_cert). */
  readonly name: 'none' | 'identify' | 'server' | 'enclave' | 'sysadmin';
  authenticate(request: AuthRequest, system: System): Caller;
}

const NOBODY: Caller = { identity: '', enclaveName: undefined, enclave: undefined };

/** The enclave name a request gives, checked. */
function enclaveNameOf(request: AuthRequest): string {
  const name = request.enclaveName();
  if (!isValidName(name)) throw invalidName('enclave name', name);
  return name;
}

/**
 * The addressed enclave, if `identity` may act in it on `path`. Sealed: 403 `system is sealed` for everyone. Only the
 * system admin learns that an enclave does not exist (404); anyone else gets the 403 an existing enclave would give it,
 * so a stranger's certificate cannot probe which enclaves exist.
 */
function enclaveFor(system: System, name: string, identity: string, path: string): Enclave {
  if (system.sealed) throw ErrSealed;
  const enclave = system.enclaves.get(name);
  if (enclave === undefined) throw identity === system.sysadmin ? ErrEnclaveNotFound : ErrNotAllowed;
  if (!enclave.isAllowed(identity, path)) throw ErrNotAllowed;
  return enclave;
}

/** Anyone, no certificate needed: /version, and routes configured with `api.<path>.skip_auth`. */
export const anyone: Authenticator = { name: 'none', authenticate: () => NOBODY };

/**
 * An authenticator for callers with a certificate: `decide` gets the identity and the enclave name and returns the
 * enclave the caller may act in (or none), throwing the KES error that refuses it.
 */
function withIdentity(
  name: Authenticator['name'],
  decide: (identity: string, enclaveName: string, request: AuthRequest, system: System) => Enclave | undefined,
): Authenticator {
  return {
    name,
    authenticate(request, system) {
      let identity = '';
      let enclaveName: string | undefined;
      try {
        identity = identityOf(request.socket);
        enclaveName = enclaveNameOf(request);
        return { identity, enclaveName, enclave: decide(identity, enclaveName, request, system) };
      } catch (err) {
        if (!(err instanceof KesError)) throw err;
        return { identity, enclaveName, enclave: undefined, refusal: err };
      }
    },
  };
}

/** Any client with a certificate; the enclave is named but not checked (self-describe answers for unknown ones). */
export const identified = withIdentity('identify', () => undefined);

/** Server-level routes (status, metrics, logs): the system admin, or an identity the named enclave allows. */
export const serverRoute = withIdentity('server', (identity, enclaveName, request, system) =>
  identity === system.sysadmin ? undefined : enclaveFor(system, enclaveName, identity, request.path),
);

/** Enclave routes (keys, secrets, policies, identities): the enclave's admin, or its policy must allow the path. */
export const enclaveRoute = withIdentity('enclave', (identity, enclaveName, request, system) =>
  enclaveFor(system, enclaveName, identity, request.path),
);

/** The system admin, or one of `identities` (a backup job's, for GET /v1/sys/backup: init.yml system.backup.identities). */
export function sysadminOr(identities: ReadonlySet<string>): Authenticator {
  return {
    name: 'sysadmin',
    authenticate(request, system) {
      const identity = identityOf(request.socket);
      if (identity !== system.sysadmin && !identities.has(identity)) throw ErrNotAllowed;
      return { identity, enclaveName: enclaveNameOf(request), enclave: undefined };
    },
  };
}

/** Only the system admin (enclaves, seal). */
export const sysadminOnly = withIdentity('sysadmin', (identity, _enclaveName, _request, system) => {
  if (identity !== system.sysadmin) throw ErrNotAllowed;
  return undefined;
});
