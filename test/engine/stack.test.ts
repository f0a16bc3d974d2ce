// The Pulumi program under the real engine: the `pulumi` CLI, its Node.js language host and the real provider plugins,
// against a real Kubernetes API server (test/engine/cluster.ts: a local control plane with kwok's fake nodes, or the
// cluster in $KUBECONFIG). Each step is a test, in order; after a failed step the rest are skipped, and whatever
// was created is destroyed at the end. kwok runs no containers, so `kesd.image` names an image nobody pulls: this
// proves what the engine and the API server check (plans, server-side validation, readiness awaits, outputs,
// state), not kesd or MinIO at run time (the interop suite does that).
import { after, before, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCluster, type Cluster } from './cluster.ts';
import { fakeKind } from './fake-kind.ts';
import { serveHelmRepo, type HelmRepo } from '../helm-repo.ts';
import { nameOf, Project, pulumiEnv, REPO, type PreviewJson, type PreviewStep } from './pulumi.ts';
import { findToolchain } from './toolchain.ts';
import { DOCUMENTED_OUTPUTS as OUTPUTS } from '../documented-outputs.ts';

// kwok pulls nothing; a cluster with real nodes needs a kesd image they can pull (README, "The engine suite").
const IMAGE = process.env.STATEFUL_KES_ENGINE_IMAGE ?? 'localhost/stateful-kes/kesd:engine-suite';
const CHART_ARCHIVE = 'test/fixtures/minio-operator-v7.1.1/operator-7.1.1.tgz';
const DEV = 'engine-dev';
const HA = 'engine-ha';
const KIND = 'engine-kind';
const CONSUMER = 'engine-consumer';
const SECRET_SIG = '4dabf18193072939515e22adb298388d';

const found = findToolchain();
const toolchain = 'missing' in found ? undefined : found;
let work = '';
let cluster: Cluster;
let helmRepo: HelmRepo;
let program: Project;
let consumer: Project;
/** Stacks that may hold resources, destroyed at the end if a step failed before its own destroy. */
const live = new Map<string, () => Promise<unknown>>();
let failedStep: string | undefined;
const timings: [string, number][] = [];
/** The operator chart's objects in the dev stack (from the repository URL), to compare the local archive's with. */
let devChartChildren: string[] = [];

/** A step of the suite: skipped once an earlier one failed, timed for the summary. */
function step(name: string, fn: (t: TestContext) => Promise<void>): void {
  test(name, { timeout: 20 * 60_000 }, async (t) => {
    if (!toolchain)
      return assert.fail(
        `the engine toolchain is incomplete:\n  - ${'missing' in found ? found.missing.join('\n  - ') : ''}`,
      );
    if (failedStep) return t.skip(`skipped: '${failedStep}' failed`);
    const started = Date.now();
    try {
      await fn(t);
    } catch (err) {
      failedStep = name;
      throw err;
    } finally {
      timings.push([name, Date.now() - started]);
    }
  });
}

before(async () => {
  if (!toolchain) return;
  work = await mkdtemp(join(tmpdir(), 'stateful-kes-engine-'));
  console.log(`engine suite: pulumi from ${toolchain.source}; work dir ${work}`);
  const started = Date.now();
  cluster = await startCluster(toolchain, work);
  timings.push([cluster.local ? 'local control plane up' : `cluster from KUBECONFIG`, Date.now() - started]);
  helmRepo = await serveHelmRepo(join(REPO, CHART_ARCHIVE));
  const env = pulumiEnv(toolchain, work);
  program = new Project(REPO, toolchain.pulumi, env, work, join(work, 'pulumi.log'));
  consumer = new Project(join(REPO, 'examples', 'consumer'), toolchain.pulumi, env, work, join(work, 'pulumi.log'));
});

after(async () => {
  if (!toolchain || !work) return;
  // Whatever a failed step left behind, so a user's cluster is not littered.
  for (const destroy of [...live.values()].reverse()) await destroy();
  await helmRepo?.close();
  await cluster?.stop();
  console.log(
    `engine suite: step times\n${timings.map(([n, ms]) => `  ${(ms / 1000).toFixed(1).padStart(6)} s  ${n}`).join('\n')}`,
  );
  if (failedStep) console.log(`engine suite: kept ${work} (logs: pulumi.log, kubectl.log, <process>.log)`);
  else await rm(work, { recursive: true, force: true });
});

