// Offline validation of a rendered object: built-in kinds with kubernetes-models, the MinIO Tenant against the
// operator's CRD (crd.ts). Shared by the stack tests of every shape.
import { StatefulSet } from 'kubernetes-models/apps/v1';
import { CronJob, Job } from 'kubernetes-models/batch/v1';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { ConfigMap, Namespace, PersistentVolumeClaim, Secret, Service } from 'kubernetes-models/v1';
import { validateTenant } from './crd.ts';
import type { Manifest } from '../../harness/stack-render.ts';

const MODELS: Record<string, (o: any) => { validate(): void }> = {
  'v1/Namespace': (o) => new Namespace(o),
  'v1/Secret': (o) => new Secret(o),
  'v1/ConfigMap': (o) => new ConfigMap(o),
  'v1/Service': (o) => new Service(o),
  'apps/v1/StatefulSet': (o) => new StatefulSet(o),
  'batch/v1/Job': (o) => new Job(o),
  'policy/v1/PodDisruptionBudget': (o) => new PodDisruptionBudget(o),
  'networking.k8s.io/v1/NetworkPolicy': (o) => new NetworkPolicy(o),
  'batch/v1/CronJob': (o) => new CronJob(o),
  'v1/PersistentVolumeClaim': (o) => new PersistentVolumeClaim(o),
};

/** The schema problems of a rendered object; throws for a kind with no schema here. */
export function validateManifest(m: Manifest): string[] {
  const kind = `${m.apiVersion}/${m.kind}`;
  if (kind === 'minio.min.io/v2/Tenant') return validateTenant(m);
  const model = MODELS[kind];
  if (!model) throw new Error(`no schema for ${kind}`);
  try {
    model(m).validate();
    return [];
  } catch (err) {
    return [(err as Error).message];
  }
}
