// Server-Sent Events end-to-end: the real herald binary (HERALD_BIN) read by
// the `eventsource` package from npm (a WHATWG EventSource: it reconnects by
// itself and sends Last-Event-ID), and commands sent with fetch POSTs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { EventSource } from 'eventsource';
import { mintToken, startHerald } from './helpers.mjs';

const BIN = process.env.HERALD_BIN;
const SECRET = 'node-sse-secret-0123456789abcdef';
const API_KEY = 'node-sse-api-key-0123456789';
// Small messages and queues, so that a reader that stops reading is cut
// off after a few megabytes rather than hundreds.
const MAX_MESSAGE = 16384;
const QUEUE = 65536;
let herald;
let base;

before(async () => {
  herald = await startHerald(BIN, ['--jwt-secret', SECRET, '--api-key', API_KEY,
    '--max-message-bytes', String(MAX_MESSAGE), '--client-queue-bytes', String(QUEUE), '--log-level', 'warn']);
  base = herald.base;
});

after(async () => {
  if (herald) assert.equal(await herald.stop(), 0, 'herald exits 0 on SIGTERM');
});

const mint = (user, org) => mintToken(BIN, SECRET, user, org);

async function api(path, body) {
  const r = await fetch(`http://${base}${path}`, {
    method: 'POST', headers: { 'X-API-Key': API_KEY, 'Content-Type': 'application/json' }, body: JSON.stringify(body),
  });
  assert.equal(r.status, 200, `${path}: ${await r.clone().text()}`);
  return r.json();
}

const publish = (channel, data, event) => api('/api/publish', { channel, data, event });

// The control events herald sends besides publications.
const CONTROL = ['herald/connected', 'herald/subscribed', 'herald/close', 'herald/join', 'herald/leave'];

// stream opens an EventSource on channels and hands out its events in order
// as {name, data (parsed JSON), id}. opts.fetch wraps the fetch it uses
// (to hold a reconnect, or to see its headers); opts.events are publication
// event names to listen for besides unnamed ones.
function stream(channels, { token, fetch: wrap, events = [] } = {}) {
  const q = new URLSearchParams();
  for (const c of channels) q.append('channel', c);
  if (token) q.set('token', token);
  const es = new EventSource(`http://${base}/sse?${q}`, wrap ? { fetch: wrap } : undefined);
  const got = [];
  const waiters = [];
  const push = (ev) => {
    const w = waiters.shift();
    if (w) w(ev); else got.push(ev);
  };
  for (const name of ['message', ...CONTROL, ...events]) {
    es.addEventListener(name, (e) => push({ name, data: JSON.parse(e.data), id: e.lastEventId }));
  }
  const errors = [];
  es.addEventListener('error', (e) => errors.push(e));
  const next = (ms = 10000) => new Promise((resolve, reject) => {
    if (got.length) return resolve(got.shift());
    const t = setTimeout(() => reject(new Error('timed out waiting for an event')), ms);
    waiters.push((ev) => { clearTimeout(t); resolve(ev); });
  });
  // until returns the events up to the first one that matches pred.
  const until = async (pred, ms = 10000) => {
    const seen = [];
    for (;;) {
      const ev = await next(ms);
      seen.push(ev);
      if (pred(ev)) return seen;
    }
  };
  return { es, next, until, errors, pending: () => got.length };
}

// failure resolves with the error event of an EventSource that is refused.
function failure(es) {
  return new Promise((resolve) => es.addEventListener('error', (e) => resolve(e)));
}

test('receive: subscribed for each channel, then publications as events with an id', async () => {
  const s = stream(['org:42', 'news'], { token: mint('alice', '42'), events: ['metrics'] });
  const hello = await s.next();
  assert.equal(hello.name, 'herald/connected');
  assert.equal(hello.data.userId, 'alice');
  const subs = [await s.next(), await s.next()];
  assert.deepEqual(subs.map((e) => [e.name, e.data.channel]), [['herald/subscribed', 'org:42'], ['herald/subscribed', 'news']]);
  for (const e of subs) assert.equal(e.data.recovered, undefined, 'no recovery asked on a first connect');

  const p1 = await publish('org:42', { n: 1 });
  const p2 = await publish('news', { text: 'line one\nline two' }, 'metrics');
  const m1 = await s.next();
  assert.equal(m1.name, 'message');
  assert.deepEqual(m1.data.data, { n: 1 });
  assert.equal(m1.data.offset, p1.offset);
  assert.ok(m1.id.length > 0, 'a publication carries an id');
  const m2 = await s.next();
  assert.equal(m2.name, 'metrics', 'a publication with an event is an SSE event of that name');
  assert.equal(m2.data.channel, 'news');
  assert.equal(m2.data.data.text, 'line one\nline two');
  assert.notEqual(m2.id, m1.id);
  s.es.close();
});

