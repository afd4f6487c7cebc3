// Two herald nodes on one Redis: a node restarted under its client while the
// other keeps publishing (history lives in Redis: recovered, every message once,
// in order), and Redis itself restarted (the nodes close their subscribers with
// 4010; the client reconnects at once, retries while subscribing is
// `unavailable`, and is told recovered:false since that Redis lost the history).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import WebSocket from 'ws';
import { createClient } from '../dist/index.js';
import { api, sleep, startHerald, token, until } from './helpers.mjs';

/** redis-server on a Unix socket, without persistence; restart() starts a new, empty one. */
async function startRedis() {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'herald-js-redis-'));
  const sock = path.join(dir, 'redis.sock');
  const r = { url: `unix://${sock}` };
  r.start = async () => {
    r.proc = spawn('redis-server', ['--port', '0', '--unixsocket', sock, '--unixsocketperm', '700', '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' });
    r.exited = new Promise((res) => r.proc.once('exit', res));
    const answers = () => new Promise((res) => {
      const c = net.connect(sock, () => (c.destroy(), res(true))).on('error', () => res(false));
    });
    await until(answers, 'redis-server', 10000);
  };
  r.stop = async () => {
    if (r.proc.exitCode !== null) return;
    r.proc.kill('SIGKILL');
    await r.exited;
  };
  await r.start();
  return r;
}

test('two nodes on Redis: a node restart recovers everything; a Redis restart gives 4010 and recovered:false', async (t) => {
  const redis = await startRedis();
  const args = ['--broker', 'redis', '--redis-url', redis.url];
  const [a, b] = [await startHerald({ args }), await startHerald({ args })];
  t.after(async () => {
    await a.stop();
    await b.stop();
    await redis.stop();
  });
  const c = createClient({ url: a.ws, WebSocket, getToken: () => token({ sub: 'alice', org: 'a' }), backoff: { minMs: 100, maxMs: 300 } });
  t.after(() => c.close());
  const reasons = [];
  c.on('state', (e) => e.state === 'reconnecting' && reasons.push(e.reason.kind));
  const s = c.subscribe('org:a:r');
  const got = [];
  const subs = [];
  s.on('message', (m) => got.push(m.data));
  s.on('subscribed', (e) => subs.push(e));
  await until(() => subs.length === 1, 'subscribed');

  // Node a restarts while node b keeps publishing.
  let published = 0;
  let stop = false;
  const publisher = (async () => {
    while (!stop) {
      const r = await api(b, '/api/publish', { channel: 'org:a:r', data: published + 1 });
      if (r.ok) published++;
      await sleep(5);
    }
  })();
  await until(() => got.length >= 20, 'publications before the restart');
  await a.restart();
  await until(() => subs.length === 2 && got.length > published - 5 && published > 60, 'recovered on the restarted node');
  stop = true;
  await publisher;
  await until(() => got.length === published, `all ${published} (got ${got.length})`);
  assert.deepEqual(got, Array.from({ length: published }, (_, i) => i + 1), 'every one, in order, once');
  assert.equal(subs[1].recovered, true);

  // Redis restarts empty: 4010, then recovered:false once subscribing works again.
  await redis.stop();
  await until(() => reasons.includes('resubscribe'), '4010');
  await sleep(300);
  await redis.start();
  await until(() => subs.length >= 3 && s.state === 'subscribed', 'subscribed again', 30000);
  assert.equal(subs.at(-1).recovered, false);
  const more = got.length;
  await until(async () => (await api(b, '/api/publish', { channel: 'org:a:r', data: 'after' })).ok, 'publish after the restart', 10000);
  await until(() => got.length > more, 'live again');
  assert.equal(got.at(-1), 'after');
});
