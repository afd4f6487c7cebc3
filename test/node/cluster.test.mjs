// Two herald binaries (HERALD_BIN) joined by a real redis-server, configured
// through HERALD_* environment variables as an operator would: a Node client
// on one node receives what the other node's API publishes, recovers on the
// other node, and is closed with 4010 when Redis goes away.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect, healthz, startRedisPair } from './helpers.mjs';

const API_KEY = 'node-cluster-api-key-0123456789';
let pair, nodes, redis;

before(async () => {
  pair = await startRedisPair(process.env.HERALD_BIN, { apiKey: API_KEY, prefix: 'node-e2e' });
  ({ nodes, redis } = pair);
});

after(() => pair?.stop());

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
  assert.deepEqual(await healthz(a.base, 503), { status: 'broker_unavailable' });
  const r = await publish(a.base, 'org:42', 1);
  assert.equal(r.status, 503);
  assert.equal(r.body.error, 'unavailable');
});
