// The client's state machine with a scripted transport and fake timers:
// backoff timing, close codes, the ping watchdog, online/offline.
import assert from 'node:assert/strict';
import { afterEach, beforeEach, mock, test } from 'node:test';
import { backoffDelay, createClient } from '../dist/index.js';

/** A transport factory whose connections the test drives. */
function scripted() {
  const conns = [];
  const factory = ({ url, handlers }) => {
    const conn = {
      url,
      sent: [],
      closed: null,
      send: (f) => conn.sent.push(JSON.parse(JSON.stringify(f))),
      close: (code = 1000) => {
        if (conn.closed) return;
        conn.closed = code;
        handlers.close({ code, reason: '' });
      },
      open: (info = {}) => handlers.frame({ type: 'connected', clientId: 'c', userId: 'u', timestamp: 't', pingInterval: 30000, ...info }),
      frame: (f) => handlers.frame(f),
      drop: (code = 1006, status) => {
        conn.closed = code;
        handlers.close({ code, reason: '', status });
      },
    };
    conns.push(conn);
    return conn;
  };
  return { conns, factory };
}

const flush = () => new Promise((res) => setImmediate(res));

let t;
beforeEach(() => {
  mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 1_000_000 });
  t = scripted();
});
afterEach(() => mock.timers.reset());

function make(opts = {}) {
  const c = createClient({ url: 'ws://h/ws', transport: t.factory, ...opts });
  const seen = [];
  c.on('state', (e) => seen.push(e));
  return { c, seen };
}

test('backoffDelay: 1, 2, 4, 5, 5 s without jitter; with jitter between 1 s and that doubled, capped', () => {
  const b = { minMs: 1000, maxMs: 5000, jitter: false, maxAttempts: Infinity };
  assert.deepEqual([0, 1, 2, 3, 4, 50].map((n) => backoffDelay(n, b)), [1000, 2000, 4000, 5000, 5000, 5000]);
  const j = { ...b, jitter: true };
  assert.deepEqual([0, 1, 2, 3].map((n) => backoffDelay(n, j, () => 0)), [1000, 1000, 1000, 1000]);
  assert.deepEqual([0, 1, 2, 3].map((n) => backoffDelay(n, j, () => 1)), [2000, 4000, 5000, 5000]);
  assert.equal(backoffDelay(0, j, () => 0.5), 1500);
});

test('reconnect attempts follow the backoff schedule exactly (fake timers)', async () => {
  const { c, seen } = make({ backoff: { jitter: false } });
  await flush();
  assert.equal(t.conns.length, 1);
  assert.equal(c.state, 'connecting');
  t.conns[0].open();
  assert.equal(c.state, 'connected');
  t.conns[0].drop(1006);
  assert.equal(c.state, 'reconnecting');
  const expected = [1000, 2000, 4000, 5000, 5000];
  for (const [i, d] of expected.entries()) {
    assert.equal(seen.at(-1).delayMs, d);
    mock.timers.tick(d - 1);
    await flush();
    assert.equal(t.conns.length, i + 1, `no attempt before ${d} ms`);
    mock.timers.tick(1);
    await flush();
    assert.equal(t.conns.length, i + 2, `attempt after ${d} ms`);
    t.conns.at(-1).drop(1006);
    assert.equal(seen.at(-1).attempts, i + 1);
  }
  // A success resets the schedule.
  mock.timers.tick(5000);
  await flush();
  t.conns.at(-1).open();
  t.conns.at(-1).drop(1001);
  assert.equal(seen.at(-1).delayMs, 1000);
  assert.equal(seen.at(-1).reason.code, 1001);
  c.close();
});

test('maxAttempts: 10 gives the seed Offline state after 10 failed attempts', async () => {
  const { c, seen } = make({ backoff: { jitter: false, maxAttempts: 10 } });
  await flush();
  t.conns[0].open();
  t.conns[0].drop(1006);
  for (let i = 0; i < 10; i++) {
    mock.timers.tick(5000);
    await flush();
    t.conns.at(-1).drop(1006);
  }
  assert.equal(t.conns.length, 11);
  assert.equal(c.state, 'disconnected');
  assert.equal(seen.at(-1).reason.kind, 'attempts_exhausted');
  mock.timers.tick(60000);
  await flush();
  assert.equal(t.conns.length, 11, 'no attempt after giving up');
});

