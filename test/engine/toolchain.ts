// Finds what the engine suite runs on. Nothing here builds anything: the Pulumi CLI comes from
//   1. $STATEFUL_KES_ENGINE_BIN (a folder with `pulumi` and its plugins), else
//   2. `pulumi` on PATH (an official install: it downloads the plugins the program needs), else
//   3. ~/.cache/stateful-kes/engine/bin (a toolchain cached on this machine).
// The cluster is $KUBECONFIG when set (any cluster: the suite deploys into it and removes what it made), else a
// local control plane started by cluster.ts from kube-apiserver, kube-controller-manager, kube-scheduler and kwok
// (in the toolchain folder or on PATH) and etcd; kubectl is needed either way.
//   node --import tsx test/engine/toolchain.ts   prints what was found, or why the suite cannot run (exit 1)
import { accessSync, constants, existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { delimiter, join } from 'node:path';

export const CLUSTER_BINARIES = ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kwok'] as const;

export interface Toolchain {
  /** The pulumi executable. */
  readonly pulumi: string;
  /** Where it came from, for the log. */
  readonly source: string;
  /** Folders to put first on PATH for pulumi (its plugins) and the cluster binaries. */
  readonly path: string[];
  readonly kubectl: string;
  /** A user's cluster, or the binaries for a local one. */
  readonly cluster:
    | { readonly kubeconfig: string }
    | { readonly binaries: Record<(typeof CLUSTER_BINARIES)[number] | 'etcd', string> };
}

/** What the suite's stacks load from a toolchain folder (an official install downloads these itself). */
export const FOLDER_PLUGINS = [
  'pulumi-language-nodejs',
  'pulumi-resource-pulumi-nodejs',
  'pulumi-resource-kubernetes',
  'pulumi-resource-tls',
  'pulumi-resource-random',
  'pulumi-resource-command',
];

export const DEFAULT_ENGINE_BIN = join(
  process.env.XDG_CACHE_HOME || join(homedir(), '.cache'),
  'stateful-kes',
  'engine',
  'bin',
);

function executable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The first `name` in the given folders, then on PATH. */
export function which(name: string, first: string[] = []): string | undefined {
  for (const dir of [...first, ...(process.env.PATH ?? '').split(delimiter).filter(Boolean)]) {
    if (executable(join(dir, name))) return join(dir, name);
  }
  return undefined;
}

/** The toolchain, or every reason it is incomplete. */
export function findToolchain(): Toolchain | { readonly missing: string[] } {
  const missing: string[] = [];
  const explicit = process.env.STATEFUL_KES_ENGINE_BIN;
  let pulumi: string | undefined;
  let source = '';
  const path: string[] = [];
  if (explicit) {
    pulumi = which('pulumi', [explicit]);
    if (pulumi?.startsWith(explicit)) {
      source = `$STATEFUL_KES_ENGINE_BIN (${explicit})`;
      path.push(explicit);
    } else {
      missing.push(`$STATEFUL_KES_ENGINE_BIN=${explicit} has no pulumi`);
    }
  } else if ((pulumi = which('pulumi'))) {
    source = `PATH (${pulumi})`;
  } else if (executable(join(DEFAULT_ENGINE_BIN, 'pulumi'))) {
    pulumi = join(DEFAULT_ENGINE_BIN, 'pulumi');
    source = `the cached toolchain (${DEFAULT_ENGINE_BIN})`;
    path.push(DEFAULT_ENGINE_BIN);
  } else {
    missing.push(
      `no Pulumi CLI: install it (https://www.pulumi.com/docs/install/), or set STATEFUL_KES_ENGINE_BIN, or cache a toolchain in ${DEFAULT_ENGINE_BIN}`,
    );
  }
  for (const dir of path) {
    const absent = FOLDER_PLUGINS.filter((p) => !executable(join(dir, p)));
    if (absent.length > 0) missing.push(`${dir} lacks ${absent.join(', ')}`);
  }
  const kubectl = which('kubectl');
  if (!kubectl) missing.push('no kubectl on PATH');

  let cluster: Toolchain['cluster'] | undefined;
  if (process.env.KUBECONFIG) {
    if (existsSync(process.env.KUBECONFIG)) cluster = { kubeconfig: process.env.KUBECONFIG };
    else missing.push(`KUBECONFIG=${process.env.KUBECONFIG} does not exist`);
  } else {
    const dirs = [...new Set([...path, DEFAULT_ENGINE_BIN])];
    const found = Object.fromEntries([...CLUSTER_BINARIES, 'etcd'].map((b) => [b, which(b, dirs)]));
    const absent = Object.entries(found)
      .filter(([, v]) => !v)
      .map(([k]) => k);
    if (absent.length === 0)
      cluster = { binaries: found as Record<(typeof CLUSTER_BINARIES)[number] | 'etcd', string> };
    else
      missing.push(
        `no KUBECONFIG, and no local control plane: ${absent.join(', ')} not found (in ${dirs.join(', ')} or on PATH; etcd: apt-get install etcd-server)`,
      );
  }
  if (missing.length > 0 || !pulumi || !kubectl || !cluster) return { missing };
  return { pulumi, source, path, kubectl, cluster };
}

if (import.meta.main) {
  const found = findToolchain();
  if ('missing' in found) {
    console.log(`engine toolchain: not found:\n  - ${found.missing.join('\n  - ')}`);
    process.exit(1);
  }
  const cluster =
    'kubeconfig' in found.cluster
      ? `KUBECONFIG ${found.cluster.kubeconfig}`
      : `a local control plane (${Object.values(found.cluster.binaries).join(', ')})`;
  console.log(`engine toolchain: pulumi from ${found.source}; kubectl ${found.kubectl}; cluster: ${cluster}`);
}
