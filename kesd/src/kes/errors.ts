// Errors are values carrying the exact KES (status, message) pair; one writer turns them into {"message": …}.
export class KesError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'KesError';
  }
}

const e = (status: number, message: string) => new KesError(status, message);

// Exact wording from the KES clients' error table (kes-protocol §4.5). Callers compare (status, message).
export const ErrNotAllowed = e(403, 'not authorized: insufficient permissions');
export const ErrKeyNotFound = e(404, 'key does not exist');
export const ErrKeyExists = e(400, 'key already exists');
export const ErrDecrypt = e(400, 'decryption failed: ciphertext is not authentic');
export const ErrPolicyNotFound = e(404, 'policy does not exist');
export const ErrIdentityNotFound = e(404, 'identity does not exist');
export const ErrSecretNotFound = e(404, 'secret does not exist');
export const ErrSecretExists = e(404, 'secret already exists'); // 404 (sic), as KES sends it
export const ErrEnclaveExists = e(400, 'enclave already exists');
export const ErrEnclaveNotFound = e(404, 'enclave does not exist');
export const ErrSealed = e(403, 'system is sealed');

export const ErrNoClientCert = e(400, 'tls: client certificate is required');
export const ErrTooManyClientCerts = e(400, 'tls: received more than one client certificate');
export const ErrInvalidBody = e(400, 'invalid request body');
export const ErrInvalidImportBody = e(400, 'invalid import key request body');
export const ErrBodyTooLarge = e(413, 'request body too large');
export const ErrNotFound = e(404, '404 page not found');
export const ErrTooManyCiphertexts = e(400, 'too many ciphertexts');
export const ErrHmacNotSupported = e(409, 'key does not support HMAC');
export const ErrStoreWrite = (what: string) => e(502, `failed to ${what}`);
/** kesd's: a key record (or one of its versions) fails authentication, so it is never used; an admin may delete it. */
export const errKeyNotAuthentic = (name: string) =>
  e(
    500,
    `key '${name}' is corrupt in the key store (its record is not authentic: damaged, or sealed under another root key); delete it, or restore it from a backup`,
  );
export const ErrSelfAssign = e(403, 'identity cannot assign policy to itself');
export const ErrIdentityUnknown = e(400, 'identity is unknown');
export const ErrAssignSysAdmin = e(400, 'cannot assign policy to system admin');
export const ErrAssignAdmin = e(400, 'cannot assign policy to admin');
export const ErrDeleteSysAdmin = e(400, 'cannot delete system admin');
export const ErrDeleteAdmin = e(400, 'cannot delete admin');
export const ErrAdminIsSysAdmin = e(400, 'admin identity cannot system admin'); // KES wording (sic)

export const invalidName = (
  kind: 'key name' | 'key version' | 'policy name' | 'identity' | 'secret name' | 'enclave name',
  name: string,
) => e(400, `${kind} '${name}' is empty, too long or contains invalid characters`);
export const invalidPattern = (pattern: string) =>
  e(400, `listing pattern '${pattern}' is empty, too long or is invalid`);
export const methodNotAllowed = (got: string, want: string) => e(405, `received method '${got}' expected '${want}'`);
