// MinioOperator under Pulumi mocks: the pinned chart and values, the cluster provider, a schema-valid Namespace.
// The helm v4 Chart renders provider-side, so mocks see the Chart's inputs, not the operator's objects.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import * as k8s from '@pulumi/kubernetes';
import { Namespace } from 'kubernetes-models/v1';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { chartMetadata } from '../helm-repo.ts';
import { setupMocks, byType, outputValue, unsecret, lineage, recordLineage } from '../../harness/pulumi-mocks.ts';

/** The chart archive the engine suite installs, byte for byte the one operator.min.io publishes. */
const OPERATOR_CHART_FIXTURE = resolve(import.meta.dirname, '../fixtures/minio-operator-v7.1.1/operator-7.1.1.tgz');

await setupMocks();
const { MinioOperator, operatorChartArgs, operatorChartValues, OPERATOR_SIDECAR_IMAGE } = await import(
  '../../components/minio-operator.ts'
);

describe('operatorChartArgs', () => {
  test('a Helm repository: the pinned chart name and version from it (the public one by default)', () => {
    assert.deepEqual(operatorChartArgs(), {
      chart: 'operator',
      version: '7.1.1',
      repositoryOpts: { repo: 'https://operator.min.io' },
    });
    assert.deepEqual(operatorChartArgs({ repo: 'http://127.0.0.1:8080' }), {
      chart: 'operator',
      version: '7.1.1',
      repositoryOpts: { repo: 'http://127.0.0.1:8080' },
    });
  });

  test('the fixture archive is the published operator 7.1.1 chart (the digest the public index.yaml lists)', () => {
    const archive = readFileSync(OPERATOR_CHART_FIXTURE);
    assert.equal(
      createHash('sha256').update(archive).digest('hex'),
      '94f8124e2ecbc62f9cdcbe0519e8980f5992073638f5f63bd2b3ecac4f0ce7ca',
    );
    const meta = chartMetadata(archive);
    assert.deepEqual(
      [meta.name, meta.version, meta.appVersion],
      [operatorChartArgs().chart, operatorChartArgs().version, 'v7.1.1'],
    );
  });

  test('a local archive: the path as given, no repository and no version (Helm reads it from the archive)', () => {
    assert.deepEqual(operatorChartArgs({ path: 'test/fixtures/minio-operator-v7.1.1/operator-7.1.1.tgz' }), {
      chart: 'test/fixtures/minio-operator-v7.1.1/operator-7.1.1.tgz',
    });
  });
});

describe('operatorChartValues', () => {
  test('pins the quay.io operator and sidecar images and defaults to one replica', () => {
    assert.deepEqual(operatorChartValues(), {
      operator: {
        image: { repository: 'quay.io/minio/operator', tag: 'v7.1.1', pullPolicy: 'IfNotPresent' },
        replicaCount: 1,
        env: [
          { name: 'OPERATOR_STS_ENABLED', value: 'on' },
          { name: 'OPERATOR_SIDECAR_IMAGE', value: 'quay.io/minio/operator-sidecar:v7.0.1' },
        ],
      },
    });
  });

  test('takes the replica count and rejects nonsense', () => {
    assert.equal(operatorChartValues({ replicas: 2 }).operator.replicaCount, 2);
    assert.throws(() => operatorChartValues({ replicas: 0 }), /whole number >= 1, got 0/);
    assert.throws(() => operatorChartValues({ replicas: 1.5 }), /whole number >= 1, got 1.5/);
  });
});

describe('MinioOperator under mocks', () => {
  const provider = new k8s.Provider('kind', { kubeconfig: 'apiVersion: v1\nkind: Config\n' });
  const operator = new MinioOperator(
    'minio-operator',
    { namespace: 'minio-operator', replicas: 2, provider },
    { transformations: [recordLineage] },
  );

  test('installs the pinned operator chart from operator.min.io into its namespace', async () => {
    assert.equal(await outputValue(operator.namespace), 'minio-operator');
    await outputValue(operator.chart.urn);
    const charts = byType('kubernetes:helm.sh/v4:Chart');
    assert.equal(charts.length, 1);
    const chart = unsecret(charts[0].inputs);
    assert.equal(chart.chart, 'operator');
    assert.equal(chart.version, '7.1.1');
    assert.deepEqual(chart.repositoryOpts, { repo: 'https://operator.min.io' });
    assert.equal(chart.namespace, 'minio-operator');
    assert.equal(chart.name, 'minio-operator');
    assert.deepEqual(chart.values, operatorChartValues({ replicas: 2 }));
    assert.ok(
      chart.values.operator.env.some(
        (e: { name: string; value: string }) =>
          e.name === 'OPERATOR_SIDECAR_IMAGE' && e.value === OPERATOR_SIDECAR_IMAGE,
      ),
    );
  });

  test('deploys through the given provider', async () => {
    await outputValue(operator.chart.urn);
    const children = [...byType('kubernetes:helm.sh/v4:Chart'), ...byType('kubernetes:core/v1:Namespace')];
    assert.equal(children.length, 2);
    for (const r of children) {
      assert.match(r.provider, /::pulumi:providers:kubernetes::kind::/, `${r.type} ${r.name}`);
    }
  });

  test('the Namespace is schema-valid and labelled', async () => {
    await outputValue(operator.namespace);
    const [ns] = byType('kubernetes:core/v1:Namespace');
    const obj = unsecret(ns.inputs);
    new Namespace(obj).validate();
    assert.equal(obj.metadata.name, 'minio-operator');
    assert.equal(obj.metadata.labels['app.kubernetes.io/part-of'], 'stateful-kes');
  });

  test('every child is parented to the component', async () => {
    await outputValue(operator.chart.urn);
    assert.equal(lineage.get('minio-operator-namespace')?.parent, 'minio-operator');
    assert.equal(lineage.get('minio-operator-chart')?.parent, 'minio-operator');
  });
});