/** A stack's config for the suite's cluster: existing mode on its kubeconfig, plus the step's own settings. */
function engineConfig(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    'stateful-kes:cluster': { mode: 'existing', kubeconfig: cluster.kubeconfig },
    ...overrides,
  };
}

/** Warnings about the program: all but the cached toolchain's notes on its ambient plugins and their versions. */
const programWarnings = (json: PreviewJson) =>
  (json.diagnostics ?? [])
    .filter(
      (d) =>
        d.severity === 'warning' &&
        !/using pulumi-resource-\S+ from \$PATH|resource plugin \S+ is expected to have version/.test(d.message),
    )
    .map((d) => d.message.trim());
const changed = (json: PreviewJson) => json.steps.filter((s) => s.op !== 'same');
/** Every planned change: operation, resource name, and the fields the provider reports as different. */
const diffs = (json: PreviewJson) =>
  changed(json)
    .map((s) => [s.op, nameOf(s.urn), Object.keys(s.detailedDiff ?? {}).sort()] as const)
    .sort((a, b) => a[1].localeCompare(b[1]));
const ops = (json: PreviewJson) =>
  json.steps.reduce<Record<string, number>>((acc, s) => {
    acc[s.op] = (acc[s.op] ?? 0) + 1;
    return acc;
  }, {});
const typeOf = (s: PreviewStep) => (s.newState ?? s.oldState)?.type ?? '';

async function readyReplicas(namespace: string, kind: string, name: string): Promise<number> {
  const obj = JSON.parse(await cluster.kubectl(['-n', namespace, 'get', kind, name, '-o', 'json'])) as {
    status?: { readyReplicas?: number };
  };
  return obj.status?.readyReplicas ?? 0;
}

interface StateResource {
  type: string;
  urn: string;
  custom?: boolean;
  provider?: string;
  outputs?: {
    apiVersion?: string;
    kind?: string;
    metadata?: { name?: string; namespace?: string; annotations?: Record<string, string> };
  };
}

async function exportState(project: Project, stack: string): Promise<{ text: string; resources: StateResource[] }> {
  const { stdout } = await project.cli(['stack', 'export'], { stack });
  return {
    text: stdout,
    resources: (JSON.parse(stdout) as { deployment: { resources?: StateResource[] } }).deployment.resources ?? [],
  };
}

/** The Kubernetes objects a stack's state holds (the Chart's children included). */
function k8sObjects(resources: StateResource[]) {
  return resources
    .filter((r) => r.custom && r.type.startsWith('kubernetes:'))
    .map((r) => ({
      apiVersion: r.outputs!.apiVersion!,
      kind: r.outputs!.kind!,
      name: r.outputs!.metadata!.name!,
      namespace: r.outputs!.metadata!.namespace,
    }));
}

// ---- the dev stack ---------------------------------------------------------------------------------------------

step('preview plans the whole dev stack, the operator chart rendered from the Helm repository URL', async () => {
  await program.initStack(
    DEV,
    engineConfig({
      'stateful-kes:kesd': { replicas: 1, storageSize: '1Gi', defaultKey: 'minio-default-key', image: IMAGE },
      'stateful-kes:operator': { chart: helmRepo.url },
    }),
    'Pulumi.dev.yaml',
  );
  live.set(DEV, () => program.cli(['destroy', '--yes', '--skip-preview'], { stack: DEV, allowFailure: true }));
  const { json } = await program.preview(DEV);
  assert.deepEqual(Object.keys(ops(json)), ['create'], JSON.stringify(ops(json)));
  const names = json.steps.map((s) => `${typeOf(s)} ${nameOf(s.urn)}`);
  for (const expected of [
    // The chart's children, named <chart>:<namespace>/<name>: the cluster-wide ones two stacks would clash on.
    'kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition minio-operator-chart:tenants.minio.min.io',
    'kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition minio-operator-chart:policybindings.sts.min.io',
    'kubernetes:rbac.authorization.k8s.io/v1:ClusterRole minio-operator-chart:minio-operator-role',
    'kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding minio-operator-chart:minio-operator-binding',
    'kubernetes:apps/v1:Deployment minio-operator-chart:minio-operator/minio-operator',
    'kubernetes:apps/v1:StatefulSet kesd-sts',
    'kubernetes:minio.min.io/v2:Tenant minio-tenant-tenant',
    'kubernetes:batch/v1:Job buckets-job',
  ])
    assert.ok(names.includes(expected), `not planned: ${expected}\n${names.join('\n')}`);
  assert.ok(
    helmRepo.requests.some((r) => r.startsWith('GET /operator-7.1.1.tgz')),
    `the provider fetched the chart from the repository: ${helmRepo.requests.join(', ')}`,
  );
  assert.deepEqual(
    (json.diagnostics ?? []).filter((d) => d.severity === 'error'),
    [],
  );
  // E.g. 'Undefined value (etcdEndpoints) will not show as a stack output', as at 0e80d6e.
  assert.deepEqual(programWarnings(json), []);
  console.log(`preview: ${json.steps.length} steps, ${JSON.stringify(ops(json))}`);
});

