import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer } from './harness.js';

test('declared keys are created at init and re-created at the next start if deleted', async () => {
  let s = await startTestServer({ keys: ['declared-a', 'declared-b'] });
  try {
    for (const name of ['declared-a', 'declared-b']) {
      assert.equal((await s.request(s.admin, 'GET', `/v1/key/describe/${name}`)).status, 200, name);
    }
    const before = (await s.request(s.admin, 'GET', '/v1/key/describe/declared-a')).json();
    assert.equal((await s.request(s.admin, 'DELETE', '/v1/key/delete/declared-b')).status, 200);
    s = await s.restart();
    assert.equal((await s.request(s.admin, 'GET', '/v1/key/describe/declared-b')).status, 200, 're-created');
    const after = (await s.request(s.admin, 'GET', '/v1/key/describe/declared-a')).json();
    assert.deepEqual(after, before, 'an existing declared key is left alone');
  } finally {
    await s.stop();
  }
});
