// A Helm chart repository on loopback for one chart archive: GET /index.yaml (name, version, sha256 digest, URL, all
// read from the archive itself) and GET /<archive>. Lets a real Helm client (the Kubernetes provider's) install a
// chart from a repository URL where the public one cannot be reached.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { basename } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { parse, stringify } from 'yaml';

export interface ChartMetadata {
  readonly apiVersion: string;
  readonly name: string;
  readonly version: string;
  readonly appVersion?: string;
}

/** Chart.yaml of a chart archive (a gzipped tar with `<chart>/Chart.yaml`). */
export function chartMetadata(archive: Buffer): ChartMetadata {
  const tar = gunzipSync(archive);
  for (let at = 0; at + 512 <= tar.length; ) {
    const header = tar.subarray(at, at + 512);
    if (header.every((b) => b === 0)) break;
    const field = (from: number, len: number) =>
      header
        .subarray(from, from + len)
        .toString('utf8')
        .replace(/\0.*$/s, '');
    const name = [field(345, 155), field(0, 100)].filter(Boolean).join('/');
    const size = parseInt(field(124, 12).trim() || '0', 8);
    const body = tar.subarray(at + 512, at + 512 + size);
    if (/^[^/]+\/Chart\.yaml$/.test(name)) return parse(body.toString('utf8')) as ChartMetadata;
    at += 512 + Math.ceil(size / 512) * 512;
  }
  throw new Error('no <chart>/Chart.yaml in the archive');
}

export interface HelmRepo {
  readonly url: string;
  readonly requests: string[];
  close(): Promise<void>;
}

export async function serveHelmRepo(archivePath: string): Promise<HelmRepo> {
  const archive = readFileSync(archivePath);
  const meta = chartMetadata(archive);
  const file = basename(archivePath);
  const requests: string[] = [];
  const server = createServer((req, res) => {
    requests.push(`${req.method} ${req.url}`);
    if (req.url === '/index.yaml') {
      const { port } = server.address() as AddressInfo;
      const entry = {
        ...meta,
        created: '2025-05-05T00:00:00Z',
        digest: createHash('sha256').update(archive).digest('hex'),
        urls: [`http://127.0.0.1:${port}/${file}`],
      };
      res
        .writeHead(200, { 'content-type': 'application/x-yaml' })
        .end(stringify({ apiVersion: 'v1', entries: { [meta.name]: [entry] }, generated: '2025-05-05T00:00:00Z' }));
    } else if (req.url === `/${file}`) {
      res.writeHead(200, { 'content-type': 'application/gzip' }).end(archive);
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () => new Promise((ok) => server.close(() => ok())),
  };
}
