// /v1/policy/* and /v1/identity/*: policies and identity assignments of the selected enclave.
import { patternError } from '../../state/policy.js';
import { isValidIdentity, isValidListPattern, isValidName, matchesListPattern } from '../../kes/names.js';
import type { PolicyRecord } from '../../state/records.js';
import { parseObject, stringArrayField, stringField } from '../body.js';
import type { Reply, RequestContext } from '../context.js';
import {
  ErrAssignSysAdmin,
  ErrDeleteSysAdmin,
  ErrIdentityNotFound,
  ErrIdentityUnknown,
  ErrSealed,
  ErrSelfAssign,
  invalidName,
  invalidPattern,
  KesError,
} from '../../kes/errors.js';

function policyName(ctx: RequestContext): string {
  if (!isValidName(ctx.arg)) throw invalidName('policy name', ctx.arg);
  return ctx.arg;
}

function identityArg(ctx: RequestContext): string {
  if (!isValidName(ctx.arg)) throw invalidName('identity', ctx.arg);
  return ctx.arg;
}

function listPattern(ctx: RequestContext): string {
  if (!isValidListPattern(ctx.arg)) throw invalidPattern(ctx.arg);
  return ctx.arg;
}

/** The newest KES shape: allow/deny as objects keyed by pattern. */
const ruleMap = (patterns: readonly string[]) => Object.fromEntries(patterns.map((p) => [p, {}]));

export function describePolicy(ctx: RequestContext): Reply {
  const name = policyName(ctx);
  const p = ctx.enclave!.policy(name);
  return { json: { name, created_at: p.created_at, created_by: p.created_by } };
}

export function readPolicy(ctx: RequestContext): Reply {
  const name = policyName(ctx);
  const p = ctx.enclave!.policy(name);
  return {
    json: { name, allow: ruleMap(p.allow), deny: ruleMap(p.deny), created_at: p.created_at, created_by: p.created_by },
  };
}

export function listPolicies(ctx: RequestContext): Reply {
  const pattern = listPattern(ctx);
  const entries = [...ctx.enclave!.policies]
    .filter(([name]) => matchesListPattern(pattern, name))
    .sort(([a], [b]) => (a < b ? -1 : 1));
  return {
    ndjson: toAsync(entries.map(([name, p]) => ({ name, created_at: p.created_at, created_by: p.created_by }))),
  };
}

export async function writePolicy(ctx: RequestContext): Promise<Reply> {
  const name = policyName(ctx);
  const body = parseObject(ctx.body);
  const rules = { allow: stringArrayField(body, 'allow'), deny: stringArrayField(body, 'deny') };
  for (const pattern of [...rules.allow, ...rules.deny]) {
    const problem = patternError(pattern);
    if (problem !== undefined) throw new KesError(400, `policy '${name}': ${problem}`);
  }
  await ctx.enclave!.writePolicy(name, rules, ctx.identity);
}

export async function deletePolicy(ctx: RequestContext): Promise<Reply> {
  await ctx.enclave!.deletePolicy(policyName(ctx));
}

export async function assignPolicy(ctx: RequestContext): Promise<Reply> {
  const name = policyName(ctx);
  const body = parseObject(ctx.body);
  const identity = stringField(body, 'identity') ?? '';
  if (identity === '') throw ErrIdentityUnknown;
  if (!isValidIdentity(identity)) throw invalidName('identity', identity);
  if (identity === ctx.identity) throw ErrSelfAssign;
  if (identity === ctx.server.system.sysadmin) throw ErrAssignSysAdmin;
  await ctx.enclave!.assignPolicy(name, identity, ctx.identity);
}

export function describeIdentity(ctx: RequestContext): Reply {
  const id = identityArg(ctx);
  const enclave = ctx.enclave!;
  if (id === enclave.info.admin)
    return { json: { admin: true, created_at: enclave.info.created_at, created_by: enclave.info.created_by } };
  const info = enclave.identities.get(id);
  if (info === undefined) throw ErrIdentityNotFound;
  return { json: { policy: info.policy, created_at: info.created_at, created_by: info.created_by } };
}

/**
 * The kms-go (newest client) shape: policy name as a string, allow/deny maps at top level.
 * Unlike the newest server (which answers 404 to every non-admin), this returns the caller's real policy.
 */
export function describeSelf(ctx: RequestContext): Reply {
  const enclave = ctx.server.system.enclaves.get(ctx.enclaveName);
  const id = ctx.identity;
  if (id === ctx.server.system.sysadmin)
    return { json: { identity: id, admin: true, created_at: new Date(ctx.server.system.startedAt).toISOString() } };
  // Sealed, a worker started after the seal holds no enclaves: every process answers the same.
  if (ctx.server.system.sealed) throw ErrSealed;
  if (enclave === undefined) throw ErrIdentityNotFound;
  if (id === enclave.info.admin)
    return {
      json: { identity: id, admin: true, created_at: enclave.info.created_at, created_by: enclave.info.created_by },
    };
  const info = enclave.identities.get(id);
  if (info === undefined) throw ErrIdentityNotFound;
  const policy: PolicyRecord | undefined = enclave.policies.get(info.policy);
  return {
    json: {
      identity: id,
      policy: info.policy,
      created_at: info.created_at,
      created_by: info.created_by,
      ...(policy ? { allow: ruleMap(policy.allow), deny: ruleMap(policy.deny) } : {}),
    },
  };
}

export function listIdentities(ctx: RequestContext): Reply {
  const pattern = listPattern(ctx);
  const enclave = ctx.enclave!;
  const lines: object[] = [];
  if (matchesListPattern(pattern, enclave.info.admin)) {
    lines.push({
      identity: enclave.info.admin,
      admin: true,
      created_at: enclave.info.created_at,
      created_by: enclave.info.created_by,
    });
  }
  for (const [identity, info] of enclave.identities) {
    if (matchesListPattern(pattern, identity))
      lines.push({ identity, policy: info.policy, created_at: info.created_at, created_by: info.created_by });
  }
  lines.sort((a, b) => ((a as { identity: string }).identity < (b as { identity: string }).identity ? -1 : 1));
  return { ndjson: toAsync(lines) };
}

export async function deleteIdentity(ctx: RequestContext): Promise<Reply> {
  const id = identityArg(ctx);
  if (id === ctx.server.system.sysadmin) throw ErrDeleteSysAdmin;
  await ctx.enclave!.deleteIdentity(id);
}

async function* toAsync<T>(items: readonly T[]): AsyncGenerator<T> {
  yield* items;
}
