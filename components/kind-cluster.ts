// A local kind cluster as a Pulumi resource (a dynamic provider over the `kind` CLI), and the Kubernetes provider
// every other component deploys through. `existingClusterProvider` is the same seam for a cluster we don't own.
import * as os from 'node:os';
import * as path from 'node:path';
import * as pulumi from '@pulumi/pulumi';
import * as k8s from '@pulumi/kubernetes';

export interface KindClusterArgs {
  /** The kind cluster name (kind's rules: a-z, 0-9, '.', '-'). */
  name: pulumi.Input<string>;
  /** The node image, e.g. `kindest/node:v1.33.1`; kind's default when omitted. */
  nodeImage?: pulumi.Input<string>;
  /** Worker nodes next to the single control-plane node (default 1). Ignored when `config` is given. */
  workers?: pulumi.Input<number>;
  /** A complete kind Cluster config (YAML), for port mappings or mounts; replaces the rendered one. */
  config?: pulumi.Input<string>;
}

/** What the dynamic provider receives (and keeps in state, plus the outputs). */
export interface KindClusterInputs {
  clusterName: string;
  nodeImage?: string;
  config: string;
}

export interface KindClusterOutputs extends KindClusterInputs {
  kubeconfig: string;
  context: string;
}

/** The kubectl context kind writes for a cluster. */
export function kindContext(name: string): string {
  return `kind-${name}`;
}

/** The kind Cluster config: one control-plane node and `workers` worker nodes. */
export function kindConfigYaml(opts: { workers?: number; nodeImage?: string } = {}): string {
  const workers = opts.workers ?? 1;
  if (!Number.isInteger(workers) || workers < 0)
    throw new Error(`kind workers must be a whole number >= 0, got ${workers}`);
  // JSON strings are valid YAML scalars: image references with ':' and '@' need no further escaping.
  const image = opts.nodeImage ? `\n    image: ${JSON.stringify(opts.nodeImage)}` : '';
  const nodes = [
    `  - role: control-plane${image}`,
    ...Array.from({ length: workers }, () => `  - role: worker${image}`),
  ];
  return ['kind: Cluster', 'apiVersion: kind.x-k8s.io/v1alpha4', 'nodes:', ...nodes, ''].join('\n');
}

export interface KindProvider extends pulumi.dynamic.ResourceProvider<KindClusterInputs, KindClusterOutputs> {
  /** Why `name` is not a usable kind cluster name, or undefined when it is. */
  nameProblem(name: unknown): string | undefined;
  /** Runs `kind <args>` with optional stdin; resolves stdout, rejects with kind's stderr. */
  run(args: string[], stdin?: string): Promise<string>;
}

