// Socket.IO on two herald nodes joined by a real redis-server: a socket on
// node A receives what a native /ws client publishes on node B, and a
// socket's recovery offset from node A restores it on node B.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { io } from 'socket.io-client';
import { freePort, connect } from './helpers.mjs';

const BIN = process.env.HERALD_BIN;
const API_KEY = 'node-sio-cluster-api-key-0123456789';
const dir = mkdtempSync(join(tmpdir(), 'herald-sio-cluster-'));
const sock = join(dir, 'redis.sock');
let redis;
const nodes = [];

before(async () => {
  assert.ok(BIN, 'HERALD_BIN must point at the herald binary');
  redis = spawn('redis-server', ['--port', '0', '--unixsocket', sock, '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' });
  for (let i = 0; i < 2; i++) {
    const base = `127.0.0.1:${await freePort()}`;
    const env = { ...process.env, HERALD_ADDR: base, HERALD_INSECURE_QUERY_AUTH: 'true', HERALD_API_KEYS: API_KEY,
      HERALD_BROKER: 'redis', HERALD_REDIS_URL: `unix://${sock}`, HERALD_REDIS_PREFIX: 'node-sio', HERALD_LOG_LEVEL: 'error' };
    nodes.push({ base, proc: spawn(BIN, ['serve'], { env, stdio: ['ignore', 'inherit', 'inherit'] }) });
  }
  for (const n of nodes) {
    const deadline = Date.now() + 10000;
    for (;;) {
      try {
        if ((await fetch(`http://${n.base}/healthz`)).ok) break;
      } catch {}
      if (Date.now() > deadline) throw new Error(`${n.base} did not start`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
});

after(async () => {
  for (const n of nodes) {
    const exited = new Promise((resolve) => n.proc.on('exit', (code) => resolve(code)));
    n.proc.kill('SIGTERM');
    assert.equal(await exited, 0, 'herald exits 0 on SIGTERM');
  }
  if (redis.exitCode === null) redis.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

function open(base, auth) {
  const s = io(`http://${base}`, { auth, transports: ['websocket'], reconnection: false });
  return new Promise((resolve, reject) => {
    s.once('connect', () => resolve(s));
    s.once('connect_error', reject);
  });
}

function collect(s, name) {
  const got = [];
  s.on(name, (u) => got.push(u));
  got.until = async (n) => {
    const deadline = Date.now() + 10000;
    while (got.length < n) {
      if (Date.now() > deadline) throw new Error(`${got.length} of ${n} ${name} events`);
      await new Promise((r) => setTimeout(r, 20));
    }
    return got;
  };
  return got;
}

test('a socket on node A receives what a native client publishes on node B, and recovers on node B', async () => {
  const [a, b] = nodes;
  const s = await open(a.base, { userId: 'ana', org: '42' });
  const got = collect(s, 'message');
  assert.equal((await s.timeout(5000).emitWithAck('join:analytics', '42')).ok, true);
  const native = await connect(b.base, 'userId=bob&org=42');
  assert.equal((await native.next()).type, 'connected');
  native.send({ type: 'message', channel: 'org:42', data: { n: 1 }, id: 1 });
  assert.equal((await native.next()).type, 'published');
  await got.until(1);
  assert.deepEqual(got[0].data, { n: 1 });
  const pid = s._pid;
  const offset = s._lastOffset;
  assert.ok(pid && offset, 'the socket has a pid and a recovery offset');
  s.disconnect();

  for (let n = 2; n <= 4; n++) {
    native.send({ type: 'message', channel: 'org:42', data: { n }, id: n });
    assert.equal((await native.next()).type, 'published');
  }
  // What socket.io-client sends when it reconnects, sent to the other node.
  const again = io(`http://${b.base}`, { auth: { userId: 'ana', org: '42', pid, offset }, transports: ['websocket'], reconnection: false });
  const replay = collect(again, 'message');
  await new Promise((resolve, reject) => { again.once('connect', resolve); again.once('connect_error', reject); });
  assert.equal(again._pid, pid, 'node B answers with the same pid: every room recovered');
  await replay.until(3);
  native.send({ type: 'message', channel: 'org:42', data: { n: 5 }, id: 5 });
  await replay.until(4);
  await new Promise((r) => setTimeout(r, 200));
  assert.deepEqual(replay.map((u) => u.data.n), [2, 3, 4, 5]);
  again.close();
  native.ws.close();
});
