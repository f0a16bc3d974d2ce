// Runs what the Pulumi program renders as local processes, as the kubelet would: a pod's volumes laid out under a
// temp root (Secrets and ConfigMaps as files, claims and emptyDirs as dirs), the container's env and $(VAR)-expanded
// args, and Service names resolved through a private /etc/hosts (unshare -m and a bind mount: needs root).
// Shared by wiring.test.ts (one kesd) and wiring-ha.test.ts (three etcd members, three kesd replicas).
import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Manifest } from '../../harness/stack-render.ts';
import { freePort, Minio, sleep } from '../../harness/minio-stack.ts';

/** The rendered objects, looked up by kind and name. */
export class Rendered {
  constructor(readonly manifests: Manifest[]) {}

  find(kind: string, name?: string): any {
    const found = this.manifests.find((m) => m.kind === kind && (name === undefined || m.metadata.name === name));
    if (found === undefined) throw new Error(`the render has no ${kind}${name === undefined ? '' : ` named ${name}`}`);
    return found;
  }

  secret(name: string): Record<string, string> {
    return this.find('Secret', name).stringData;
  }

  configMap(name: string): Record<string, string> {
    return this.find('ConfigMap', name).data;
  }
}

/** The DNS name of pod `i` of a StatefulSet through its governing (headless) Service. */
export function podHostname(sts: any, i: number, clusterDomain = 'cluster.local'): string {
  return `${sts.metadata.name}-${i}.${sts.spec.serviceName}.${sts.metadata.namespace}.svc.${clusterDomain}`;
}

/** A container path under the pod root, in an arg that is a path or a `--flag=path`. */
export function remapArgPath(arg: string, root: string): string {
  return arg.replace(
    /^(--[a-z-]+=)?(\/.*)$/,
    (_, flag: string | undefined, path: string) => `${flag ?? ''}${join(root, path)}`,
  );
}

/** init.yml names container paths (TLS files at any depth, the unseal key file): point them into the laid-out pod. */
export function remapInitPaths(content: string, root: string): string {
  return content.replace(
    /(^\s*(?:key|cert|ca|path): )(\/\S+)$/gm,
    (_, prefix: string, path: string) => `${prefix}${join(root, path)}`,
  );
}

/**
 * Writes every volume the container mounts at its mount path under `root`: a Secret's or ConfigMap's `items` (key →
 * path, mode) if listed, else every key; with the volume's defaultMode (else 0644, as the kubelet). `rewrite` may
 * change a file's content (e.g. remap the paths init.yml names).
 */
export async function layOutVolumes(
  r: Rendered,
  sts: any,
  root: string,
  rewrite: (content: string) => string = (c) => c,
): Promise<void> {
  const pod = sts.spec.template.spec;
  const volumes = new Map<string, any>(pod.volumes.map((v: any) => [v.name, v]));
  for (const mount of pod.containers[0].volumeMounts) {
    const target = join(root, mount.mountPath);
    const volume = volumes.get(mount.name);
    const files: Record<string, string> | undefined = volume?.secret
      ? r.secret(volume.secret.secretName)
      : volume?.configMap
        ? r.configMap(volume.configMap.name)
        : undefined;
    if (files === undefined) {
      await mkdir(target, { recursive: true }); // a volumeClaimTemplate or an emptyDir
      continue;
    }
    const source = volume.secret ?? volume.configMap;
    const items: { key: string; path: string; mode?: number }[] =
      source.items ?? Object.keys(files).map((key) => ({ key, path: key }));
    for (const { key, path, mode } of items) {
      const content = files[key];
      if (content === undefined) throw new Error(`volume ${mount.name}: no key ${key}`);
      if (mount.subPath !== undefined && mount.subPath !== path) continue;
      const file = mount.subPath !== undefined ? target : join(target, path);
      await mkdir(dirname(file), { recursive: true });
      await writeFile(file, rewrite(content));
      await chmod(file, mode ?? source.defaultMode ?? 0o644);
    }
  }
}

/** The container's env as the kubelet builds it: literal values, Secret keys and the pod's own name. */
export function containerEnv(r: Rendered, container: any, podName: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const e of container.env ?? []) {
    if (e.value !== undefined) env[e.name] = e.value;
    else if (e.valueFrom?.secretKeyRef)
      env[e.name] = r.secret(e.valueFrom.secretKeyRef.name)[e.valueFrom.secretKeyRef.key]!;
    else if (e.valueFrom?.fieldRef?.fieldPath === 'metadata.name') env[e.name] = podName;
    else throw new Error(`env ${e.name}: no local equivalent for ${JSON.stringify(e.valueFrom)}`);
  }
  return env;
}

/** Kubernetes' $(VAR) expansion of command args from the container's env. */
export function expandVars(arg: string, env: Record<string, string>): string {
  return arg.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (whole, name: string) => env[name] ?? whole);
}

