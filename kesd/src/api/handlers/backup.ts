// GET /v1/sys/backup (kesd's extension; system admin only): a backup of the embedded store while kesd serves, as a
// tar stream (store/backup.ts), so a client outside the pod (`kesd backup --server`, the Pulumi CronJob) gets one
// though the data dir is on a volume only this pod can mount. The snapshot is staged in the data dir and removed
// once sent (a crash leaves it for the next start to remove).
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { KesError } from '../../kes/errors.js';
import { backupChunks, backupFileName, BACKUP_STAGING_PREFIX, snapshotDataDir } from '../../store/backup.js';
import type { Exchange } from '../exchange.js';
import { STREAMING, type Reply, type RequestContext } from '../context.js';

const ErrBackupNotHere = new KesError(
  501,
  'backup: the etcd store is backed up with an etcd snapshot, not through kesd',
);

function drained(exchange: Exchange): Promise<void> {
  return new Promise((resolve) => {
    exchange.onDrain(resolve);
    exchange.onClose(resolve);
  });
}

export async function backup(ctx: RequestContext): Promise<Reply> {
  const { dataDir, system } = ctx.server;
  if (dataDir === undefined || system.store.snapshot === undefined) throw ErrBackupNotHere;
  const staging = join(dataDir, `${BACKUP_STAGING_PREFIX}${randomBytes(6).toString('hex')}`);
  try {
    let manifest: Awaited<ReturnType<typeof snapshotDataDir>>;
    try {
      manifest = await snapshotDataDir(dataDir, system.store, staging);
    } catch (err) {
      throw Object.assign(new KesError(502, 'failed to back up the store'), { cause: err });
    }
    const { exchange } = ctx;
    exchange.keepOpen();
    exchange.start(200, {
      'content-type': 'application/x-tar',
      'content-disposition': `attachment; filename="${backupFileName()}"`,
    });
    for await (const chunk of backupChunks(staging, manifest)) {
      if (exchange.closed) break;
      if (!exchange.write(chunk)) await drained(exchange);
    }
    exchange.end();
    return STREAMING;
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}