test('4010 and 4001 reconnect at once, calling getToken again; 4000 and an HTTP 403 stop', async () => {
  let tokens = 0;
  const { c, seen } = make({ getToken: async () => `tok${++tokens}` });
  await flush();
  assert.match(t.conns[0].url, /\?token=tok1$/);
  t.conns[0].open();
  const s = c.subscribe('org:a');
  t.conns[0].frame({ type: 'subscribed', channel: 'org:a', offset: 5, epoch: 'e', id: t.conns[0].sent[0].id });
  t.conns[0].frame({ type: 'message', channel: 'org:a', data: 1, offset: 6, timestamp: 't' });
  t.conns[0].drop(4010);
  assert.equal(seen.at(-1).reason.kind, 'resubscribe');
  assert.equal(seen.at(-1).delayMs, 0);
  await flush();
  assert.equal(t.conns.length, 2, 'no timer needed');
  assert.match(t.conns[1].url, /token=tok2/);
  t.conns[1].open();
  assert.deepEqual(t.conns[1].sent[0], { type: 'subscribe', channel: 'org:a', id: t.conns[1].sent[0].id, since: { offset: 6, epoch: 'e' } });
  t.conns[1].drop(4001);
  assert.equal(seen.at(-1).reason.kind, 'token_expired');
  await flush();
  assert.equal(t.conns.length, 3);
  assert.match(t.conns[2].url, /token=tok3/);
  t.conns[2].open();
  t.conns[2].drop(4000);
  assert.equal(c.state, 'disconnected');
  assert.equal(seen.at(-1).reason.kind, 'server_disconnect');
  assert.equal(s.state, 'subscribing', 'kept for a later connect()');
  c.connect();
  await flush();
  t.conns[3].drop(1006, 403);
  assert.equal(c.state, 'disconnected');
  assert.deepEqual(seen.at(-1).reason, { kind: 'unauthorized', code: 1006, status: 403 });
});

test('a 4001 or 4010 on a connect attempt (not live) backs off rather than loop', async () => {
  const { seen } = make({ backoff: { jitter: false } });
  await flush();
  t.conns[0].drop(4001);
  assert.equal(seen.at(-1).delayMs, 1000);
});

test('the watchdog pings a silent connection after pingInterval + margin and reconnects without a pong', async () => {
  const { c, seen } = make({ pingMarginMs: 1000, backoff: { jitter: false } });
  await flush();
  t.conns[0].open({ pingInterval: 10000 });
  mock.timers.tick(10999);
  assert.equal(t.conns[0].sent.length, 0);
  // Frames keep it alive.
  t.conns[0].frame({ type: 'message', channel: 'x', data: 0, timestamp: 't' });
  mock.timers.tick(10999);
  assert.equal(t.conns[0].sent.length, 0);
  mock.timers.tick(1);
  assert.deepEqual(t.conns[0].sent, [{ type: 'ping' }]);
  t.conns[0].frame({ type: 'pong', timestamp: 't' });
  mock.timers.tick(10999);
  assert.equal(t.conns[0].sent.length, 1, 'the pong counts as life');
  mock.timers.tick(1);
  assert.equal(t.conns[0].sent.length, 2);
  mock.timers.tick(999);
  assert.equal(c.state, 'connected');
  mock.timers.tick(1);
  assert.equal(t.conns[0].closed, 4002);
  assert.equal(c.state, 'reconnecting');
  assert.equal(seen.at(-1).reason.code, 4002);
});

test('a connect attempt that gets no connected frame within connectTimeoutMs fails', async () => {
  const { c, seen } = make({ connectTimeoutMs: 3000 });
  await flush();
  mock.timers.tick(3000);
  assert.equal(t.conns[0].closed, 4002);
  assert.equal(c.state, 'reconnecting');
  assert.equal(seen.at(-1).attempts, 1);
});

