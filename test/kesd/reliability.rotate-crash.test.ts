// An acknowledged rotation is durable: kill -9 of `kesd server` (its whole process group, one or two workers) at a
// random moment while keys are rotated concurrently and data keys generated under each new version. After every
// restart:
//   - every acknowledged version is there, and the versions are 1..n without a gap or a repeat (an in-flight
//     rotation is all or nothing: its version exists, opens and is listed, or it does not exist);
//   - every data key generated before the kill decrypts to its plaintext, found by trial and by its version;
//   - generate uses the newest version there is.
// Settings: KESD_ROTATE_CRASH_CYCLES=6, KESD_ROTATE_CRASH_LOAD_MS=500 (kill at a random moment in 50…LOAD_MS ms),
// KESD_ROTATE_CRASH_SEED (replay).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type https from 'node:https';
import { agentFor, b64, call, envInt, makeFixture, rng, seedFrom, sleep, startKesd, type Fixture } from './load.js';

const CYCLES = envInt('KESD_ROTATE_CRASH_CYCLES', 6);
const LOAD_MS = envInt('KESD_ROTATE_CRASH_LOAD_MS', 500);
const SEED = seedFrom('KESD_ROTATE_CRASH_SEED');
const KEYS = ['turn-a', 'turn-b'];

let fx: Fixture;
before(async () => {
  fx = await makeFixture({ keys: KEYS });
});
after(async () => {
  await fx?.remove();
});

interface Dek {
  key: string;
  version: string;
  plaintext: string;
  ciphertext: string;
  context: string;
}

test(`kill -9 during concurrent rotations loses no acknowledged version (seed ${SEED})`, {
  timeout: 600_000,
}, async () => {
  const r = rng(SEED);
  const acked = new Map<string, Set<number>>(KEYS.map((k) => [k, new Set([1])]));
  const deks: Dek[] = [];
  let inflightAtKill = 0;
  const anomalies: string[] = [];

  for (let cycle = 0; cycle < CYCLES; cycle++) {
    const workers = cycle % 2 === 0 ? '1' : '2';
    const proc = await startKesd(fx.dataDir, fx.env, ['--workers', workers, '--audit-log', 'off']);
    const agent: https.Agent = agentFor(fx.admin);
    try {
      await verify(agent, proc.port, cycle);
      let stop = false;
      const loops = Array.from({ length: 4 }, async (_, i) => {
        const key = KEYS[i % KEYS.length]!;
        while (!stop) {
          const rotated = await call(agent, proc.port, 'POST', `/v1/key/rotate/${key}`).catch(() => undefined);
          if (rotated === undefined) return void inflightAtKill++;
          if (rotated.status !== 200) return void anomalies.push(`rotate ${key}: ${rotated.status} ${rotated.text}`);
          acked.get(key)!.add(Number(rotated.json().version));
          const context = `c-${cycle}-${i}-${deks.length}`;
          const dek = await call(agent, proc.port, 'POST', `/v1/key/generate/${key}`, { context: b64(context) }).catch(
            () => undefined,
          );
          if (dek === undefined) return;
          if (dek.status !== 200) return void anomalies.push(`generate ${key}: ${dek.status} ${dek.text}`);
          deks.push({ key, context, ...dek.json() });
        }
      });
      await sleep(r.range(50, LOAD_MS));
      await proc.kill9();
      stop = true;
      await Promise.all(loops);
    } finally {
      agent.destroy();
      await proc.stop();
    }
  }
  const last = await startKesd(fx.dataDir, fx.env, ['--audit-log', 'off']);
  const agent = agentFor(fx.admin);
  try {
    await verify(agent, last.port, CYCLES);
  } finally {
    agent.destroy();
    await last.stop();
  }
  assert.deepEqual(anomalies, []);
  const total = [...acked.values()].reduce((n, s) => n + s.size - 1, 0);
  assert.ok(total >= CYCLES, `acknowledged rotations: ${total}`);
  console.log(
    `rotate-crash: ${CYCLES} kills, ${total} acknowledged rotations, ${deks.length} data keys, ${inflightAtKill} requests in flight at a kill`,
  );

  async function verify(agent: https.Agent, port: number, cycle: number): Promise<void> {
    for (const key of KEYS) {
      const info = await call(agent, port, 'GET', `/v1/key/describe/${key}`);
      assert.equal(info.status, 200, info.text);
      const versions: number[] = info.json().versions.map((v: { version: string }) => Number(v.version));
      const n = versions.length;
      assert.deepEqual(
        versions,
        Array.from({ length: n }, (_, i) => n - i),
        `cycle ${cycle}: ${key}: versions 1..n, no gap, no repeat`,
      );
      for (const v of acked.get(key)!)
        assert.ok(versions.includes(v), `cycle ${cycle}: ${key}: acknowledged version ${v} lost (have ${n})`);
      for (const v of versions) acked.get(key)!.add(v); // an in-flight rotation that committed is part of the model now
      const dek = await call(agent, port, 'POST', `/v1/key/generate/${key}`, {});
      assert.equal(dek.json().version, String(n), `cycle ${cycle}: ${key}: generate uses the newest`);
    }
    for (const dek of deks) {
      for (const body of [
        { ciphertext: dek.ciphertext, context: b64(dek.context) },
        { ciphertext: dek.ciphertext, context: b64(dek.context), version: dek.version },
      ]) {
        const got = await call(agent, port, 'POST', `/v1/key/decrypt/${dek.key}`, body);
        assert.equal(got.status, 200, `cycle ${cycle}: ${dek.key} v${dek.version}: ${got.text}`);
        assert.equal(got.json().plaintext, dek.plaintext);
      }
    }
  }
});
