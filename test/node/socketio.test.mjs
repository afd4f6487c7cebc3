// Socket.IO end-to-end: the real socket.io-client 4 against the real herald
// binary (HERALD_BIN), as the seed 003 dashboard connects.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import http from 'node:http';
import { io } from 'socket.io-client';
import { freePort, connect, mintToken } from './helpers.mjs';

const BIN = process.env.HERALD_BIN;
const SECRET = 'node-sio-secret-0123456789abcdef0123';
const API_KEY = 'node-sio-api-key-0123456789';
let proc;
let base;

before(async () => {
  assert.ok(BIN, 'HERALD_BIN must point at the herald binary');
  const port = await freePort();
  base = `127.0.0.1:${port}`;
  proc = spawn(BIN, ['serve', '--addr', base, '--jwt-secret', SECRET, '--api-key', API_KEY,
    '--socketio-path', '/api/socket/', '--log-level', 'warn'], { stdio: ['ignore', 'inherit', 'inherit'] });
  const deadline = Date.now() + 10000;
  for (;;) {
    try {
      if ((await fetch(`http://${base}/healthz`)).ok) break;
    } catch {}
    if (Date.now() > deadline) throw new Error('herald did not start');
    await new Promise((r) => setTimeout(r, 50));
  }
});

after(async () => {
  if (!proc) return;
  const exited = new Promise((resolve) => proc.on('exit', (code) => resolve(code)));
  proc.kill('SIGTERM');
  assert.equal(await exited, 0, 'herald exits 0 on SIGTERM');
});

const mint = (user, org) => mintToken(BIN, SECRET, user, org);

// open connects a socket.io-client the way the seed's hook does, with only
// the URL, the path and auth.token as changes; it resolves once connected.
function open(org, opts = {}) {
  const s = io(`http://${base}`, { path: '/api/socket', auth: { token: mint(`user-${org}`, org) }, ...opts });
  return new Promise((resolve, reject) => {
    s.once('connect', () => resolve(s));
    s.once('connect_error', reject);
  });
}

// events collects the socket's events of a name in order.
function collect(s, name) {
  const got = [];
  const waiters = [];
  s.on(name, (u) => {
    got.push(u);
    for (const w of waiters.splice(0)) w();
  });
  got.until = async (n, ms = 10000) => {
    const deadline = Date.now() + ms;
    while (got.length < n) {
      if (Date.now() > deadline) throw new Error(`${got.length} of ${n} ${name} events`);
      await new Promise((r) => { waiters.push(r); setTimeout(r, 100); });
    }
    return got;
  };
  return got;
}

