// The SSE fallback against the real herald: with WebSocket upgrades blocked by
// a proxy that passes plain HTTP, the client moves to SSE after 3 failures,
// receives and publishes there, survives a cut, and moves back to WebSocket
// when upgrades pass again — every publication received once, in order.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import WebSocket from 'ws';
import { createClient } from '../dist/index.js';
import { api, next, sleep, startHerald, startProxy, token, until } from './helpers.mjs';

let h;
before(async () => {
  h = await startHerald();
});
after(() => h.stop());

test('WebSocket blocked: SSE receives and publishes; a cut recovers; WebSocket taken back; nothing lost or doubled', async (t) => {
  const proxy = await startProxy(h.base);
  proxy.blockWebSocket(true);
  const c = createClient({
    url: proxy.ws,
    WebSocket,
    getToken: () => token({ sub: 'alice', org: 'a' }),
    transports: ['websocket', 'sse'],
    backoff: { minMs: 50, maxMs: 100 },
    wsRetryMs: 500,
  });
  t.after(() => (c.close(), proxy.close()));
  const s = c.subscribe('org:a:sse');
  const got = [];
  const subs = [];
  s.on('message', (m) => got.push(m));
  s.on('subscribed', (e) => subs.push(e));
  const seen = [];
  c.on('state', (e) => seen.push(`${e.state}/${c.via}`));

  let published = 0;
  let stop = false;
  const publisher = (async () => {
    while (!stop) {
      const r = await api(h, '/api/publish', { channel: 'org:a:sse', data: ++published });
      assert.equal(r.ok, true);
      await sleep(10);
    }
  })();
  try {
    await until(() => c.state === 'connected', 'connected over SSE');
    assert.equal(c.via, 'sse');
    assert.deepEqual(seen.slice(0, 3), ['reconnecting/websocket', 'reconnecting/websocket', 'reconnecting/sse']);
    await until(() => got.length >= 10, 'publications over SSE');

    // Commands go over POST.
    const p = await c.publish('org:a:sse:pub', { via: 'sse' });
    assert.equal(p.offset, 1);
    const hist = await c.history('org:a:sse:pub');
    assert.deepEqual(hist.publications.map((x) => x.data), [{ via: 'sse' }]);

    // A cut stream resumes from its position.
    const n = got.length;
    proxy.cut();
    await until(() => subs.length >= 2 && c.state === 'connected' && got.length > n + 10, 'resumed over SSE');
    assert.equal(c.via, 'sse');
    assert.equal(subs[1].recovered, true);

    // Upgrades pass again: the next probe moves the client back.
    proxy.blockWebSocket(false);
    await until(() => c.via === 'websocket' && c.state === 'connected', 'back on WebSocket');
    const m = got.length;
    await until(() => got.length > m + 10, 'publications over WebSocket');
  } finally {
    stop = true;
    await publisher;
  }
  // Publishing began before the first subscribe: everything after its position arrives.
  const from = subs[0].offset;
  await until(() => got.length === published - from, `publications ${from + 1}..${published} (got ${got.length})`);
  assert.deepEqual(got.map((x) => x.data), Array.from({ length: published - from }, (_, i) => from + i + 1), 'every one, in order, once');
  assert.ok(subs.slice(1).every((e) => e.recovered === true), 'every resubscribe recovered');
  assert.ok(seen.includes('connected/sse') && seen.at(-1) === 'connected/websocket');
});
