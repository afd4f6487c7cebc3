// The golden frames (internal/protocol/testdata/golden), from both ends:
// herald must still answer each recorded case the same way, and the client must
// handle every recorded frame type as its API promises.
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { createClient, HeraldError } from '../dist/index.js';
import { goldenConfig, loadCases, runCase, settleTo, shape } from './golden.mjs';
import { startHerald } from './helpers.mjs';

const cases = loadCases();

describe('herald still answers every golden case the same way', () => {
  const cfg = path.join(mkdtempSync(path.join(os.tmpdir(), 'herald-golden-')), 'herald.yaml');
  writeFileSync(cfg, goldenConfig);
  for (const c of cases) {
    test(c.file, async () => {
      const h = await startHerald({ args: ['--config', cfg] });
      try {
        const steps = await runCase(h, c, settleTo(c));
        steps.forEach((s, i) => assert.deepEqual(shape(s.receive), shape(c.steps[i].receive), `step ${i}: ${JSON.stringify(c.steps[i].send || c.steps[i])}`));
      } finally {
        await h.stop();
      }
    });
  }
});

/** A client on a scripted transport, already connected with the golden connected frame. */
async function connected(info) {
  let conn;
  const c = createClient({
    url: 'ws://golden/ws',
    transport: ({ handlers }) => (conn = { sent: [], handlers, send: (f) => conn.sent.push(f), close: () => {} }),
  });
  await new Promise((res) => setImmediate(res));
  conn.handlers.frame(structuredClone(info));
  return { c, conn, frame: (f) => conn.handlers.frame(structuredClone(f)), lastId: () => conn.sent.at(-1).id };
}

/** Resolves with the next value the emitter gives for type. */
const nextOf = (em, type) => new Promise((res) => { const off = em.on(type, (v) => (off(), res(v))); });

const all = cases.flatMap((c) => c.steps.flatMap((s) => Object.values(s.receive).flat()));
const info = all.find((f) => f.type === 'connected');
const without = (f, ...keys) => Object.fromEntries(Object.entries(f).filter(([k]) => !keys.includes(k)));

describe('the client handles every golden frame', () => {
  test('connected: state and info', async () => {
    for (const f of all.filter((f) => f.type === 'connected')) {
      const { c } = await connected(f);
      assert.equal(c.state, 'connected');
      assert.deepEqual(c.info, f);
      c.close();
    }
  });

  test('subscribed: position, and recovered when since was sent', async () => {
    for (const f of all.filter((f) => f.type === 'subscribed')) {
      const { c, frame, lastId } = await connected(info);
      const since = 'recovered' in f ? { offset: 1, epoch: f.recovered ? f.epoch : 'other' } : undefined;
      const s = c.subscribe(f.channel, { since });
      const ev = nextOf(s, 'subscribed');
      frame({ ...f, id: lastId() });
      assert.equal(s.state, 'subscribed');
      assert.deepEqual(await ev, without({ offset: f.offset, epoch: f.epoch, recovered: f.recovered }, ...('recovered' in f ? [] : ['recovered'])));
      c.close();
    }
  });

  test('message: delivered to its Subscription as recorded, or to the client when it has none (direct sends)', async () => {
    for (const f of all.filter((f) => f.type === 'message')) {
      const { c, frame, lastId } = await connected(info);
      if (f.offset) {
        const s = c.subscribe(f.channel);
        frame({ type: 'subscribed', channel: f.channel, offset: f.offset - 1, epoch: 'e', id: lastId() });
        const m = nextOf(s, 'message');
        frame(f);
        assert.deepEqual(await m, without(f, 'type'));
      } else {
        const m = nextOf(c, 'message');
        frame(f);
        assert.deepEqual(await m, without(f, 'type'));
      }
      c.close();
    }
  });

  test('published, history, presence: the request resolves with the answer', async () => {
    const calls = { published: (c, f) => c.publish(f.channel, 1), history: (c, f) => c.history(f.channel), presence: (c, f) => c.presence(f.channel) };
    let n = 0;
    for (const f of all.filter((f) => f.type in calls)) {
      const { c, frame, lastId } = await connected(info);
      const p = calls[f.type](c, f);
      await new Promise((res) => setImmediate(res));
      frame({ ...f, id: lastId() });
      assert.deepEqual(await p, without(f, 'type', 'id'));
      c.close();
      n++;
    }
    assert.ok(n >= 3);
  });

  test('error: the request rejects with a HeraldError carrying the code; one with no request goes to the client', async () => {
    for (const f of all.filter((f) => f.type === 'error')) {
      const { c, frame, lastId } = await connected(info);
      if (f.id !== undefined) {
        const p = c.history(f.channel || 'x');
        await new Promise((res) => setImmediate(res));
        frame({ ...f, id: lastId() });
        await assert.rejects(p, (e) => e instanceof HeraldError && e.code === f.code && e.message === f.message && e.channel === f.channel);
      } else {
        const e = nextOf(c, 'error');
        frame(f);
        assert.equal((await e).code, f.code);
      }
      assert.equal(c.state, 'connected', 'an error frame leaves the connection open');
      c.close();
    }
  });

  test('join and leave: the Subscription emits the user', async () => {
    for (const f of all.filter((f) => f.type === 'join' || f.type === 'leave')) {
      const { c, frame, lastId } = await connected(info);
      const s = c.subscribe(f.channel);
      frame({ type: 'subscribed', channel: f.channel, offset: 0, epoch: 'e', id: lastId() });
      const u = nextOf(s, f.type);
      frame(f);
      assert.deepEqual(await u, f.user);
      c.close();
    }
  });

  test('pong and unsubscribed: taken quietly', async () => {
    const { c, frame } = await connected(info);
    const errs = [];
    c.on('error', (e) => errs.push(e));
    for (const f of all.filter((f) => f.type === 'pong' || f.type === 'unsubscribed')) frame(f);
    assert.equal(c.state, 'connected');
    assert.deepEqual(errs, []);
    c.close();
  });
});