// Serialised into the stack state and run by Pulumi's dynamic-provider host: every method must stand alone
// (require() inside, helpers reached through `this`, nothing captured from this module).
export const kindProvider: KindProvider = {
  nameProblem(name) {
    // Preview passes unknown values as this sentinel; they are checked again once known.
    if (name === '04da6b54-80e4-46f7-96ec-b56ff0331ba9') return undefined;
    if (typeof name !== 'string' || name === '') return 'a kind cluster name is required';
    if (name !== name.toLowerCase()) return `kind cluster names are lowercase: '${name}' (try '${name.toLowerCase()}')`;
    if (!/^[a-z0-9.-]+$/.test(name)) return `'${name}' has characters kind rejects: use only a-z, 0-9, '.' and '-'`;
    if (!/^[a-z0-9](.*[a-z0-9])?$/.test(name))
      return `'${name}' must start and end with a letter or digit (it prefixes node container names)`;
    // Node hostnames are <name>-control-plane / <name>-workerN and must fit in 64 characters; kind warns past 50.
    if (name.length > 50) return `'${name}' is ${name.length} characters; kind cluster names must be at most 50`;
    return undefined;
  },

  run(args, stdin) {
    const { spawn } = require('node:child_process') as typeof import('node:child_process');
    return new Promise((resolve, reject) => {
      const child = spawn('kind', args, { stdio: ['pipe', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      child.on('error', (err: NodeJS.ErrnoException) =>
        reject(
          new Error(
            err.code === 'ENOENT'
              ? 'the kind CLI is not on PATH (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)'
              : `kind ${args.join(' ')}: ${err.message}`,
          ),
        ),
      );
      child.on('close', (code: number | null, signal: string | null) => {
        if (code === 0) resolve(stdout);
        else
          reject(
            new Error(`kind ${args.join(' ')} failed (${signal ?? `exit ${code}`}): ${stderr.trim() || stdout.trim()}`),
          );
      });
      // kind may exit before reading stdin (bad flags); the close handler reports that, not EPIPE.
      child.stdin.on('error', () => undefined);
      child.stdin.end(stdin ?? '');
    });
  },

  async check(_olds, news) {
    const failures: pulumi.dynamic.CheckFailure[] = [];
    const nameProblem = this.nameProblem(news.clusterName);
    if (nameProblem) failures.push({ property: 'clusterName', reason: nameProblem });
    if (news.nodeImage !== undefined && (typeof news.nodeImage !== 'string' || !/^\S+$/.test(news.nodeImage))) {
      failures.push({
        property: 'nodeImage',
        reason: `nodeImage must be an image reference such as kindest/node:v1.33.1, got ${JSON.stringify(news.nodeImage)}`,
      });
    }
    if (typeof news.config !== 'string' || !news.config.includes('kind.x-k8s.io/')) {
      failures.push({
        property: 'config',
        reason: 'config must be a kind Cluster config (apiVersion: kind.x-k8s.io/v1alpha4)',
      });
    }
    return { inputs: news, failures };
  },

  async diff(_id, olds, news) {
    const replaces = (['clusterName', 'nodeImage', 'config'] as const).filter(
      (k) => (olds[k] ?? '') !== (news[k] ?? ''),
    );
    // kind cannot change a running cluster, and one name cannot exist twice: delete first, then create.
    return { changes: replaces.length > 0, replaces, deleteBeforeReplace: true };
  },

  async create(inputs) {
    const name = inputs.clusterName;
    const image = inputs.nodeImage ? ['--image', inputs.nodeImage] : [];
    await this.run(['create', 'cluster', '--name', name, '--wait', '120s', ...image, '--config', '-'], inputs.config);
    const kubeconfig = await this.run(['get', 'kubeconfig', '--name', name]);
    return { id: name, outs: { ...inputs, kubeconfig, context: `kind-${name}` } };
  },

  async read(id, props) {
    // Best effort: a missing kind CLI must not make a refresh forget the cluster.
    let clusters: string[];
    try {
      clusters = (await this.run(['get', 'clusters'])).split('\n').map((s) => s.trim());
    } catch {
      return { id, props };
    }
    if (!clusters.includes(id)) return { id: '', props: {} as KindClusterOutputs };
    const kubeconfig = await this.run(['get', 'kubeconfig', '--name', id]);
    return { id, props: { ...(props as KindClusterOutputs), clusterName: id, kubeconfig, context: `kind-${id}` } };
  },

  async delete(id) {
    await this.run(['delete', 'cluster', '--name', id]);
  },
};

/**
 * How every Kubernetes provider of this program treats ConfigMaps and Secrets: updated in place. The components give
 * them fixed names and roll the pods through checksum annotations; by default the provider would replace one whose
 * data changed, and a fixed-name replacement is delete-before-replace, which also replaces every dependent (adding a
 * key replaced kesd's StatefulSet under the real engine).
 */
export const MUTABLE_CONFIG_OBJECTS = { enableConfigMapMutable: true, enableSecretMutable: true } as const;

type Inputs<T> = { [K in keyof T]: pulumi.Input<T[K]> };

class KindClusterResource extends pulumi.dynamic.Resource {
  declare readonly clusterName: pulumi.Output<string>;
  declare readonly kubeconfig: pulumi.Output<string>;
  declare readonly context: pulumi.Output<string>;

  constructor(name: string, props: Inputs<KindClusterInputs>, opts: pulumi.CustomResourceOptions) {
    super(kindProvider, name, { ...props, kubeconfig: undefined, context: undefined }, opts, 'kind', 'Cluster');
  }
}

export class KindCluster extends pulumi.ComponentResource {
  /** The cluster name, available once the cluster exists. */
  public readonly name: pulumi.Output<string>;
  /** The kubectl context, `kind-<name>`. */
  public readonly context: pulumi.Output<string>;
  /** The admin kubeconfig (secret). */
  public readonly kubeconfig: pulumi.Output<string>;
  /** The Kubernetes provider for this cluster: pass it to every Kubernetes resource. */
  public readonly provider: k8s.Provider;

  constructor(name: string, args: KindClusterArgs, opts?: pulumi.ComponentResourceOptions) {
    super('stateful-kes:index:KindCluster', name, {}, opts);

    const config =
      args.config ??
      pulumi
        .all([args.workers, args.nodeImage])
        .apply(([workers, nodeImage]) => kindConfigYaml({ workers, nodeImage }));
    const cluster = new KindClusterResource(
      `${name}-cluster`,
      { clusterName: args.name, nodeImage: args.nodeImage, config },
      { parent: this, additionalSecretOutputs: ['kubeconfig'] },
    );

    this.name = cluster.clusterName;
    // Derived from the name, so it is known in preview; the kubeconfig is not.
    this.context = cluster.clusterName.apply(kindContext);
    this.kubeconfig = pulumi.secret(cluster.kubeconfig);
    this.provider = new k8s.Provider(
      `${name}-k8s`,
      { kubeconfig: this.kubeconfig, context: this.context, ...MUTABLE_CONFIG_OBJECTS },
      { parent: this },
    );

    this.registerOutputs({ name: this.name, context: this.context, kubeconfig: this.kubeconfig });
  }
}

/**
 * What the Kubernetes provider gets as `kubeconfig` for an existing cluster: inline contents stay as they are,
 * a path gets `~` expanded (the provider reads it), and nothing means the ambient KUBECONFIG / ~/.kube/config.
 */
export function kubeconfigSource(
  value: string | undefined,
  home: string = os.homedir(),
): { path: string } | { contents: string } | undefined {
  if (value === undefined || value.trim() === '') return undefined;
  if (/\n/.test(value.trim()) || /^\s*[{]|^\s*apiVersion:/.test(value)) return { contents: value };
  if (value === '~' || value.startsWith('~/')) return { path: path.join(home, value.slice(1)) };
  return { path: value };
}

/** A Kubernetes provider for a cluster this stack does not create (`cluster.mode: existing`). */
export function existingClusterProvider(
  name: string,
  args: { kubeconfig?: string; context?: string },
  opts?: pulumi.CustomResourceOptions,
): k8s.Provider {
  const source = kubeconfigSource(args.kubeconfig);
  // Inline contents carry credentials; a path does not, and keeping it lets the provider re-read a rotated file.
  const kubeconfig =
    source === undefined ? undefined : 'contents' in source ? pulumi.secret(source.contents) : source.path;
  return new k8s.Provider(name, { kubeconfig, context: args.context, ...MUTABLE_CONFIG_OBJECTS }, opts);
}
