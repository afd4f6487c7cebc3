// Two herald binaries (HERALD_BIN) joined by a real redis-server, configured
// through HERALD_* environment variables as an operator would: a Node client
// on one node receives what the other node's API publishes, recovers on the
// other node, and is closed with 4010 when Redis goes away.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, connect } from './helpers.mjs';

const BIN = process.env.HERALD_BIN;
const API_KEY = 'node-cluster-api-key-0123456789';
const dir = mkdtempSync(join(tmpdir(), 'herald-cluster-'));
const sock = join(dir, 'redis.sock');
let redis;
const nodes = [];

async function healthy(base, want = 200) {
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

before(async () => {
  assert.ok(BIN, 'HERALD_BIN must point at the herald binary');
  redis = spawn('redis-server', ['--port', '0', '--unixsocket', sock, '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' });
  for (let i = 0; i < 2; i++) {
    const base = `127.0.0.1:${await freePort()}`;
    const env = { ...process.env, HERALD_ADDR: base, HERALD_INSECURE_QUERY_AUTH: 'true', HERALD_API_KEYS: API_KEY,
      HERALD_BROKER: 'redis', HERALD_REDIS_URL: `unix://${sock}`, HERALD_REDIS_PREFIX: 'node-e2e', HERALD_LOG_LEVEL: 'error' };
    const proc = spawn(BIN, ['serve'], { env, stdio: ['ignore', 'inherit', 'inherit'] });
    nodes.push({ base, proc });
  }
  for (const n of nodes) await healthy(n.base);
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

async function publish(base, channel, data) {
  const r = await fetch(`http://${base}/api/publish`, {
    method: 'POST', headers: { 'X-API-Key': API_KEY }, body: JSON.stringify({ channel, data }),
  });
  return { status: r.status, body: await r.json() };
}

test('a publication on one node reaches a client of the other; it recovers there too', async () => {
  const [a, b] = nodes;
  const c = await connect(a.base, 'userId=ana&org=42');
  assert.equal((await c.next()).type, 'connected');
  c.send({ type: 'subscribe', channel: 'org:42', since: { offset: 0, epoch: 'none' } });
  const ack = await c.next();
  assert.equal(ack.type, 'subscribed');
  const r = await publish(b.base, 'org:42', { n: 1 });
  assert.equal(r.status, 200);
  const m = await c.next();
  assert.deepEqual(m.data, { n: 1 });
  assert.equal(m.offset, r.body.offset);
  c.ws.close();
  await c.closed;

  for (let i = 2; i <= 4; i++) assert.equal((await publish(a.base, 'org:42', { n: i })).status, 200);
  const d = await connect(b.base, 'userId=ana&org=42');
  assert.equal((await d.next()).type, 'connected');
  d.send({ type: 'subscribe', channel: 'org:42', since: { offset: m.offset, epoch: ack.epoch } });
  const back = await d.next();
  assert.equal(back.recovered, true);
  for (let i = 2; i <= 4; i++) assert.deepEqual((await d.next()).data, { n: i });
  d.ws.close();
});

test('Redis gone: subscribers closed with 4010, healthz 503, publish 503 unavailable', async () => {
  const [a] = nodes;
  const c = await connect(a.base, 'userId=ben&org=42');
  assert.equal((await c.next()).type, 'connected');
  c.send({ type: 'subscribe', channel: 'org:42' });
  assert.equal((await c.next()).type, 'subscribed');
  redis.kill('SIGKILL');
  assert.equal(await c.closed, 4010);
  assert.deepEqual(await healthy(a.base, 503), { status: 'broker_unavailable' });
  const r = await publish(a.base, 'org:42', 1);
  assert.equal(r.status, 503);
  assert.equal(r.body.error, 'unavailable');
});
