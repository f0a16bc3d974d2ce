// The pure functions behind EtcdCluster: names, URLs, the command line, SANs and the quota. No mocks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ETCD_IMAGE,
  ETCD_NAMES,
  ETCD_PATHS,
  ETCD_PEER_CN,
  ETCD_POD_NAME_ENV,
  etcdArgs,
  etcdClientEndpoints,
  etcdInitialCluster,
  etcdMemberHosts,
  etcdMemberNames,
  etcdPeerDnsNames,
  etcdQuotaBytes,
  etcdServerDnsNames,
} from '../../components/etcd-config.ts';

const three = { namespace: 'kesd', members: 3 };
const flags = (args: string[]) => new Map(args.map((a) => [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)]));

test('the image is the official one, pinned to a release tag of 3.5 ≥ 3.5.11 (for /livez and /readyz)', () => {
  const m = /^gcr\.io\/etcd-development\/etcd:v3\.5\.(\d+)$/.exec(ETCD_IMAGE);
  assert.ok(m, ETCD_IMAGE);
  assert.ok(Number(m[1]) >= 11);
});

test('members are etcd-0..N-1, named through the headless Service, with client URLs on 2379', () => {
  assert.deepEqual(etcdMemberNames(three), ['etcd-0', 'etcd-1', 'etcd-2']);
  assert.deepEqual(etcdMemberHosts(three), [
    'etcd-0.etcd-hl.kesd.svc.cluster.local',
    'etcd-1.etcd-hl.kesd.svc.cluster.local',
    'etcd-2.etcd-hl.kesd.svc.cluster.local',
  ]);
  assert.deepEqual(
    etcdClientEndpoints({ namespace: 'kms', members: 5, clusterDomain: 'corp.example' }),
    [0, 1, 2, 3, 4].map((i) => `https://etcd-${i}.etcd-hl.kms.svc.corp.example:2379`),
  );
});

test('--initial-cluster names every member with its peer URL on 2380', () => {
  assert.equal(
    etcdInitialCluster(three),
    'etcd-0=https://etcd-0.etcd-hl.kesd.svc.cluster.local:2380,etcd-1=https://etcd-1.etcd-hl.kesd.svc.cluster.local:2380,etcd-2=https://etcd-2.etcd-hl.kesd.svc.cluster.local:2380',
  );
});

test('the command line: own name and URLs from $(POD_NAME), TLS with client-cert auth on both ports, peers by CN, the quota', () => {
  const args = etcdArgs(three, { quotaBytes: 1000 });
  assert.equal(new Set(args.map((a) => a.slice(0, a.indexOf('=')))).size, args.length, 'no flag twice');
  const f = flags(args);
  assert.equal(f.get('--name'), `$(${ETCD_POD_NAME_ENV})`);
  assert.equal(f.get('--initial-advertise-peer-urls'), 'https://$(POD_NAME).etcd-hl.kesd.svc.cluster.local:2380');
  assert.equal(f.get('--advertise-client-urls'), 'https://$(POD_NAME).etcd-hl.kesd.svc.cluster.local:2379');
  assert.equal(f.get('--initial-cluster'), etcdInitialCluster(three));
  assert.equal(f.get('--initial-cluster-state'), 'new');
  assert.equal(f.get('--initial-cluster-token'), 'etcd-kesd');
  assert.equal(f.get('--data-dir'), ETCD_PATHS.dataDir);
  assert.ok(
    ETCD_PATHS.dataDir.startsWith(`${ETCD_PATHS.dataMount}/`),
    'etcd creates its data dir (0700) below the PVC mount',
  );
  for (const [k, v] of Object.entries({
    '--listen-peer-urls': 'https://0.0.0.0:2380',
    '--listen-client-urls': 'https://0.0.0.0:2379',
    '--listen-metrics-urls': 'http://0.0.0.0:2381',
  }))
    assert.equal(f.get(k), v, k);
  assert.equal(f.get('--client-cert-auth'), 'true');
  assert.equal(f.get('--peer-client-cert-auth'), 'true');
  assert.equal(f.get('--peer-cert-allowed-cn'), ETCD_PEER_CN);
  assert.deepEqual(
    ['--trusted-ca-file', '--cert-file', '--key-file'].map((k) => f.get(k)),
    ['/etc/etcd/server/ca.crt', '/etc/etcd/server/tls.crt', '/etc/etcd/server/tls.key'],
  );
  assert.deepEqual(
    ['--peer-trusted-ca-file', '--peer-cert-file', '--peer-key-file'].map((k) => f.get(k)),
    ['/etc/etcd/peer/ca.crt', '/etc/etcd/peer/tls.crt', '/etc/etcd/peer/tls.key'],
  );
  assert.equal(f.get('--quota-backend-bytes'), '1000');
  // The only $(VAR) the kubelet must expand is the pod name, which the container's env defines.
  const refs = new Set(args.flatMap((a) => [...a.matchAll(/\$\((\w+)\)/g)].map((m) => m[1])));
  assert.deepEqual([...refs], [ETCD_POD_NAME_ENV]);
});

test('the peer certificate covers every member; the client-port one also the Service forms and localhost', () => {
  const hosts = etcdMemberHosts(three);
  assert.deepEqual(etcdPeerDnsNames(three), hosts);
  assert.deepEqual(etcdServerDnsNames(three), [
    ...hosts,
    'etcd',
    'etcd.kesd',
    'etcd.kesd.svc',
    'etcd.kesd.svc.cluster.local',
    'localhost',
  ]);
  // Every endpoint kesd dials is a SAN of the client-port certificate.
  for (const url of etcdClientEndpoints(three))
    assert.ok(etcdServerDnsNames(three).includes(new URL(url).hostname), url);
  assert.equal(ETCD_NAMES.headlessService, 'etcd-hl');
});

test('the quota is 80% of the PVC, at most 8 GiB; sizes below 64Mi or not binary-suffixed are refused', () => {
  assert.equal(etcdQuotaBytes('1Gi'), Math.floor(0.8 * 2 ** 30));
  assert.equal(etcdQuotaBytes('100Mi'), Math.floor(0.8 * 100 * 2 ** 20));
  assert.equal(etcdQuotaBytes('64Gi'), 8 * 2 ** 30);
  assert.throws(() => etcdQuotaBytes('32Mi'), /'32Mi' is too small: at least 64Mi/);
  assert.throws(() => etcdQuotaBytes('1G'), /'1G' is not a size such as 1Gi/);
  assert.throws(() => etcdQuotaBytes('0Gi'), /not a size/);
});

test('refuses member counts without a majority to spare, bad namespaces and cluster domains, and bad quotas', () => {
  for (const members of [1, 2, 4, 9, 2.5])
    assert.throws(
      () => etcdMemberNames({ namespace: 'kesd', members }),
      /members must be 3, 5 or 7, got/,
      String(members),
    );
  assert.throws(
    () => etcdMemberHosts({ namespace: 'Kesd', members: 3 }),
    /namespace 'Kesd' is not an RFC 1123 DNS label/,
  );
  assert.throws(
    () => etcdMemberHosts({ namespace: 'kesd', members: 3, clusterDomain: 'bad_domain' }),
    /cluster domain 'bad_domain'/,
  );
  assert.throws(() => etcdArgs(three, { quotaBytes: 0 }), /quotaBytes must be a positive integer/);
});
