// The real MinIO for the end-to-end benchmark: one fresh single-drive server per KMS target (test/interop/stack.ts
// starts it), a bucket whose default encryption is SSE-KMS with the bench key (set with the real `mc`), and the
// checks that the objects really are SSE-KMS encrypted.
import { readFileSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, Mc, Minio, type KmsClient } from '../../harness/minio-stack.ts';
import { peer } from '../../harness/peers.ts';
import { descendants, exeOf } from './proc.mts';
import { cleanEnv } from './targets.mts';

export const BUCKET = 'bench';
const OBJECT_PREFIX = 'obj-'; // what bench/s3load names objects: obj-00000000, …

export interface E2EMinio {
  minio: Minio;
  pid: number;
  mc: Mc;
  stop(): Promise<void>;
}

/** MinIO with the KES env for `kms`, or with no KMS at all; the bucket is created, with SSE-KMS by default when there is a KMS. */
export async function startMinio(dir: string, kms: KmsClient | undefined): Promise<E2EMinio> {
  const user = 'kesd-e2e';
  const password = 'kesd-e2e-secret-1234';
  const env = cleanEnv({
    MINIO_ROOT_USER: user,
    MINIO_ROOT_PASSWORD: password,
    MINIO_BROWSER: 'off',
    MINIO_UPDATE: 'off',
    ...(kms
      ? {
          MINIO_KMS_KES_ENDPOINT: kms.endpoint,
          MINIO_KMS_KES_CERT_FILE: kms.certFile,
          MINIO_KMS_KES_KEY_FILE: kms.keyFile,
          MINIO_KMS_KES_CAPATH: kms.caFile,
          MINIO_KMS_KES_KEY_NAME: kms.defaultKey,
        }
      : {}),
  });
  // stack.ts builds its env from `kms` unless given one; here the env is always given, so `kms` is only a label.
  const label: KmsClient = kms ?? { endpoint: '(none)', certFile: '', keyFile: '', caFile: '', defaultKey: '' };
  const minio = new Minio(dir, await freePort(), await freePort(), label, { env });
  minio.user = user;
  minio.password = password;
  const known = new Set(descendants(process.pid));
  try {
    await minio.start();
  } catch (err) {
    await minio.stop(); // start() gives up without stopping a MinIO that never became ready
    throw err;
  }
  const bin = realpathSync(peer('minio'));
  const pid = descendants(process.pid).find((p) => !known.has(p) && exeOf(p) === bin);
  if (!pid) {
    await minio.stop();
    throw new Error(`MinIO started but its process (${bin}) is not among this process's children`);
  }
  // proc.mts kills what it tracks on exit/^C; MinIO is stack.ts's child, so kill it by pid the same way.
  const kill = () => {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  };
  process.once('exit', kill);
  const stop = async () => {
    await minio.stop();
    process.off('exit', kill); // the pid may be reused once MinIO is gone
  };
  const mc = new Mc(join(dir, 'mc'));
  try {
    await mc.alias(minio);
    await mc.run(['mb', `local/${BUCKET}`]);
    if (kms) await mc.run(['encrypt', 'set', 'sse-kms', kms.defaultKey, `local/${BUCKET}`]);
  } catch (err) {
    await stop();
    throw err;
  }
  return { minio, pid, mc, stop };
}

export interface EncryptionCheck {
  /** What `mc stat` reported for the sampled objects, e.g. "aws:kms arn:aws:kms:bench-key". */
  stat: string[];
  /** Whether each sampled object's xl.meta holds a KMS-sealed object key. */
  sealedKeyOnDisk: boolean[];
  /** Whether the objects' plaintext bytes can be found in their xl.meta (small objects are stored inline). */
  plaintextOnDisk: boolean[];
  /** Empty when the objects are what the target promises (SSE-KMS with the bench key, or plain for 'none'). */
  problems: string[];
}

/** Looks at a few objects written by a PUT run, with the real `mc stat` and on the drive itself. */
export async function checkEncryption(
  m: E2EMinio,
  objects: number,
  payloadHead: string,
  kmsKey: string | undefined,
): Promise<EncryptionCheck> {
  const picks = [...new Set([0, Math.floor(objects / 2), objects - 1])].filter((i) => i >= 0);
  const head = Buffer.from(payloadHead, 'hex');
  const out: EncryptionCheck = { stat: [], sealedKeyOnDisk: [], plaintextOnDisk: [], problems: [] };
  if (picks.length === 0 || head.length === 0) out.problems.push('no objects to check');
  for (const i of picks) {
    const name = `${OBJECT_PREFIX}${String(i).padStart(8, '0')}`;
    let meta: Record<string, string> = {};
    try {
      const [stat] = await m.mc.json(['stat', `local/${BUCKET}/${name}`]);
      meta = (stat?.metadata ?? {}) as Record<string, string>;
    } catch (err) {
      out.problems.push(`mc stat ${name}: ${(err as Error).message.split('\n')[0]}`);
      continue;
    }
    const sse = meta['X-Amz-Server-Side-Encryption'] ?? '';
    const keyId = meta['X-Amz-Server-Side-Encryption-Aws-Kms-Key-Id'] ?? '';
    out.stat.push(`${sse || 'none'}${keyId ? ` ${keyId}` : ''}`);
    let xl: Buffer;
    try {
      xl = readFileSync(join(m.minio.dir, 'disk', BUCKET, name, 'xl.meta'));
    } catch (err) {
      out.problems.push(`${name}: no xl.meta on the drive (${(err as Error).message})`);
      continue;
    }
    const sealed = xl.includes('Kms-Sealed-Key');
    const plain = head.length > 0 && xl.includes(head);
    out.sealedKeyOnDisk.push(sealed);
    out.plaintextOnDisk.push(plain);
    if (kmsKey) {
      if (sse !== 'aws:kms') out.problems.push(`${name}: mc stat shows encryption '${sse || 'none'}', want aws:kms`);
      if (!keyId.endsWith(kmsKey)) out.problems.push(`${name}: mc stat shows KMS key '${keyId}', want ${kmsKey}`);
      if (!sealed) out.problems.push(`${name}: xl.meta holds no KMS-sealed key`);
      if (plain) out.problems.push(`${name}: the plaintext is in xl.meta`);
    } else {
      if (sse) out.problems.push(`${name}: encrypted (${sse}) although no KMS is configured`);
      // The plaintext check must be able to see plaintext, or its "not found" under a KMS would prove nothing.
      if (!plain)
        out.problems.push(
          `${name}: plaintext not found in xl.meta of an unencrypted object (did MinIO stop inlining small objects?)`,
        );
    }
  }
  return out;
}
