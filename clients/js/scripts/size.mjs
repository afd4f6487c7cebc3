// Bundle sizes of the two entry points, minified (esbuild) and gzipped (level 9),
// as an app's bundler would ship them. `npm run size` prints them; the size test
// holds them to the README's budgets. Run after `npm run build`.
import { build } from 'esbuild';
import { gzipSync } from 'node:zlib';
import { fileURLToPath } from 'node:url';

const dist = fileURLToPath(new URL('../dist/', import.meta.url));

async function measure(entry, external) {
  const r = await build({ entryPoints: [dist + entry], bundle: true, minify: true, format: 'esm', write: false, external });
  const code = r.outputFiles[0].contents;
  return { min: code.length, gzip: gzipSync(code, { level: 9 }).length };
}

/** { core, react }: bytes minified and minified+gzipped; react excludes core and React itself. */
export async function sizes() {
  return {
    core: await measure('index.js', []),
    react: await measure('react.js', ['react', './client.js']),
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const s = await sizes();
  for (const [k, v] of Object.entries(s)) console.log(`${k}: ${v.min} B minified, ${v.gzip} B min+gzip (${(v.gzip / 1024).toFixed(2)} KB)`);
}
