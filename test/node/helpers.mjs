// What the end-to-end tests share: a free loopback port, and a WebSocket
// client that hands out the server's frames in order.
import assert from 'node:assert/strict';
import net from 'node:net';
import WebSocket from 'ws';

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
}

// connect opens a socket to the herald at base (HOST:PORT) and resolves with
// a reader that hands out frames in order.
export function connect(base, query) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://${base}/ws?${query}`);
    const frames = [];
    const waiters = [];
    ws.on('message', (data, isBinary) => {
      assert.equal(isBinary, false);
      const msg = JSON.parse(data.toString()); // one JSON object per frame
      const w = waiters.shift();
      if (w) w(msg); else frames.push(msg);
    });
    // ms is a failure bound for a loaded machine.
    const next = (ms = 20000) => new Promise((res, rej) => {
      if (frames.length) return res(frames.shift());
      const t = setTimeout(() => rej(new Error('timed out waiting for a frame')), ms);
      waiters.push((m) => { clearTimeout(t); res(m); });
    });
    const send = (obj) => ws.send(JSON.stringify(obj));
    const closed = new Promise((res) => ws.on('close', (code) => res(code)));
    ws.on('open', () => resolve({ ws, next, send, closed }));
    ws.on('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
    ws.on('error', reject);
  });
}
