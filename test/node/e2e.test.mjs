// End-to-end tests: the real herald binary (HERALD_BIN) driven by Node's `ws`
// package, the client the seed's JavaScript examples use.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { connect as connectTo, mintToken, startHerald } from './helpers.mjs';

const BIN = process.env.HERALD_BIN;
const SECRET = 'node-e2e-secret-0123456789';
const API_KEY = 'node-e2e-api-key-0123456789';
let herald;
let base;

before(async () => {
  herald = await startHerald(BIN, ['--jwt-secret', SECRET, '--api-key', API_KEY, '--insecure-query-auth', '--log-level', 'warn']);
  base = herald.base;
});

after(async () => {
  if (herald) assert.equal(await herald.stop(), 0, 'herald exits 0 on SIGTERM');
});

const mint = (user, org) => mintToken(BIN, SECRET, user, org);

// connect opens a socket to this file's herald.
const connect = (query) => connectTo(base, query);

test('seed wscat session: insecure query auth, subscribe, ping', async () => {
  const c = await connect('userId=test&role=member');
  const hello = await c.next();
  assert.equal(hello.type, 'connected');
  assert.equal(hello.userId, 'test');
  c.send({ type: 'subscribe', channel: 'chat' });
  const ack = await c.next();
  assert.equal(ack.type, 'subscribed');
  assert.equal(ack.channel, 'chat');
  assert.equal(typeof ack.offset, 'number');
  c.send({ type: 'ping' });
  const pong = await c.next();
  assert.equal(pong.type, 'pong');
  assert.match(pong.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  c.ws.close();
});

test('token auth, client message to others, org isolation', async () => {
  const a = await connect(`token=${mint('alice', '42')}`);
  const b = await connect(`token=${mint('bob', '42')}`);
  const x = await connect(`token=${mint('xavier', '7')}`);
  for (const c of [a, b, x]) assert.equal((await c.next()).type, 'connected');
  a.send({ type: 'subscribe', channel: 'org:42' });
  b.send({ type: 'subscribe', channel: 'org:42' });
  assert.equal((await a.next()).type, 'subscribed');
  assert.equal((await b.next()).type, 'subscribed');
  x.send({ type: 'subscribe', channel: 'org:42', id: 'steal' });
  const denied = await x.next();
  assert.equal(denied.type, 'error');
  assert.equal(denied.code, 'forbidden');
  assert.equal(denied.id, 'steal');

  b.send({ type: 'message', channel: 'org:42', data: { text: 'Hello from client' } });
  const got = await a.next();
  assert.equal(got.type, 'message');
  assert.equal(got.channel, 'org:42');
  assert.equal(got.from, 'bob');
  assert.deepEqual(got.data, { text: 'Hello from client' });
  for (const c of [a, b, x]) c.ws.close();
});

test('server API publish and /call reach a Node client', async () => {
  const c = await connect(`token=${mint('dash', 'acme')}`);
  assert.equal((await c.next()).type, 'connected');
  c.send({ type: 'subscribe', channel: 'analytics' });
  assert.equal((await c.next()).type, 'subscribed');
  const r = await fetch(`http://${base}/api/publish`, {
    method: 'POST',
    headers: { 'X-API-Key': API_KEY, 'Content-Type': 'application/json' },
    body: JSON.stringify({ channel: 'analytics', data: { activeUsers: 12, requestsPerMinute: 45 } }),
  });
  assert.equal(r.status, 200);
  const res = await r.json();
  assert.equal(res.ok, true);
  assert.equal(res.delivered, 1);
  assert.equal(res.offset, 1);
  const m = await c.next();
  assert.deepEqual(m.data, { activeUsers: 12, requestsPerMinute: 45 });
  assert.equal(m.from, undefined);

  const stats = await fetch(`http://${base}/call`, {
    method: 'POST',
    headers: { 'x-api-key': API_KEY, 'Content-Type': 'application/json' },
    body: JSON.stringify({ key: 'websocket.stats' }),
  });
  const body = await stats.json();
  assert.equal(body.ok, true);
  assert.equal(body.data.enabled, true);
  assert.ok(body.data.activeClients >= 1);
  assert.ok(body.data.channels.some((ch) => ch.name === 'analytics' && ch.subscribers === 1));
  c.ws.close();
});

test('subscribe in the upgrade request: connected, then subscribed per channel, then deliveries', async () => {
  const c = await connect(`token=${mint('url', 'acme')}&subscribe=analytics,org:acme,org:other`);
  assert.equal((await c.next()).type, 'connected');
  for (const channel of ['analytics', 'org:acme']) {
    const ack = await c.next();
    assert.equal(ack.type, 'subscribed');
    assert.equal(ack.channel, channel);
    assert.equal(ack.id, undefined);
  }
  const refused = await c.next();
  assert.equal(refused.type, 'error');
  assert.equal(refused.code, 'forbidden');
  assert.equal(refused.channel, 'org:other');
  const r = await fetch(`http://${base}/api/publish`, {
    method: 'POST',
    headers: { 'X-API-Key': API_KEY, 'Content-Type': 'application/json' },
    body: JSON.stringify({ channel: 'org:acme', data: { n: 1 } }),
  });
  assert.equal(r.status, 200);
  const m = await c.next();
  assert.equal(m.type, 'message');
  assert.equal(m.channel, 'org:acme');
  assert.deepEqual(m.data, { n: 1 });
  c.ws.close();
});

test('bad input: error frame keeps the socket, oversize closes with 1009', async () => {
  const c = await connect(`token=${mint('eve', '')}`);
  assert.equal((await c.next()).type, 'connected');
  c.ws.send('{not json');
  const e = await c.next();
  assert.equal(e.type, 'error');
  assert.equal(e.code, 'bad_json');
  c.send({ type: 'ping', id: 3 });
  assert.equal((await c.next()).id, 3);
  c.ws.send('x'.repeat(2 * 1024 * 1024));
  assert.equal(await c.closed, 1009);
});

test('no token: HTTP 401 with a JSON body before the upgrade', async () => {
  const { status, body } = await new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://${base}/ws`);
    ws.on('unexpected-response', (_req, res) => {
      let text = '';
      res.on('data', (d) => { text += d; });
      res.on('end', () => resolve({ status: res.statusCode, body: JSON.parse(text) }));
    });
    ws.on('open', () => reject(new Error('upgrade accepted without a token')));
    ws.on('error', () => {});
  });
  assert.equal(status, 401);
  assert.equal(body.error, 'unauthorized');
});

