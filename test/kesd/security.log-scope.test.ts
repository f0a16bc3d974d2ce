// Finding 4 (docs/security.md): tenants read each other's activity. /v1/log/audit and /v1/log/error streamed the
// whole server's events to anyone allowed in any enclave. Now a subscriber scoped to an enclave gets only that
// enclave's events; only the system admin gets every event. /v1/metrics names no key, identity or enclave.
// Two enclaves, alpha and beta, on real `kesd server` processes with 1 and 2 workers.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initDataDir } from '../../kesd/src/boot/data-dir.js';
import { makeIdentity, request, type TestIdentity } from './harness.js';
import { startServer, stopServer, type ServerProcess } from './cli-process.js';

let dir: string;
let sysadmin: TestIdentity;
let alphaAdmin: TestIdentity;
let alphaApp: TestIdentity;
let betaAdmin: TestIdentity;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kesd-log-scope-'));
  sysadmin = await makeIdentity(dir, 'sysadmin');
  alphaAdmin = await makeIdentity(dir, 'alpha-admin');
  alphaApp = await makeIdentity(dir, 'alpha-app');
  betaAdmin = await makeIdentity(dir, 'beta-admin');
});
after(() => rm(dir, { recursive: true, force: true }));

interface Stream {
  readonly text: () => string;
  close(): void;
}

/** Subscribes to a log stream as `who` in `enclave`, on a connection of its own. */
function subscribe(port: number, who: TestIdentity, path: string, enclave?: string): Promise<Stream> {
  const agent = new https.Agent({ keepAlive: false, cert: who.cert, key: who.key, rejectUnauthorized: false });
  const query = enclave === undefined ? '' : `?enclave=${enclave}`;
  return new Promise((resolve, reject) => {
    const req = https.get({ host: '127.0.0.1', port, path: path + query, agent }, (res: IncomingMessage) => {
      if (res.statusCode !== 200) return reject(new Error(`${path} as ${who.identity}: ${res.statusCode}`));
      req.setTimeout(0);
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('error', () => {});
      resolve({ text: () => text, close: () => agent.destroy() });
    });
    req.on('error', reject);
  });
}

async function until(what: string, check: () => boolean): Promise<void> {
  const end = Date.now() + 20_000;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

for (const workers of [1, 2]) {
  describe(`kesd --workers ${workers}`, () => {
    let server: ServerProcess;
    const call = (who: TestIdentity, method: string, path: string, body?: unknown) =>
      request(
        new https.Agent({ keepAlive: false, cert: who.cert, key: who.key, rejectUnauthorized: false }),
        server.port,
        method,
        path,
        body,
      );

    before(async () => {
      const tls = await makeIdentity(dir, `server-${workers}`, 'p256', { ips: ['127.0.0.1'] });
      const env = { ...process.env, KESD_UNSEAL: Buffer.alloc(32, 6).toString('base64') };
      const data = join(dir, `data-${workers}`);
      await initDataDir(
        data,
        {
          version: 'v1',
          address: '127.0.0.1:0',
          sysadmin: sysadmin.identity,
          unsealEnv: 'KESD_UNSEAL',
          tls: {
            key: tls.keyFile,
            cert: tls.certFile,
            password: '',
            verifyCert: false,
            proxy: { identities: [], header: '' },
          },
          enclaves: [
            {
              name: 'alpha',
              admin: alphaAdmin.identity,
              policies: [{ name: 'app', allow: ['/v1/key/*'], deny: [], identities: [alphaApp.identity] }],
              keys: [],
            },
            { name: 'beta', admin: betaAdmin.identity, policies: [], keys: [] },
          ],
        },
        { env },
      );
      server = await startServer(
        [data, '--workers', String(workers), '--addr', '127.0.0.1:0', '--audit-log', 'off'],
        env,
      );
    });
    after(() => stopServer(server.child));

    test("an enclave admin sees its own enclave's audit events and none of another enclave; the system admin sees all", async () => {
      const all = await subscribe(server.port, sysadmin, '/v1/log/audit');
      const beta = await subscribe(server.port, betaAdmin, '/v1/log/audit', 'beta');
      const alpha = await subscribe(server.port, alphaAdmin, '/v1/log/audit', 'alpha');
      try {
        assert.equal((await call(alphaAdmin, 'POST', '/v1/key/create/alpha-secret-key?enclave=alpha')).status, 200);
        assert.equal((await call(alphaApp, 'POST', '/v1/key/generate/alpha-secret-key?enclave=alpha', {})).status, 200);
        assert.equal((await call(betaAdmin, 'POST', '/v1/key/create/beta-marker?enclave=beta')).status, 200);
        await until('every event at the system admin', () =>
          ['alpha-secret-key', 'beta-marker'].every((k) => all.text().split(k).length >= 2),
        );
        await until("beta's own event at beta", () => beta.text().includes('beta-marker'));
        await until("alpha's events at alpha", () => alpha.text().includes('/v1/key/generate/alpha-secret-key'));
        await new Promise((r) => setTimeout(r, 300)); // anything else on its way arrives
        for (const leak of ['alpha-secret-key', alphaAdmin.identity, alphaApp.identity, '"alpha"']) {
          assert.ok(!beta.text().includes(leak), `beta's audit stream shows ${leak}:\n${beta.text()}`);
        }
        assert.ok(!alpha.text().includes('beta-marker'), 'alpha sees beta');
        assert.ok(all.text().includes(alphaApp.identity) && all.text().includes(betaAdmin.identity));
      } finally {
        for (const s of [all, beta, alpha]) s.close();
      }
    });

    test("another tenant's /v1/metrics names no key, identity or enclave of alpha", async () => {
      const r = await call(betaAdmin, 'GET', '/v1/metrics?enclave=beta');
      assert.equal(r.status, 200, r.text);
      assert.match(r.text, /kes_http_request_success/);
      for (const leak of ['alpha', alphaAdmin.identity, alphaApp.identity, sysadmin.identity])
        assert.ok(!r.text.includes(leak), `metrics show ${leak}`);
    });

    test("server-level errors (a seal) reach only the system admin's error stream", async () => {
      const all = await subscribe(server.port, sysadmin, '/v1/log/error');
      const beta = await subscribe(server.port, betaAdmin, '/v1/log/error', 'beta');
      try {
        assert.equal((await call(sysadmin, 'POST', '/v1/sys/seal')).status, 200);
        await until('the seal message at the system admin', () => all.text().includes('system sealed'));
        await new Promise((r) => setTimeout(r, 300));
        assert.equal(beta.text(), '');
      } finally {
        for (const s of [all, beta]) s.close();
      }
    });
  });
}