step(
  'up creates everything and awaits readiness (no skipAwait): kesd, the operator and the bucket Job are ready',
  async () => {
    const { ms } = await program.cli(['up', '--yes', '--skip-preview'], { stack: DEV });
    console.log(`up: ${(ms / 1000).toFixed(1)} s`);
    // Read right after `up` returned: ready only if Pulumi waited for it.
    assert.equal(await readyReplicas('kesd', 'statefulset', 'kesd'), 1);
    assert.equal(await readyReplicas('minio-operator', 'deployment', 'minio-operator'), 1);
    const jobs = JSON.parse(await cluster.kubectl(['-n', 'tenant-1', 'get', 'jobs', '-o', 'json'])) as {
      items: { status: { succeeded?: number } }[];
    };
    assert.deepEqual(
      jobs.items.map((j) => j.status.succeeded),
      [1],
    );
    await cluster.kubectl(['-n', 'tenant-1', 'get', 'tenants.minio.min.io', 'myminio']);
    const { resources } = await exportState(program, DEV);
    const skipAwait = resources
      .filter((r) => r.outputs?.metadata?.annotations?.['pulumi.com/skipAwait'] !== undefined)
      .map((r) => r.urn);
    assert.deepEqual(skipAwait, []);
  },
);

step('a second preview is clean: preview --expect-no-changes', async () => {
  const { json } = await program.preview(DEV, ['--expect-no-changes']);
  assert.deepEqual(
    changed(json).map((s) => `${s.op} ${s.urn}`),
    [],
  );
});

step(
  'a key and a bucket change exactly the init ConfigMap, kesd pod template checksum, and the bucket Job',
  async () => {
    await program.setConfig(DEV, 'stateful-kes:keys[0]', 'engine-key');
    await program.setConfig(DEV, 'stateful-kes:buckets[1].name', 'engine-bucket');
    await program.setConfig(DEV, 'stateful-kes:buckets[1].key', 'engine-key');
    const text = await program.cli(['preview', '--diff'], { stack: DEV });
    console.log(`--- pulumi preview --diff (keys += engine-key, buckets += engine-bucket)\n${text.stdout}`);
    const { json } = await program.preview(DEV);
    // The key reaches kesd through init.yml (in place: the ConfigMap is updated, the pod template's checksum rolls the
    // pod); the bucket through the Job's script, and a Job's pod template is immutable: a new Job replaces it.
    assert.deepEqual(diffs(json), [
      ['replace', 'buckets-job', ['spec.template.spec.containers[0].command[2]']],
      ['update', 'kesd-init', ['data["init.yml"]']],
      ['update', 'kesd-sts', ['spec.template.metadata.annotations.checksum/init']],
    ]);
    await program.cli(['up', '--yes', '--skip-preview'], { stack: DEV });
  },
);

