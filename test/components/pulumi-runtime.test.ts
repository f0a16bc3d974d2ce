// The program under Pulumi's own Node.js runtime: `@pulumi/pulumi/cmd/run` compiles index.ts with its ts-node from
// the real tsconfig.json and the runtime options of Pulumi.yaml, exactly as `pulumi preview` has it done, then runs it
// against a fake monitor (language-host.ts). The mocks elsewhere import the components through tsx, which compiles
// anything: only this catches a tsconfig Pulumi's compiler refuses (TS5096 at 0e80d6e) or a type error.
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { runLikeLanguageHost, runtimeOptions, type HostRun } from './language-host.ts';
import { REPO, stackConfig } from '../../harness/stack-render.ts';
import { DOCUMENTED_OUTPUTS as OUTPUTS } from '../documented-outputs.ts';

// A second stack on a cluster that already has the operator: an existing cluster, the operator reused.
const existing = {
  ...stackConfig('dev'),
  'stateful-kes:cluster': JSON.stringify({ mode: 'existing', kubeconfig: '~/.kube/config' }),
  'stateful-kes:operator': JSON.stringify({ install: false }),
  'stateful-kes:namespaces': JSON.stringify({ kesd: 'kesd-2', tenant: 'tenant-2' }),
  'stateful-kes:kesd': JSON.stringify({ replicas: 1, image: 'registry.example/kesd:1.0.0' }),
};

let kind: HostRun;
let existingMode: HostRun;
before(async () => {
  [kind, existingMode] = await Promise.all([
    runLikeLanguageHost({ projectDir: REPO, stack: 'dev', config: stackConfig('dev') }),
    runLikeLanguageHost({ projectDir: REPO, stack: 'dev', config: existing }),
  ]);
});

/** What a failed run said, for the assertion message. */
function why(run: HostRun): string {
  return [...run.logs.filter((l) => l.severity !== 'debug').map((l) => `${l.severity}: ${l.message}`), run.stderr].join(
    '\n',
  );
}

test("Pulumi.yaml asks Pulumi's runtime to compile TypeScript itself", () => {
  const options = runtimeOptions(REPO);
  assert.equal(options.typescript, true);
  assert.equal(options.main, '.');
});

test("the program compiles and runs under Pulumi's run entry and ts-node (type-checked), and registers the stack", () => {
  for (const run of [kind, existingMode]) {
    assert.equal(run.code, 0, why(run));
    assert.deepEqual(
      run.logs.filter((l) => l.severity === 'error'),
      [],
      why(run),
    );
    const types = new Set(run.registrations.map((r) => r.type));
    for (const t of [
      'pulumi:pulumi:Stack',
      'stateful-kes:index:Kesd',
      'stateful-kes:index:MinioTenant',
      'kubernetes:minio.min.io/v2:Tenant',
    ]) {
      assert.ok(types.has(t), `${t} was not registered:\n${why(run)}`);
    }
  }
  assert.ok(
    kind.registrations.some((r) => r.type === 'pulumi-nodejs:dynamic/kind:Cluster'),
    'kind mode: the KindCluster dynamic resource',
  );
  assert.ok(
    !existingMode.registrations.some((r) => r.type === 'pulumi-nodejs:dynamic/kind:Cluster'),
    'existing mode: no kind cluster',
  );
});

test('operator.install false installs no operator (no chart, no CRDs or cluster roles to clash on), and the tenant waits only for kesd', () => {
  const tenantDeps = (run: HostRun) =>
    run.registrations
      .find((r) => r.type === 'kubernetes:minio.min.io/v2:Tenant')!
      .dependencies.map((u) => u.split('::').pop());
  assert.ok(kind.registrations.some((r) => r.type === 'kubernetes:helm.sh/v4:Chart'));
  assert.ok(
    tenantDeps(kind).includes('kesd-sts') && tenantDeps(kind).includes('minio-operator-chart'),
    tenantDeps(kind).join(' '),
  );
  for (const t of ['stateful-kes:index:MinioOperator', 'kubernetes:helm.sh/v4:Chart'])
    assert.ok(!existingMode.registrations.some((r) => r.type === t), t);
  assert.ok(tenantDeps(existingMode).includes('kesd-sts'), tenantDeps(existingMode).join(' '));
  const namespaces = existingMode.registrations
    .filter((r) => r.type === 'kubernetes:core/v1:Namespace')
    .map((r) => r.name);
  assert.deepEqual(namespaces.sort(), ['namespaces-kesd', 'namespaces-tenant']);
});

test('every documented output is declared in both cluster modes, and Pulumi warns about none', () => {
  for (const run of [kind, existingMode]) {
    assert.deepEqual(Object.keys(run.stackOutputs ?? {}).sort(), OUTPUTS, why(run));
    assert.deepEqual(
      run.logs.filter((l) => l.severity === 'warning'),
      [],
      why(run),
    );
  }
  assert.deepEqual(existingMode.stackOutputs?.etcdEndpoints, [], 'one replica: an empty list, not a missing key');
  assert.equal(existingMode.stackOutputs?.kubeconfig, null, 'existing cluster: no kubeconfig of ours');
  assert.equal(existingMode.stackOutputs?.kesdServiceAccount, null, 'no upstream: null, not a missing key');
});

test('every Kubernetes resource the program registers names the explicit provider, none the default one', () => {
  for (const run of [kind, existingMode]) {
    const k8s = run.registrations.filter((r) => r.type.startsWith('kubernetes:'));
    assert.ok(k8s.length >= 15, `only ${k8s.length} Kubernetes resources`);
    const providers = new Set(k8s.map((r) => r.provider.split('::').slice(0, 4).join('::')));
    assert.equal(providers.size, 1, [...providers].join(', '));
    const [provider] = providers;
    assert.match(
      provider,
      /^urn:pulumi:dev::stateful-kes::(stateful-kes:index:KindCluster\$)?pulumi:providers:kubernetes::(kind-k8s|cluster)$/,
    );
  }
});
