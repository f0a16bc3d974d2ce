import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer } from './harness.js';

test('smoke: generate and decrypt as the enclave admin', async () => {
  const s = await startTestServer();
  try {
    const g = await s.request(s.admin, 'POST', '/v1/key/generate/minio-default', { context: Buffer.from('{}').toString('base64') });
    assert.equal(g.status, 200, g.text);
    const { plaintext, ciphertext } = g.json();
    const d = await s.request(s.admin, 'POST', '/v1/key/decrypt/minio-default', { ciphertext, context: Buffer.from('{}').toString('base64') });
    assert.equal(d.status, 200, d.text);
    assert.equal(d.json().plaintext, plaintext);
    const l = await s.request(s.user, 'GET', '/v1/key/list/*');
    console.log(l.status, l.headers['content-type'], l.text);
    const st = await s.request(s.sysadmin, 'GET', '/v1/status');
    console.log(st.status, st.text);
    const m = await s.request(s.sysadmin, 'GET', '/v1/metrics');
    console.log(m.status, m.text.slice(0, 1500));
  } finally {
    await s.stop();
  }
});
