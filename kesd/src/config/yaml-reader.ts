// A strict YAML reader for kesd's config files: every scalar is read as the text written (no YAML number or
// bool coercion, so an all-digit identity stays a string), null/empty values count as absent, unknown fields
// are errors naming their path, and a value that is exactly `${VAR}` is replaced by that environment variable
// (a missing one is an error).
import { isAlias, isMap, isScalar, isSeq, parseDocument, type Document, type Node } from 'yaml';
import { isValidIdentity, isValidName } from '../kes/names.js';

export class ConfigError extends Error {
  override name = 'ConfigError';
}

export const DEFAULT_ADDRESS = '0.0.0.0:7373';
export const ENV_REF = /^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$/;

export type Y = string | undefined | Y[] | Map<string, Y>;

/** Reads YAML into strings, lists and Maps; null/empty scalars become undefined (absent). */
export class Reader {
  constructor(
    private readonly prefix: string,
    private readonly env: NodeJS.ProcessEnv,
  ) {}

  fail(msg: string): never {
    throw new ConfigError(`${this.prefix}: ${msg}`);
  }

  parse(text: string): Map<string, Y> {
    const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: false });
    if (doc.errors.length > 0) this.fail(`invalid YAML: ${doc.errors[0]!.message}`);
    const root = this.plain(doc.contents as Node | null, '', doc);
    if (root !== undefined && !(root instanceof Map)) this.fail('the document must be a YAML mapping');
    return root ?? new Map();
  }

  private plain(node: Node | null, path: string, doc: Document): Y {
    if (node === null || node === undefined) return undefined;
    if (isScalar(node)) {
      if (node.value === null) return undefined;
      return typeof node.value === 'string' ? node.value : String(node.source ?? node.value);
    }
    if (isSeq(node)) return node.items.map((n, i) => this.plain(n as Node, `${path}[${i}]`, doc));
    if (isMap(node)) {
      const m = new Map<string, Y>();
      for (const pair of node.items) {
        if (!isScalar(pair.key)) this.fail(`'${path}' has a non-scalar key`);
        const k = typeof pair.key.value === 'string' ? pair.key.value : String(pair.key.source ?? pair.key.value);
        m.set(k, this.plain(pair.value as Node | null, join2(path, k), doc));
      }
      return m;
    }
    if (isAlias(node)) return this.plain(node.resolve(doc) ?? null, path, doc);
    return this.fail(`'${path}' has an unsupported YAML node`);
  }

  /** A mapping with only the `allowed` fields (empty `allowed` = any key). Absent → empty. */
  obj(v: Y, path: string, allowed: readonly string[]): Map<string, Y> {
    if (v === undefined) return new Map();
    if (!(v instanceof Map)) this.fail(`'${path}' must be a mapping`);
    if (allowed.length > 0)
      for (const k of v.keys()) if (!allowed.includes(k)) this.fail(`unknown field '${join2(path, k)}'`);
    return v;
  }

  list(v: Y, path: string): Y[] {
    if (v === undefined) return [];
    if (!Array.isArray(v)) this.fail(`'${path}' must be a list`);
    return v;
  }

  /** A scalar with `${VAR}` substitution; undefined if absent. */
  str(v: Y, path: string, required = false): string | undefined {
    if (v === undefined || v === '') {
      if (required) this.fail(`'${path}' is required`);
      return v;
    }
    if (typeof v !== 'string') this.fail(`'${path}' must be a scalar`);
    const ref = ENV_REF.exec(v.trim());
    if (!ref) return v;
    const value = this.env[ref[1]!];
    if (value === undefined) this.fail(`'${path}': environment variable '${ref[1]}' is not set`);
    if (required && value === '') this.fail(`'${path}' is required (environment variable '${ref[1]}' is empty)`);
    return value;
  }

  bool(v: Y, path: string): boolean {
    const s = (this.str(v, path) ?? '').toLowerCase();
    if (s === 'on' || s === 'true') return true;
    if (s === 'off' || s === 'false' || s === '') return false;
    return this.fail(`'${path}': '${s}' is not a boolean (on, true, off or false)`);
  }

  identity(v: Y, path: string): string {
    const id = this.str(v, path, true)!;
    if (!isValidIdentity(id)) this.fail(`'${path}': identity '${id}' is not 64 lowercase hex characters`);
    return id;
  }

  name(kind: string, name: string): string {
    if (!isValidName(name)) this.fail(`${kind} name '${name}' is empty, too long or contains invalid characters`);
    return name;
  }

  address(v: Y, path: string): string {
    const a = this.str(v, path) || DEFAULT_ADDRESS;
    const port = /:(\d{1,5})$/.exec(a);
    if (!port || Number(port[1]) > 65535) this.fail(`'${path}': '${a}' is not a host:port address`);
    return a;
  }
}

const join2 = (path: string, k: string) => (path ? `${path}.${k}` : k);
