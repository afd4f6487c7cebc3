// The analytics example in one command, from the repository root:
//
//   node examples/analytics/run.mjs        then open http://127.0.0.1:3000
//
// It builds herald and the SDK when needed, starts herald on 127.0.0.1:8080
// (HERALD_PORT) with a fresh secret and API key, the page server on :3000
// (PORT), and the backend that publishes both organisations' events. Ctrl-C
// stops everything.
import { execFileSync, execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { startBackend } from './backend.mjs';
import { startPageServer } from './server.mjs';

const root = fileURLToPath(new URL('../../', import.meta.url));
const sdk = path.join(root, 'clients/js');
const heraldPort = +(process.env.HERALD_PORT || 8080);
const pagePort = +(process.env.PORT || 3000);
const page = `http://127.0.0.1:${pagePort}`;

const run = (cmd, args, cwd) => execFileSync(cmd, args, { cwd, stdio: 'inherit' });
if (!existsSync(path.join(sdk, 'node_modules'))) run('npm', ['ci', '--no-audit', '--no-fund'], sdk);
run('npm', ['run', '-s', 'build'], sdk);
const bin = process.env.HERALD_BIN || path.join(os.tmpdir(), 'herald-analytics-example');
if (!process.env.HERALD_BIN) run('go', ['build', '-o', bin, './cmd/herald'], root);

const secret = randomBytes(32).toString('hex');
const apiKey = randomBytes(16).toString('hex');
const herald = spawn(bin, ['serve', '--addr', `127.0.0.1:${heraldPort}`, '--allowed-origins', page], {
  env: { ...process.env, HERALD_JWT_SECRET: secret, HERALD_API_KEYS: apiKey },
  stdio: 'inherit',
});
herald.on('exit', (code) => {
  console.error(`herald exited (${code})`);
  process.exit(1);
});
const heraldHttp = `http://127.0.0.1:${heraldPort}`;
for (let i = 0; ; i++) {
  try {
    if ((await fetch(`${heraldHttp}/healthz`)).ok) break;
  } catch {}
  if (i > 200) throw new Error('herald did not start');
  await new Promise((r) => setTimeout(r, 50));
}

const token = promisify(execFile);
const mint = async (org) =>
  (await token(bin, ['token', '--user', `analyst@org-${org}`, '--org', org, '--ttl', '15m'], { env: { ...process.env, HERALD_JWT_SECRET: secret } })).stdout.trim();
const pages = await startPageServer({ port: pagePort, heraldWs: `ws://127.0.0.1:${heraldPort}/ws`, mint });
const backend = startBackend({ url: heraldHttp, apiKey, log: process.env.QUIET ? () => {} : console.log });
console.log(`\nherald on ${heraldHttp}; open ${pages.url} (both organisations; ?orgs=1 for one). Ctrl-C stops.\n`);

const stop = async () => {
  backend.stop();
  herald.removeAllListeners('exit');
  herald.kill();
  await pages.close();
  process.exit(0);
};
process.on('SIGINT', stop).on('SIGTERM', stop);
