// Pure builders for the parts kesd's and etcd's StatefulSets both have: the disruption budget, the ingress-only
// NetworkPolicy and the data volume claim. The callers say why each takes the values it does.
import type * as pulumi from '@pulumi/pulumi';
import type * as k8s from '@pulumi/kubernetes';

type Labels = Record<string, pulumi.Input<string>>;
type BudgetSpec = k8s.types.input.policy.v1.PodDisruptionBudgetSpec;
type PolicySpec = k8s.types.input.networking.v1.NetworkPolicySpec;
type IngressRule = k8s.types.input.networking.v1.NetworkPolicyIngressRule;
type Peer = k8s.types.input.networking.v1.NetworkPolicyPeer;
type Claim = k8s.types.input.core.v1.PersistentVolumeClaim;

/** A PodDisruptionBudget spec: one of the selected pods may be down at a time. */
export function onePodDownBudget(selector: Labels): BudgetSpec {
  return { maxUnavailable: 1, selector: { matchLabels: selector } };
}

/** A NetworkPolicy spec: the selected pods accept these ingress rules and no other inbound traffic. */
export function ingressOnlyPolicy(selector: Labels, ingress: IngressRule[]): PolicySpec {
  return { podSelector: { matchLabels: selector }, policyTypes: ['Ingress'], ingress };
}

/** An ingress rule: from any of `from`, to one TCP port. */
export function tcpIngressRule(from: Peer[], port: number): IngressRule {
  return { from, ports: [{ protocol: 'TCP', port }] };
}

/** A NetworkPolicy peer: the pods (of the policy's namespace) carrying these labels. */
export function podsLabelled(selector: Labels): Peer {
  return { podSelector: { matchLabels: selector } };
}

/** The StatefulSet's `data` volume claim template; no storageClass means the cluster's default class. */
export function dataClaimTemplate(labels: Labels, storageSize: string, storageClass?: string): Claim {
  return {
    metadata: { name: 'data', labels },
    spec: {
      accessModes: ['ReadWriteOnce'],
      ...(storageClass !== undefined ? { storageClassName: storageClass } : {}),
      resources: { requests: { storage: storageSize } },
    },
  };
}
