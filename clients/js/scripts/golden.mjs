// Records the golden frames again from the real binary (HERALD_BIN, or built):
// each file in internal/protocol/testdata/golden keeps its about, clients and
// steps, and gets what herald answers now. Add a case by writing a file with
// steps only, then run `npm run golden`. One frame per line, as herald sent it.
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { goldenConfig, goldenDir, loadCases, runCase, settleQuiet } from '../test/golden.mjs';
import { startHerald } from '../test/helpers.mjs';

const cfg = path.join(mkdtempSync(path.join(os.tmpdir(), 'herald-golden-')), 'herald.yaml');
writeFileSync(cfg, goldenConfig);
for (const c of loadCases()) {
  // Each case on a fresh server, as the test replays it.
  const h = await startHerald({ args: ['--config', cfg] });
  try {
    const steps = await runCase(h, c, settleQuiet);
    const j = JSON.stringify;
    const stepText = steps.map(({ receive, ...step }) => {
      const recv = Object.entries(receive)
        .map(([n, fs]) => `        ${j(n)}: [\n${fs.map((f) => `          ${j(f)}`).join(',\n')}\n        ]`)
        .join(',\n');
      const body = Object.entries(step).map(([k, v]) => `      ${j(k)}: ${j(v)}`);
      body.push(recv ? `      "receive": {\n${recv}\n      }` : `      "receive": {}`);
      return `    {\n${body.join(',\n')}\n    }`;
    });
    const text = `{\n  "about": ${j(c.about)},\n  "clients": ${j(c.clients)},\n  "steps": [\n${stepText.join(',\n')}\n  ]\n}\n`;
    writeFileSync(goldenDir + c.file, text);
    console.log(`${c.file}: ${steps.reduce((n, s) => n + Object.values(s.receive).flat().length, 0)} frames`);
  } finally {
    await h.stop();
  }
}
