// Socket.IO on two herald nodes joined by a real redis-server: a socket on
// node A receives what a native /ws client publishes on node B, and a
// socket's recovery offset from node A restores it on node B.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';
import { connect, startRedisPair } from './helpers.mjs';

const API_KEY = 'node-sio-cluster-api-key-0123456789';
let pair, nodes;

before(async () => {
  pair = await startRedisPair(process.env.HERALD_BIN, { apiKey: API_KEY, prefix: 'node-sio' });
  ({ nodes } = pair);
});

after(() => pair?.stop());

function open(base, auth) {
  const s = io(`http://${base}`, { auth, transports: ['websocket'], reconnection: false });
  return new Promise((resolve, reject) => {
    s.once('connect', () => resolve(s));
    s.once('connect_error', reject);
  });
}

function collect(s, name) {
  const got = [];
  s.on(name, (u) => got.push(u));
  got.until = async (n) => {
    const deadline = Date.now() + 10000;
    while (got.length < n) {
      if (Date.now() > deadline) throw new Error(`${got.length} of ${n} ${name} events`);
      await new Promise((r) => setTimeout(r, 20));
    }
    return got;
  };
  return got;
}

test('a socket on node A receives what a native client publishes on node B, and recovers on node B', async () => {
  const [a, b] = nodes;
  const s = await open(a.base, { userId: 'ana', org: '42' });
  const got = collect(s, 'message');
  assert.equal((await s.timeout(5000).emitWithAck('join:analytics', '42')).ok, true);
  const native = await connect(b.base, 'userId=bob&org=42');
  assert.equal((await native.next()).type, 'connected');
  native.send({ type: 'message', channel: 'org:42', data: { n: 1 }, id: 1 });
  assert.equal((await native.next()).type, 'published');
  await got.until(1);
  assert.deepEqual(got[0].data, { n: 1 });
  const pid = s._pid;
  const offset = s._lastOffset;
  assert.ok(pid && offset, 'the socket has a pid and a recovery offset');
  s.disconnect();

  for (let n = 2; n <= 4; n++) {
    native.send({ type: 'message', channel: 'org:42', data: { n }, id: n });
    assert.equal((await native.next()).type, 'published');
  }
  // What socket.io-client sends when it reconnects, sent to the other node.
  const again = io(`http://${b.base}`, { auth: { userId: 'ana', org: '42', pid, offset }, transports: ['websocket'], reconnection: false });
  const replay = collect(again, 'message');
  await new Promise((resolve, reject) => { again.once('connect', resolve); again.once('connect_error', reject); });
  assert.equal(again._pid, pid, 'node B answers with the same pid: every room recovered');
  await replay.until(3);
  native.send({ type: 'message', channel: 'org:42', data: { n: 5 }, id: 5 });
  await replay.until(4);
  await new Promise((r) => setTimeout(r, 200));
  assert.deepEqual(replay.map((u) => u.data.n), [2, 3, 4, 5]);
  again.close();
  native.ws.close();
});

test('a socket on node A recovers across a restart of node A: every publication made on node B meanwhile, in order, none twice', async () => {
  const [a, b] = nodes;
  const s = io(`http://${a.base}`, { auth: { userId: 'rita', org: '43' }, transports: ['websocket'],
    reconnectionDelay: 100, reconnectionDelayMax: 500 });
  try {
    await new Promise((resolve, reject) => { s.once('connect', resolve); s.once('connect_error', reject); });
    const got = collect(s, 'message');
    assert.equal((await s.timeout(5000).emitWithAck('join:analytics', '43')).ok, true);
    let n = 0;
    let publishing = true;
    const publisher = (async () => { // on node B, through the outage and the reconnection
      while (publishing) {
        const r = await fetch(`http://${b.base}/api/publish`, {
          method: 'POST', headers: { 'X-API-Key': API_KEY, 'Content-Type': 'application/json' },
          body: JSON.stringify({ channel: 'org:43', data: { n: n + 1 } }),
        });
        assert.equal(r.status, 200);
        n++;
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    await got.until(3);
    const down = new Promise((resolve) => s.once('disconnect', resolve));
    await pair.crash(0);
    await down;
    const during = n;
    while (n < during + 5) await new Promise((r) => setTimeout(r, 10)); // published while A is down
    const back = new Promise((resolve) => s.once('connect', resolve));
    await pair.revive(0);
    await back;
    assert.equal(s.recovered, true, 'socket.recovered after node A restarted');
    const after = n;
    while (n < after + 3) await new Promise((r) => setTimeout(r, 10)); // and live again
    publishing = false;
    await publisher;
    await got.until(n);
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(got.map((u) => u.data.n), Array.from({ length: n }, (_, i) => i + 1));
  } finally {
    s.close();
  }
});

test('POST /api/emit asks the sockets of the node it is sent to: the node the user is on answers with their acks, the other with none', async () => {
  const [a, b] = nodes;
  const s = await open(a.base, { userId: 'tess', org: '44' });
  try {
    s.on('confirm', (data, ack) => ack({ node: 'A', got: data }));
    const emit = async (node) => {
      const r = await fetch(`http://${node.base}/api/emit`, {
        method: 'POST', headers: { 'X-API-Key': API_KEY, 'Content-Type': 'application/json' },
        body: JSON.stringify({ userId: 'tess', event: 'confirm', data: 1, timeoutMs: 5000 }),
      });
      assert.equal(r.status, 200);
      return r.json();
    };
    const onA = await emit(a);
    assert.equal(onA.sockets, 1);
    assert.deepEqual(onA.acks.map((x) => x.args), [[{ node: 'A', got: 1 }]]);
    const onB = await emit(b);
    assert.deepEqual({ sockets: onB.sockets, acks: onB.acks, timedOut: onB.timedOut }, { sockets: 0, acks: [], timedOut: [] });
  } finally {
    s.close();
  }
});
