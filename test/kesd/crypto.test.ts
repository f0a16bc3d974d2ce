import { test } from 'node:test';
import { createHmac } from 'node:crypto';
import assert from 'node:assert/strict';
import {
  generateDataKey,
  hmacSha256,
  keyId,
  legacyAlgorithmName,
  newSecretKey,
  open,
  parseAlgorithm,
  seal,
  type Algorithm,
  type SecretKey,
} from '../../kesd/src/crypto/key.js';
import { POOL_SIZE, randomBytes, randomFill } from '../../kesd/src/crypto/random.js';
import { ErrDecrypt } from '../../kesd/src/kes/errors.js';

// kes-protocol §8.4: key = 32 zero bytes, no AD, plaintext = 16 zero bytes unless stated.
const b64 = (s: string) => Buffer.from(s, 'base64');
const utf8 = (s: string) => Buffer.from(s, 'utf8');
const zeroKey = (algorithm: Algorithm): SecretKey => ({ algorithm, bytes: Buffer.alloc(32) });
const ZERO16 = Buffer.alloc(16);

const adKeyBytes = b64('dDHbTWgo+Yh3u804SYB5OyVMy6RiLeJYBQth1f6KlEU=');
const adPlaintext = b64('CLcJoykFCWZDkEIiUq9bJRqwCwW9ZDvdgu8EMA==');
const AD = b64('AAAAAAAAAAAAAAAAAAAAAA==');

const assertDecryptFails = (key: SecretKey, ct: Uint8Array, ad?: Uint8Array) =>
  assert.throws(
    () => open(key, ct, ad),
    (e: unknown) => e === ErrDecrypt,
  );

// ---- §8.4 positive vectors -------------------------------------------------------------------

test('§8.4 JSON/AES decrypts', () => {
  const ct = utf8(
    '{"aead":"AES-256-GCM-HMAC-SHA-256","iv":"xLxIN3tSCkg2xMafuvwUwg==","nonce":"gu0mGwUkwcvMEoi5","bytes":"WVgRjeIJm3w50C/l+y7y2i6mbNg5NCAqN1zvOYWZKmc="}',
  );
  assert.deepEqual(open(zeroKey('AES256'), ct), ZERO16);
});

test('§8.4 JSON/ChaCha decrypts', () => {
  const ct = utf8(
    '{"aead":"ChaCha20Poly1305","iv":"s3fSZ6vk5m+DfQA8yZWeUg==","nonce":"8/kHMnCMs3h9NZ2a","bytes":"cw22HjLq/4cx8507SW4hhSrYbDiMuRao4b5+GE+XfbE="}',
  );
  assert.deepEqual(open(zeroKey('ChaCha20'), ct), ZERO16);
});

test('§8.4 JSON/ChaCha with key id decrypts', () => {
  const ct = utf8(
    '{"aead":"ChaCha20Poly1305","id":"66687aadf862bd776c8fc18b8e9f8e20","iv":"EC0eZp7Pqt+LnkOae5xaAg==","nonce":"X1ejXKmH/ugFZPkk","bytes":"wIGBTDs6aOvsqJfekZ0PYRT/OHyFX2TXqeNwl1SLXOI="}',
  );
  assert.deepEqual(open(zeroKey('ChaCha20'), ct), ZERO16);
});

test('§8.4 msgpack/AES decrypts', () => {
  const ct = b64(
    'lbFBRVMyNTYtR0NNX1NIQTI1NtkgNjY2ODdhYWRmODYyYmQ3NzZjOGZjMThiOGU5ZjhlMjDEEExv7LAd4oz0SaHZrX5LBufEDEKME1ow1CDfUFrqv8QgJuy7Sw+jVqz99TK1HV851LT3K4mwwDv46TB2ngWkAJQ=',
  );
  assert.equal(ct[0], 0x95);
  assert.deepEqual(open(zeroKey('AES256'), ct), ZERO16);
});

test('§8.4 msgpack/ChaCha decrypts', () => {
  const ct = b64(
    'lbJYQ0hBQ0hBMjAtUE9MWTEzMDXZIDY2Njg3YWFkZjg2MmJkNzc2YzhmYzE4YjhlOWY4ZTIwxBBAr+aptD4x2+qfOhiErbnkxAxYs8RmNC1JJXD1hiHEIJ2KqM0jjkME7ndx8nyVseesN83Np0rM5ejVUun+fNFu',
  );
  assert.equal(ct[0], 0x95);
  assert.deepEqual(open(zeroKey('ChaCha20'), ct), ZERO16);
});