test('Last-Event-ID: a multi-channel stream recovers every publication made during the outage, in order, once', async () => {
  const token = mint('carol', '42');
  const chans = ['org:42:a', 'org:42:b'];
  // The fetch the EventSource uses: the first connection goes through; a
  // reconnect waits until the test lets it go, so the outage is certain.
  let calls = 0;
  let release;
  const held = new Promise((r) => { release = r; });
  const reconnects = [];
  const wrap = async (url, init) => {
    calls++;
    if (calls > 1) {
      reconnects.push(new Headers(init.headers).get('last-event-id'));
      await held;
    }
    return fetch(url, init);
  };
  const s = stream(chans, { token, fetch: wrap });
  const hello = await s.next();
  assert.equal(hello.name, 'herald/connected');
  await s.until((e) => e.name === 'herald/subscribed' && e.data.channel === 'org:42:b');

  const sent = { 'org:42:a': [], 'org:42:b': [] };
  const pub = async (ch, i) => {
    const r = await publish(ch, { i });
    sent[ch].push(r.offset);
  };
  for (let i = 0; i < 5; i++) {
    await pub(chans[i % 2], i);
  }
  const before = await s.until((e) => e.name === 'message' && e.data.data.i === 4);
  const lastID = before.at(-1).id;

  // Cut the stream from the server side; the EventSource reconnects by itself.
  const cut = await api('/api/disconnect', { clientId: hello.data.clientId });
  assert.equal(cut.disconnected, 1);
  const closeEv = await s.until((e) => e.name === 'herald/close');
  assert.equal(closeEv.at(-1).data.code, 4000);
  // The outage: publications to both channels while no stream is open.
  for (let i = 5; i < 25; i++) {
    await pub(chans[i % 3 === 0 ? 1 : 0], i);
  }
  while (reconnects.length === 0) await new Promise((r) => setTimeout(r, 20));
  assert.equal(reconnects[0], lastID, 'the reconnect sends the last id it received');
  release();

  const again = await s.next();
  assert.equal(again.name, 'herald/connected');
  const recovered = [];
  // Live publications after the reconnect: they follow the replays.
  const live = (async () => {
    for (let i = 25; i < 30; i++) await pub(chans[i % 2], i);
  })();
  const after = await s.until((e) => e.name === 'message' && e.data.data.i === 29, 15000);
  await live;
  for (const e of after) {
    if (e.name === 'herald/subscribed') {
      assert.equal(e.data.recovered, true, `${e.data.channel} recovered`);
      recovered.push(e.data.channel);
    }
  }
  assert.deepEqual(recovered.sort(), chans);
  const messages = [...before, ...after].filter((e) => e.name === 'message');
  for (const ch of chans) {
    const offsets = messages.filter((e) => e.data.channel === ch).map((e) => e.data.offset);
    assert.deepEqual(offsets, sent[ch], `${ch}: every offset once, in order`);
  }
  const order = messages.map((e) => e.data.data.i);
  assert.deepEqual([...order].sort((x, y) => x - y), [...Array(30).keys()], 'nothing lost or duplicated');
  s.es.close();
});

test('a stream told its history is gone says recovered:false', async () => {
  // An id in an epoch the channel does not have: recovery cannot vouch.
  const token = mint('dan', '42');
  const s0 = stream(['org:42:c'], { token });
  await s0.until((e) => e.name === 'herald/subscribed');
  const p = await publish('org:42:c', { x: 1 });
  const m = await s0.next();
  assert.equal(m.data.offset, p.offset);
  s0.es.close();
  const forged = m.id.replace(/:[^:.]+$/, ':000000000000');
  const r = await fetch(`http://${base}/sse?channel=org:42:c`, { headers: { Authorization: `Bearer ${token}`, 'Last-Event-ID': forged } });
  assert.equal(r.status, 200);
  const text = await readUntil(r, 'herald/subscribed');
  assert.match(text, /"recovered":false/);
});

