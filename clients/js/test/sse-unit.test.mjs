// The SSE transport and the fallback between transports, with a scripted
// fetch (streams the test writes, as docs/sse.md describes herald's) and, for
// the fallback, a scripted WebSocket transport and fake timers.
import assert from 'node:assert/strict';
import { mock, test } from 'node:test';
import { createClient, sseTag } from '../dist/index.js';

const flush = async () => {
  for (let i = 0; i < 5; i++) await new Promise((res) => setImmediate(res));
};

/** A fetch whose streams the test writes to and whose POSTs `answer` answers. */
function fakeFetch(answer = () => new Response(null, { status: 204 })) {
  const streams = [];
  const posts = [];
  const enc = new TextEncoder();
  const fetch = async (url, init = {}) => {
    if (init.method === 'POST') {
      const p = { url, headers: init.headers, body: JSON.parse(init.body) };
      posts.push(p);
      return answer(p);
    }
    let ctrl;
    const body = new ReadableStream({ start: (c) => void (ctrl = c) });
    const s = { url: new URL(url), headers: init.headers, aborted: false, push: (t) => ctrl.enqueue(enc.encode(t)) };
    init.signal?.addEventListener('abort', () => {
      s.aborted = true;
      try {
        ctrl.error(new Error('aborted'));
      } catch {}
    });
    streams.push(s);
    if (fetch.refuse) return new Response(JSON.stringify({ ok: false, error: 'unauthorized' }), { status: fetch.refuse });
    return new Response(body, { status: 200, headers: { 'Content-Type': 'text/event-stream' } });
  };
  return { fetch, streams, posts };
}

const ev = (name, data, id) => `${id ? `id: ${id}\n` : ''}${name ? `event: ${name}\n` : ''}data: ${JSON.stringify(data)}\n\n`;
const connected = { type: 'connected', clientId: 'c1', userId: 'alice', org: '42', timestamp: 't', pingInterval: 30000 };

test('SSE: the stream carries channels, positions and token; events become the usual frames; commands are POSTed', async () => {
  const f = fakeFetch(({ body }) =>
    body.channel === 'org:7'
      ? new Response(JSON.stringify({ type: 'error', code: 'forbidden', message: 'no', channel: 'org:7', id: body.id }), { status: 403 })
      : new Response(JSON.stringify({ type: 'published', channel: body.channel, offset: 9, epoch: 'e', id: body.id })),
  );
  const c = createClient({ url: 'ws://h:8080/ws', transports: ['sse'], getToken: () => 'tok', fetch: f.fetch, autoConnect: false });
  const s = c.subscribe('org:42', { events: ['metrics'] });
  const got = [];
  s.on('message', (m) => got.push(m.offset));
  const subs = [];
  s.on('subscribed', (e) => subs.push(e));
  c.connect();
  await flush();
  const s0 = f.streams[0];
  assert.equal(`${s0.url.origin}${s0.url.pathname}`, 'http://h:8080/sse');
  assert.deepEqual(s0.url.searchParams.getAll('channel'), ['org:42']);
  assert.equal(s0.url.searchParams.get('lastEventId'), null);
  assert.equal(s0.headers.Authorization, 'Bearer tok');
  s0.push('retry: 2000\n\n' + ev('herald/connected', connected));
  await flush();
  assert.equal(c.state, 'connecting', 'connected once every channel is acknowledged');
  s0.push(ev('herald/subscribed', { type: 'subscribed', channel: 'org:42', offset: 5, epoch: 'e' }, 'x'));
  // A publication split over two data lines (EventSource joins them with \n), one the filter drops, a heartbeat.
  s0.push('id: y\nevent: metrics\ndata: {"type":"message","channel":"org:42",\ndata: "data":1,"timestamp":"t","offset":6,"event":"metrics"}\n\n');
  s0.push(ev('', { type: 'message', channel: 'org:42', data: 2, timestamp: 't', offset: 7 }, 'z'));
  s0.push(': heartbeat\n\n');
  await flush();
  assert.equal(c.state, 'connected');
  assert.equal(c.via, 'sse');
  assert.equal(c.info.clientId, 'c1');
  assert.deepEqual(subs, [{ offset: 5, epoch: 'e' }]);
  assert.deepEqual(got, [6]);

  const p = await c.publish('org:42', { a: 1 });
  assert.deepEqual(p, { channel: 'org:42', offset: 9, epoch: 'e' });
  assert.equal(f.posts[0].url, 'http://h:8080/sse/command');
  assert.equal(f.posts[0].headers['X-Herald-Client'], 'c1');
  assert.equal(f.posts[0].headers.Authorization, 'Bearer tok');
  assert.equal(f.posts[0].body.type, 'message');
  await assert.rejects(c.publish('org:7', 1), (e) => e.code === 'forbidden');

  // herald ends the stream with 4010: reconnect at once, resuming from the position.
  s0.push(ev('herald/close', { type: 'close', code: 4010, reason: 'gap' }));
  await flush();
  assert.ok(s0.aborted);
  const s1 = f.streams[1];
  assert.equal(s1.url.searchParams.get('lastEventId'), `${sseTag('org:42')}:6:e`);
  s1.push(ev('herald/connected', connected) + ev('herald/subscribed', { type: 'subscribed', channel: 'org:42', offset: 8, epoch: 'e', recovered: true }));
  s1.push(ev('metrics', { type: 'message', channel: 'org:42', data: 3, timestamp: 't', offset: 7, event: 'metrics' }));
  await flush();
  assert.deepEqual(subs.at(-1), { offset: 8, epoch: 'e', recovered: true });
  assert.deepEqual(got, [6, 7]);

  // A new channel needs a new stream: the transport ends, the client reconnects with both.
  c.subscribe('news');
  await flush();
  const s2 = f.streams[2];
  assert.deepEqual(s2.url.searchParams.getAll('channel'), ['org:42', 'news']);
  assert.equal(s2.url.searchParams.get('lastEventId'), `${sseTag('org:42')}:7:e`);
  c.close();
  await flush();
  assert.ok(s2.aborted);
});

