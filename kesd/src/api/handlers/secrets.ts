// /v1/secret/* (v0.22 stateful dialect): small generic secrets stored sealed.
import { isValidListPattern, isValidName, listPrefix, matchesListPattern } from '../../kes/names.js';
import { bytesField, parseObject, stringField } from '../body.js';
import type { Reply, RequestContext } from '../context.js';
import { ErrInvalidBody, invalidName, invalidPattern, KesError } from '../../kes/errors.js';

function secretName(ctx: RequestContext): string {
  if (!isValidName(ctx.arg)) throw invalidName('secret name', ctx.arg);
  return ctx.arg;
}

export async function createSecret(ctx: RequestContext): Promise<Reply> {
  const name = secretName(ctx);
  const body = parseObject(ctx.body);
  const type = stringField(body, 'type') || 'generic';
  if (type !== 'generic') throw new KesError(400, `unsupported secret type '${type}'`);
  const bytes = bytesField(body, 'bytes');
  if (bytes === undefined) throw ErrInvalidBody;
  await ctx.enclave!.createSecret(name, bytes, ctx.identity);
}

export async function describeSecret(ctx: RequestContext): Promise<Reply> {
  const s = await ctx.enclave!.secret(secretName(ctx));
  return { json: { type: s.type, created_at: s.created_at, mod_time: s.mod_time, created_by: s.created_by } };
}

export async function readSecret(ctx: RequestContext): Promise<Reply> {
  const s = await ctx.enclave!.secret(secretName(ctx));
  return {
    json: { bytes: s.bytes, type: s.type, created_at: s.created_at, mod_time: s.mod_time, created_by: s.created_by },
  };
}

export async function deleteSecret(ctx: RequestContext): Promise<Reply> {
  await ctx.enclave!.deleteSecret(secretName(ctx));
}

export function listSecrets(ctx: RequestContext): Reply {
  const pattern = ctx.arg;
  if (!isValidListPattern(pattern)) throw invalidPattern(pattern);
  const enclave = ctx.enclave!;
  async function* lines() {
    for await (const { name, record } of enclave.listSecrets(listPrefix(pattern))) {
      if (matchesListPattern(pattern, name))
        yield { name, created_at: record.created_at, mod_time: record.mod_time, created_by: record.created_by };
    }
  }
  return { ndjson: lines() };
}
