// The Pulumi side's name rule (components/kes-name.ts) must accept exactly what kesd accepts: a name the program
// lets through and kesd refuses fails only at kesd's start, after the deploy.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isValidName } from '../../kesd/src/kes/names.js';
import { isKesName, KES_NAME } from '../../components/kes-name.ts';

function agree(name: string): void {
  assert.equal(isKesName(name), isValidName(name), `${JSON.stringify(name)}: isKesName and isValidName disagree`);
}

test('edge cases: both accept and refuse the same names', () => {
  const accepted = ['a', 'A', '0', '_a', 'a_', '__', 'a-b', 'minio-default-key', 'k'.repeat(80), `a${'-'.repeat(78)}a`];
  const refused = ['', '_', '-', '-a', 'a-', '--', 'k'.repeat(81), 'é', 'schlüssel', 'ключ'];
  refused.push('a b', ' a', 'a ', 'a.b', '.', 'a/b', '/', '*', 'a\n', '\na', 'a\u0000');
  for (const name of accepted) {
    agree(name);
    assert.ok(isKesName(name), JSON.stringify(name));
  }
  for (const name of refused) {
    agree(name);
    assert.ok(!isKesName(name), JSON.stringify(name));
  }
});

test('random names over the boundary characters: both agree', () => {
  // A seeded generator (mulberry32): a failure names a string that reproduces on every run.
  let seed = 0x14c0ffee;
  const next = () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
  const alphabet = ['-', '-', '_', '_', 'a', 'Z', '0', '9', '.', ' ', '/', '*', 'é', '\n'];
  let accepted = 0;
  for (let i = 0; i < 5000; i++) {
    // Mostly short names (where '-', '_' and '_' alone matter), some at the 80-character limit.
    const length = next() < 0.8 ? Math.floor(next() * 5) : 78 + Math.floor(next() * 5);
    // Some names only from the allowed characters, so that both outcomes occur often.
    const chars = next() < 0.5 ? alphabet.slice(0, 8) : alphabet;
    const name = Array.from({ length }, () => chars[Math.floor(next() * chars.length)]).join('');
    agree(name);
    if (isKesName(name)) accepted++;
  }
  assert.ok(accepted > 500 && accepted < 4500, `both outcomes should be common, ${accepted} of 5000 accepted`);
});

test('KES_NAME has no flags that change what it matches (a /g regex would keep state between tests)', () => {
  assert.equal(KES_NAME.flags, '');
});
