// The React entry in a DOM (happy-dom) with @testing-library/react, against the
// real herald: StrictMode's double mount and channel switches leave exactly one
// subscription and one socket.
import { api, startHerald, token, until } from './helpers.mjs';
import './dom.mjs';
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { StrictMode, createElement as h, useState } from 'react';
import { act, cleanup, render, waitFor } from '@testing-library/react';
import WebSocket from 'ws';
import { createClient, websocketTransport } from '../dist/index.js';
import { HeraldProvider, useChannel, useConnectionState, useLatest, usePresence } from '../dist/react.js';

let srv;
before(async () => {
  srv = await startHerald();
});
after(() => srv.stop());

/** A client that counts the subscribe and unsubscribe commands it sends. */
function countingClient() {
  const sent = [];
  const ws = websocketTransport(WebSocket);
  const c = createClient({
    url: srv.ws,
    getToken: () => token({ sub: 'alice', org: 'a' }),
    transport: (req) => {
      const t = ws(req);
      return { ...t, send: (f) => (sent.push(f), t.send(f)) };
    },
  });
  return { c, sent, commands: (type) => sent.filter((f) => f.type === type).map((f) => f.channel) };
}

function Feed({ channel }) {
  const state = useConnectionState();
  const latest = useLatest(channel);
  const [all, setAll] = useState([]);
  useChannel(channel, (m) => setAll((a) => [...a, m.data.n]));
  const presence = usePresence(channel);
  return h('div', null,
    h('p', { 'data-testid': 'state' }, state),
    h('p', { 'data-testid': 'latest' }, latest ? JSON.stringify(latest.data) : '-'),
    h('p', { 'data-testid': 'all' }, all.join(',')),
    h('p', { 'data-testid': 'presence' }, presence ? String(presence.numClients) : '-'));
}

const app = (c, channel) => h(StrictMode, null, h(HeraldProvider, { client: c }, h(Feed, { channel })));

test('hooks under StrictMode: one subscription, live state, latest, every message, presence; channel switch and unmount leave nothing behind', async () => {
  const { c, commands } = countingClient();
  const view = render(app(c, 'org:a:x'));
  const text = (id) => view.getByTestId(id).textContent;
  await waitFor(() => assert.equal(text('state'), 'connected'), { timeout: 20000 });
  await waitFor(() => assert.equal(c.subscribe('org:a:x').state, 'subscribed'), { timeout: 20000 });
  assert.deepEqual(commands('subscribe'), ['org:a:x'], 'the double mount subscribed once');
  assert.deepEqual(commands('unsubscribe'), []);

  for (const n of [1, 2]) await api(srv, '/api/publish', { channel: 'org:a:x', event: 'metrics', data: { n } });
  await waitFor(() => assert.equal(text('all'), '1,2'), { timeout: 20000 });
  assert.equal(text('latest'), '{"n":2}');
  await waitFor(() => assert.equal(text('presence'), '1'), { timeout: 20000 });

  // Switch channels: the old one is left, the new one subscribed once.
  view.rerender(app(c, 'org:a:y'));
  await waitFor(() => assert.equal(c.subscribe('org:a:y').state, 'subscribed'), { timeout: 20000 });
  assert.deepEqual(commands('subscribe'), ['org:a:x', 'org:a:y']);
  assert.deepEqual(commands('unsubscribe'), ['org:a:x']);
  assert.equal(text('latest'), '-');
  // The server has the switch once it has handled the commands sent.
  const chans = await until(async () => {
    const r = await api(srv, '/api/channels');
    return r.channels.length === 1 && r.channels[0].name === 'org:a:y' && r;
  }, 'the server to hold org:a:y alone', 20000);
  assert.deepEqual(chans.channels, [{ name: 'org:a:y', subscribers: 1 }]);

  view.unmount();
  await act(async () => {});
  assert.deepEqual(commands('unsubscribe'), ['org:a:x', 'org:a:y']);
  assert.equal(c.subscriptions.size, 0);
  // The unsubscribe is on its way: the server drops the subscription once it
  // has handled it, and keeps the app's one socket.
  const stats = await until(async () => {
    const r = await api(srv, '/api/stats');
    return r.subscriptions === 0 && r;
  }, 'the server to drop the last subscription', 20000);
  assert.equal(stats.clients, 1, 'one socket, owned by the app');
  c.close();
  cleanup();
});

test('useConnectionState follows the client to disconnected when its attempts run out', async () => {
  const c = createClient({ url: 'ws://127.0.0.1:1/ws', WebSocket, backoff: { minMs: 10, maxMs: 20, maxAttempts: 2 } });
  function State() {
    return h('p', { 'data-testid': 's' }, useConnectionState());
  }
  const view = render(h(StrictMode, null, h(HeraldProvider, { client: c }, h(State))));
  await waitFor(() => assert.equal(view.getByTestId('s').textContent, 'disconnected'), { timeout: 20000 });
  assert.equal(c.status.reason.kind, 'attempts_exhausted');
  view.unmount();
  c.close();
  cleanup();
});

test('a hook outside HeraldProvider says so', () => {
  function Lost() {
    useConnectionState();
    return null;
  }
  const orig = console.error;
  console.error = () => {};
  try {
    assert.throws(() => render(h(Lost)), /no HeraldProvider/);
  } finally {
    console.error = orig;
    cleanup();
  }
});