step('kesd.cpu 2 changes only the kesd StatefulSet: CPU and memory limits, memory request, --workers 2', async () => {
  await program.setConfig(DEV, 'stateful-kes:kesd.cpu', '2');
  const text = await program.cli(['preview', '--diff'], { stack: DEV });
  console.log(`--- pulumi preview --diff (kesd.cpu 1 -> 2)\n${text.stdout}`);
  const { json } = await program.preview(DEV);
  const container = 'spec.template.spec.containers[0]';
  assert.deepEqual(diffs(json), [
    [
      'update',
      'kesd-sts',
      [
        `${container}.args[7]` /* --workers N */,
        `${container}.resources.limits.cpu`,
        `${container}.resources.limits.memory`,
        `${container}.resources.requests.memory`,
      ],
    ],
  ]);
  await program.cli(['up', '--yes', '--skip-preview'], { stack: DEV });
  assert.equal(await readyReplicas('kesd', 'statefulset', 'kesd'), 1);
  const { json: again } = await program.preview(DEV, ['--expect-no-changes']);
  assert.deepEqual(
    changed(again).map((s) => `${s.op} ${s.urn}`),
    [],
  );
});

step('stack outputs: every documented name, secrets stay secret (in the output and in the state)', async () => {
  const shown = JSON.parse((await program.cli(['stack', 'output', '--json'], { stack: DEV })).stdout) as Record<
    string,
    unknown
  >;
  assert.deepEqual(Object.keys(shown).sort(), OUTPUTS);
  for (const k of ['rootPassword', 'enclaveAdminKey']) assert.equal(shown[k], '[secret]', k);
  const real = JSON.parse(
    (await program.cli(['stack', 'output', '--json', '--show-secrets'], { stack: DEV })).stdout,
  ) as Record<string, any>;
  assert.equal(real.s3Endpoint, 'https://minio.tenant-1.svc.cluster.local');
  assert.equal(real.kesdEndpoint, 'https://kesd.kesd.svc.cluster.local:7373');
  assert.deepEqual(real.etcdEndpoints, [], 'one replica: no etcd');
  assert.equal(real.kubeconfig, null, 'an existing cluster: no kubeconfig of ours');
  assert.equal(real.kesdServiceAccount, null, 'no upstream: no ServiceAccount for Vault to bind');
  assert.match(real.enclaveAdminKey, /BEGIN PRIVATE KEY/);
  assert.ok(real.rootPassword.length >= 16);
  const { text } = await exportState(program, DEV);
  for (const k of ['rootPassword', 'enclaveAdminKey'])
    assert.ok(!text.includes(JSON.stringify(real[k]).slice(1, -1)), `${k} in plain text in the state`);
  assert.ok(text.includes(SECRET_SIG));
});

step(
  'nothing resolves to a default Kubernetes provider: every object, the Chart children included, uses the stack provider',
  async () => {
    const { resources } = await exportState(program, DEV);
    const providers = resources.filter((r) => r.type === 'pulumi:providers:kubernetes').map((r) => nameOf(r.urn));
    assert.deepEqual(providers, ['cluster']);
    const objects = resources.filter((r) => r.custom && r.type.startsWith('kubernetes:'));
    const children = objects.filter((r) => r.urn.includes('kubernetes:helm.sh/v4:Chart$'));
    assert.ok(children.length >= 8, `only ${children.length} chart children`);
    for (const r of objects) assert.match(r.provider ?? '', /::pulumi:providers:kubernetes::cluster::/, r.urn);
    devChartChildren = children.map((r) => `${r.type} ${nameOf(r.urn)}`).sort();
  },
);

step(
  'a consumer stack (examples/consumer) reads the outputs through a StackReference; secrets stay secret there',
  async () => {
    await consumer.initStack(CONSUMER, { 'stateful-kes-consumer:producer': `organization/stateful-kes/${DEV}` });
    live.set(CONSUMER, () =>
      consumer.cli(['destroy', '--yes', '--skip-preview'], { stack: CONSUMER, allowFailure: true }),
    );
    await consumer.cli(['up', '--yes', '--skip-preview'], { stack: CONSUMER });
    const shown = JSON.parse((await consumer.cli(['stack', 'output', '--json'], { stack: CONSUMER })).stdout) as Record<
      string,
      unknown
    >;
    assert.equal(shown.rootPassword, '[secret]');
    const real = JSON.parse(
      (await consumer.cli(['stack', 'output', '--json', '--show-secrets'], { stack: CONSUMER })).stdout,
    ) as Record<string, unknown>;
    const producer = JSON.parse(
      (await program.cli(['stack', 'output', '--json', '--show-secrets'], { stack: DEV })).stdout,
    ) as Record<string, unknown>;
    for (const k of ['s3Endpoint', 'tenantNamespace', 'defaultKey', 'kesdEndpoint', 'rootUser', 'rootPassword'])
      assert.equal(real[k], producer[k], k);
    assert.equal(real.etcdMembers, 0);
    assert.equal(real.producerOwnsCluster, false);
    assert.match(String(real.kesdCaSha256), /^[0-9a-f]{64}$/);
  },
);

