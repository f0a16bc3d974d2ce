// The Vault Transit anchor: what many users would pick instead of a KES. A real Vault (the `vault` peer) on the same
// machine, in the same run, over TLS like kesd, driven by the same load generator: Transit datakey (the analog of
// kesd's generate: a fresh 256-bit data key, plaintext and wrapped), encrypt of a 32-byte data key, and decrypt.
// Its rows sit beside kesd's generate and decrypt of the same run at the same connection counts.
//
// Vault runs with file storage and a TLS listener (harness/vault.ts); Transit keys live in Vault's cache after the
// first use, so the storage is not on the measured path. One aes256-gcm96 key.
import { join } from 'node:path';
import { startVault } from '../harness/vault.ts';
import { ensureLoadgen, runLoadgen, type LoadgenResult } from './lib/loadgen.mts';
import type { Identities } from './lib/targets.mts';

export type TransitOp = 'transit-datakey' | 'transit-encrypt' | 'transit-decrypt';

export interface TransitPoint {
  op: TransitOp;
  conns: number;
  result?: LoadgenResult;
  error?: string;
}

export interface TransitResult {
  vault: string;
  points: TransitPoint[];
}

const KEY = 'bench-key';

export async function runTransit(opts: {
  ids: Identities;
  conns: number[];
  durationS: number;
  warmupS: number;
  ops?: TransitOp[];
  log: (s: string) => void;
}): Promise<TransitResult> {
  const loadgen = ensureLoadgen(opts.log);
  const vault = await startVault({ tls: true });
  try {
    await vault.call('POST', 'sys/mounts/transit', { type: 'transit' });
    await vault.call('POST', `transit/keys/${KEY}`, { type: 'aes256-gcm96' });
    const version = (await vault.call('GET', 'sys/seal-status')).body.version as string;
    opts.log(`Vault ${version} up on ${vault.addr} (TLS, file storage)`);
    const points: TransitPoint[] = [];
    for (const op of opts.ops ?? (['transit-datakey', 'transit-encrypt', 'transit-decrypt'] as TransitOp[])) {
      for (const conns of opts.conns) {
        const point: TransitPoint = { op, conns };
        try {
          point.result = await runLoadgen(loadgen, {
            url: vault.addr,
            cert: opts.ids.client.certFile,
            key: opts.ids.client.keyFile,
            ca: vault.caFile!,
            op,
            conns,
            durationS: opts.durationS,
            warmupS: opts.warmupS,
            pids: [vault.pid()],
            keyName: KEY,
            env: { LOADGEN_VAULT_TOKEN: vault.rootToken },
          });
          const r = point.result;
          if (r.ops === 0) point.error = `no successful request: ${JSON.stringify(r.error_sample ?? r.errors)}`;
          opts.log(
            `vault ${op.padEnd(15)} ${String(conns).padStart(3)} conns: ${Math.round(r.ops_per_s)} ops/s  p50 ${r.latency_ms.p50?.toFixed(2)} p99 ${r.latency_ms.p99?.toFixed(2)} ms  cpu ${r.server_cpu?.us_per_req.toFixed(0)} µs/req  other load ${r.machine.other_cores.toFixed(2)}`,
          );
        } catch (err) {
          point.error = (err as Error).message.split('\n').slice(0, 3).join(' ');
          opts.log(`vault ${op} ${conns}: FAILED ${point.error}`);
        }
        points.push(point);
      }
    }
    return { vault: version, points };
  } catch (err) {
    throw new Error(`${(err as Error).message}\nVault's log: ${join(vault.dir, 'vault.log')}`, { cause: err });
  } finally {
    await vault.remove();
  }
}

/** The Transit rows beside kesd's generate and decrypt at the same connection counts (from the same run). */
export function transitMarkdown(
  t: TransitResult,
  kesd: (op: 'generate' | 'decrypt', conns: number) => LoadgenResult | undefined,
): string {
  const fmt = (n: number | undefined, digits = 0) => (n === undefined || Number.isNaN(n) ? '–' : n.toFixed(digits));
  const lines = [
    `Vault ${t.vault} (the \`vault\` peer), TLS listener, one aes256-gcm96 Transit key, root token; same machine, same run, same load generator.`,
    "kesd's column is its generate (for datakey and encrypt) or decrypt row of this run at the same connections.",
    '',
    '| Vault Transit op | conns | Vault ops/s | p50 / p99 ms | Vault CPU µs/req | kesd ops/s | kesd ÷ Vault | kesd CPU µs/req |',
    '|---|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const p of t.points) {
    const r = p.result;
    const k = kesd(p.op === 'transit-decrypt' ? 'decrypt' : 'generate', p.conns);
    if (p.error || r === undefined) {
      lines.push(`| ${p.op} | ${p.conns} | failed: ${p.error ?? 'no result'} | | | | | |`);
      continue;
    }
    const ratio = k && r.ops_per_s > 0 ? `${(k.ops_per_s / r.ops_per_s).toFixed(2)}×` : '–';
    lines.push(
      `| ${p.op} | ${p.conns} | ${fmt(r.ops_per_s)} | ${fmt(r.latency_ms.p50, 2)} / ${fmt(r.latency_ms.p99, 2)} | ${fmt(r.server_cpu?.us_per_req)} | ${fmt(k?.ops_per_s)} | ${ratio} | ${fmt(k?.server_cpu?.us_per_req)} |`,
    );
  }
  return lines.join('\n');
}
