// `npm start`: kesd on the embedded store with generated dev identities under .kesd-dev/.
// DEV ONLY: the unseal key is kept in .kesd-dev/unseal.key next to the data it protects (init.yml's unseal.file).
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join, relative, resolve } from 'node:path';
import { newIdentity } from './identity/certificate.js';
import { randomBytes } from './crypto/random.js';
import { initDataDir } from './boot/data-dir.js';
import { readServerConfig, type InitConfig } from './config/config.js';
import { openSealedRootKey } from './store/unseal.js';
import { runServer } from './server/run.js';

const dir = resolve(process.env.KESD_DEV_DIR ?? '.kesd-dev');
const address = process.env.KESD_DEV_ADDR ?? '127.0.0.1:7373';
const file = (name: string) => join(dir, name);

async function writeIdentity(name: string, opts: { server?: boolean } = {}): Promise<string> {
  const id = await newIdentity({
    subject: name,
    keyType: opts.server ? 'p256' : 'ed25519',
    ...(opts.server ? { ips: ['127.0.0.1', '::1'], dnsNames: ['localhost'] } : {}),
    expiryMs: 365 * 24 * 3600 * 1000,
  });
  await writeFile(file(`${name}.crt`), id.certPem);
  await writeFile(file(`${name}.key`), id.keyPem, { mode: 0o600 });
  return id.identity;
}

async function firstRun(): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await writeIdentity('server', { server: true });
  const sysadmin = await writeIdentity('sysadmin');
  const admin = await writeIdentity('admin');
  const unsealKey = randomBytes(32).toString('base64');
  await writeFile(file('unseal.key'), unsealKey + '\n', { mode: 0o600 });
  const init: InitConfig = {
    version: 'v1',
    address,
    sysadmin,
    tls: {
      key: file('server.key'),
      cert: file('server.crt'),
      password: '',
      verifyCert: false,
      proxy: { identities: [], header: '' },
    },
    unsealFile: file('unseal.key'),
    enclaves: [{ name: 'default', admin, policies: [], keys: ['my-key'] }],
  };
  await initDataDir(file('data'), init);
  console.error(`kesd dev: created identities and an initialised data dir in ${dir}`);
}

if (!existsSync(file('data'))) await firstRun();
const config = await readServerConfig(file('data'));
// The key file, also for a dev dir created when it was read from a variable.
const { root } = await openSealedRootKey(file('data'), process.env, { file: file('unseal.key') });
const rel = (name: string) => relative(process.cwd(), file(name)) || file(name);
const endpoint = `https://${address.replace(/^0\.0\.0\.0:/, '127.0.0.1:')}`;
console.log(`kesd dev server (embedded store, dev identities; the unseal key is in ${rel('unseal.key')}: dev only)
  endpoint:    ${endpoint}
  admin cert:  ${rel('admin.crt')}
  admin key:   ${rel('admin.key')}
  server CA:   ${rel('server.crt')}
  try:
    curl --cacert ${rel('server.crt')} --cert ${rel('admin.crt')} --key ${rel('admin.key')} -X POST -d '{}' ${endpoint}/v1/key/generate/my-key
  or the kesd CLI:
    KES_SERVER=${endpoint} KES_CLIENT_CERT=${rel('admin.crt')} KES_CLIENT_KEY=${rel('admin.key')} KES_CA=${rel('server.crt')} npx kesd key ls
`);
await runServer({ dir: file('data'), config, root, address, auditStdout: process.env.KESD_DEV_AUDIT === 'on' });
