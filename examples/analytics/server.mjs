// The example's page server: serves the page (bundled with esbuild from app.tsx
// on start), tells it where herald is (/config) and mints its tokens (/token) -
// in a real app, the backend that already knows who the user is.
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(new URL('.', import.meta.url));
const sdk = fileURLToPath(new URL('../../clients/js/', import.meta.url));

/** Bundles app.tsx with React and the SDK (its dist/ is built by `npm run build` in clients/js). */
export async function bundle() {
  const { build } = createRequire(sdk + 'package.json')('esbuild');
  const r = await build({
    entryPoints: [here + 'app.tsx'],
    bundle: true,
    minify: true,
    format: 'esm',
    write: false,
    jsx: 'automatic',
    define: { 'process.env.NODE_ENV': '"production"' },
    nodePaths: [sdk + 'node_modules'],
    alias: { '@herald/client/react': sdk + 'dist/react.js', '@herald/client': sdk + 'dist/index.js' },
    logLevel: 'warning',
  });
  return r.outputFiles[0].contents;
}

/**
 * Starts the page server on 127.0.0.1:port (0: any). heraldWs is the WebSocket URL the page
 * connects to (or a function giving it, asked for each page load); mint(org) resolves with a token for a user of that organisation.
 * Resolves with { url, close() }.
 */
export async function startPageServer({ port = 0, heraldWs, orgs = ['1', '2'], mint }) {
  const js = await bundle();
  const html = readFileSync(here + 'index.html');
  const srv = http.createServer(async (req, res) => {
    const u = new URL(req.url, 'http://x');
    const send = (type, body) => res.writeHead(200, { 'Content-Type': type, 'Cache-Control': 'no-store' }).end(body);
    if (u.pathname === '/') return send('text/html; charset=utf-8', html);
    if (u.pathname === '/app.js') return send('text/javascript', js);
    if (u.pathname === '/config') return send('application/json', JSON.stringify({ url: typeof heraldWs === 'function' ? heraldWs() : heraldWs, orgs }));
    if (u.pathname === '/token' && orgs.includes(u.searchParams.get('org'))) {
      const org = u.searchParams.get('org');
      return send('application/json', JSON.stringify({ token: await mint(org) }));
    }
    res.writeHead(404).end();
  });
  await new Promise((res) => srv.listen(port, '127.0.0.1', res));
  return { url: `http://127.0.0.1:${srv.address().port}`, close: () => new Promise((res) => (srv.closeAllConnections(), srv.close(res))) };
}