test('offline: no attempts until online, then one at once; a live connection is probed', async () => {
  const win = new EventTarget();
  const nav = { onLine: true };
  globalThis.addEventListener = win.addEventListener.bind(win);
  globalThis.removeEventListener = win.removeEventListener.bind(win);
  Object.defineProperty(globalThis, 'navigator', { value: nav, configurable: true });
  try {
    const { c, seen } = make({ pingMarginMs: 1000 });
    await flush();
    t.conns[0].open();
    nav.onLine = false;
    win.dispatchEvent(new Event('offline'));
    assert.deepEqual(t.conns[0].sent, [{ type: 'ping' }], 'probed at once');
    mock.timers.tick(1000);
    assert.equal(c.state, 'reconnecting');
    assert.equal(seen.at(-1).reason.kind, 'offline');
    mock.timers.tick(60000);
    await flush();
    assert.equal(t.conns.length, 1, 'no attempt while offline');
    nav.onLine = true;
    win.dispatchEvent(new Event('online'));
    await flush();
    assert.equal(t.conns.length, 2, 'at once when back online');
    assert.equal(seen.at(-1).reason.kind, 'online');
    t.conns[1].open();
    // Going offline while a retry timer runs cancels it.
    t.conns[1].drop(1006);
    win.dispatchEvent(new Event('offline'));
    mock.timers.tick(60000);
    await flush();
    assert.equal(t.conns.length, 2);
    c.close();
    win.dispatchEvent(new Event('online'));
    await flush();
    assert.equal(t.conns.length, 2, 'close() removed the listeners');
  } finally {
    delete globalThis.addEventListener;
    delete globalThis.removeEventListener;
    delete globalThis.navigator;
  }
});

test('requests wait for the connection, are resent after a reconnect, and time out', async () => {
  const { c } = make({ timeoutMs: 5000 });
  const p = c.publish('chat', { a: 1 }, { event: 'e' });
  await flush();
  t.conns[0].open();
  const f = t.conns[0].sent[0];
  assert.equal(f.type, 'message');
  assert.equal(typeof f.idempotencyKey, 'string');
  t.conns[0].drop(1006);
  mock.timers.tick(2000);
  await flush();
  t.conns[1].open();
  assert.deepEqual(t.conns[1].sent[0], f, 'the same frame, key included');
  t.conns[1].frame({ type: 'published', channel: 'chat', offset: 3, epoch: 'e', id: f.id, duplicate: true });
  assert.deepEqual(await p, { channel: 'chat', offset: 3, epoch: 'e', duplicate: true });
  const h = c.history('chat');
  mock.timers.tick(5000);
  await assert.rejects(h, (e) => e.code === 'timeout');
  c.close();
});

test('a subscription drops replayed duplicates and keeps its position across reconnects', async () => {
  const { c } = make();
  await flush();
  t.conns[0].open();
  const s = c.subscribe('org:a');
  const got = [];
  s.on('message', (m) => got.push(m.offset));
  const acks = [];
  s.on('subscribed', (e) => acks.push(e));
  const ack = (conn, f) => conn.frame({ type: 'subscribed', channel: 'org:a', id: conn.sent.at(-1).id, ...f });
  ack(t.conns[0], { offset: 10, epoch: 'e' });
  for (const o of [11, 12, 12, 11, 13]) t.conns[0].frame({ type: 'message', channel: 'org:a', offset: o, data: o, timestamp: 't' });
  assert.deepEqual(got, [11, 12, 13]);
  assert.deepEqual(acks, [{ offset: 10, epoch: 'e' }], 'the event is not the position the client moves on');
  t.conns[0].drop(1006);
  mock.timers.tick(5000);
  await flush();
  t.conns[1].open();
  assert.deepEqual(t.conns[1].sent[0].since, { offset: 13, epoch: 'e' });
  ack(t.conns[1], { offset: 15, epoch: 'e', recovered: true });
  for (const o of [14, 15, 16]) t.conns[1].frame({ type: 'message', channel: 'org:a', offset: o, data: o, timestamp: 't' });
  assert.deepEqual(got, [11, 12, 13, 14, 15, 16]);
  // A new epoch: start from the ack's position.
  t.conns[1].drop(1006);
  mock.timers.tick(5000);
  await flush();
  t.conns[2].open();
  ack(t.conns[2], { offset: 2, epoch: 'f', recovered: false });
  t.conns[2].frame({ type: 'message', channel: 'org:a', offset: 3, data: 3, timestamp: 't' });
  assert.deepEqual(got.at(-1), 3);
  assert.deepEqual(s.position, { offset: 3, epoch: 'f' });
  c.close();
});