step('refresh finds no drift, and a preview after it is still clean', async () => {
  await program.cli(['refresh', '--yes', '--skip-preview', '--expect-no-changes'], { stack: DEV });
  const { json } = await program.preview(DEV, ['--expect-no-changes']);
  assert.deepEqual(
    changed(json).map((s) => `${s.op} ${s.urn}`),
    [],
  );
});

// ---- the HA stack, beside the dev stack on the same cluster ------------------------------------------------------

step(
  'the HA stack (Pulumi.ha.yaml) goes up beside dev on the same cluster, reusing its operator (operator.install false)',
  async () => {
    await program.initStack(
      HA,
      engineConfig({
        'stateful-kes:kesd': { replicas: 3, cpu: '1', defaultKey: 'minio-default-key', image: IMAGE },
        'stateful-kes:operator': { install: false },
        'stateful-kes:namespaces': { kesd: 'kesd-ha', tenant: 'tenant-ha' },
      }),
      'Pulumi.ha.yaml',
    );
    live.set(HA, () => program.cli(['destroy', '--yes', '--skip-preview'], { stack: HA, allowFailure: true }));
    await program.cli(['up', '--yes', '--skip-preview'], { stack: HA });
    assert.equal(await readyReplicas('kesd-ha', 'statefulset', 'etcd'), 3);
    assert.equal(await readyReplicas('kesd-ha', 'statefulset', 'kesd'), 3);
    const outputs = JSON.parse((await program.cli(['stack', 'output', '--json'], { stack: HA })).stdout) as Record<
      string,
      unknown
    >;
    assert.equal((outputs.etcdEndpoints as string[]).length, 3);
    assert.equal(outputs.kesdMinioEndpoint, 'https://kesd-{0...2}.kesd-hl.kesd-ha.svc.cluster.local:7373');
    const types = new Set((await exportState(program, HA)).resources.map((r) => r.type));
    for (const t of [
      'kubernetes:helm.sh/v4:Chart',
      'kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition',
      'kubernetes:rbac.authorization.k8s.io/v1:ClusterRole',
    ])
      assert.ok(!types.has(t), t);
    const { json } = await program.preview(HA, ['--expect-no-changes']);
    assert.deepEqual(
      changed(json).map((s) => `${s.op} ${s.urn}`),
      [],
    );
  },
);

// ---- destroy ---------------------------------------------------------------------------------------------------

step('destroy leaves no object of the stacks in the cluster (checked on the API server)', async () => {
  const objects = [
    ...k8sObjects((await exportState(program, HA)).resources),
    ...k8sObjects((await exportState(program, DEV)).resources),
  ];
  assert.ok(
    objects.some((o) => o.kind === 'CustomResourceDefinition') && objects.some((o) => o.kind === 'ClusterRole'),
  );
  // Asks the API server for objects by apiVersion, kind and name; a kind it no longer serves went with its CRD.
  const lookUp = async (list: typeof objects) => {
    const served = new Set(
      (await cluster.kubectl(['api-resources', '--no-headers']))
        .split('\n')
        .filter(Boolean)
        .map((line) => {
          const cols = line.trim().split(/\s+/);
          return `${cols.at(-3)} ${cols.at(-1)}`;
        }),
    );
    const asked = list.filter((o) => served.has(`${o.apiVersion} ${o.kind}`));
    const items = asked.map((o) => ({
      apiVersion: o.apiVersion,
      kind: o.kind,
      metadata: { name: o.name, ...(o.namespace ? { namespace: o.namespace } : {}) },
    }));
    const found = (
      await cluster.kubectl(
        ['get', '-f', '-', '--ignore-not-found', '-o', 'name'],
        JSON.stringify({ apiVersion: 'v1', kind: 'List', items }),
      )
    )
      .split('\n')
      .filter(Boolean);
    return { found, unserved: list.filter((o) => !asked.includes(o)) };
  };
  const before = await lookUp(objects);
  assert.equal(before.found.length, objects.length, 'the look-up finds every object while the stacks exist');
  for (const [project, stack] of [
    [consumer, CONSUMER],
    [program, HA],
    [program, DEV],
  ] as const) {
    await project.cli(['destroy', '--yes', '--skip-preview'], { stack });
    live.delete(stack);
  }
  const after_ = await lookUp(objects);
  assert.deepEqual(after_.found, []);
  assert.deepEqual(
    [...new Set(after_.unserved.map((o) => o.kind))],
    ['Tenant'],
    'only the Tenants went with their CRD',
  );
  const labelled = await cluster.kubectl([
    'get',
    'all,configmaps,secrets,pvc,networkpolicies,poddisruptionbudgets,namespaces',
    '-A',
    '-l',
    'app.kubernetes.io/part-of=stateful-kes',
    '-o',
    'name',
  ]);
  assert.equal(labelled.trim(), '');
  console.log(`destroy: all ${objects.length} objects of the stacks' state were on the API server before, none after`);
});

