// What the SDK's tests share: the real herald binary (built here unless
// HERALD_BIN names one), started on a random loopback port; tokens; the server
// API; a TCP proxy that can cut and refuse connections; waiting helpers.
import { execFileSync, spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdtempSync, existsSync } from 'node:fs';
import { once } from 'node:events';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const SECRET = 'js-sdk-test-secret-0123456789abcdef0123456789';
export const API_KEY = 'js-sdk-test-api-key-0123';
// Node's fetch, kept before a test installs a DOM's.
const nodeFetch = globalThis.fetch;

let bin = process.env.HERALD_BIN;

/** The herald binary: HERALD_BIN, or built from this checkout into a temporary directory. */
export function heraldBin() {
  if (bin && existsSync(bin)) return bin;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'herald-js-'));
  bin = path.join(dir, 'herald');
  execFileSync('go', ['build', '-o', bin, './cmd/herald'], { cwd: root, stdio: 'inherit' });
  return bin;
}

/** A port free on the loopback interface right now. */
export async function freePort() {
  const srv = net.createServer().listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const { port } = srv.address();
  srv.close();
  return port;
}

/**
 * Starts herald on a random port (or `port`) and resolves when /healthz answers.
 * Returns { port, base, ws, stop(), restart() }: restart stops it and starts a new
 * process on the same port (the memory broker's history is gone).
 */
export async function startHerald({ args = [], port } = {}) {
  port ||= await freePort();
  const base = `127.0.0.1:${port}`;
  const h = { port, base, ws: `ws://${base}/ws`, proc: null, log: '' };
  const launch = async () => {
    const proc = spawn(heraldBin(), ['serve', '--addr', base, '--jwt-secret', SECRET, '--api-key', API_KEY, '--log-level', 'warn', ...args], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    proc.stderr.on('data', (d) => (h.log += d));
    h.proc = proc;
    const exited = new Promise((res) => proc.once('exit', res));
    h.exited = exited;
    for (let i = 0; i < 400; i++) {
      if (proc.exitCode !== null) throw new Error(`herald exited: ${h.log}`);
      try {
        const r = await nodeFetch(`http://${base}/healthz`);
        if (r.ok) return;
      } catch {}
      await sleep(25);
    }
    throw new Error(`herald did not start: ${h.log}`);
  };
  h.stop = async () => {
    if (!h.proc || h.proc.exitCode !== null) return;
    h.proc.kill('SIGKILL');
    await h.exited;
  };
  h.restart = async () => {
    await h.stop();
    await launch();
  };
  await launch();
  return h;
}

const b64 = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

/** An HS256 token for herald's --jwt-secret (or `secret`). */
export function token({ sub = 'alice', org, role, ttlSec = 3600, secret = SECRET, channels } = {}) {
  const claims = { sub, exp: Math.floor(Date.now() / 1000) + ttlSec };
  if (org) claims.org = org;
  if (role) claims.role = role;
  if (channels) claims.channels = channels;
  const head = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  return `${head}.${createHmac('sha256', secret).update(head).digest('base64url')}`;
}

/** Calls the server API; resolves with the JSON answer. */
export async function api(h, endpoint, body) {
  const r = await nodeFetch(`http://${h.base}${endpoint}`, {
    method: body ? 'POST' : 'GET',
    headers: { 'X-API-Key': API_KEY, 'Content-Type': 'application/json' },
    body: body && JSON.stringify(body),
  });
  return r.json();
}

/**
 * A TCP proxy in front of `target` (HOST:PORT). cut() destroys every open
 * connection (the client sees 1006, as on a network loss); refuse(true) makes it
 * close new connections at once until refuse(false); blockWebSocket(true) closes
 * those whose request asks for a WebSocket upgrade (as a proxy that only passes
 * plain HTTP does) and lets the others through.
 */
export async function startProxy(target) {
  const [host, port] = target.split(':');
  const socks = new Set();
  let refusing = false;
  let blockWS = false;
  let accepted = 0;
  const srv = net.createServer((c) => {
    accepted++;
    if (refusing) return c.destroy();
    const up = net.connect(+port, host);
    socks.add(c).add(up);
    const end = () => {
      c.destroy();
      up.destroy();
      socks.delete(c);
      socks.delete(up);
    };
    c.on('error', end).on('close', end);
    up.on('error', end).on('close', end);
    c.once('data', (head) => {
      if (blockWS && /^upgrade:\s*websocket/im.test(head.toString('latin1'))) return end();
      up.write(head);
      c.pipe(up);
    });
    up.pipe(c);
  });
  await new Promise((res) => srv.listen(0, '127.0.0.1', res));
  const p = srv.address().port;
  return {
    base: `127.0.0.1:${p}`,
    ws: `ws://127.0.0.1:${p}/ws`,
    get accepted() {
      return accepted;
    },
    cut: () => socks.forEach((s) => s.destroy()),
    refuse: (v) => (refusing = v),
    blockWebSocket: (v) => (blockWS = v),
    close: () => {
      socks.forEach((s) => s.destroy());
      return new Promise((res) => srv.close(res));
    },
  };
}

export const sleep = (ms) => new Promise((res) => setTimeout(res, ms));

/** Resolves when pred() (or the promise it returns) is truthy, checked every 10 ms; rejects after
 *  `ms` (a failure bound). */
export async function until(pred, what = 'condition', ms = 30000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await pred();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** Resolves with the first value `emitter.on(type)` gives that matches pred. */
export function next(emitter, type, pred = () => true, ms = 30000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      off();
      reject(new Error(`timed out waiting for ${type}`));
    }, ms);
    const off = emitter.on(type, (v) => {
      if (!pred(v)) return;
      clearTimeout(t);
      off();
      resolve(v);
    });
  });
}
