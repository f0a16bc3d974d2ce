// Offline validation of MinIO Tenant objects against the operator v7.1.1 CRD (vendored under test/fixtures).
// Unknown fields are errors too: the API server would silently prune them, so a typo would just vanish.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { Ajv, type ErrorObject, type SchemaObject } from 'ajv';
import { parse } from 'yaml';

export const TENANT_CRD_PATH = resolve(
  import.meta.dirname,
  '../fixtures/minio-operator-v7.1.1/minio.min.io_tenants.yaml',
);

interface Crd {
  spec: { versions: { name: string; schema: { openAPIV3Schema: SchemaObject } }[] };
}

/** The Tenant v2 openAPIV3Schema with every object that lists its properties closed to others. */
function closedSchema(): SchemaObject {
  const crd = parse(readFileSync(TENANT_CRD_PATH, 'utf8')) as Crd;
  const v2 = crd.spec.versions.find((v) => v.name === 'v2');
  if (!v2) throw new Error(`${TENANT_CRD_PATH}: no v2 version`);
  const close = (s: unknown): void => {
    if (Array.isArray(s)) return s.forEach(close);
    if (s === null || typeof s !== 'object') return;
    const o = s as Record<string, unknown>;
    if (o.properties && o.additionalProperties === undefined && !o['x-kubernetes-preserve-unknown-fields'])
      o.additionalProperties = false;
    for (const k of ['properties', 'patternProperties']) if (o[k]) Object.values(o[k] as object).forEach(close);
    for (const k of ['items', 'additionalProperties', 'not', 'allOf', 'anyOf', 'oneOf'])
      if (o[k] && typeof o[k] === 'object') close(o[k]);
  };
  const schema = structuredClone(v2.schema.openAPIV3Schema);
  close(schema);
  return schema;
}

let validate: ReturnType<Ajv['compile']> | undefined;

function compiled(): ReturnType<Ajv['compile']> {
  if (!validate) {
    const ajv = new Ajv({ strict: false, allErrors: true });
    for (const f of ['int32', 'int64', 'int-or-string', 'byte', 'date-time', 'quantity']) ajv.addFormat(f, true);
    validate = ajv.compile(closedSchema());
  }
  return validate;
}

function describe(e: ErrorObject): string {
  const at = e.instancePath || '/';
  if (e.keyword === 'additionalProperties')
    return `${at}: unknown field '${(e.params as { additionalProperty: string }).additionalProperty}'`;
  return `${at}: ${e.message}`;
}

/** The CRD schema errors of a Tenant object (apiVersion, kind, metadata, spec); [] when it is valid. */
export function validateTenant(obj: unknown): string[] {
  const v = compiled();
  return v(obj) ? [] : (v.errors ?? []).map(describe);
}
