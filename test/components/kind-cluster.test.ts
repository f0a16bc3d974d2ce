// KindCluster: the dynamic provider is called directly against a fake `kind` (no Docker here, so no real kind
// cluster can exist), kindConfigYaml is checked as data, and the component is checked under Pulumi mocks.
import { test, describe, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import { parse } from 'yaml';
import {
  setupMocks,
  onResource,
  recorded,
  byType,
  outputValue,
  isSecret,
  unsecret,
  lineage,
  recordLineage,
} from '../../harness/pulumi-mocks.ts';

await setupMocks();
const { KindCluster, kindProvider, kindConfigYaml, kubeconfigSource, existingClusterProvider } = await import(
  '../../components/kind-cluster.ts'
);

// Regression (engine suite): with the provider's default, a changed ConfigMap or Secret of a fixed name is replaced
// delete-before-replace, and its dependents with it; both providers update them in place instead.
const MUTABLE = { enableConfigMapMutable: 'true', enableSecretMutable: 'true' };

const FAKE_KUBECONFIG = (name: string) => `apiVersion: v1\nkind: Config\ncurrent-context: kind-${name}\n`;

// The fake logs each call as <n>.argv (one argument per line) and <n>.stdin, and fails for names containing 'fail'.
const FAKE_KIND = `#!/bin/sh
n=$(ls "$FAKE_KIND_LOG" | grep -c '[.]argv$')
for a in "$@"; do printf '%s\\n' "$a"; done > "$FAKE_KIND_LOG/$n.argv"
cat > "$FAKE_KIND_LOG/$n.stdin"
case "$*" in
  *fail*) echo "ERROR: failed to create cluster: command \\"docker run\\" failed with error: exit status 125" >&2; exit 1 ;;
esac
case "$1 $2" in
  "get kubeconfig") printf 'apiVersion: v1\\nkind: Config\\ncurrent-context: kind-%s\\n' "$4" ;;
  "get clusters") for c in $FAKE_KIND_CLUSTERS; do echo "$c"; done ;;
esac
exit 0
`;

let binDir: string;
let logDir: string;
const originalPath = process.env.PATH;

interface Call {
  argv: string[];
  stdin: string;
}

function calls(): Call[] {
  const n = fs.readdirSync(logDir).filter((f) => f.endsWith('.argv')).length;
  return Array.from({ length: n }, (_, i) => ({
    argv: fs
      .readFileSync(path.join(logDir, `${i}.argv`), 'utf8')
      .split('\n')
      .slice(0, -1),
    stdin: fs.readFileSync(path.join(logDir, `${i}.stdin`), 'utf8'),
  }));
}

before(() => {
  binDir = fs.mkdtempSync(path.join(os.tmpdir(), 'fake-kind-bin-'));
  fs.writeFileSync(path.join(binDir, 'kind'), FAKE_KIND, { mode: 0o755 });
  process.env.PATH = `${binDir}${path.delimiter}${originalPath}`;
});

beforeEach(() => {
  if (logDir) fs.rmSync(logDir, { recursive: true, force: true });
  logDir = fs.mkdtempSync(path.join(os.tmpdir(), 'fake-kind-log-'));
  process.env.FAKE_KIND_LOG = logDir;
  delete process.env.FAKE_KIND_CLUSTERS;
});

after(() => {
  process.env.PATH = originalPath;
  fs.rmSync(binDir, { recursive: true, force: true });
  fs.rmSync(logDir, { recursive: true, force: true });
});

describe('kindConfigYaml', () => {
  test('renders one control-plane and one worker by default', () => {
    assert.deepEqual(parse(kindConfigYaml()), {
      kind: 'Cluster',
      apiVersion: 'kind.x-k8s.io/v1alpha4',
      nodes: [{ role: 'control-plane' }, { role: 'worker' }],
    });
  });

  test('renders N workers, each node on the pinned image', () => {
    const image = 'kindest/node:v1.33.1@sha256:050072256b9a903bd914c0b2866828150cb229cea0efe5892e2b644d5dd3b34f';
    const config = parse(kindConfigYaml({ workers: 3, nodeImage: image }));
    assert.deepEqual(config.nodes, [
      { role: 'control-plane', image },
      { role: 'worker', image },
      { role: 'worker', image },
      { role: 'worker', image },
    ]);
  });

  test('zero workers is a single-node cluster', () => {
    assert.deepEqual(parse(kindConfigYaml({ workers: 0 })).nodes, [{ role: 'control-plane' }]);
  });

  test('rejects negative or fractional worker counts', () => {
    assert.throws(() => kindConfigYaml({ workers: -1 }), /whole number >= 0, got -1/);
    assert.throws(() => kindConfigYaml({ workers: 1.5 }), /whole number >= 0, got 1.5/);
  });
});

describe('kind provider check', () => {
  const config = kindConfigYaml();
  const reasons = async (news: Record<string, unknown>) =>
    ((await kindProvider.check!({} as never, { config, ...news } as never)).failures ?? []).map(
      (f) => `${f.property}: ${f.reason}`,
    );

  test('accepts kind-valid names and passes the inputs through', async () => {
    for (const clusterName of ['stateful-kes', 'a', 'dev.1', 'x'.repeat(50)]) {
      const result = await kindProvider.check!({} as never, { clusterName, config });
      assert.deepEqual(result.failures, [], clusterName);
      assert.deepEqual(result.inputs, { clusterName, config });
    }
  });

  test('rejects names kind would reject, saying why', async () => {
    assert.deepEqual(await reasons({ clusterName: 'Dev' }), [
      "clusterName: kind cluster names are lowercase: 'Dev' (try 'dev')",
    ]);
    assert.deepEqual(await reasons({ clusterName: 'my_cluster' }), [
      "clusterName: 'my_cluster' has characters kind rejects: use only a-z, 0-9, '.' and '-'",
    ]);
    assert.deepEqual(await reasons({ clusterName: '-dev' }), [
      "clusterName: '-dev' must start and end with a letter or digit (it prefixes node container names)",
    ]);
    assert.deepEqual(await reasons({ clusterName: 'x'.repeat(51) }), [
      `clusterName: '${'x'.repeat(51)}' is 51 characters; kind cluster names must be at most 50`,
    ]);
    assert.deepEqual(await reasons({ clusterName: '' }), ['clusterName: a kind cluster name is required']);
  });

  test('leaves unknown (preview) names for later', async () => {
    assert.deepEqual(await reasons({ clusterName: '04da6b54-80e4-46f7-96ec-b56ff0331ba9' }), []);
  });

  test('rejects a node image with spaces and a config that is not a kind config', async () => {
    assert.deepEqual(await reasons({ clusterName: 'dev', nodeImage: 'kindest/node v1.33' }), [
      'nodeImage: nodeImage must be an image reference such as kindest/node:v1.33.1, got "kindest/node v1.33"',
    ]);
    assert.deepEqual(await reasons({ clusterName: 'dev', config: 'nodes: []' }), [
      'config: config must be a kind Cluster config (apiVersion: kind.x-k8s.io/v1alpha4)',
    ]);
  });
});

describe('kind provider diff', () => {
  const olds = {
    clusterName: 'dev',
    config: kindConfigYaml(),
    kubeconfig: FAKE_KUBECONFIG('dev'),
    context: 'kind-dev',
  };

  test('same inputs: no changes (computed outputs are not compared)', async () => {
    assert.deepEqual(await kindProvider.diff!('dev', olds, { clusterName: 'dev', config: kindConfigYaml() }), {
      changes: false,
      replaces: [],
      deleteBeforeReplace: true,
    });
  });

  test('a new name, node image or config replaces the cluster, deleting first', async () => {
    const d = (news: object) => kindProvider.diff!('dev', olds, { clusterName: 'dev', config: olds.config, ...news });
    assert.deepEqual(await d({ clusterName: 'dev2' }), {
      changes: true,
      replaces: ['clusterName'],
      deleteBeforeReplace: true,
    });
    assert.deepEqual(await d({ nodeImage: 'kindest/node:v1.33.1' }), {
      changes: true,
      replaces: ['nodeImage'],
      deleteBeforeReplace: true,
    });
    assert.deepEqual(await d({ config: kindConfigYaml({ workers: 2 }) }), {
      changes: true,
      replaces: ['config'],
      deleteBeforeReplace: true,
    });
  });
});

describe('kind provider create/read/delete against a fake kind', () => {
  test('create runs kind create with the config on stdin, then reads the kubeconfig', async () => {
    const config = kindConfigYaml({ workers: 2, nodeImage: 'kindest/node:v1.33.1' });
    const result = await kindProvider.create({ clusterName: 'dev', nodeImage: 'kindest/node:v1.33.1', config });
    assert.deepEqual(calls(), [
      {
        argv: [
          'create',
          'cluster',
          '--name',
          'dev',
          '--wait',
          '120s',
          '--image',
          'kindest/node:v1.33.1',
          '--config',
          '-',
        ],
        stdin: config,
      },
      { argv: ['get', 'kubeconfig', '--name', 'dev'], stdin: '' },
    ]);
    assert.deepEqual(result, {
      id: 'dev',
      outs: {
        clusterName: 'dev',
        nodeImage: 'kindest/node:v1.33.1',
        config,
        kubeconfig: FAKE_KUBECONFIG('dev'),
        context: 'kind-dev',
      },
    });
  });

  test('create without a node image leaves the image to kind', async () => {
    await kindProvider.create({ clusterName: 'dev', config: kindConfigYaml() });
    assert.deepEqual(calls()[0].argv, ['create', 'cluster', '--name', 'dev', '--wait', '120s', '--config', '-']);
  });

  test("a failing kind create rejects with kind's stderr and reads no kubeconfig", async () => {
    await assert.rejects(kindProvider.create({ clusterName: 'will-fail', config: kindConfigYaml() }), (err: Error) => {
      assert.match(
        err.message,
        /^kind create cluster --name will-fail --wait 120s --config - failed \(exit 1\): ERROR: failed to create cluster: command "docker run" failed/,
      );
      return true;
    });
    assert.equal(calls().length, 1);
  });

  test('delete runs kind delete cluster with the id, and propagates failures', async () => {
    await kindProvider.delete!('dev', {} as never);
    assert.deepEqual(calls(), [{ argv: ['delete', 'cluster', '--name', 'dev'], stdin: '' }]);
    await assert.rejects(
      kindProvider.delete!('fail-me', {} as never),
      /kind delete cluster --name fail-me failed \(exit 1\): ERROR/,
    );
  });

  test('read refreshes the kubeconfig of a listed cluster and drops a cluster kind no longer has', async () => {
    const props = { clusterName: 'dev', config: kindConfigYaml(), kubeconfig: 'stale', context: 'kind-dev' };
    process.env.FAKE_KIND_CLUSTERS = 'other dev';
    assert.deepEqual(await kindProvider.read!('dev', props), {
      id: 'dev',
      props: { ...props, kubeconfig: FAKE_KUBECONFIG('dev') },
    });
    process.env.FAKE_KIND_CLUSTERS = 'other';
    assert.deepEqual(await kindProvider.read!('dev', props), { id: '', props: {} });
  });

  test('without kind on PATH, create says how to get it and read keeps the state', async () => {
    process.env.PATH = logDir;
    try {
      await assert.rejects(
        kindProvider.create({ clusterName: 'dev', config: kindConfigYaml() }),
        /the kind CLI is not on PATH/,
      );
      const props = { clusterName: 'dev', config: kindConfigYaml(), kubeconfig: 'kept', context: 'kind-dev' };
      assert.deepEqual(await kindProvider.read!('dev', props), { id: 'dev', props });
    } finally {
      process.env.PATH = `${binDir}${path.delimiter}${originalPath}`;
    }
  });
});

describe('KindCluster under mocks', () => {
  const DYNAMIC = 'pulumi-nodejs:dynamic/kind:Cluster';
  onResource(DYNAMIC, (a) => ({
    kubeconfig: FAKE_KUBECONFIG(a.inputs.clusterName),
    context: `kind-${a.inputs.clusterName}`,
  }));

  test('exposes a secret kubeconfig and a Kubernetes provider that is its child', async () => {
    const cluster = new KindCluster('dev', { name: 'stateful-kes', workers: 2 }, { transformations: [recordLineage] });
    assert.equal(await outputValue(cluster.name), 'stateful-kes');
    assert.equal(await outputValue(cluster.context), 'kind-stateful-kes');
    assert.equal(await isSecret(cluster.kubeconfig), true);
    assert.equal(await outputValue(cluster.kubeconfig), FAKE_KUBECONFIG('stateful-kes'));
    const providerUrn = await outputValue(cluster.provider.urn);

    const [resource] = byType(DYNAMIC);
    assert.equal(resource.name, 'dev-cluster');
    assert.equal(resource.inputs.clusterName, 'stateful-kes');
    assert.equal(resource.inputs.config, kindConfigYaml({ workers: 2 }));

    const [provider] = byType('pulumi:providers:kubernetes');
    assert.equal(provider.name, 'dev-k8s');
    assert.deepEqual(unsecret(provider.inputs), {
      kubeconfig: FAKE_KUBECONFIG('stateful-kes'),
      context: 'kind-stateful-kes',
      ...MUTABLE,
    });
    assert.match(providerUrn, /stateful-kes:index:KindCluster\$pulumi:providers:kubernetes::dev-k8s$/);
    assert.equal(lineage.get('dev-k8s')?.parent, 'dev');
    assert.equal(lineage.get('dev-cluster')?.parent, 'dev');
  });

  test('the provider serialised into state runs on its own', async () => {
    const serialised = byType(DYNAMIC)[0].inputs.__provider;
    assert.equal(typeof serialised, 'string');
    const file = path.join(logDir, 'provider.cjs');
    fs.writeFileSync(file, serialised);
    const standalone = createRequire(import.meta.url)(file).handler();
    const result = await standalone.check({}, { clusterName: 'Bad_Name', config: kindConfigYaml() });
    assert.deepEqual(result.failures, [
      { property: 'clusterName', reason: "kind cluster names are lowercase: 'Bad_Name' (try 'bad_name')" },
    ]);
    await standalone.delete('dev', {});
    assert.deepEqual(calls(), [{ argv: ['delete', 'cluster', '--name', 'dev'], stdin: '' }]);
  });

  test('a given config is used as is', async () => {
    const config =
      'kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnodes:\n  - role: control-plane\n    extraPortMappings: [{ containerPort: 30080, hostPort: 9000 }]\n';
    await outputValue(new KindCluster('custom', { name: 'custom', config, workers: 5 }).name);
    const resource = recorded.find((r) => r.name === 'custom-cluster');
    assert.equal(resource?.inputs.config, config);
  });
});

describe('existing clusters', () => {
  test('kubeconfigSource tells inline contents from paths', () => {
    assert.equal(kubeconfigSource(undefined), undefined);
    assert.deepEqual(kubeconfigSource('~/.kube/config', '/home/u'), { path: '/home/u/.kube/config' });
    assert.deepEqual(kubeconfigSource('/etc/k8s/admin.conf', '/home/u'), { path: '/etc/k8s/admin.conf' });
    assert.deepEqual(kubeconfigSource(FAKE_KUBECONFIG('x')), { contents: FAKE_KUBECONFIG('x') });
    assert.deepEqual(kubeconfigSource('{"apiVersion":"v1"}'), { contents: '{"apiVersion":"v1"}' });
  });

  test('existingClusterProvider keeps inline kubeconfig secret and passes the context', async () => {
    const provider = existingClusterProvider('existing', { kubeconfig: FAKE_KUBECONFIG('prod'), context: 'prod' });
    await outputValue(provider.urn);
    const recordedProvider = recorded.find((r) => r.name === 'existing');
    assert.equal(recordedProvider?.type, 'pulumi:providers:kubernetes');
    assert.notEqual(
      recordedProvider?.inputs.kubeconfig,
      FAKE_KUBECONFIG('prod'),
      'inline kubeconfig arrives wrapped as a secret',
    );
    assert.deepEqual(unsecret(recordedProvider?.inputs), {
      kubeconfig: FAKE_KUBECONFIG('prod'),
      context: 'prod',
      ...MUTABLE,
    });
  });
});
