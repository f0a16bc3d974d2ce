// /v1/key/*: the data-key hot path (generate, decrypt) stays synchronous when the key is cached.
import { generateDataKey, legacyAlgorithmName, parseAlgorithm, seal } from '../../crypto/key.js';
import { wipe } from '../../crypto/secret.js';
import type { CachedKey } from '../../state/enclave.js';
import { isValidListPattern, isValidName, listPrefix, matchesListPattern } from '../../kes/names.js';
import { bytesField, field, parseJson, parseObject, stringField, type JsonObject } from '../body.js';
import type { Reply, RequestContext } from '../context.js';
import {
  ErrInvalidBody,
  ErrInvalidImportBody,
  ErrTooManyCiphertexts,
  invalidName,
  invalidPattern,
  KesError,
} from '../../kes/errors.js';

export function keyName(ctx: RequestContext): string {
  if (!isValidName(ctx.arg)) throw invalidName('key name', ctx.arg);
  return ctx.arg;
}

/** The addressed key: a cache hit returns synchronously. */
function keyOf(ctx: RequestContext): CachedKey | Promise<CachedKey> {
  return ctx.enclave!.cachedKey(ctx.arg) ?? ctx.enclave!.key(keyName(ctx));
}

function withKey(ctx: RequestContext, use: (key: CachedKey) => Reply | Promise<Reply>): Reply | Promise<Reply> {
  const key = keyOf(ctx);
  return key instanceof Promise ? key.then(use) : use(key);
}

// Key versions (a kesd extension; KES has none). A version is a decimal number from 1 on the wire, as kms-go's
// optional `version` string (kms-go 2025: GenerateKey reads it, Decrypt sends it). generate and encrypt answer the
// version they used; decrypt honours a `version` it is given (that version only: one AEAD, and a version the key
// does not have, or no longer has, is the KES decrypt error) and otherwise finds the version (keys.ts).
const VERSION = /^[1-9][0-9]{0,9}$/;

/** The optional `version` of a decrypt request: a decimal string (kms-go) or a JSON integer. */
function versionField(obj: JsonObject): number | undefined {
  const v = field(obj, 'version');
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 1) return v;
  if (typeof v === 'string' && VERSION.test(v)) return Number(v);
  throw ErrInvalidBody;
}

export async function createKey(ctx: RequestContext): Promise<Reply> {
  await ctx.enclave!.createKey(keyName(ctx), ctx.identity);
}

export async function importKey(ctx: RequestContext): Promise<Reply> {
  const name = keyName(ctx);
  const body = parseObject(ctx.body, { invalid: ErrInvalidImportBody });
  // Both shapes: newest {"key","cipher"} and v0.22 {"bytes","algorithm"}; no algorithm means AES256.
  const bytes = bytesField(body, 'key', ErrInvalidImportBody) ?? bytesField(body, 'bytes', ErrInvalidImportBody);
  const cipher =
    stringField(body, 'cipher', ErrInvalidImportBody) ||
    stringField(body, 'algorithm', ErrInvalidImportBody) ||
    'AES256';
  const algorithm = parseAlgorithm(cipher);
  if (algorithm === undefined) throw new KesError(406, `algorithm '${cipher}' is not supported`);
  try {
    if (bytes === undefined || bytes.length !== 32) throw new KesError(406, `invalid key size for '${cipher}'`);
    await ctx.enclave!.createKey(name, ctx.identity, { algorithm, bytes });
  } finally {
    wipe(bytes); // the request's copy; the cache keeps its own (the body's string is the GC's)
  }
}

export async function describeKey(ctx: RequestContext): Promise<Reply> {
  const key = await keyOf(ctx);
  const first = key.versions[key.versions.length - 1]!;
  return {
    json: {
      // Version 1's id, algorithm and dates, as the listing shows them: they stay the key's through rotations.
      name: key.name,
      id: first.id,
      // The v0.22 names decode in both client generations; the newest names do not decode in v0.22.
      algorithm: legacyAlgorithmName(first.secret.algorithm),
      created_at: key.createdAt,
      created_by: key.createdBy,
      // kesd's extension (clients ignore unknown fields): the newest version and every version, newest first.
      version: String(key.newest.version),
      versions: key.versions.map((v) => ({
        version: String(v.version),
        id: v.id,
        algorithm: legacyAlgorithmName(v.secret.algorithm),
        created_at: v.createdAt,
        created_by: v.createdBy,
      })),
    },
  };
}

/** kesd's extension: adds a version to a key; generate and encrypt use it from now on. */
export async function rotateKey(ctx: RequestContext): Promise<Reply> {
  const name = keyName(ctx);
  const { version, createdAt } = await ctx.enclave!.keys.rotate(name, ctx.identity);
  return { json: { name, version: String(version), created_at: createdAt } };
}

