// kesd logs in to a real Vault with the Kubernetes auth method, as the Pulumi program sets it up: a ServiceAccount
// token projected for Vault's audience, which Vault checks with a real Kubernetes API server's TokenReview (as a
// reviewer account bound to system:auth-delegator). A token of another account is refused, and kesd says so in its
// status while its keys stay queued. Needs a kube-apiserver binary (harness/kube-apiserver.ts); skipped, saying why,
// when there is none.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { parseKesStoredKey } from '../../kesd/src/kes/stored-key.js';
import { makeIdentity, type TestIdentity } from '../kesd/harness.js';
import { kesd as kesdCli } from '../kesd/cli-process.js';
import { agentFor, call, startKesd, type KesdProcess } from '../kesd/load.js';
import { sleep, tail } from '../../harness/minio-stack.js';
import { enableKv, kvPolicy, startVault, type VaultServer } from '../../harness/vault.js';
import { KUBE_APISERVER_SKIP, startKubeApiServer, type KubeApiServer } from '../../harness/kube-apiserver.js';

let dir: string;
let kube: KubeApiServer | undefined;
let vault: VaultServer | undefined;
let server: KesdProcess | undefined;
let ids: Record<'server' | 'sysadmin' | 'admin', TestIdentity>;
let env: NodeJS.ProcessEnv;
const tokenFile = () => join(dir, 'token', 'token');

before(async () => {
  if (KUBE_APISERVER_SKIP) return;
  dir = await mkdtemp(join(tmpdir(), 'kesd-k8s-auth-'));
  [kube, vault] = await Promise.all([startKubeApiServer(), startVault({ tls: true })]);
  await enableKv(vault, 'kv2', 'v2');
  await vault.call('PUT', 'sys/policy/kesd', { policy: kvPolicy('kv2', 'kesd', 'v2') });
  await vault.call('POST', 'sys/auth/kubernetes', { type: 'kubernetes' });
  // Vault outside the cluster reviews login tokens with a reviewer account's token (for the API server's own audience),
  // bound to system:auth-delegator: the usual set-up when Vault does not run in the cluster.
  const binding = await kube.call('POST', '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings', {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'ClusterRoleBinding',
    metadata: { name: 'vault-tokenreview' },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'system:auth-delegator' },
    subjects: [{ kind: 'ServiceAccount', name: 'vault-reviewer', namespace: 'vault' }],
  });
  assert.equal(binding.status, 201, JSON.stringify(binding.body));
  const reviewer = await kube.serviceAccountToken('vault', 'vault-reviewer', kube.issuer);
  await vault.call('POST', 'auth/kubernetes/config', {
    kubernetes_host: kube.url,
    kubernetes_ca_cert: kube.caPem,
    token_reviewer_jwt: reviewer,
    disable_local_ca_jwt: true,
  });
  await vault.call('POST', 'auth/kubernetes/role/kesd', {
    bound_service_account_names: ['kesd'],
    bound_service_account_namespaces: ['kesd'],
    audience: 'vault',
    token_policies: ['kesd'],
    token_ttl: '1h',
  });
  ids = {
    server: await makeIdentity(dir, 'server', 'p256', { ips: ['127.0.0.1'] }),
    sysadmin: await makeIdentity(dir, 'sysadmin'),
    admin: await makeIdentity(dir, 'admin'),
  };
  await mkdir(join(dir, 'token'));
  await writeFile(tokenFile(), await kube.serviceAccountToken('kesd', 'kesd', 'vault'), { mode: 0o600 });
  env = { ...process.env, KESD_K8S_UNSEAL: randomBytes(32).toString('base64') };
  await writeFile(
    join(dir, 'init.yml'),
    stringify({
      version: 'v1',
      system: { admin: { identity: ids.sysadmin.identity } },
      tls: { key: ids.server.keyFile, cert: ids.server.certFile },
      unseal: { environment: { name: 'KESD_K8S_UNSEAL' } },
      enclave: { default: { admin: { identity: ids.admin.identity }, keys: [{ name: 'declared' }] } },
      upstream: {
        vault: {
          endpoint: vault.addr,
          engine: 'kv2',
          version: 'v2',
          prefix: 'kesd',
          kubernetes: { role: 'kesd', jwt: tokenFile() },
          tls: { ca: vault.caFile },
        },
      },
    }),
  );
});

after(async () => {
  await server?.stop();
  await vault?.remove();
  await kube?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function status(): Promise<any> {
  const agent = agentFor(ids.sysadmin);
  try {
    return (await call(agent, server!.port, 'GET', '/v1/status')).json().upstream;
  } finally {
    agent.destroy();
  }
}

async function until(what: string, check: () => Promise<boolean>, ms = 120_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end)
      throw new Error(
        `timed out waiting for ${what}\n--- kesd ---\n${server?.output()}\n--- vault ---\n${vault ? tail(vault.log, 20) : ''}`,
      );
    await sleep(200);
  }
}

test('kesd logs in with its ServiceAccount token (checked by a real TokenReview) and syncs its keys', {
  skip: KUBE_APISERVER_SKIP,
}, async () => {
  // kesd init takes Vault's (no) keys first: the login already works here.
  const init = await kesdCli(['init', '--config', join(dir, 'init.yml'), join(dir, 'data')], { env });
  assert.equal(init.code, 0, init.stdout + init.stderr);
  server = await startKesd(join(dir, 'data'), env, ['--addr', '127.0.0.1:0', '--audit-log', 'off', '--workers', '1']);
  const agent = agentFor(ids.admin);
  assert.equal((await call(agent, server.port, 'POST', '/v1/key/create/k8s-made')).status, 200);
  agent.destroy();
  await until('both keys in Vault', async () => {
    const s = await status();
    return s.backlog === 0 && s.reachable;
  });
  for (const name of ['declared', 'k8s-made']) {
    const entry = (await vault!.call('GET', `kv2/data/kesd/${name}?version=1`)).body.data.data;
    assert.equal(parseKesStoredKey(Buffer.from(entry[name])).bytes.length, 32, name);
  }
});

test("another account's token is refused by Vault's role: kesd reports it and keeps the change queued; the right token heals it", {
  skip: KUBE_APISERVER_SKIP,
}, async () => {
  await server!.stop();
  await writeFile(tokenFile(), await kube!.serviceAccountToken('kesd', 'other', 'vault'));
  server = await startKesd(join(dir, 'data'), env, ['--addr', '127.0.0.1:0', '--audit-log', 'off', '--workers', '1']);
  const agent = agentFor(ids.admin);
  assert.equal(
    (await call(agent, server.port, 'POST', '/v1/key/create/while-refused')).status,
    200,
    'the create does not wait for Vault',
  );
  agent.destroy();
  await until('the refusal in the status', async () => {
    const s = await status();
    return s.reachable === false && /Kubernetes login/.test(s.last_error ?? '');
  });
  const s = await status();
  assert.equal(s.backlog, 1);
  assert.match(s.last_error, /service account name not authorized|permission denied/);
  assert.doesNotMatch(s.last_error, /eyJ/, 'no token in the message');
  // The kubelet rotates the projected token: kesd reads the file again at its next login.
  await writeFile(tokenFile(), await kube!.serviceAccountToken('kesd', 'kesd', 'vault'));
  await until('the queued key in Vault', async () => (await status()).backlog === 0);
  assert.equal((await vault!.call('GET', 'kv2/data/kesd/while-refused?version=1')).status, 200);
});