test('SSE: a 401 on the stream stops retrying, as a refused upgrade does in Node', async () => {
  const f = fakeFetch();
  f.fetch.refuse = 401;
  const c = createClient({ url: 'ws://h/ws', transports: ['sse'], fetch: f.fetch, autoConnect: false });
  c.subscribe('org:42');
  c.connect();
  await flush();
  assert.equal(c.state, 'disconnected');
  assert.deepEqual(c.status.reason, { kind: 'unauthorized', code: 1006, status: 401, message: 'unauthorized' });
});

test('fallback: after 3 WebSocket failures in a row, SSE; every wsRetryMs a WebSocket is tried and taken when it connects', async () => {
  mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 1_000_000 });
  try {
    const ws = [];
    const transport = ({ handlers }) => {
      const t = { handlers, sent: [], send: (x) => t.sent.push(x), close: (code = 1000) => ((t.closed = code), handlers.close({ code, reason: '' })) };
      ws.push(t);
      return t;
    };
    const f = fakeFetch(({ body }) => new Response(JSON.stringify({ type: 'pong', timestamp: 't', id: body.id })));
    /** Advances the fake clock in steps, letting answers (promises) through between them. */
    const advance = async (ms) => {
      for (let t = 0; t < ms; t += 1000) {
        mock.timers.tick(1000);
        await flush();
      }
    };
    const c = createClient({ url: 'ws://h/ws', transports: ['websocket', 'sse'], transport, fetch: f.fetch, wsRetryMs: 60000, backoff: { jitter: false } });
    const s = c.subscribe('org:42');
    for (let i = 0; i < 3; i++) {
      await flush();
      assert.equal(c.via, 'websocket');
      ws.at(-1).handlers.close({ code: 1006, reason: '' });
      mock.timers.tick(5000);
    }
    await flush();
    assert.equal(c.via, 'sse');
    assert.equal(ws.length, 3);
    f.streams[0].push(ev('herald/connected', connected) + ev('herald/subscribed', { type: 'subscribed', channel: 'org:42', offset: 3, epoch: 'e' }));
    await flush();
    assert.equal(c.state, 'connected');
    assert.deepEqual(s.position, { offset: 3, epoch: 'e' });

    // A failed probe changes nothing; the next one connects and the client moves back.
    await advance(60000);
    assert.equal(ws.length, 4);
    ws[3].handlers.close({ code: 1006, reason: '' });
    assert.equal(c.via, 'sse');
    assert.equal(c.state, 'connected');
    await advance(60000);
    assert.equal(ws.length, 5);
    assert.ok(f.posts.some((p) => p.body.type === 'ping'), 'the watchdog pinged the silent stream');
    ws[4].handlers.frame(connected);
    assert.equal(ws[4].closed, 1000, 'the probe itself is closed');
    assert.equal(c.via, 'websocket');
    await flush();
    assert.ok(f.streams[0].aborted);
    assert.equal(ws.length, 6);
    ws[5].handlers.frame(connected);
    assert.deepEqual(ws[5].sent[0].since, { offset: 3, epoch: 'e' }, 'the position carries over');
    c.close();
  } finally {
    mock.timers.reset();
  }
});
