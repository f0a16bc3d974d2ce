// A stand-in `kind` CLI for the kind mode under the engine: there is no Docker engine on the machines this suite
// runs on, so no real kind cluster. It implements the four calls KindCluster's dynamic provider makes (create
// cluster, get clusters, get kubeconfig, delete cluster), keeps each "cluster" as a file, logs every call, and hands
// out a kubeconfig for the suite's real API server under kind's context name, so the stack's Kubernetes provider
// reaches a real cluster.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';

interface Kubeconfig {
  'current-context': string;
  contexts: { name: string; context: { cluster: string; user: string } }[];
  clusters: { name: string; cluster: unknown }[];
  users: { name: string; user: unknown }[];
}

/** The current context of `kubeconfig`, renamed to kind's `kind-<name>`. */
export function kindKubeconfig(kubeconfig: string, name: string): string {
  const doc = parse(kubeconfig) as Kubeconfig;
  const context = doc.contexts.find((c) => c.name === doc['current-context'])!.context;
  const id = `kind-${name}`;
  return stringify({
    apiVersion: 'v1',
    kind: 'Config',
    'current-context': id,
    clusters: [{ name: id, cluster: doc.clusters.find((c) => c.name === context.cluster)!.cluster }],
    users: [{ name: id, user: doc.users.find((u) => u.name === context.user)!.user }],
    contexts: [{ name: id, context: { cluster: id, user: id } }],
  });
}

export interface FakeKind {
  /** The folder to put first on PATH. */
  readonly bin: string;
  /** Each call's arguments, one line per call. */
  calls(): string[];
  /** The config `create cluster` read on stdin, if that cluster exists. */
  clusterConfig(name: string): string | undefined;
}

export function fakeKind(dir: string, kubeconfigPath: string, clusterName: string): FakeKind {
  const bin = join(dir, 'bin');
  const state = join(dir, 'clusters');
  mkdirSync(bin, { recursive: true });
  mkdirSync(state, { recursive: true });
  writeFileSync(join(dir, 'kubeconfig'), kindKubeconfig(readFileSync(kubeconfigPath, 'utf8'), clusterName), {
    mode: 0o600,
  });
  writeFileSync(
    join(bin, 'kind'),
    `#!/bin/sh
# fake kind for the engine suite (no Docker engine here): see test/engine/fake-kind.ts
echo "$*" >> '${dir}/calls.log'
name=kind
prev=
for a in "$@"; do [ "$prev" = --name ] && name=$a; prev=$a; done
case "$1 $2" in
  "create cluster") [ -e '${state}'/"$name" ] && { echo "ERROR: failed to create cluster: node(s) already exist for a cluster with the name \\"$name\\"" >&2; exit 1; }
                    cat > '${state}'/"$name" ;;
  "get clusters") ls '${state}' ;;
  "get kubeconfig") [ -e '${state}'/"$name" ] || { echo "ERROR: could not locate any control plane nodes for cluster named '$name'" >&2; exit 1; }
                    cat '${dir}/kubeconfig' ;;
  "delete cluster") rm -f '${state}'/"$name" ;;
  *) echo "fake kind: unsupported: $*" >&2; exit 2 ;;
esac
`,
    { mode: 0o755 },
  );
  return {
    bin,
    calls: () => {
      try {
        return readFileSync(join(dir, 'calls.log'), 'utf8').trim().split('\n').filter(Boolean);
      } catch {
        return [];
      }
    },
    clusterConfig: (name) => {
      try {
        return readFileSync(join(state, name), 'utf8');
      } catch {
        return undefined;
      }
    },
  };
}
