// Runs the whole Pulumi program under mocks (real generated certificates and keys, no cluster) and returns every
// Kubernetes object it would apply. Used by `npm run render` and by the stack tests. One render per process.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parse, stringify } from 'yaml';
import { createHash, randomBytes } from 'node:crypto';
import { onResource, recorded, setupMocks, unsecret, type RecordedResource } from './pulumi-mocks.ts';
import { registerTlsMocks } from './tls-mock.ts';

export const REPO = resolve(import.meta.dirname, '..');

export interface Manifest {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; [k: string]: unknown };
  [k: string]: unknown;
}

export interface Render {
  /** Objects applied to the cluster, in registration order. */
  readonly manifests: Manifest[];
  /** Helm charts (remote components: their objects are rendered by the provider, not here). */
  readonly charts: { name: string; chart: string; version: string; repo: string; namespace: string; values: unknown }[];
  readonly resources: readonly RecordedResource[];
  readonly outputs: Record<string, unknown>;
}

/** The stack's config as `pulumi config` would hand it to the program: `stateful-kes:key` → JSON text. */
export function stackConfig(stack: string): Record<string, string> {
  const doc = parse(readFileSync(resolve(REPO, `Pulumi.${stack}.yaml`), 'utf8')) as {
    config?: Record<string, unknown>;
  };
  return Object.fromEntries(
    Object.entries(doc.config ?? {}).map(([k, v]) => [k, typeof v === 'string' ? v : JSON.stringify(v)]),
  );
}

/** Settles when no resource has been registered for a while (the program registers asynchronously). */
async function quiescent(): Promise<void> {
  let seen = -1;
  while (seen !== recorded.length) {
    seen = recorded.length;
    await new Promise((r) => setTimeout(r, 400));
  }
}

export async function renderStack(
  opts: { stack?: string; config?: Record<string, string>; tlsCache?: string } = {},
): Promise<Render> {
  await setupMocks({ config: opts.config ?? stackConfig(opts.stack ?? 'dev'), stack: opts.stack ?? 'dev' });
  registerTlsMocks({ cacheFile: opts.tlsCache });
  // Other provider-computed outputs. Passwords are derived from a seed, so renders sharing a tls cache agree.
  const seed = opts.tlsCache ?? randomBytes(16).toString('hex');
  onResource('random:index/randomPassword:RandomPassword', (a) => ({
    result: createHash('sha256')
      .update(`${seed}/${a.name}`)
      .digest('base64url')
      .replace(/[^A-Za-z0-9]/g, '')
      .slice(0, a.inputs.length),
  }));
  onResource('docker-build:index:Image', (a) => {
    const digest = `sha256:${createHash('sha256').update(String(a.inputs.tags?.[0])).digest('hex')}`;
    return { digest, ref: `${a.inputs.tags?.[0]}@${digest}` };
  });
  onResource('command:local:Command', () => ({ stdout: '', stderr: '' }));
  const program = (await import(resolve(REPO, 'index.ts'))) as Record<string, unknown>;
  await quiescent();
  const outputs: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(program)) outputs[k] = await resolveDeep(v);
  const manifests: Manifest[] = [];
  const charts: Render['charts'] = [];
  for (const r of recorded) {
    if (r.type === 'kubernetes:helm.sh/v4:Chart') {
      const i = unsecret(r.inputs);
      charts.push({
        name: r.name,
        chart: i.chart,
        version: i.version,
        repo: i.repositoryOpts?.repo,
        namespace: i.namespace,
        values: i.values,
      });
    } else if (r.type.startsWith('kubernetes:') && !r.type.startsWith('pulumi:providers')) {
      const obj = unsecret(r.inputs) as Manifest;
      // Pulumi auto-names objects without a name (name + random suffix); the render shows the logical name.
      manifests.push({ ...obj, metadata: { ...obj.metadata, name: obj.metadata?.name ?? r.name } });
    }
  }
  return { manifests, charts, resources: recorded, outputs };
}

async function resolveDeep(v: unknown): Promise<unknown> {
  if (v && typeof v === 'object' && 'apply' in v)
    return new Promise((res) => (v as { apply(f: (x: unknown) => void): void }).apply(res));
  if (v && typeof v === 'object' && !Array.isArray(v))
    return Object.fromEntries(await Promise.all(Object.entries(v).map(async ([k, x]) => [k, await resolveDeep(x)])));
  return v;
}

export function toYaml(render: Render): string {
  const docs = render.manifests.map((m) => stringify(m, { lineWidth: 0 }));
  const charts = render.charts.map(
    (c) =>
      `# Helm chart ${c.chart}@${c.version} from ${c.repo} into ${c.namespace} (rendered by the provider)\n${stringify({ chart: c }, { lineWidth: 0 })}`,
  );
  return [...docs, ...charts].join('---\n');
}

export function countByKind(render: Render): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const m of render.manifests)
    counts[`${m.apiVersion}/${m.kind}`] = (counts[`${m.apiVersion}/${m.kind}`] ?? 0) + 1;
  if (render.charts.length > 0) counts['helm.sh/v4 Chart (remote)'] = render.charts.length;
  return counts;
}