async function apiPublish(channel, data, event) {
  const r = await fetch(`http://${base}/api/publish`, {
    method: 'POST', headers: { 'X-API-Key': API_KEY, 'Content-Type': 'application/json' },
    body: JSON.stringify({ channel, data, event }),
  });
  assert.equal(r.status, 200);
  return r.json();
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test('websocket only: join:analytics, then publications from the API, a native /ws client and another socket, with acks', async () => {
  const a = await open('42', { transports: ['websocket'] });
  const b = await open('42', { transports: ['websocket'] });
  const msgs = collect(a, 'message');
  const join = await a.timeout(5000).emitWithAck('join:analytics', '42');
  assert.equal(join.ok, true);
  assert.equal(join.channel, 'org:42');
  await apiPublish('org:42', { via: 'api' });
  const native = await connect(base, `token=${mint('native', '42')}`);
  await native.next(); // connected
  native.send({ type: 'message', channel: 'org:42', data: { via: 'ws' } });
  const pub = await b.timeout(5000).emitWithAck('publish', { channel: 'org:42', event: 'message', data: { via: 'socketio' } });
  assert.equal(pub.ok, true);
  assert.equal(typeof pub.offset, 'number');
  await msgs.until(3);
  assert.deepEqual(msgs.map((u) => u.data.via).sort(), ['api', 'socketio', 'ws']);
  for (const u of msgs) {
    // The seed hook's check: latestUpdate?.type === 'message'.
    assert.equal(u.type, 'message');
    assert.equal(u.channel, 'org:42');
    assert.equal(typeof u.offset, 'number');
    assert.match(u.timestamp, /^\d{4}-\d\d-\d\dT/);
  }
  const bad = await a.timeout(5000).emitWithAck('publish', { channel: 'nope channel', data: 1 });
  assert.equal(bad.ok, false);
  assert.equal(typeof bad.error.code, 'string');
  native.ws.close();
  a.close();
  b.close();
});

test('polling, then upgraded to websocket: events arrive on both', async () => {
  const s = io(`http://${base}`, { path: '/api/socket', auth: { token: mint('user-7', '7') } });
  const first = [];
  s.io.on('open', () => {
    first.push(s.io.engine.transport.name);
    s.io.engine.on('upgrade', (t) => first.push(t.name));
  });
  await new Promise((resolve, reject) => { s.once('connect', resolve); s.once('connect_error', reject); });
  assert.equal(first[0], 'polling', 'socket.io-client starts with polling');
  const msgs = collect(s, 'sentiment');
  assert.equal((await s.timeout(5000).emitWithAck('join:analytics', 7)).ok, true);
  await apiPublish('org:7', { n: 1 }, 'sentiment');
  await msgs.until(1);
  const deadline = Date.now() + 10000;
  while (first[1] !== 'websocket') {
    if (Date.now() > deadline) throw new Error('never upgraded');
    await sleep(20);
  }
  await apiPublish('org:7', { n: 2 }, 'sentiment');
  await msgs.until(2);
  assert.deepEqual(msgs.map((u) => u.data.n), [1, 2]);
  assert.equal(msgs[0].type, 'sentiment');
  s.close();
});

// blockingProxy forwards plain HTTP to herald and refuses every WebSocket
// upgrade, as a proxy that blocks WebSocket does; it resolves to its address.
async function blockingProxy() {
  const proxy = http.createServer((req, res) => {
    const up = http.request({ host: '127.0.0.1', port: base.split(':')[1], path: req.url, method: req.method, headers: req.headers },
      (r) => { res.writeHead(r.statusCode, r.headers); r.pipe(res); });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  const refused = [];
  proxy.on('upgrade', (req, socket) => {
    refused.push(req.url);
    socket.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n');
  });
  await new Promise((r) => proxy.listen(0, '127.0.0.1', r));
  return { proxy, refused, addr: `127.0.0.1:${proxy.address().port}` };
}

test('websocket first with a polling fallback (tryAllTransports): WebSocket from the start where it works, polling where a proxy blocks it', async () => {
  const opts = (org) => ({ path: '/api/socket', auth: { token: mint(`user-${org}`, org) },
    transports: ['websocket', 'polling'], tryAllTransports: true });
  const direct = io(`http://${base}`, opts('8'));
  await new Promise((resolve, reject) => { direct.once('connect', resolve); direct.once('connect_error', reject); });
  assert.equal(direct.io.engine.transport.name, 'websocket', 'WebSocket from the start: no Engine.IO session to upgrade');
  const { proxy, refused, addr } = await blockingProxy();
  const fallback = io(`http://${addr}`, opts('8'));
  const errors = [];
  fallback.on('connect_error', (e) => errors.push(e));
  await new Promise((resolve) => fallback.once('connect', resolve));
  assert.equal(fallback.io.engine.transport.name, 'polling', 'WebSocket refused by the proxy: long-polling');
  assert.match(refused[0] ?? '', /transport=websocket/, 'WebSocket was tried first');
  const a = collect(direct, 'sentiment');
  const b = collect(fallback, 'sentiment');
  assert.equal((await direct.timeout(5000).emitWithAck('join:analytics', 8)).ok, true);
  assert.equal((await fallback.timeout(5000).emitWithAck('join:analytics', 8)).ok, true);
  await apiPublish('org:8', { n: 1 }, 'sentiment');
  await apiPublish('org:8', { n: 2 }, 'sentiment');
  assert.deepEqual((await a.until(2)).map((u) => u.data.n), [1, 2]);
  assert.deepEqual((await b.until(2)).map((u) => u.data.n), [1, 2]);
  assert.equal(fallback.io.engine.transport.name, 'polling', 'the upgrade probe is refused too: still polling');
  assert.deepEqual(errors, [], 'the fallback is not a connect error');
  direct.close();
  fallback.close();
  await new Promise((r) => proxy.close(r));
});

test('refused without a valid token: connect_error with the reason', async () => {
  const s = io(`http://${base}`, { path: '/api/socket', auth: { token: 'not-a-token' }, transports: ['websocket'], reconnection: false });
  const err = await new Promise((resolve) => s.once('connect_error', resolve));
  assert.match(err.message, /unauthorized/);
  assert.equal(err.data.code, 'unauthorized');
  s.close();
});

test('a socket of org B never receives org A, and may not join it', async () => {
  const a = await open('100', { transports: ['websocket'] });
  const bsock = await open('200', { transports: ['websocket'] });
  const seenA = collect(a, 'message');
  const seenB = collect(bsock, 'message');
  assert.equal((await a.timeout(5000).emitWithAck('join:analytics', '100')).ok, true);
  const refused = await bsock.timeout(5000).emitWithAck('join:analytics', '100');
  assert.equal(refused.ok, false);
  assert.equal(refused.error.code, 'forbidden');
  assert.equal((await bsock.timeout(5000).emitWithAck('join:analytics', '200')).ok, true);
  await apiPublish('org:100', { secret: true });
  await apiPublish('org:200', { mine: true });
  await seenA.until(1);
  await seenB.until(1);
  await sleep(200);
  assert.deepEqual(seenB.map((u) => u.data), [{ mine: true }]);
  assert.deepEqual(seenA.map((u) => u.data), [{ secret: true }]);
  a.close();
  bsock.close();
});

test('subscribe:events filters event types on every room; request:history answers through the ack', async () => {
  const s = await open('55', { transports: ['websocket'] });
  const got = [];
  for (const ev of ['message', 'sentiment', 'metrics']) s.on(ev, (u) => got.push(u.type));
  assert.equal((await s.timeout(5000).emitWithAck('join:analytics', '55')).ok, true);
  const f = await s.timeout(5000).emitWithAck('subscribe:events', ['message', 'sentiment']);
  assert.deepEqual(f.events, ['message', 'sentiment']);
  await s.timeout(5000).emitWithAck('unsubscribe:events', ['sentiment']);
  await apiPublish('org:55', 1, 'metrics');
  await apiPublish('org:55', 2, 'sentiment');
  await apiPublish('org:55', 3, 'message');
  const deadline = Date.now() + 10000;
  while (got.length < 1 && Date.now() < deadline) await sleep(20);
  await sleep(200);
  assert.deepEqual(got, ['message']);
  const h = await s.timeout(5000).emitWithAck('request:history', { since: Date.now() - 60000 });
  assert.equal(h.ok, true);
  assert.deepEqual(h.publications.map((p) => p.data), [1, 2, 3]);
  assert.ok(h.publications.every((p) => p.channel === 'org:55'));
  s.close();
});

test('a connection cut mid-stream recovers every publication made meanwhile, in order, none twice', async () => {
  const s = await open('77', { transports: ['websocket'], reconnectionDelay: 100, reconnectionDelayMax: 200 });
  const msgs = collect(s, 'message');
  assert.equal((await s.timeout(5000).emitWithAck('join:analytics', '77')).ok, true);
  let n = 0;
  let publishing = true;
  const publisher = (async () => {
    while (publishing) {
      await apiPublish('org:77', { n: ++n });
      await sleep(5);
    }
  })();
  await msgs.until(5);
  const reconnected = new Promise((resolve) => s.once('connect', resolve));
  s.io.engine.close(); // cut: the client sees "transport close" and reconnects
  await reconnected;
  assert.equal(s.recovered, true, 'socket.recovered after the cut');
  await sleep(100);
  publishing = false;
  await publisher;
  await msgs.until(n);
  await sleep(200);
  assert.deepEqual(msgs.map((u) => u.data.n), Array.from({ length: n }, (_, i) => i + 1));
  s.close();
});

test('POST /api/disconnect is a server-side disconnect: reason "io server disconnect", and no reconnection', async () => {
  for (const transports of [['websocket'], ['polling']]) {
    const s = await open('88', { transports, reconnectionDelay: 50, reconnectionDelayMax: 100 });
    try {
      const reason = new Promise((resolve) => s.once('disconnect', (r) => resolve(r)));
      let attempts = 0;
      s.io.on('reconnect_attempt', () => attempts++);
      const r = await fetch(`http://${base}/api/disconnect`, {
        method: 'POST', headers: { 'X-API-Key': API_KEY, 'Content-Type': 'application/json' },
        body: JSON.stringify({ userId: 'user-88' }),
      });
      assert.equal(r.status, 200);
      assert.equal((await r.json()).disconnected, 1);
      assert.equal(await reason, 'io server disconnect', transports[0]);
      assert.equal(s.active, false, `${transports[0]}: the socket will not reconnect`);
      await sleep(500); // a reconnection would have begun after 50-100 ms
      assert.equal(attempts, 0, `${transports[0]}: no reconnection attempt`);
      assert.equal(s.connected, false);
    } finally {
      s.close();
    }
  }
});

test('POST /api/emit: the client\'s socket.on(event, (data, ack) => ack(...)) answer reaches the HTTP caller', async () => {
  const answering = await open('66', { transports: ['websocket'] });
  const polling = await open('66', { transports: ['polling'] });
  const silent = await open('66', { transports: ['websocket'] });
  try {
    answering.on('confirm', (data, ack) => ack({ seen: data.q, via: 'websocket' }));
    polling.on('confirm', (data, ack) => ack({ seen: data.q, via: 'polling' }, 'second'));
    let silentGot;
    silent.on('confirm', (data) => { silentGot = data; }); // never acks
    const emit = async (body) => {
      const r = await fetch(`http://${base}/api/emit`, {
        method: 'POST', headers: { 'X-API-Key': API_KEY, 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
      });
      assert.equal(r.status, 200);
      return r.json();
    };
    const res = await emit({ userId: 'user-66', event: 'confirm', data: { q: 7 }, timeoutMs: 1500 });
    assert.equal(res.sockets, 3);
    const byID = Object.fromEntries(res.acks.map((a) => [a.socket, a.args]));
    assert.deepEqual(byID[answering.id], [{ seen: 7, via: 'websocket' }]);
    assert.deepEqual(byID[polling.id], [{ seen: 7, via: 'polling' }, 'second']);
    assert.deepEqual(res.timedOut.map((a) => a.socket), [silent.id]);
    assert.deepEqual(silentGot, { q: 7 }, 'the silent socket got the event, and did not answer');
    assert.deepEqual(res.failed, []);
    // Recovery is undisturbed: publications still arrive after the emits.
    const msgs = collect(answering, 'message');
    assert.equal((await answering.timeout(5000).emitWithAck('join:analytics', '66')).ok, true);
    await apiPublish('org:66', { after: 'emit' });
    await msgs.until(1);
  } finally {
    for (const s of [answering, polling, silent]) s.close();
  }
});
