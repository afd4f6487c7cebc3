// What the end-to-end tests share: a free loopback port, and a WebSocket
// client that hands out the server's frames in order.
import assert from 'node:assert/strict';
import net from 'node:net';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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

// startHerald runs `herald serve` (the binary at bin) with args on a free
// loopback port and resolves, once /healthz answers, with its base
// (HOST:PORT) and stop, which sends SIGTERM and resolves with the exit code.
export async function startHerald(bin, args) {
  assert.ok(bin, 'HERALD_BIN must point at the herald binary');
  const base = `127.0.0.1:${await freePort()}`;
  const proc = spawn(bin, ['serve', '--addr', base, ...args], { stdio: ['ignore', 'inherit', 'inherit'] });
  await healthz(base);
  const stop = () => {
    const exited = new Promise((resolve) => proc.on('exit', (code) => resolve(code)));
    proc.kill('SIGTERM');
    return exited;
  };
  return { base, stop };
}

// startRedisPair starts a redis-server on a Unix socket in a temporary
// directory and two `herald serve` processes (the binary at bin) joined by
// it, configured through HERALD_* variables as an operator would (insecure
// query auth, apiKey, prefix). It resolves once both answer /healthz with
// { nodes: [{ base, proc }], redis, stop, crash, revive }; stop sends each
// node SIGTERM, asserts it exits 0, then ends Redis and removes the
// directory; crash(i) kills node i, revive(i) starts it again on its
// address.
export async function startRedisPair(bin, { apiKey, prefix }) {
  assert.ok(bin, 'HERALD_BIN must point at the herald binary');
  const dir = mkdtempSync(join(tmpdir(), `herald-${prefix}-`));
  const sock = join(dir, 'redis.sock');
  const redis = spawn('redis-server', ['--port', '0', '--unixsocket', sock, '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' });
  const nodes = [];
  const serve = (base) => {
    const env = { ...process.env, HERALD_ADDR: base, HERALD_INSECURE_QUERY_AUTH: 'true', HERALD_API_KEYS: apiKey,
      HERALD_BROKER: 'redis', HERALD_REDIS_URL: `unix://${sock}`, HERALD_REDIS_PREFIX: prefix, HERALD_LOG_LEVEL: 'error' };
    return spawn(bin, ['serve'], { env, stdio: ['ignore', 'inherit', 'inherit'] });
  };
  for (let i = 0; i < 2; i++) {
    const base = `127.0.0.1:${await freePort()}`;
    nodes.push({ base, proc: serve(base) });
  }
  for (const n of nodes) await healthz(n.base);
  const stop = async () => {
    for (const n of nodes) {
      const exited = new Promise((resolve) => n.proc.on('exit', (code) => resolve(code)));
      n.proc.kill('SIGTERM');
      assert.equal(await exited, 0, 'herald exits 0 on SIGTERM');
    }
    if (redis.exitCode === null) redis.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  };
  // crash kills node i (SIGKILL) and resolves once it is gone; revive
  // starts it again on the same address and resolves once it answers.
  const crash = (i) => {
    const exited = new Promise((resolve) => nodes[i].proc.on('exit', resolve));
    nodes[i].proc.kill('SIGKILL');
    return exited;
  };
  const revive = async (i) => {
    nodes[i].proc = serve(nodes[i].base);
    await healthz(nodes[i].base);
  };
  return { nodes, redis, stop, crash, revive };
}

// healthz waits until the herald at base answers /healthz with status want,
// and resolves with its JSON body.
export async function healthz(base, want = 200) {
  const deadline = Date.now() + 30000; // a failure bound for a loaded machine
  for (;;) {
    try {
      const r = await fetch(`http://${base}/healthz`);
      if (r.status === want) return await r.json();
    } catch {}
    if (Date.now() > deadline) throw new Error(`${base}/healthz never answered ${want}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A token for user (and org, when given) signed with secret, minted by `herald token`. */
export function mintToken(bin, secret, user, org) {
  const args = ['token', '--user', user, '--jwt-secret', secret];
  if (org) args.push('--org', org);
  return execFileSync(bin, args).toString().trim();
}