test('publish over POST: answered in the response, delivered on the stream', async () => {
  const reader = stream(['org:42:post'], { token: mint('erin', '42') });
  await reader.until((e) => e.name === 'herald/subscribed');
  const token = mint('frank', '42');
  const r = await fetch(`http://${base}/sse/command`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ type: 'message', channel: 'org:42:post', data: { hi: 1 }, id: 'p1' }),
  });
  assert.equal(r.status, 200);
  const ack = await r.json();
  assert.equal(ack.type, 'published');
  assert.equal(ack.id, 'p1');
  assert.equal(ack.channel, 'org:42:post');
  const m = await reader.next();
  assert.equal(m.data.from, 'frank');
  assert.equal(m.data.offset, ack.offset);

  // history over POST too
  const h = await fetch(`http://${base}/sse/command`, {
    method: 'POST', headers: { Authorization: `Bearer ${token}` },
    body: JSON.stringify({ type: 'history', channel: 'org:42:post', limit: 10 }),
  });
  assert.equal(h.status, 200);
  assert.deepEqual((await h.json()).publications.map((p) => p.data), [{ hi: 1 }]);

  // a cookie or no Authorization header is no identity; a query token neither
  const anon = await fetch(`http://${base}/sse/command?token=${token}`, {
    method: 'POST', headers: { Cookie: `token=${token}` }, body: JSON.stringify({ type: 'ping' }),
  });
  assert.equal(anon.status, 401);
  const other = await fetch(`http://${base}/sse/command`, {
    method: 'POST', headers: { Authorization: `Bearer ${token}` },
    body: JSON.stringify({ type: 'message', channel: 'org:7', data: 1 }),
  });
  assert.equal(other.status, 403);
  assert.equal((await other.json()).code, 'forbidden');
  reader.es.close();
});

test('a bad token gets 401 and a foreign org channel 403, and EventSource stops', async () => {
  const bad = new EventSource(`http://${base}/sse?channel=news&token=not-a-token`);
  const e1 = await failure(bad);
  assert.equal(e1.code, 401);
  assert.equal(bad.readyState, EventSource.CLOSED);
  const foreign = new EventSource(`http://${base}/sse?channel=news&channel=org:7&token=${mint('gina', '42')}`);
  const e2 = await failure(foreign);
  assert.equal(e2.code, 403);
  assert.equal(foreign.readyState, EventSource.CLOSED);
});

test('a reader that stops reading is cut off as a slow consumer; publishers never wait', async () => {
  const token = mint('hank', '42');
  const sock = net.connect({ host: '127.0.0.1', port: Number(base.split(':')[1]) });
  await new Promise((r) => sock.once('connect', r));
  sock.write(`GET /sse?channel=org:42:slow HTTP/1.1\r\nHost: ${base}\r\nAuthorization: Bearer ${token}\r\n\r\n`);
  sock.pause(); // read nothing: the kernel's buffers fill, then herald's queue
  const slowBefore = await metric('herald_slow_consumer_closes_total');
  const pad = 'x'.repeat(MAX_MESSAGE - 512);
  for (let round = 0; round < 60; round++) {
    const commands = [];
    for (let i = 0; i < 40; i++) commands.push({ method: 'publish', channel: 'org:42:slow', data: { pad } });
    await api('/api/batch', { commands });
    if (await metric('herald_slow_consumer_closes_total') > slowBefore) break;
  }
  assert.ok(await metric('herald_slow_consumer_closes_total') > slowBefore, 'the reader was cut off');
  // Reading now, the stream ends: herald closed it.
  const ended = new Promise((resolve) => { sock.on('end', resolve); sock.on('close', resolve); });
  sock.resume();
  sock.on('data', () => {});
  await ended;
});

async function metric(name) {
  const text = await (await fetch(`http://${base}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(name + ' '));
  return line ? Number(line.split(' ')[1]) : 0;
}

// readUntil reads a streamed response until it holds marker and one full
// event after it, then cancels it.
async function readUntil(res, marker) {
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let text = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    text += dec.decode(value, { stream: true });
    const i = text.indexOf(marker);
    if (i >= 0 && text.indexOf('\n\n', i) >= 0) break;
  }
  await reader.cancel();
  return text;
}