test('§8.4 raw/AES decrypts', () => {
  const ct = b64('zwdDgHeRlIFRnJ7+DIhs/ka7GFK2CFSfDELqg1VCyTQzZ58o7MAdupMLk3ZjlMo2ZUDwldL2o41nAWDc');
  assert.equal(ct.length, 16 + 44);
  assert.deepEqual(open(zeroKey('AES256'), ct), ZERO16);
});

test('§8.4 raw/AES with associated data decrypts', () => {
  const ct = b64('s2gmfQHeGdlyL8x1yEWSACUV3GrSoz3t160hugMgzKWgyqesXDVUJ5Dw5Mt076rR1PNiU9X4YjLH14D8a81t2r2xsz4gVZac');
  const key: SecretKey = { algorithm: 'AES256', bytes: adKeyBytes };
  assert.deepEqual(open(key, ct, AD), adPlaintext);
  assertDecryptFails(key, ct); // the AD is bound
});

test('§8.4 raw/ChaCha with associated data decrypts', () => {
  const ct = b64('gO4woRIswAJdjUjW7z2ApsSQxJlwB24yjLrmH4eI7sB0uh5nfEJfk9ybTPFft5FRFaZCVBmzhx7OJs9n0WWtxH3sySIxecIK');
  const key: SecretKey = { algorithm: 'ChaCha20', bytes: adKeyBytes };
  assert.deepEqual(open(key, ct, AD), adPlaintext);
  assertDecryptFails(key, ct);
});

test('§8.3 newest KES ignores the algorithm named in old formats: stored key algorithm decides', () => {
  // The JSON/AES vector opened with a ChaCha-tagged key of the same bytes fails (ChaCha math is used) …
  const json = utf8(
    '{"aead":"AES-256-GCM-HMAC-SHA-256","iv":"xLxIN3tSCkg2xMafuvwUwg==","nonce":"gu0mGwUkwcvMEoi5","bytes":"WVgRjeIJm3w50C/l+y7y2i6mbNg5NCAqN1zvOYWZKmc="}',
  );
  assertDecryptFails(zeroKey('ChaCha20'), json);
  // … and a JSON ciphertext whose id is not the key's id still decrypts (ids are ignored).
  const wrongId = utf8(
    '{"aead":"AES-256-GCM-HMAC-SHA-256","id":"00010203040506070809101112131415","iv":"xLxIN3tSCkg2xMafuvwUwg==","nonce":"gu0mGwUkwcvMEoi5","bytes":"WVgRjeIJm3w50C/l+y7y2i6mbNg5NCAqN1zvOYWZKmc="}',
  );
  assert.deepEqual(open(zeroKey('AES256'), wrongId), ZERO16);
});

// ---- §8.4 negative vectors -------------------------------------------------------------------

test('§8.4 negative: JSON with aead "AES-256-GCM" fails', () => {
  const ct = utf8(
    '{"aead":"AES-256-GCM","iv":"xLxIN3tSCkg2xMafuvwUwg==","nonce":"gu0mGwUkwcvMEoi5","bytes":"WVgRjeIJm3w50C/l+y7y2i6mbNg5NCAqN1zvOYWZKmc="}',
  );
  assertDecryptFails(zeroKey('AES256'), ct);
});

test('§8.4 negative: JSON with a 20-byte iv fails', () => {
  assert.equal(b64('EjOY4JKqjIrPmQ5z1KSR8zlhggY=').length, 20);
  const ct = utf8(
    '{"aead":"AES-256-GCM-HMAC-SHA-256","iv":"EjOY4JKqjIrPmQ5z1KSR8zlhggY=","nonce":"gu0mGwUkwcvMEoi5","bytes":"WVgRjeIJm3w50C/l+y7y2i6mbNg5NCAqN1zvOYWZKmc="}',
  );
  assertDecryptFails(zeroKey('AES256'), ct);
});

test('§8.4 negative: JSON with an 8-byte nonce (SXAbms731/c=) fails', () => {
  assert.equal(b64('SXAbms731/c=').length, 8);
  const ct = utf8(
    '{"aead":"AES-256-GCM-HMAC-SHA-256","iv":"xLxIN3tSCkg2xMafuvwUwg==","nonce":"SXAbms731/c=","bytes":"WVgRjeIJm3w50C/l+y7y2i6mbNg5NCAqN1zvOYWZKmc="}',
  );
  assertDecryptFails(zeroKey('AES256'), ct);
});

