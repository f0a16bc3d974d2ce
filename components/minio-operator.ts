// The MinIO Operator (its Helm chart, pinned) in its own namespace; the Tenant waits on `chart` for the CRDs.
import * as pulumi from '@pulumi/pulumi';
import * as k8s from '@pulumi/kubernetes';
import { labels } from './contracts';
import { PUBLIC_OPERATOR_REPO, type OperatorChartSource } from './stack-config';

export const OPERATOR_CHART = { chart: 'operator', version: '7.1.1', repo: PUBLIC_OPERATOR_REPO } as const;
// quay.io, not Docker Hub: MinIO stopped publishing community images there, pinned quay tags still pull.
export const OPERATOR_IMAGE = { repository: 'quay.io/minio/operator', tag: 'v7.1.1' } as const;
export const OPERATOR_SIDECAR_IMAGE = 'quay.io/minio/operator-sidecar:v7.0.1';

export interface MinioOperatorArgs {
  /** The namespace to create for the operator. */
  namespace: pulumi.Input<string>;
  /** Operator pods (default 1, see operatorChartValues). */
  replicas?: number;
  /** Where the chart comes from (default: the public repository). It must be the pinned version, 7.1.1. */
  chart?: OperatorChartSource;
  /** The cluster's Kubernetes provider. */
  provider: k8s.Provider;
}

/** The Chart's source arguments: the pinned chart from a Helm repository, or a chart archive as it is. */
export function operatorChartArgs(
  source: OperatorChartSource = { repo: OPERATOR_CHART.repo },
): Pick<k8s.helm.v4.ChartArgs, 'chart' | 'version' | 'repositoryOpts'> {
  // Helm takes a local archive's version from the archive itself; a version would be ignored.
  if ('path' in source) return { chart: source.path };
  return { chart: OPERATOR_CHART.chart, version: OPERATOR_CHART.version, repositoryOpts: { repo: source.repo } };
}

/** The subset of the operator chart's values this stack sets. */
export interface OperatorChartValues {
  operator: {
    image: { repository: string; tag: string; pullPolicy: string };
    replicaCount: number;
    env: { name: string; value: string }[];
  };
}

/** The operator chart's values: pinned images and the replica count. */
export function operatorChartValues(opts: { replicas?: number } = {}): OperatorChartValues {
  // Default 1: the chart's required anti-affinity puts each replica on its own node, so the chart default (2) leaves
  // a Pending pod on a one-worker kind cluster and Pulumi's Deployment await fails the update.
  const replicas = opts.replicas ?? 1;
  if (!Number.isInteger(replicas) || replicas < 1)
    throw new Error(`operator replicas must be a whole number >= 1, got ${replicas}`);
  return {
    operator: {
      image: { ...OPERATOR_IMAGE, pullPolicy: 'IfNotPresent' },
      replicaCount: replicas,
      // Helm replaces lists: this restates the chart's default (STS on) and pins the tenant pods' sidecar image.
      env: [
        { name: 'OPERATOR_STS_ENABLED', value: 'on' },
        { name: 'OPERATOR_SIDECAR_IMAGE', value: OPERATOR_SIDECAR_IMAGE },
      ],
    },
  };
}

export class MinioOperator extends pulumi.ComponentResource {
  /** The operator's namespace. */
  public readonly namespace: pulumi.Output<string>;
  /** The chart: `dependsOn` it before creating a Tenant (it installs the CRDs). */
  public readonly chart: k8s.helm.v4.Chart;

  constructor(name: string, args: MinioOperatorArgs, opts?: pulumi.ComponentResourceOptions) {
    super('stateful-kes:index:MinioOperator', name, {}, opts);
    const provider = args.provider;

    const ns = new k8s.core.v1.Namespace(
      `${name}-namespace`,
      { metadata: { name: args.namespace, labels: labels('minio-operator', 'operator') } },
      { parent: this, provider },
    );

    this.chart = new k8s.helm.v4.Chart(
      `${name}-chart`,
      {
        ...operatorChartArgs(args.chart),
        // A fixed release name, so renaming the Pulumi resource does not relabel the operator's objects.
        name: 'minio-operator',
        namespace: ns.metadata.name,
        values: operatorChartValues({ replicas: args.replicas }),
      },
      { parent: this, provider },
    );

    this.namespace = ns.metadata.name;
    this.registerOutputs({ namespace: this.namespace, chart: this.chart });
  }
}
