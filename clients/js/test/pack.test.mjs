// `npm pack` makes an installable package: its tarball, unpacked as an app's
// node_modules/@herald/client, resolves both entry points with their types.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';

const pkg = fileURLToPath(new URL('..', import.meta.url));

test('npm pack gives a package an app can import', (t) => {
  const app = mkdtempSync(path.join(os.tmpdir(), 'herald-pack-'));
  t.after(() => rmSync(app, { recursive: true, force: true }));
  const out = execFileSync('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', app], { cwd: pkg, encoding: 'utf8' });
  const [{ filename, files }] = JSON.parse(out);
  const names = files.map((f) => f.path).sort();
  for (const f of ['README.md', 'package.json', 'dist/index.js', 'dist/index.d.ts', 'dist/react.js', 'dist/react.d.ts']) assert.ok(names.includes(f), f);
  assert.ok(!names.some((f) => f.startsWith('src/') || f.startsWith('test/')), 'only what an app needs');
  const dest = path.join(app, 'node_modules/@herald/client');
  mkdirSync(dest, { recursive: true });
  execFileSync('tar', ['xzf', path.join(app, filename), '-C', dest, '--strip-components=1']);
  symlinkSync(path.join(pkg, 'node_modules/react'), path.join(app, 'node_modules/react'));
  writeFileSync(path.join(app, 'package.json'), '{"type":"module"}');
  const probe = `import { createClient, HeraldError, backoffDelay } from '@herald/client';
import { HeraldProvider, useChannel } from '@herald/client/react';
console.log([typeof createClient, typeof HeraldError, typeof backoffDelay, typeof HeraldProvider, typeof useChannel].join(','));`;
  writeFileSync(path.join(app, 'probe.mjs'), probe);
  assert.equal(execFileSync('node', ['probe.mjs'], { cwd: app, encoding: 'utf8' }).trim(), 'function,function,function,function,function');
  assert.ok(existsSync(path.join(dest, 'dist/client.d.ts')));
});
