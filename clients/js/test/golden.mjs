// Golden frames: internal/protocol/testdata/golden/*.json hold real herald
// frames of every type, each under the command (or server API call) that
// produced it. `npm run golden` records them from the real binary; the Go test
// in internal/protocol re-encodes every server frame with the protocol
// package and decodes every command; the SDK's tests replay each case against
// the real binary (the server must still answer the same way) and feed the
// recorded frames to the client (the SDK must handle what the server sends).
//
// A case: { about, clients: {name: claims}, steps: [step] }. A step is one of
//   { connect: name }                       open that client's WebSocket
//   { client: name, send: command }          send a command ("$epoch:CHANNEL" is replaced by the
//                                            last epoch seen for CHANNEL)
//   { client: name, sendRaw: text }          send a text frame as is
//   { api: path, body }                      call the server API
// and records what each client received, in order: receive: {name: [frames]}.
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { api, sleep, token, until } from './helpers.mjs';

export const goldenDir = fileURLToPath(new URL('../../../internal/protocol/testdata/golden/', import.meta.url));

/** The namespace configuration the cases assume (join/leave notices in room:). */
export const goldenConfig = 'namespaces:\n  - prefix: room\n    presence: true\n    join_leave: true\n';

/** Fields whose values change from run to run (compared by type only). */
export const volatile = new Set(['timestamp', 'clientId', 'epoch', 'connectedAt']);

export function loadCases() {
  return readdirSync(goldenDir)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((f) => ({ file: f, ...JSON.parse(readFileSync(goldenDir + f, 'utf8')) }));
}

/**
 * Runs a case against the herald `h`. settle(stepIndex, received) resolves when the step's
 * frames are in (the recorder waits for quiet; the test for the golden counts).
 * Resolves with the steps, each with the frames received: receive {client: [frames]}.
 */
export async function runCase(h, c, settle) {
  const socks = {};
  const epochs = {};
  const out = [];
  try {
    for (const [i, step] of c.steps.entries()) {
      const received = {};
      const listen = (name, ws) =>
        ws.on('message', (d) => {
          const f = JSON.parse(d.toString());
          if (f.epoch && f.channel) epochs[f.channel] = f.epoch;
          (received[name] ||= []).push(f);
        });
      for (const [name, ws] of Object.entries(socks)) listen(name, ws);
      if (step.connect) {
        const ws = new WebSocket(`${h.ws}?token=${token(c.clients[step.connect])}`);
        listen(step.connect, ws);
        await new Promise((res, rej) => ws.once('open', res).once('error', rej));
        socks[step.connect] = ws;
      } else if (step.send) {
        const cmd = JSON.parse(JSON.stringify(step.send).replace(/"\$epoch:([^"]+)"/g, (_, ch) => JSON.stringify(epochs[ch])));
        socks[step.client].send(JSON.stringify(cmd));
      } else if (step.sendRaw !== undefined) {
        socks[step.client].send(step.sendRaw);
      } else if (step.api) {
        await api(h, step.api, step.body);
      }
      await settle(i, received);
      for (const ws of Object.values(socks)) ws.removeAllListeners('message');
      const { receive: _, ...rest } = step;
      out.push({ ...rest, receive: received });
    }
  } finally {
    for (const ws of Object.values(socks)) ws.terminate();
  }
  return out;
}

/** Waits until each client has received as many frames as the golden step lists. */
export function settleTo(golden) {
  return (i, received) => {
    const want = golden.steps[i].receive || {};
    return until(() => Object.entries(want).every(([n, fs]) => (received[n] || []).length >= fs.length), `frames of step ${i}`, 20000);
  };
}

/** Waits for quiet: no new frame for 200 ms (recording only). */
export async function settleQuiet(_i, received) {
  let n = -1;
  for (;;) {
    const now = Object.values(received).reduce((s, f) => s + f.length, 0);
    if (now === n) return;
    n = now;
    await sleep(200);
  }
}

/** The shape of a frame: volatile values replaced by their type, the rest kept. */
export function shape(v, key) {
  if (volatile.has(key) || (key === 'message' && typeof v === 'string')) return typeof v;
  if (Array.isArray(v)) return v.map((x) => shape(x));
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, shape(x, k)]));
  return v;
}