test('recovery: reconnect with since replays exactly what was missed', async () => {
  const token = mint('rita', 'r1');
  const a = await connect(`token=${token}`);
  assert.equal((await a.next()).type, 'connected');
  a.send({ type: 'subscribe', channel: 'org:r1' });
  const ack = await a.next();
  assert.equal(ack.type, 'subscribed');
  const publish = (data) => fetch(`http://${base}/api/publish`, {
    method: 'POST',
    headers: { 'X-API-Key': API_KEY },
    body: JSON.stringify({ channel: 'org:r1', event: 'metrics', data }),
  }).then((r) => r.json());
  await publish(0);
  const first = await a.next();
  assert.equal(first.offset, ack.offset + 1);
  a.ws.close();
  await a.closed;
  for (let i = 1; i <= 20; i++) await publish(i);

  const b = await connect(`token=${token}`);
  assert.equal((await b.next()).type, 'connected');
  b.send({ type: 'subscribe', channel: 'org:r1', since: { offset: first.offset, epoch: ack.epoch }, events: ['metrics'] });
  const rack = await b.next();
  assert.equal(rack.recovered, true);
  for (let i = 1; i <= 20; i++) {
    const m = await b.next();
    assert.equal(m.data, i);
    assert.equal(m.offset, first.offset + i);
    assert.equal(m.event, 'metrics');
  }
  b.ws.close();
});