/** kesd's extension: /v1/key/version/delete/<name>/<version>. Its ciphertexts no longer decrypt. */
export async function deleteKeyVersion(ctx: RequestContext): Promise<Reply> {
  const slash = ctx.arg.lastIndexOf('/');
  const name = slash < 0 ? ctx.arg : ctx.arg.slice(0, slash);
  const version = slash < 0 ? '' : ctx.arg.slice(slash + 1);
  if (!isValidName(name)) throw invalidName('key name', name);
  if (!VERSION.test(version)) throw invalidName('key version', version);
  await ctx.enclave!.keys.deleteVersion(name, Number(version));
}

export async function deleteKey(ctx: RequestContext): Promise<Reply> {
  await ctx.enclave!.deleteKey(keyName(ctx));
}

export function generateKey(ctx: RequestContext): Reply | Promise<Reply> {
  const body = parseObject(ctx.body, { emptyOk: true });
  const context = bytesField(body, 'context');
  return withKey(ctx, (key) => {
    const dek = generateDataKey(key.secret, context);
    return {
      json: {
        plaintext: dek.plaintext.toString('base64'),
        ciphertext: dek.ciphertext.toString('base64'),
        version: String(key.newest.version),
      },
    };
  });
}

export function encryptKey(ctx: RequestContext): Reply | Promise<Reply> {
  const body = parseObject(ctx.body);
  const plaintext = bytesField(body, 'plaintext');
  if (plaintext === undefined) throw ErrInvalidBody;
  const context = bytesField(body, 'context');
  return withKey(ctx, (key) => ({
    json: { ciphertext: seal(key.secret, plaintext, context).toString('base64'), version: String(key.newest.version) },
  }));
}

export function decryptKey(ctx: RequestContext): Reply | Promise<Reply> {
  const body = parseObject(ctx.body);
  const ciphertext = bytesField(body, 'ciphertext');
  if (ciphertext === undefined) throw ErrInvalidBody;
  const context = bytesField(body, 'context');
  const version = versionField(body);
  const reply = (plaintext: Buffer): Reply => ({ json: { plaintext: plaintext.toString('base64') } });
  return withKey(ctx, (key) => {
    const plaintext = ctx.enclave!.decrypt(key, ciphertext, context, version);
    return plaintext instanceof Promise ? plaintext.then(reply) : reply(plaintext);
  });
}

export function bulkDecryptKey(ctx: RequestContext): Reply | Promise<Reply> {
  const items = parseJson(ctx.body);
  if (!Array.isArray(items)) throw ErrInvalidBody;
  if (items.length > 1000) throw ErrTooManyCiphertexts;
  const requests = items.map((item: unknown) => {
    if (item === null || typeof item !== 'object' || Array.isArray(item)) throw ErrInvalidBody;
    const ciphertext = bytesField(item as JsonObject, 'ciphertext');
    if (ciphertext === undefined) throw ErrInvalidBody;
    return {
      ciphertext,
      context: bytesField(item as JsonObject, 'context'),
      version: versionField(item as JsonObject),
    };
  });
  const reply = (plaintexts: Buffer[]): Reply => ({
    json: plaintexts.map((p) => ({ plaintext: p.toString('base64') })),
  });
  return withKey(ctx, (key) => {
    const results = requests.map((r) => ctx.enclave!.decrypt(key, r.ciphertext, r.context, r.version));
    // Synchronous unless some ciphertext needs the store (keys.ts: versions another replica added).
    return results.every((p): p is Buffer => !(p instanceof Promise))
      ? reply(results)
      : Promise.all(results).then(reply);
  });
}

export function hmacKey(ctx: RequestContext): Reply | Promise<Reply> {
  const body = parseObject(ctx.body);
  const message = bytesField(body, 'message');
  if (message === undefined && field(body, 'message') === undefined) throw ErrInvalidBody;
  return withKey(ctx, (key) => ({
    json: { hmac: ctx.enclave!.hmac(key, message ?? Buffer.alloc(0)).toString('base64') },
  }));
}

// ---- list ---------------------------------------------------------------------------------------------
//
// A v0.22 line carries id, algorithm, created_at and created_by (`kes key ls` prints created_at). The key ring keeps
// each key's line once it has built it (state/keys.ts), so a list reads names from the store's paths and opens only
// the records of keys it has no line for; names are matched on the path first. The lines come as text chunks and
// the shared NDJSON writer (server/http.ts) streams them.
export function listKeys(ctx: RequestContext): Reply {
  const pattern = ctx.arg;
  if (!isValidListPattern(pattern)) throw invalidPattern(pattern);
  return { ndjsonText: ctx.enclave!.listKeyLines(listPrefix(pattern), (name) => matchesListPattern(pattern, name)) };
}