// ---- kind mode -------------------------------------------------------------------------------------------------

step(
  'kind mode with a fake kind on PATH (no Docker engine here): the dynamic provider creates, refreshes and destroys; the chart from a local .tgz',
  async () => {
    const kind = fakeKind(join(work, 'fake-kind'), cluster.kubeconfig, 'engine-kind');
    const opts = { stack: KIND, prependPath: kind.bin };
    await program.initStack(
      KIND,
      {
        'stateful-kes:cluster': { mode: 'kind', name: 'engine-kind', workers: 2 },
        'stateful-kes:kesd': { replicas: 1, defaultKey: 'minio-default-key', image: IMAGE },
        // Relative to the project directory: the provider resolves it there.
        'stateful-kes:operator': { chart: CHART_ARCHIVE },
      },
      'Pulumi.dev.yaml',
    );
    live.set(KIND, () => program.cli(['destroy', '--yes', '--skip-preview'], { ...opts, allowFailure: true }));
    const component = `urn:pulumi:${KIND}::stateful-kes::stateful-kes:index:KindCluster::kind`;
    const dynamic = `urn:pulumi:${KIND}::stateful-kes::stateful-kes:index:KindCluster$pulumi-nodejs:dynamic/kind:Cluster::kind-cluster`;
    await program.cli(['up', '--yes', '--skip-preview', '--target', component, '--target', dynamic], opts);
    assert.deepEqual(kind.calls(), [
      'create cluster --name engine-kind --wait 120s --config -',
      'get kubeconfig --name engine-kind',
    ]);
    assert.equal((kind.clusterConfig('engine-kind')?.match(/role: worker/g) ?? []).length, 2);
    const kindResource = (await exportState(program, KIND)).resources.find((r) => r.urn === dynamic);
    assert.ok(kindResource, 'the kind cluster is in the state');
    assert.ok(
      JSON.stringify((kindResource.outputs as Record<string, unknown>).kubeconfig).includes(SECRET_SIG),
      'its kubeconfig is a secret',
    );

    // With the cluster's kubeconfig known, the provider renders the operator chart from the archive for the plan.
    const { json } = await program.preview(KIND, [], kind.bin);
    const children = json.steps
      .filter((s) => s.urn.includes('kubernetes:helm.sh/v4:Chart$'))
      .map((s) => `${typeOf(s)} ${nameOf(s.urn)}`)
      .sort();
    assert.deepEqual(children, devChartChildren, 'the archive renders the same objects as the repository chart');
    assert.deepEqual(programWarnings(json), [], 'kind mode declares every output too');
    for (const s of json.steps.filter((x) => x.newState?.custom && x.newState.type.startsWith('kubernetes:')))
      assert.match(s.newState?.provider ?? '', /KindCluster\$pulumi:providers:kubernetes::kind-k8s::/, s.urn);

    await program.cli(['refresh', '--yes', '--skip-preview'], opts);
    assert.deepEqual(kind.calls().slice(2), ['get clusters', 'get kubeconfig --name engine-kind']);
    await program.cli(['destroy', '--yes', '--skip-preview'], opts);
    live.delete(KIND);
    assert.deepEqual(kind.calls().slice(4), ['delete cluster --name engine-kind']);
    assert.equal(kind.clusterConfig('engine-kind'), undefined);
  },
);
