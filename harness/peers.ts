// Paths of the real peer binaries built by `npm run peers` (scripts/peers.mjs, versions in peers.json).
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';

const cache = process.env.KESD_PEERS_DIR || join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'stateful-kes', 'peers');
const binJson = join(resolve(cache), 'bin.json');

export type Peer = 'minio' | 'mc' | 'kes-v0.22' | 'kes-latest' | 'vault';

/** The binary of a peer; throws (never skips) when it was not built, so a missing peer is a red run. */
export function peer(name: Peer): string {
  if (!existsSync(binJson)) throw new Error(`peers not built: ${binJson} is missing; run 'npm run peers'`);
  const path = (JSON.parse(readFileSync(binJson, 'utf8')) as Record<string, string>)[name];
  if (!path || !existsSync(path)) throw new Error(`peer '${name}' is not built; run 'npm run peers'`);
  return path;
}
