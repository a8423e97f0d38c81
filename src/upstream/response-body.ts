// Reading Keap's error bodies, which a handler must see before it decides (a 401's Apigee
// fault, a 429's kind of limit), and keeping what was read for the relay.
import type { IncomingMessage } from 'node:http';

/** The most of an error body read to classify it; Apigee's faults are a few hundred bytes. */
export const FAULT_BODY_LIMIT = 64 * 1024;

const READ_BODY = Symbol('keap-proxy.read-body');
type ReadResponse = IncomingMessage & { [READ_BODY]?: Buffer };

/** The body of `res` was read whole by a handler: the relay sends these bytes. */
export function keepReadBody(res: IncomingMessage, body: Buffer): IncomingMessage {
  (res as ReadResponse)[READ_BODY] = body;
  return res;
}

export function readBodyOf(res: IncomingMessage): Buffer | undefined {
  return (res as ReadResponse)[READ_BODY];
}

/**
 * The whole body when it is at most `limit` bytes. A larger one is no Apigee fault, and the
 * client must still get all of it: what was read is put back and undefined returned, so the
 * response can be relayed as it came.
 */
export function peekSmall(res: IncomingMessage, limit: number): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    // The error listener stays: a response put back may still fail before the relay listens.
    const stop = (): void => {
      res.off('data', onData);
      res.off('end', onEnd);
    };
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      size += chunk.length;
      if (size <= limit) return;
      res.pause();
      stop();
      res.unshift(Buffer.concat(chunks));
      resolve(undefined);
    };
    const onEnd = (): void => {
      stop();
      resolve(Buffer.concat(chunks));
    };
    res.on('data', onData);
    res.once('end', onEnd);
    res.once('error', reject);
  });
}

/** Up to `limit` bytes of the body; the rest is read and dropped (the response is not relayed). */
export function readSmall(res: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    res.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size <= limit) chunks.push(chunk);
    });
    res.once('end', () => resolve(Buffer.concat(chunks)));
    res.once('error', reject);
  });
}