test('§8.4 negative: JSON with an 8-byte nonce (efY+4kYF9n8=) fails', () => {
  assert.equal(b64('efY+4kYF9n8=').length, 8);
  const ct = utf8(
    '{"aead":"ChaCha20Poly1305","iv":"s3fSZ6vk5m+DfQA8yZWeUg==","nonce":"efY+4kYF9n8=","bytes":"cw22HjLq/4cx8507SW4hhSrYbDiMuRao4b5+GE+XfbE="}',
  );
  assertDecryptFails(zeroKey('ChaCha20'), ct);
});

test('§8.4 negative: tampered bytes (AES) fail', () => {
  const ct = utf8(
    '{"aead":"AES-256-GCM-HMAC-SHA-256","iv":"xLxIN3tSCkg2xMafuvwUwg==","nonce":"gu0mGwUkwcvMEoi5","bytes":"QTza1g5oX3f9cGJMbY1xJwWPj1F7R2VnNl6XpFKYQy0="}',
  );
  assertDecryptFails(zeroKey('AES256'), ct);
});

test('§8.4 negative: tampered bytes (ChaCha) fail', () => {
  const ct = utf8(
    '{"aead":"ChaCha20Poly1305","iv":"s3fSZ6vk5m+DfQA8yZWeUg==","nonce":"8/kHMnCMs3h9NZ2a","bytes":"TTi8pkO+Jh1JWAHvPxZeUk/iVoBPUCE4ZSVGBy3fW2s="}',
  );
  assertDecryptFails(zeroKey('ChaCha20'), ct);
});

test('§8.4 negative: malformed JSON (missing comma) fails', () => {
  const ct = utf8(
    '{"aead":"AES-256-GCM-HMAC-SHA-256" "iv":"xLxIN3tSCkg2xMafuvwUwg==","nonce":"gu0mGwUkwcvMEoi5","bytes":"WVgRjeIJm3w50C/l+y7y2i6mbNg5NCAqN1zvOYWZKmc="}',
  );
  assertDecryptFails(zeroKey('AES256'), ct);
});

// ---- msgpack strictness ----------------------------------------------------------------------

test('msgpack: trailing byte, wrong arity, or wrong iv size fail', () => {
  const good = b64(
    'lbFBRVMyNTYtR0NNX1NIQTI1NtkgNjY2ODdhYWRmODYyYmQ3NzZjOGZjMThiOGU5ZjhlMjDEEExv7LAd4oz0SaHZrX5LBufEDEKME1ow1CDfUFrqv8QgJuy7Sw+jVqz99TK1HV851LT3K4mwwDv46TB2ngWkAJQ=',
  );
  const key = zeroKey('AES256');
  assertDecryptFails(key, Buffer.concat([good, Buffer.from([0])]));
  const arity4 = Buffer.from(good);
  arity4[0] = 0x94;
  assertDecryptFails(key, arity4);
  assertDecryptFails(key, good.subarray(0, good.length - 1));
  // iv bin8 header sits right after fixstr(17) + str8(32): offset 1+18+34 = 53.
  assert.deepEqual(good.subarray(53, 55), Buffer.from([0xc4, 16]));
  const iv15 = Buffer.concat([good.subarray(0, 54), Buffer.from([15]), good.subarray(55, 70), good.subarray(71)]);
  assertDecryptFails(key, iv15);
  const iv17 = Buffer.concat([
    good.subarray(0, 54),
    Buffer.from([17]),
    good.subarray(55, 71),
    Buffer.from([0]),
    good.subarray(71),
  ]);
  assertDecryptFails(key, iv17);
  // bin field where a str is expected
  const binAlg = Buffer.from(good);
  binAlg[1] = 0xc4;
  assertDecryptFails(key, binAlg);
});

