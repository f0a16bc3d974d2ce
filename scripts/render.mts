// `npm run render -- --out DIR [--stack dev|ha] [--tls-cache FILE]`: writes every Kubernetes object of a stack (the
// config of Pulumi.<stack>.yaml; `ha` is three kesd replicas on etcd) as YAML,
// rendered through the Pulumi mocks with generated certificates and keys filled in. No cluster, no Pulumi CLI.
// The output contains private keys and the unseal key: it is for review and tests, never for a shared place.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { countByKind, renderStack } from '../harness/stack-render.ts';
import { stringify } from 'yaml';

const { values } = parseArgs({
  options: { out: { type: 'string' }, stack: { type: 'string', default: 'dev' }, 'tls-cache': { type: 'string' } },
});
if (!values.out) {
  console.error('usage: npm run render -- --out DIR [--stack dev|ha] [--tls-cache FILE]');
  process.exit(2);
}
const render = await renderStack({ stack: values.stack, tlsCache: values['tls-cache'] });
mkdirSync(values.out, { recursive: true, mode: 0o700 });
// Named by what they are, not by registration order (which varies with how fast outputs resolve).
render.manifests.forEach((m) => {
  const file = `${m.metadata.namespace ?? '_cluster'}--${m.kind.toLowerCase()}--${m.metadata.name}.yaml`;
  writeFileSync(join(values.out!, file), stringify(m, { lineWidth: 0 }), { mode: 0o600 });
});
for (const c of render.charts)
  writeFileSync(join(values.out, `chart-${c.name}.yaml`), stringify(c, { lineWidth: 0 }), { mode: 0o600 });
const counts = countByKind(render);
console.log(`rendered stack '${values.stack}' into ${values.out}:`);
for (const [kind, n] of Object.entries(counts).sort()) console.log(`  ${String(n).padStart(3)}  ${kind}`);
process.exit(0);