/** Writes a hosts file (the machine's entries plus `entries`) and returns the launcher that makes a process see it. */
export async function privateHosts(file: string, entries: [ip: string, host: string][]): Promise<string[]> {
  await writeFile(
    file,
    `${await readFile('/etc/hosts', 'utf8')}\n${entries.map(([ip, host]) => `${ip} ${host}`).join('\n')}\n`,
  );
  return ['unshare', '-m', 'sh', '-c', `mount --bind ${file} /etc/hosts && exec "$0" "$@"`];
}

const live = new Set<PodProcess>();
process.once('exit', () => {
  for (const p of live) p.signal('SIGKILL');
});

/** A pod's process in its own process group (unshare and sh exec into it), so a kill takes anything it forked. */
export class PodProcess {
  stdout = '';
  stderr = '';
  private readonly child: ChildProcess;
  private readonly exited: Promise<void>;

  constructor(
    readonly name: string,
    command: string[],
    env: NodeJS.ProcessEnv,
  ) {
    const [bin, ...args] = command;
    this.child = spawn(bin!, args, { env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stdout!.on('data', (d) => (this.stdout += d));
    this.child.stderr!.on('data', (d) => (this.stderr += d));
    this.exited = new Promise((res) => this.child.once('exit', () => res()));
    live.add(this);
    void this.exited.then(() => live.delete(this));
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  signal(sig: NodeJS.Signals): void {
    try {
      process.kill(-this.child.pid!, sig);
    } catch {
      // already gone
    }
  }

  /** Signals the process group and resolves once the process has exited (SIGKILL after 10 s). */
  async stop(sig: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    if (!this.alive) return;
    this.signal(sig);
    const force = setTimeout(() => this.signal('SIGKILL'), 10_000);
    await this.exited;
    clearTimeout(force);
  }

  /** The last lines of its output, for failure messages. */
  tail(lines = 20): string {
    return `--- ${this.name} ---\n${(this.stderr + this.stdout).split('\n').slice(-lines).join('\n')}`;
  }
}

/** Polls `check` every 200 ms until it is true; throws `what` (plus `explain()`) after `ms`. */
export async function until(
  what: string,
  ms: number,
  check: () => Promise<boolean>,
  explain: () => string = () => '',
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`${what} within ${ms} ms\n${explain()}`);
    await sleep(200);
  }
}

/**
 * The real MinIO with the rendered Tenant's env and root credentials, and the files the operator would mount from its
 * KES cert Secrets. `kmsEndpoint` replaces the rendered MINIO_KMS_KES_ENDPOINT (only when the test must remap a port).
 */
export async function tenantMinio(
  r: Rendered,
  dir: string,
  launcher: string[],
  kmsEndpoint?: string,
): Promise<{ minio: Minio; tenantEnv: Record<string, string> }> {
  const tenant = r.find('Tenant');
  const certs = join(dir, 'minio-certs');
  const client = r.secret(tenant.spec.externalClientCertSecrets[0].name);
  const ca = r.secret(tenant.spec.externalCaCertSecret[0].name);
  const mounted: Record<string, string> = {
    '/tmp/certs/client-0/client.crt': client['tls.crt']!,
    '/tmp/certs/client-0/client.key': client['tls.key']!,
    '/tmp/certs/CAs/ca-0.crt': ca['tls.crt']!,
  };
  for (const [path, content] of Object.entries(mounted)) {
    await mkdir(dirname(join(certs, path)), { recursive: true });
    await writeFile(join(certs, path), content, { mode: 0o600 });
  }
  const tenantEnv: Record<string, string> = Object.fromEntries(
    (tenant.spec.env as { name: string; value: string }[]).map((e) => [e.name, e.value]),
  );
  const rootEnv = Object.fromEntries(
    [...r.secret(tenant.spec.configuration.name)['config.env']!.matchAll(/^export (\w+)="(.*)"$/gm)].map((m) => [
      m[1]!,
      m[2]!,
    ]),
  );
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    ...rootEnv,
    ...Object.fromEntries(
      Object.entries(tenantEnv).map(([k, v]) => [k, v.startsWith('/tmp/certs/') ? join(certs, v) : v]),
    ),
    ...(kmsEndpoint !== undefined ? { MINIO_KMS_KES_ENDPOINT: kmsEndpoint } : {}),
    MINIO_BROWSER: 'off',
  };
  const minio = new Minio(
    dir,
    await freePort(),
    await freePort(),
    { endpoint: '', certFile: '', keyFile: '', caFile: '', defaultKey: '' },
    { env, launcher },
  );
  minio.user = rootEnv.MINIO_ROOT_USER!;
  minio.password = rootEnv.MINIO_ROOT_PASSWORD!;
  return { minio, tenantEnv };
}
