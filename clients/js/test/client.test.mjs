// The SDK against the real herald binary.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { createClient, HeraldError } from '../dist/index.js';
import { api, next, sleep, startHerald, startProxy, token, until } from './helpers.mjs';

const fast = { minMs: 50, maxMs: 200 };

function client(url, opts = {}) {
  return createClient({ url, WebSocket, getToken: () => token({ sub: 'alice', org: 'a' }), backoff: fast, ...opts });
}

/** Every state the client goes through, in order. */
function states(c) {
  const seen = [];
  c.on('state', (e) => seen.push(e));
  return seen;
}

describe('against herald', () => {
  let h;
  before(async () => {
    h = await startHerald();
  });
  after(() => h.stop());

  test('connects, subscribes, receives; publish, history and presence answer; errors carry the server code', async (t) => {
    const c = client(h.ws);
    t.after(() => c.close());
    const seen = states(c);
    const info = await next(c, 'connected');
    assert.equal(info.userId, 'alice');
    assert.equal(info.org, 'a');
    assert.deepEqual(seen.map((e) => e.state), ['connected']);
    assert.equal(c.state, 'connected');

    const s = c.subscribe('org:a');
    assert.equal(c.subscribe('org:a'), s, 'one Subscription per channel');
    const sub = await next(s, 'subscribed');
    assert.equal(sub.recovered, undefined);
    assert.equal(typeof sub.epoch, 'string');

    const got = [];
    s.on('message', (m) => got.push(m));
    const r = await api(h, '/api/publish', { channel: 'org:a', event: 'metrics', data: { n: 1 } });
    assert.equal(r.ok, true);
    await until(() => got.length === 1, 'the publication');
    assert.deepEqual(got[0].data, { n: 1 });
    assert.equal(got[0].event, 'metrics');
    assert.equal(got[0].offset, r.offset);
    assert.deepEqual(s.latest, got[0]);

    // A second client publishes; the first receives it with `from`.
    const c2 = client(h.ws, { getToken: () => token({ sub: 'bob', org: 'a' }) });
    t.after(() => c2.close());
    const p = await c2.publish('org:a', { n: 2 }, { event: 'message', idempotencyKey: 'k-1' });
    assert.equal(p.offset, r.offset + 1);
    assert.equal(p.channel, 'org:a');
    const dup = await c2.publish('org:a', { n: 2 }, { idempotencyKey: 'k-1' });
    assert.equal(dup.duplicate, true, 'same key: acknowledged, not published again');
    assert.equal(dup.offset, p.offset);
    await until(() => got.length === 2, 'the client publication');
    assert.equal(got[1].from, 'bob');
    await sleep(100);
    assert.equal(got.length, 2, 'the duplicate was not delivered');

    const hist = await c.history('org:a', { limit: 10 });
    assert.deepEqual(hist.publications.map((x) => x.data), [{ n: 1 }, { n: 2 }]);
    assert.equal(hist.offset, p.offset);
    const pres = await c.presence('org:a');
    assert.equal(pres.numClients, 1, 'presence counts subscribers');
    assert.equal(pres.clients[0].userId, 'alice');

    // Typed errors with the server's codes.
    await assert.rejects(c.publish('org:b', 1), (e) => e instanceof HeraldError && e.code === 'forbidden' && e.channel === 'org:b');
    await assert.rejects(c.history('bad channel!'), (e) => e.code === 'invalid_channel');
    const denied = c.subscribe('org:b');
    const err = await next(denied, 'error');
    assert.equal(err.code, 'forbidden');
    assert.equal(denied.state, 'unsubscribed');
    assert.notEqual(c.subscribe('org:b'), denied, 'a refused subscription is dropped');
    c.subscribe('org:b').unsubscribe();

    // Unsubscribe: nothing more arrives.
    s.unsubscribe();
    assert.equal(s.state, 'unsubscribed');
    await api(h, '/api/publish', { channel: 'org:a', data: 3 });
    await sleep(100);
    assert.equal(got.length, 2);
  });

  test('an org never sees another org', async (t) => {
    const a = client(h.ws);
    const b = client(h.ws, { getToken: () => token({ sub: 'bea', org: 'b' }) });
    t.after(() => (a.close(), b.close()));
    const ga = [];
    const gb = [];
    a.subscribe('org:a').on('message', (m) => ga.push(m.data));
    b.subscribe('org:b').on('message', (m) => gb.push(m.data));
    await Promise.all([next(a.subscribe('org:a'), 'subscribed'), next(b.subscribe('org:b'), 'subscribed')]);
    await api(h, '/api/publish', { channel: 'org:a', data: 'for a' });
    await api(h, '/api/publish', { channel: 'org:b', data: 'for b' });
    await until(() => ga.length && gb.length, 'both');
    await sleep(100);
    assert.deepEqual(ga, ['for a']);
    assert.deepEqual(gb, ['for b']);
  });

  test('a cut connection reconnects with backoff and recovers every publication in order, none twice', async (t) => {
    const proxy = await startProxy(h.base);
    const c = client(proxy.ws, { backoff: { minMs: 100, maxMs: 400, jitter: true } });
    t.after(() => (c.close(), proxy.close()));
    const seen = states(c);
    const s = c.subscribe('org:a:feed');
    const subs = [];
    s.on('subscribed', (e) => subs.push(e));
    const got = [];
    s.on('message', (m) => got.push(m));
    await next(s, 'subscribed');

    let published = 0;
    let stop = false;
    const publisher = (async () => {
      while (!stop) {
        const r = await api(h, '/api/publish', { channel: 'org:a:feed', data: ++published });
        assert.equal(r.ok, true);
        await sleep(5);
      }
    })();
    await until(() => got.length >= 20, 'publications before the cut');
    proxy.refuse(true);
    proxy.cut();
    await until(() => c.state === 'reconnecting', 'reconnecting');
    const before = proxy.accepted;
    await until(() => proxy.accepted >= before + 2, 'two refused attempts');
    proxy.refuse(false);
    await until(() => c.state === 'connected', 'connected again');
    const afterReconnect = published;
    await until(() => published >= afterReconnect + 20, 'publications after the reconnect');
    stop = true;
    await publisher;
    await until(() => got.length === published, `all ${published} publications (got ${got.length})`);

    assert.deepEqual(got.map((m) => m.data), Array.from({ length: published }, (_, i) => i + 1), 'every one, in order, once');
    const offsets = got.map((m) => m.offset);
    offsets.forEach((o, i) => i && assert.equal(o, offsets[i - 1] + 1));
    assert.deepEqual(subs.map((e) => e.recovered), [undefined, true]);
    const reconnecting = seen.filter((e) => e.state === 'reconnecting');
    assert.equal(reconnecting[0].reason.kind, 'closed');
    assert.equal(reconnecting[0].reason.code, 1006);
    assert.ok(reconnecting.length >= 3, 'the refused attempts were retried');
    for (const e of reconnecting) assert.ok(e.delayMs >= 100 && e.delayMs <= 400, `delay ${e.delayMs} within the backoff`);
    assert.deepEqual(reconnecting.slice(1).map((e) => e.reason.kind), reconnecting.slice(1).map(() => 'failed'));
  });

  test('token expiry (4001) calls getToken and reconnects at once, recovering', async (t) => {
    let calls = 0;
    const c = client(h.ws, { getToken: () => token({ sub: 'alice', org: 'a', ttlSec: ++calls === 1 ? 2 : 3600 }) });
    t.after(() => c.close());
    const s = c.subscribe('org:a:t');
    await next(s, 'subscribed');
    const e = await next(c, 'state', (e) => e.state === 'reconnecting');
    assert.equal(e.reason.kind, 'token_expired');
    assert.equal(e.reason.code, 4001);
    assert.equal(e.delayMs, 0);
    await next(c, 'state', (e) => e.state === 'connected');
    assert.equal(calls, 2);
    const sub = await next(s, 'subscribed');
    assert.equal(sub.recovered, true);
  });

  test('an auth refusal (401) stops retrying and says why', async (t) => {
    let calls = 0;
    const c = client(h.ws, { getToken: () => (calls++, token({ secret: 'not-the-servers-secret-0123456789abcdef' })) });
    t.after(() => c.close());
    const e = await next(c, 'state', (e) => e.state === 'disconnected');
    assert.equal(e.reason.kind, 'unauthorized');
    assert.equal(e.reason.status, 401);
    await sleep(300); // several backoff periods
    assert.equal(calls, 1);
    assert.equal(c.state, 'disconnected');
    await assert.rejects(c.publish('org:a', 1), (e) => e.code === 'disconnected');
  });

  test('maxAttempts failed attempts in a row end in disconnected', async (t) => {
    const proxy = await startProxy(h.base);
    proxy.refuse(true);
    const c = client(proxy.ws, { backoff: { minMs: 10, maxMs: 20, maxAttempts: 3 } });
    t.after(() => (c.close(), proxy.close()));
    const seen = states(c);
    const e = await next(c, 'state', (e) => e.state === 'disconnected');
    assert.equal(e.reason.kind, 'attempts_exhausted');
    assert.equal(e.attempts, 3);
    assert.equal(proxy.accepted, 3);
    assert.deepEqual(seen.map((e) => e.state), ['reconnecting', 'reconnecting', 'disconnected']);
    // connect() starts over.
    proxy.refuse(false);
    c.connect();
    await next(c, 'state', (e) => e.state === 'connected');
  });

  test('a publish whose connection is cut before its answer is sent again and stored once', async (t) => {
    const proxy = await startProxy(h.base);
    const c = client(proxy.ws);
    t.after(() => (c.close(), proxy.close()));
    await next(c, 'connected');
    const s = c.subscribe('org:a:idem');
    await next(s, 'subscribed');
    // Cut right after the frame is handed to the socket: the server may or may not have run it.
    const p = c.publish('org:a:idem', 'once');
    proxy.cut();
    const r = await p;
    const hist = await c.history('org:a:idem');
    assert.deepEqual(hist.publications.map((x) => x.data), ['once']);
    assert.equal(hist.offset, r.offset);
  });

  test('a restarted memory broker lost its history: the subscription says recovered:false', async (t) => {
    const h2 = await startHerald();
    const c = client(h2.ws);
    t.after(() => (c.close(), h2.stop()));
    const s = c.subscribe('org:a:lost');
    const subs = [];
    s.on('subscribed', (e) => subs.push(e));
    await until(() => subs.length === 1, 'subscribed');
    const first = next(s, 'message');
    await api(h2, '/api/publish', { channel: 'org:a:lost', data: 1 });
    await first;
    await h2.restart();
    await until(() => subs.length === 2, 'resubscribed');
    assert.equal(subs[1].recovered, false);
    assert.notEqual(subs[1].epoch, subs[0].epoch);
    // Live again: new publications arrive.
    const second = next(s, 'message');
    await api(h2, '/api/publish', { channel: 'org:a:lost', data: 2 });
    assert.equal((await second).data, 2);
  });
});
