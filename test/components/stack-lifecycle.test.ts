// The dev stack with the key-lifecycle settings on, under mocks: an unseal key rotation in progress
// (kesd.unsealKeyGeneration 1: kesd mounts the previous key and init.yml names it as unseal.previous) and the backup
// CronJob (kesd.backup: an identity of its own that kesd's init.yml lets take backups, through kesd's
// NetworkPolicy, into a PVC of its own). Both are off in the dev and ha stacks (stack.test.ts counts their objects).
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { parse } from 'yaml';
import { parseInitConfig } from '../../kesd/src/config/config.js';
import { kesIdentity } from '../../components/kes-identity.ts';
import { KESD_ADMIN_LABELS } from '../../components/kesd.ts';
import { validateManifest } from './k8s-validate.ts';
import { countByKind, renderStack, stackConfig, type Manifest, type Render } from '../../harness/stack-render.ts';

let render: Render;
before(async () => {
  const config = stackConfig('dev');
  const kesd = {
    ...JSON.parse(config['stateful-kes:kesd'] ?? '{}'),
    unsealKeyGeneration: 1,
    backup: { schedule: '15 2 * * *', keep: 5, storageSize: '2Gi' },
  };
  render = await renderStack({ config: { ...config, 'stateful-kes:kesd': JSON.stringify(kesd) } });
});

const find = (kind: string, name: string): any => {
  const found = render.manifests.filter((m) => m.kind === kind && m.metadata.name === name);
  assert.equal(found.length, 1, `one ${kind} ${name}`);
  return found[0] as Manifest;
};
const pod = () => find('StatefulSet', 'kesd').spec.template.spec;
const initYml = () => find('ConfigMap', 'kesd-init').data['init.yml'] as string;

test('the objects: the dev stack plus a second unseal key Secret, the backup CronJob, its PVC and its client Secret', () => {
  assert.deepEqual(countByKind(render), {
    'apps/v1/StatefulSet': 1,
    'batch/v1/CronJob': 1,
    'batch/v1/Job': 1,
    'helm.sh/v4 Chart (remote)': 1,
    'minio.min.io/v2/Tenant': 1,
    'networking.k8s.io/v1/NetworkPolicy': 1,
    'policy/v1/PodDisruptionBudget': 1,
    'v1/ConfigMap': 1,
    'v1/Namespace': 3,
    'v1/PersistentVolumeClaim': 1,
    'v1/Secret': 8,
    'v1/Service': 2,
  });
  for (const m of render.manifests) assert.deepEqual(validateManifest(m), [], `${m.kind} ${m.metadata.name}`);
});

test("rotation: kesd mounts generation 1 as its key and generation 0 as unseal.previous, which kesd's own parser reads", () => {
  const volumes = Object.fromEntries(
    pod().volumes.map((v: { name: string; secret?: { secretName: string } }) => [v.name, v.secret?.secretName]),
  );
  assert.equal(volumes.unseal, 'kesd-unseal-key-g1');
  assert.equal(volumes['unseal-previous'], 'kesd-unseal-key');
  const mounts = Object.fromEntries(
    pod().containers[0].volumeMounts.map((m: { name: string; mountPath: string }) => [m.name, m.mountPath]),
  );
  const init = parseInitConfig(initYml(), {});
  assert.equal(init.unsealFile, `${mounts.unseal}/key`);
  assert.deepEqual(init.unsealPrevious, { file: `${mounts['unseal-previous']}/key` });
  for (const name of ['kesd-unseal-key', 'kesd-unseal-key-g1'])
    assert.equal(find('Secret', name).metadata.namespace, 'kesd');
});

test("backup: the job's identity is the one kesd lets take backups, and the job reaches kesd through its NetworkPolicy", () => {
  const cron = find('CronJob', 'kesd-backup');
  assert.equal(cron.spec.schedule, '15 2 * * *');
  assert.equal(cron.spec.concurrencyPolicy, 'Forbid');
  const job = cron.spec.jobTemplate.spec.template;
  const container = job.spec.containers[0];
  assert.equal(container.image, pod().containers[0].image, 'the job runs the kesd image');
  assert.deepEqual(container.args, [
    'backup',
    '--server',
    'https://kesd.kesd.svc.cluster.local:7373',
    '--keep',
    '5',
    '/backups',
  ]);
  const env = Object.fromEntries(container.env.map((e: { name: string; value: string }) => [e.name, e.value]));
  const client = find('Secret', 'kesd-backup-client');
  const clientMount = container.volumeMounts.find((m: { name: string }) => m.name === 'client').mountPath;
  assert.deepEqual(env, {
    KES_CLIENT_CERT: `${clientMount}/tls.crt`,
    KES_CLIENT_KEY: `${clientMount}/tls.key`,
    KES_CA: `${clientMount}/ca.crt`,
  });
  const identity = kesIdentity(client.stringData['tls.crt']);
  assert.deepEqual(parseInitConfig(initYml(), {}).backupIdentities, [identity]);
  assert.notEqual(identity, (render.outputs as any).identitiesHex.sysadmin, 'not the system admin');
  assert.equal(
    new X509Certificate(client.stringData['ca.crt']).subject,
    new X509Certificate(find('Secret', 'kesd-tls').stringData['ca.crt']).subject,
    'it verifies kesd with the stack CA',
  );
  // kesd's NetworkPolicy admits pods with the admin labels: the job's pods carry them.
  for (const [k, v] of Object.entries(KESD_ADMIN_LABELS)) assert.equal(job.metadata.labels[k], v);
  const from = find('NetworkPolicy', 'kesd').spec.ingress[0].from;
  assert.ok(
    from.some(
      (f: { podSelector?: { matchLabels: Record<string, string> } }) =>
        JSON.stringify(f.podSelector?.matchLabels) === JSON.stringify(KESD_ADMIN_LABELS),
    ),
  );
  // Restricted like kesd, into its own PVC.
  assert.equal(job.spec.securityContext.runAsNonRoot, true);
  assert.equal(container.securityContext.readOnlyRootFilesystem, true);
  const backups = job.spec.volumes.find((v: { name: string }) => v.name === 'backups');
  assert.equal(
    find('PersistentVolumeClaim', backups.persistentVolumeClaim.claimName).spec.resources.requests.storage,
    '2Gi',
  );
  assert.equal(parse(initYml()).system.backup.identities.length, 1);
});
