// What an application needs from the stateful-kes stack to use MinIO with SSE-KMS, read through a StackReference.
// requireOutput fails the preview if the producer stops exporting a name: the outputs are this stack's contract.
import { createHash } from 'node:crypto';
import * as pulumi from '@pulumi/pulumi';

const producer = new pulumi.StackReference('producer', { name: new pulumi.Config().require('producer') });

export const s3Endpoint = producer.requireOutput('s3Endpoint');
export const tenantNamespace = producer.requireOutput('tenantNamespace');
/** The key MinIO encrypts new objects under unless a bucket names its own. */
export const defaultKey = producer.requireOutput('defaultKey');
export const kesdEndpoint = producer.requireOutput('kesdEndpoint');
/** Pin kesd's CA by its fingerprint rather than copying the PEM around. */
export const kesdCaSha256 = producer
  .requireOutput('kesdCaCert')
  .apply((pem: string) => createHash('sha256').update(pem).digest('hex'));
/** 0 when kesd keeps its keys on its own volume, the etcd member count with several replicas. */
export const etcdMembers = producer.requireOutput('etcdEndpoints').apply((endpoints: string[]) => endpoints.length);
/** Whether the producer created its cluster (kind) and can hand out a kubeconfig; false for an existing cluster. */
export const producerOwnsCluster = producer
  .requireOutput('kubeconfig')
  .apply((kubeconfig: string | null) => kubeconfig !== null);
export const rootUser = producer.requireOutput('rootUser');
/** Secret in the producer, so secret here too: StackReference keeps the flag. */
export const rootPassword = producer.requireOutput('rootPassword');
