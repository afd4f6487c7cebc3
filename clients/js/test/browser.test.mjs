// The analytics example in real headless Chromium (Debian's chromium, driven by
// playwright-core; no browser download): the page shows Live, receives events,
// shows Reconnecting when its connection is cut (a TCP proxy between the page
// and herald), then Live again with every event published meanwhile, in order;
// each organisation's panel only ever shows its own events. The screenshot is
// left in artifacts/ (not committed).
import { API_KEY, api, startHerald, startProxy, token, until } from './helpers.mjs';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { chromium } from 'playwright-core';
import { emit, makeEvent } from '../../../examples/analytics/backend.mjs';
import { startPageServer } from '../../../examples/analytics/server.mjs';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const artifacts = fileURLToPath(new URL('../artifacts/', import.meta.url));

test('the analytics page in Chromium: Live, events, Reconnecting on a cut, Live again with what was missed', async (t) => {
  if (!existsSync(CHROMIUM)) return t.skip(`skipped: no Chromium at ${CHROMIUM} (apt-get install chromium)`);
  let heraldWs;
  const pages = await startPageServer({ heraldWs: () => heraldWs, mint: async (org) => token({ sub: `analyst@org-${org}`, org }) });
  const h = await startHerald({ args: ['--allowed-origins', pages.url] });
  const proxy = await startProxy(h.base);
  heraldWs = proxy.ws;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'herald-chromium-'));
  const ctx = await chromium.launchPersistentContext(dir, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1100, height: 700 },
  });
  t.after(async () => {
    await ctx.close();
    await pages.close();
    await proxy.close();
    await h.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const page = ctx.pages()[0] || (await ctx.newPage());
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(pages.url);

  const status = (org) => page.getByTestId(`status-${org}`);
  const seqs = (org) => page.locator(`[data-testid=feed-${org}] li`).evaluateAll((els) => els.map((e) => [e.dataset.org, +e.dataset.seq]).reverse());
  const backend = { url: `http://${h.base}`, apiKey: API_KEY };
  const seq = { 1: 0, 2: 0 };
  const publish = (org) => emit(backend, org, ...makeEvent(org, ++seq[org]));

  await until(async () => (await status('1').textContent()) === 'Live' && (await status('2').textContent()) === 'Live', 'Live', 30000).catch(async (e) => {
    throw new Error(`${e.message}: ${await page.content()} ${errors}`);
  });
  // Both dashboards are subscribed before the first events.
  await until(async () => (await api(h, '/api/channels')).channels.length === 2, 'both subscriptions');
  for (let i = 0; i < 3; i++) await Promise.all([publish('1'), publish('2')]);
  await page.waitForFunction(() => document.querySelectorAll('[data-testid=feed-1] li').length === 3, null, { timeout: 30000 });
  assert.deepEqual(await seqs('1'), [['1', 1], ['1', 2], ['1', 3]]);

  // Cut the page's connections; keep publishing while they are down (the proxy refuses reconnects).
  proxy.refuse(true);
  proxy.cut();
  await page.waitForFunction(() => document.querySelector('[data-testid=status-1]').textContent.startsWith('Reconnecting'), null, { timeout: 30000 });
  mkdirSync(artifacts, { recursive: true });
  await page.screenshot({ path: path.join(artifacts, 'analytics-reconnecting.png') });
  for (let i = 0; i < 4; i++) await Promise.all([publish('1'), publish('2')]);
  proxy.refuse(false);
  await page.waitForFunction(() => ['1', '2'].every((o) => document.querySelector(`[data-testid=status-${o}]`).textContent === 'Live'), null, { timeout: 30000 });
  await publish('1');
  await publish('2');
  await page.waitForFunction(() => ['1', '2'].every((o) => document.querySelectorAll(`[data-testid=feed-${o}] li`).length === 8), null, { timeout: 30000 });
  for (const org of ['1', '2']) {
    assert.deepEqual(await seqs(org), Array.from({ length: 8 }, (_, i) => [org, i + 1]), `org ${org}: every event once, in order, none of the other org's`);
  }
  await page.screenshot({ path: path.join(artifacts, 'analytics.png') });
  assert.deepEqual(errors, []);
});
