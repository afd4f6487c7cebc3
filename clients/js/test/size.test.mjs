// The bundle budgets the README states: core ≤ 6 KB and the React entry ≤ 2 KB
// on top, minified and gzipped (byte counts of a deterministic build, not timings).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sizes } from '../scripts/size.mjs';

test('bundle sizes stay within the README budgets', async () => {
  const s = await sizes();
  assert.ok(s.core.gzip <= 6 * 1024, `core ${s.core.gzip} B`);
  assert.ok(s.react.gzip <= 2 * 1024, `react ${s.react.gzip} B`);
});
