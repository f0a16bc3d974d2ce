// /v1/enclave/* and /v1/sys/seal: system-admin only (the route's auth mode enforces it).
import { isValidIdentity, isValidName } from '../../kes/names.js';
import { parseObject, stringField } from '../body.js';
import type { Reply, RequestContext } from '../context.js';
import {
  ErrAdminIsSysAdmin,
  ErrEnclaveNotFound,
  ErrIdentityUnknown,
  ErrSealed,
  invalidName,
} from '../../kes/errors.js';

function enclaveName(ctx: RequestContext): string {
  if (!isValidName(ctx.arg)) throw invalidName('enclave name', ctx.arg);
  return ctx.arg;
}

export async function createEnclave(ctx: RequestContext): Promise<Reply> {
  const name = enclaveName(ctx);
  const admin = stringField(parseObject(ctx.body), 'admin') ?? '';
  if (admin === '') throw ErrIdentityUnknown;
  if (!isValidIdentity(admin)) throw invalidName('identity', admin);
  if (admin === ctx.server.system.sysadmin) throw ErrAdminIsSysAdmin;
  await ctx.server.system.createEnclave(name, admin, ctx.identity);
}

export function describeEnclave(ctx: RequestContext): Reply {
  const name = enclaveName(ctx);
  const system = ctx.server.system;
  if (system.sealed) throw ErrSealed;
  const enclave = system.enclaves.get(name);
  if (enclave === undefined) throw ErrEnclaveNotFound;
  return { json: { name, created_at: enclave.info.created_at, created_by: enclave.info.created_by } };
}

export async function deleteEnclave(ctx: RequestContext): Promise<Reply> {
  await ctx.server.system.deleteEnclave(enclaveName(ctx));
}

export async function sealSystem(ctx: RequestContext): Promise<Reply> {
  const { system, errors } = ctx.server;
  const wasSealed = system.sealed;
  try {
    await system.seal();
  } finally {
    // Also when announcing the seal to the other replicas failed (502): this server is sealed all the same.
    if (!wasSealed && system.sealed)
      errors.log('system sealed by the system admin: key operations stop until a restart');
  }
}