test('msgpack: wider str/bin encodings are accepted', () => {
  // Re-encode the msgpack/AES vector with str16 strings and bin16/bin32 byte fields.
  const key = zeroKey('AES256');
  const sealed = b64('zwdDgHeRlIFRnJ7+DIhs/ka7GFK2CFSfDELqg1VCyTQzZ58o7MAdupMLk3ZjlMo2ZUDwldL2o41nAWDc');
  const ctTag = sealed.subarray(0, 32);
  const iv = sealed.subarray(32, 48);
  const nonce = sealed.subarray(48);
  const str16 = (s: string) => Buffer.concat([Buffer.from([0xda, 0, s.length]), utf8(s)]);
  const bin16 = (b: Buffer) => Buffer.concat([Buffer.from([0xc5, 0, b.length]), b]);
  const bin32 = (b: Buffer) => Buffer.concat([Buffer.from([0xc6, 0, 0, 0, b.length]), b]);
  const blob = Buffer.concat([
    Buffer.from([0x95]),
    str16('AES256-GCM_SHA256'),
    str16(keyId(key.bytes)),
    bin16(iv),
    bin32(nonce),
    bin16(ctTag),
  ]);
  assert.deepEqual(open(key, blob), ZERO16);
});

// ---- key id, HMAC, algorithms ----------------------------------------------------------------

test('§8.6 key id of the all-zero key', () => {
  assert.equal(keyId(Buffer.alloc(32)), '66687aadf862bd776c8fc18b8e9f8e20');
});

test('hmacSha256 matches RFC 4231 test case 2', () => {
  assert.equal(
    hmacSha256(utf8('Jefe'), utf8('what do ya want for nothing?')).toString('hex'),
    '5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843',
  );
});

test('hmacSha256 equals createHmac for key and message lengths around the block size', () => {
  for (const kl of [0, 1, 32, 63, 64, 65, 100, 200]) {
    for (const ml of [0, 16, 55, 64, 1000]) {
      const k = randomBytes(kl);
      const m = randomBytes(ml);
      assert.deepEqual(hmacSha256(k, m), createHmac('sha256', k).update(m).digest(), `key ${kl} msg ${ml}`);
    }
  }
});

test('AES per-message key is HMAC-SHA256(key, iv): a hand-built raw ciphertext opens', async () => {
  const { createCipheriv } = await import('node:crypto');
  const key = newSecretKey('AES256');
  const iv = randomBytes(16);
  const nonce = randomBytes(12);
  const pt = utf8('independent construction');
  const c = createCipheriv('aes-256-gcm', createHmac('sha256', key.bytes).update(iv).digest(), nonce, {
    authTagLength: 16,
  });
  c.setAAD(utf8('ad'));
  const raw = Buffer.concat([c.update(pt), c.final(), c.getAuthTag(), iv, nonce]);
  assert.deepEqual(open(key, raw, utf8('ad')), pt);
});

test('parseAlgorithm accepts exact names and rejects everything else', () => {
  assert.equal(parseAlgorithm('AES256'), 'AES256');
  assert.equal(parseAlgorithm('AES256-GCM_SHA256'), 'AES256');
  assert.equal(parseAlgorithm('ChaCha20'), 'ChaCha20');
  assert.equal(parseAlgorithm('XCHACHA20-POLY1305'), 'ChaCha20');
  for (const bad of [
    '',
    'undefined',
    'aes256',
    'AES256-GCM',
    'CHACHA20',
    'chacha20',
    'XChaCha20-Poly1305',
    ' AES256',
    'AES256 ',
  ]) {
    assert.equal(parseAlgorithm(bad), undefined, bad);
  }
  assert.equal(legacyAlgorithmName('AES256'), 'AES256-GCM_SHA256');
  assert.equal(legacyAlgorithmName('ChaCha20'), 'XCHACHA20-POLY1305');
});

test('newSecretKey: 32 random bytes, default AES256', () => {
  const a = newSecretKey();
  const b = newSecretKey('ChaCha20');
  assert.equal(a.algorithm, 'AES256');
  assert.equal(b.algorithm, 'ChaCha20');
  assert.equal(a.bytes.length, 32);
  assert.equal(b.bytes.length, 32);
  assert.notDeepEqual(a.bytes, b.bytes);
});

// ---- round trips -----------------------------------------------------------------------------

