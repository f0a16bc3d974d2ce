// Raw HTTP/2 frames for tests that must send what no well-behaved client library sends (Rapid Reset, stalls).
import { once } from 'node:events';
import tls from 'node:tls';

export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
export const FRAME = { DATA: 0x0, HEADERS: 0x1, RST_STREAM: 0x3, SETTINGS: 0x4, PING: 0x6, GOAWAY: 0x7 } as const;
export const FLAG = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4 } as const;

/** HPACK literal header fields without indexing, new names (RFC 7541 6.2.2); every string here is < 127 bytes. */
export function hpack(headers: [string, string][]): Buffer {
  return Buffer.concat(
    headers.flatMap(([n, v]) => [Buffer.from([0, n.length]), Buffer.from(n), Buffer.from([v.length]), Buffer.from(v)]),
  );
}

export function frame(type: number, flags: number, streamId: number, payload: Buffer): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head.writeUInt8(type, 3);
  head.writeUInt8(flags, 4);
  head.writeUInt32BE(streamId, 5);
  return Buffer.concat([head, payload]);
}

export function rstStream(streamId: number, code: number): Buffer {
  const payload = Buffer.alloc(4);
  payload.writeUInt32BE(code);
  return frame(FRAME.RST_STREAM, 0, streamId, payload);
}

export interface RawH2 {
  readonly socket: tls.TLSSocket;
  /** The GOAWAY error code, once one came. */
  goaway(): number | undefined;
  closed(): boolean;
  /** Resolves when the server has read everything sent before (its PING ACK came back); false if the connection ended. */
  ping(): Promise<boolean>;
}

/** A TLS connection speaking h2 frame by frame: sends the preface and SETTINGS, ACKs the server's SETTINGS. */
export async function rawH2(options: tls.ConnectionOptions): Promise<RawH2> {
  const socket = tls.connect({ host: '127.0.0.1', servername: 'localhost', ...options, ALPNProtocols: ['h2'] });
  await once(socket, 'secureConnect');
  let received = Buffer.alloc(0);
  let goaway: number | undefined;
  let closed = false;
  let pong: ((ok: boolean) => void) | undefined;
  socket.on('data', (chunk: Buffer) => {
    received = Buffer.concat([received, chunk]);
    while (received.length >= 9 && received.length >= 9 + received.readUIntBE(0, 3)) {
      const length = received.readUIntBE(0, 3);
      const [type, flags] = [received[3], received[4]!];
      if (type === FRAME.SETTINGS && !(flags & FLAG.ACK))
        socket.write(frame(FRAME.SETTINGS, FLAG.ACK, 0, Buffer.alloc(0)));
      if (type === FRAME.GOAWAY) goaway = received.readUInt32BE(9 + 4);
      if (type === FRAME.PING && flags & FLAG.ACK) pong?.(true);
      received = received.subarray(9 + length);
    }
  });
  socket.on('error', () => {});
  socket.on('close', () => {
    closed = true;
    pong?.(false);
  });
  socket.write(Buffer.concat([PREFACE, frame(FRAME.SETTINGS, 0, 0, Buffer.alloc(0))]));
  const ping = () =>
    new Promise<boolean>((resolve) => {
      if (closed) return resolve(false);
      pong = resolve;
      socket.write(frame(FRAME.PING, 0, 0, Buffer.alloc(8)));
    });
  return { socket, goaway: () => goaway, closed: () => closed, ping };
}
