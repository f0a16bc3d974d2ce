// An upstream for a running server: the Vault keystore its config names and the sync loop over it (sync.ts).
import type { UpstreamConfig } from '../config/upstream.js';
import type { System } from '../state/system.js';
import { failpointFromEnv, UpstreamSync, type UpstreamStatus } from './sync.js';
import { VaultKeystore } from './vault-keystore.js';

export interface Upstream {
  readonly endpoint: string;
  readonly enclave: string;
  readonly sync: UpstreamSync;
  status(): Promise<UpstreamStatus>;
  stop(): Promise<void>;
}

export function startUpstream(
  system: System,
  config: UpstreamConfig,
  log: (message: string) => void,
  env: NodeJS.ProcessEnv = process.env,
): Upstream {
  const keystore = new VaultKeystore(config.vault);
  const sync = new UpstreamSync(system, keystore, { log, failpoint: failpointFromEnv(env) });
  sync.start();
  return {
    endpoint: config.vault.endpoint,
    enclave: config.enclave,
    sync,
    status: () => sync.status(),
    async stop() {
      await sync.stop();
      keystore.close();
    },
  };
}
