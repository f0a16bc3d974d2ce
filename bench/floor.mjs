#!/usr/bin/env node
// The floor: a bare Node TLS server with requestCert, as kesd configures it, speaking HTTP/1.1 (node:http) or h2
// (node:http2) by ALPN, that reads the request body and answers every request with the same fixed JSON body (by
// default as long as a generate response).
// Whatever kesd costs above this is kesd; below it no Node server on this machine can go.
// --workers N runs N processes on node:cluster (the primary only forks), the same layout as `kesd server --workers N`.
//   node bench/floor.mjs --cert server.crt --key server.key [--addr 127.0.0.1:0] [--body-size 130] [--workers 1]
import cluster from 'node:cluster';
import http from 'node:http';
import http2 from 'node:http2';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    cert: { type: 'string' },
    key: { type: 'string' },
    addr: { type: 'string', default: '127.0.0.1:0' },
    'body-size': { type: 'string', default: '130' },
    workers: { type: 'string', default: '1' },
  },
});
const workers = Number(values.workers);
if (!values.cert || !values.key) {
  console.error('usage: node bench/floor.mjs --cert FILE --key FILE [--addr HOST:PORT] [--body-size N] [--workers N]');
  process.exit(2);
}

/** A generate-shaped JSON body of exactly `size` bytes: {"plaintext":"<44 b64>","ciphertext":"<padding>"}. */
function fixedBody(size) {
  const head = `{"plaintext":"${'A'.repeat(43)}=","ciphertext":"`;
  const tail = '"}';
  const pad = Math.max(0, size - head.length - tail.length);
  return Buffer.from(head + 'B'.repeat(pad) + tail);
}

if (workers > 1 && cluster.isPrimary) {
  let listening = 0;
  let stopping = false;
  for (let w = 0; w < workers; w++) cluster.fork();
  cluster.on('listening', (_w, a) => {
    if (++listening === workers) console.error(`floor listening on ${a.address}:${a.port} (${workers} workers)`);
  });
  cluster.on('exit', (_w, code, signal) => {
    if (!stopping) {
      console.error(`floor: a worker exited (${code ?? signal})`);
      process.exit(1);
    }
  });
  const stopAll = () => {
    stopping = true;
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM');
    setTimeout(() => process.exit(0), 2000).unref();
    cluster.on('exit', () => {
      if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(0);
    });
  };
  process.once('SIGTERM', stopAll);
  process.once('SIGINT', stopAll);
} else {
  serve();
}

function serve() {
  const body = fixedBody(Number(values['body-size']));
  const headers = { 'content-type': 'application/json', 'content-length': body.length };
  // One TLS listener, HTTP/1.1 or h2 by ALPN, as kesd's (server/server.ts): h1 on node:http, h2 on node:http2's core
  // stream API (one respond() and one end() per reply, as kesd's h2.ts).
  const server = tls.createServer({
    cert: readFileSync(values.cert),
    key: readFileSync(values.key),
    minVersion: 'TLSv1.2',
    requestCert: true,
    rejectUnauthorized: false,
    ALPNProtocols: ['h2', 'http/1.1'],
  });
  const h1 = http.createServer(
    { keepAliveTimeout: 120_000, headersTimeout: 10_000, requestTimeout: 30_000 },
    (req, res) => {
      req.on('data', () => {});
      req.on('end', () => {
        res.writeHead(200, headers);
        res.end(body);
      });
    },
  );
  const h2 = http2.createServer({ settings: { maxConcurrentStreams: 128 } });
  h2.on('stream', (stream) => {
    stream.on('error', () => {});
    stream.on('data', () => {});
    stream.on('end', () => {
      stream.respond({ ':status': 200, ...headers });
      stream.end(body);
    });
  });
  server.on('secureConnection', (socket) => {
    socket.setNoDelay(true);
    if (socket.alpnProtocol === 'h2') h2.emit('connection', socket);
    else h1.emit('connection', socket);
  });
  const i = values.addr.lastIndexOf(':');
  server.listen(Number(values.addr.slice(i + 1)), values.addr.slice(0, i) || undefined, () => {
    const a = server.address();
    console.error(`floor listening on ${a.address}:${a.port} (body ${body.length} bytes)`);
  });
  const stop = () => process.exit(0);
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}
