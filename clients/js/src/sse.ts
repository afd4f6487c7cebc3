// The SSE transport: herald's GET /sse stream for what the server sends, and
// POST /sse/command for commands (docs/sse.md). It speaks to the client as the
// WebSocket transport does — the same JSON frames both ways — so subscriptions,
// recovery and requests work unchanged:
//   - a stream's channels are its URL's, with their positions in lastEventId,
//     so the client's subscribes after `connected` are answered from the
//     stream's own `herald/subscribed` events; a subscribe to a channel the
//     stream lacks ends the transport with 4010, and the client reconnects at
//     once with every channel and position (nothing is lost);
//   - an `events` filter is applied here (the stream has none);
//   - a comment line (herald's heartbeat on an idle stream) counts as a pong.
import type { CloseInfo, Frame, TransportFactory, TransportRequest } from './transport.js';

type Fetch = typeof fetch;

/** The tag herald's stream ids give a channel: the top 24 bits of its 32-bit FNV-1a, 6 hex digits. */
export function sseTag(channel: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < channel.length; i++) h = Math.imul(h ^ channel.charCodeAt(i), 0x01000193) >>> 0;
  return (h >>> 8).toString(16).padStart(6, '0');
}

/** The Server-Sent Events transport; `f` is the fetch to use (the global one by default). */
export function sseTransport(f?: Fetch): TransportFactory {
  return (req: TransportRequest) => {
    const fetchImpl: Fetch = f || globalThis.fetch.bind(globalThis);
    const { handlers, subs } = req;
    const http = req.sseUrl;
    const abort = new AbortController();
    const channels = subs.map((s) => s.channel);
    const filters = new Map<string, Set<string> | undefined>(subs.map((s) => [s.channel, s.events && new Set(s.events)]));
    const acks = new Map<string, Frame>();
    let info: Frame | undefined;
    let live = false;
    let done = false;
    const held: Frame[] = [];
    const headers: Record<string, string> = {};
    if (req.token) headers.Authorization = `Bearer ${req.token}`;

    const end = (c: CloseInfo) => {
      if (done) return;
      done = true;
      abort.abort();
      handlers.close(c);
    };
    const deliver = (fr: Frame) => {
      if (fr.type === 'message' && fr.offset) {
        const fl = filters.get(fr.channel);
        if (!filters.has(fr.channel) || (fl && !fl.has(fr.event))) return;
      }
      handlers.frame(fr);
    };
    const ready = () => {
      live = true;
      handlers.frame(info!); // the client subscribes every channel now; send() answers from acks
      held.splice(0).forEach(deliver);
    };
    const event = (name: string, data: string) => {
      if (!data) return;
      const fr: Frame = JSON.parse(data);
      if (name === 'herald/close') return end({ code: fr.code || 1006, reason: fr.reason || '' });
      if (name === 'herald/connected') {
        info = fr;
        if (!channels.length) ready();
      } else if (name === 'herald/subscribed' && !live) {
        acks.set(fr.channel, fr);
        if (acks.size === channels.length) ready();
      } else if (live) deliver(fr);
      else held.push(fr);
    };

    (async () => {
      const q = new URLSearchParams(req.params);
      channels.forEach((c) => q.append('channel', c));
      const ids = subs.flatMap((s) => (s.since && 'epoch' in s.since ? [`${sseTag(s.channel)}:${s.since.offset}:${s.since.epoch}`] : []));
      if (ids.length) q.set('lastEventId', ids.join('.'));
      if (!channels.length) {
        // No stream without a channel: commands still work over POST.
        info = { type: 'connected', pingInterval: 30000 };
        return ready();
      }
      const res = await fetchImpl(`${http}?${q}`, { headers: { ...headers, Accept: 'text/event-stream' }, signal: abort.signal });
      if (!res.ok || !res.body) {
        const body = await res.json().catch(() => ({}));
        return end({ code: 1006, reason: body.error || '', status: res.status });
      }
      const reader = res.body.getReader();
      const dec = new TextDecoder();
      let buf = '';
      let name = '';
      let data: string[] = [];
      for (;;) {
        const { value, done: eof } = await reader.read();
        if (eof) break;
        buf += dec.decode(value, { stream: true });
        let nl: number;
        while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + (buf.startsWith('\r\n', nl) ? 2 : 1));
          if (!line) {
            event(name, data.join('\n'));
            name = '';
            data = [];
          } else if (line[0] === ':') {
            if (live) handlers.frame({ type: 'pong' });
          } else {
            const i = line.indexOf(':');
            const k = i < 0 ? line : line.slice(0, i);
            const v = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
            if (k === 'event') name = v;
            else if (k === 'data') data.push(v);
          }
          if (done) return;
        }
      }
      end({ code: 1006, reason: 'stream ended' });
    })().catch((e) => end({ code: 1006, reason: String(e?.message || e) }));

    const post = async (cmd: Frame) => {
      const h: Record<string, string> = { ...headers, 'Content-Type': 'application/json' };
      if (info?.clientId) h['X-Herald-Client'] = info.clientId;
      try {
        const res = await fetchImpl(`${http}/command`, { method: 'POST', headers: h, body: JSON.stringify(cmd), signal: abort.signal });
        if (res.status === 204 || done) return;
        const body = await res.json();
        handlers.frame(body.type ? body : { type: 'error', code: body.error, message: body.message || body.error, channel: cmd.channel, id: cmd.id });
      } catch {
        // Lost with its request: the client resends it on the next connection or times it out.
      }
    };

    return {
      send(cmd: Frame) {
        if (done) return;
        if (cmd.type === 'subscribe') {
          const ack = acks.get(cmd.channel);
          if (!ack) return void queueMicrotask(() => end({ code: 4010, reason: 'channels changed' }));
          filters.set(cmd.channel, cmd.events && new Set(cmd.events));
          handlers.frame({ ...ack, id: cmd.id });
        } else if (cmd.type === 'unsubscribe') {
          filters.delete(cmd.channel);
          acks.delete(cmd.channel); // subscribing again needs a new stream
          handlers.frame({ type: 'unsubscribed', channel: cmd.channel });
        } else post(cmd);
      },
      close(code = 1000, reason = '') {
        end({ code, reason });
      },
    };
  };
}
