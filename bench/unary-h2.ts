/**
 * A minimal gRPC unary client over node:http2, for load generation: one HTTP/2 connection (as one Envoy
 * worker keeps to its authz cluster), the request framed once (gRPC length-prefixed message, PROTOCOL-HTTP2
 * "Length-Prefixed-Message"), no interceptors, deadlines or metadata objects. grpc-js's client costs about
 * as much CPU per call as the server under test, which on a small machine would cap the baseline's numbers
 * at the client's speed; Envoy's C++ client costs the authz server nothing.
 */
import http2 from 'node:http2';

/** The gRPC framing of one uncompressed message: flag 0, 4-byte big-endian length, the bytes. */
export function grpcFrame(message: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(5 + message.length);
  frame.writeUInt8(0, 0);
  frame.writeUInt32BE(message.length, 1);
  frame.set(message, 5);
  return frame;
}

/** `grpcStatus` is the `grpc-status` trailer ('0' is OK); `message` the response message when there is one. */
export type UnaryCallback = (err: Error | undefined, grpcStatus: string | undefined, message: Buffer | undefined) => void;

export class UnaryH2Client {
  readonly #session: http2.ClientHttp2Session;
  readonly #headers: http2.OutgoingHttpHeaders;

  constructor(port: number, path: string) {
    this.#session = http2.connect(`http://127.0.0.1:${port}`);
    this.#session.on('error', () => {
      /* surfaced per stream */
    });
    this.#headers = { ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers' };
  }

  /** Sends one framed request (see grpcFrame). */
  call(frame: Buffer, cb: UnaryCallback): void {
    const stream = this.#session.request(this.#headers);
    let status: string | undefined;
    let error: Error | undefined;
    const chunks: Buffer[] = [];
    const statusOf = (h: http2.IncomingHttpHeaders): void => {
      const s = h['grpc-status'];
      if (typeof s === 'string') status = s;
    };
    // Trailers-only responses (errors) carry grpc-status in the headers.
    stream.on('response', statusOf);
    stream.on('trailers', statusOf);
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('error', (err: Error) => (error = err));
    stream.on('close', () => {
      const body = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks);
      const message = body.length >= 5 ? body.subarray(5, 5 + body.readUInt32BE(1)) : undefined;
      cb(error, status, message);
    });
    stream.end(frame);
  }

  close(): void {
    this.#session.close();
  }
}
