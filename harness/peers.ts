// Paths of the real peer binaries built by `npm run peers` (scripts/peers.mjs, versions in peers.json): each lives in
// <cache>/<name>@<version>/<name>, computed here from peers.json as peers.mjs computes it. KESD_PEER_<NAME> (e.g.
// KESD_PEER_VAULT, KESD_PEER_KES_LATEST) names another binary for one peer, for a local run.
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';

const cache = resolve(
  process.env.KESD_PEERS_DIR || join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'stateful-kes', 'peers'),
);
const pinned = JSON.parse(readFileSync(resolve(import.meta.dirname, '..', 'peers.json'), 'utf8')) as Record<
  string,
  { version: string }
>;

export type Peer = 'minio' | 'mc' | 'kes-v0.22' | 'kes-latest' | 'vault';

/** The binary of a peer; throws (never skips) when it was not built, so a missing peer is a red run. */
export function peer(name: Peer): string {
  const override = process.env[`KESD_PEER_${name.toUpperCase().replace(/[^A-Z0-9]/g, '_')}`];
  if (override) {
    if (!existsSync(override)) throw new Error(`peer '${name}': ${override} (from the environment) does not exist`);
    return override;
  }
  const version = pinned[name]?.version;
  if (version === undefined) throw new Error(`peer '${name}' is not in peers.json`);
  const path = join(cache, `${name}@${version}`.replace(/[^\w.@-]/g, '_'), name);
  if (!existsSync(path)) throw new Error(`peer '${name}' (${version}) is not built at ${path}; run 'npm run peers'`);
  return path;
}