for (const algorithm of ['AES256', 'ChaCha20'] as const) {
  test(`${algorithm}: round trip without associated data`, () => {
    const key = newSecretKey(algorithm);
    for (const n of [0, 1, 16, 32, 1000]) {
      const pt = randomBytes(n);
      const ct = seal(key, pt);
      assert.equal(ct.length, n + 44);
      assert.deepEqual(open(key, ct), pt);
      assert.deepEqual(open(key, ct, new Uint8Array(0)), pt); // absent ≡ empty
    }
  });

  test(`${algorithm}: round trip with associated data; wrong AD fails`, () => {
    const key = newSecretKey(algorithm);
    const pt = utf8('hello, kes');
    const ad = utf8('bucket/object');
    const ct = seal(key, pt, ad);
    assert.deepEqual(open(key, ct, ad), pt);
    assertDecryptFails(key, ct, utf8('bucket/other'));
    assertDecryptFails(key, ct);
  });

  test(`${algorithm}: sealing twice gives different ciphertexts; other key fails; bit flips fail`, () => {
    const key = newSecretKey(algorithm);
    const pt = Buffer.alloc(32, 7);
    const a = seal(key, pt);
    const b = seal(key, pt);
    assert.notDeepEqual(a, b);
    assertDecryptFails(newSecretKey(algorithm), a);
    assertDecryptFails({ algorithm: algorithm === 'AES256' ? 'ChaCha20' : 'AES256', bytes: key.bytes }, a);
    for (const i of [0, 31, 32, 47, 48, 63, 64, 75]) {
      const t = Buffer.from(a);
      t[i] ^= 1;
      assertDecryptFails(key, t);
    }
  });

  test(`${algorithm}: generateDataKey returns a 32-byte DEK sealed as 76 bytes`, () => {
    const key = newSecretKey(algorithm);
    const ad = utf8('ctx');
    const { plaintext, ciphertext } = generateDataKey(key, ad);
    assert.equal(plaintext.length, 32);
    assert.equal(ciphertext.length, 76);
    assert.deepEqual(open(key, ciphertext, ad), plaintext);
    assertDecryptFails(key, ciphertext);
  });
}

test('raw ciphertexts starting with 0x95 or "{" still decrypt as raw', () => {
  const key = newSecretKey();
  let found95 = false;
  let found7b = false;
  for (let i = 0; i < 20000 && !(found95 && found7b); i++) {
    const pt = randomBytes(16);
    const ct = seal(key, pt);
    if (ct[0] === 0x95 || ct[0] === 0x7b) {
      found95 ||= ct[0] === 0x95;
      found7b ||= ct[0] === 0x7b;
      assert.deepEqual(open(key, ct), pt);
    }
  }
  assert.ok(found95 && found7b);
});

test('truncated raw ciphertexts fail', () => {
  const key = newSecretKey();
  const ct = seal(key, utf8('some plaintext'));
  for (const n of [0, 1, 28, 29, 43, 44, ct.length - 1]) assertDecryptFails(key, ct.subarray(0, n));
  const emptySealed = seal(key, new Uint8Array(0));
  assert.equal(emptySealed.length, 44);
  assert.deepEqual(open(key, emptySealed), Buffer.alloc(0));
  assertDecryptFails(key, emptySealed.subarray(0, 28));
  assertDecryptFails(key, emptySealed.subarray(1));
});

// ---- random pool -----------------------------------------------------------------------------

test('random pool never hands out the same bytes twice, across refill boundaries', () => {
  const seen = new Set<string>();
  const held: Array<[Buffer, string]> = [];
  let total = 0;
  // Odd sizes so draws straddle the pool boundary; cover three refills.
  while (total < 3 * POOL_SIZE + 1000) {
    for (const n of [16, 28, 32, 37]) {
      const b = randomBytes(n);
      assert.equal(b.length, n);
      const hex = b.toString('hex');
      assert.ok(!seen.has(hex), 'duplicate random output');
      seen.add(hex);
      held.push([b, hex]);
      total += n;
    }
  }
  // Earlier outputs are copies: later refills did not overwrite them.
  for (const [b, hex] of held) assert.equal(b.toString('hex'), hex);
  // No 16-byte window of any output repeats in any other (a re-handed-out region would).
  const windows = new Set<string>();
  for (const [b] of held) {
    const w = b.subarray(0, 16).toString('hex');
    assert.ok(!windows.has(w), 'repeated 16-byte prefix');
    windows.add(w);
  }
  // Large requests bypass the pool; randomFill fills only the requested range.
  assert.equal(randomBytes(POOL_SIZE + 1).length, POOL_SIZE + 1);
  const t = Buffer.alloc(64);
  randomFill(t, 8, 28);
  assert.ok(t.subarray(0, 8).every((x) => x === 0));
  assert.ok(t.subarray(36).every((x) => x === 0));
  assert.ok(!t.subarray(8, 36).every((x) => x === 0));
});
