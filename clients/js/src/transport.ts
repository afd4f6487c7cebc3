// The transport layer: one Transport is one connection attempt to herald.
// The client owns reconnecting, subscriptions and requests; a transport only
// carries JSON frames both ways and reports how it ended. A new transport
// (SSE + HTTP POST, long polling) is a TransportFactory and nothing else.

/** A command or frame: one JSON object. */
export type Frame = { type: string; [key: string]: any };

/** How a transport ended. */
export interface CloseInfo {
  /** WebSocket close code (1006 when the connection failed or was cut). */
  code: number;
  reason: string;
  /** HTTP status of a refused upgrade, where the runtime shows it (Node's `ws`, not browsers). */
  status?: number;
}

/** What a transport calls; the client supplies these. */
export interface TransportHandlers {
  /** One parsed frame from the server. */
  frame(f: Frame): void;
  /** Called once, when the transport is gone (failed to open, cut, or closed). */
  close(info: CloseInfo): void;
}

/** One connection attempt. */
export interface Transport {
  /** Sends one command. Only called after the server's `connected` frame. */
  send(f: Frame): void;
  /** Closes the transport; `close` is still reported to the handlers. */
  close(code?: number, reason?: string): void;
}

/** What a factory is given to open a transport. */
export interface TransportRequest {
  /** The server's WebSocket URL with the token and extra parameters in its query. */
  url: string;
  /** The SSE stream's URL (the command endpoint is this plus `/command`). */
  sseUrl: string;
  /** The token getToken gave for this connection, if any. */
  token?: string;
  /** The client's extra query parameters. */
  params?: Record<string, string>;
  /** The channels the client will subscribe once connected, with the position each resumes from. */
  subs: { channel: string; since?: { offset: number; epoch: string } | { time: string }; events?: string[] }[];
  handlers: TransportHandlers;
}

export type TransportFactory = (req: TransportRequest) => Transport;

/** The subset of the WebSocket API the client uses (browsers' and `ws`'s). */
export interface WebSocketLike {
  readyState: number;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: { data: any }) => void) | null;
  onerror: ((ev: any) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

/**
 * The WebSocket transport. `WS` is the global WebSocket in browsers and must be
 * passed in Node (the `ws` package). With `ws`, a refused upgrade reports its
 * HTTP status ("Unexpected server response: 401"); a browser shows it only as
 * a failed connection (1006).
 */
export function websocketTransport(WS?: WebSocketConstructor): TransportFactory {
  return ({ url, handlers }) => {
    const C = WS || (globalThis as any).WebSocket;
    if (!C) throw new Error('herald: no WebSocket constructor; pass one (the ws package) in Node');
    const ws: WebSocketLike = new C(url);
    let status: number | undefined;
    let done = false;
    const end = (info: CloseInfo) => {
      if (done) return;
      done = true;
      ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
      handlers.close(info);
    };
    ws.onmessage = (ev) => {
      if (done) return;
      let f: Frame;
      try {
        f = JSON.parse(typeof ev.data === 'string' ? ev.data : String(ev.data));
      } catch {
        return;
      }
      if (f && typeof f.type === 'string') handlers.frame(f);
    };
    ws.onerror = (ev) => {
      const m = /server response: (\d{3})/.exec(String(ev?.message || ev?.error?.message || ''));
      if (m) status = +m[1];
    };
    ws.onclose = (ev) => end({ code: ev.code || 1006, reason: ev.reason || '', status });
    return {
      send: (f) => {
        if (ws.readyState === 1) ws.send(JSON.stringify(f));
      },
      close: (code = 1000, reason = '') => {
        try {
          ws.close(code, reason);
        } catch {
          // CONNECTING sockets throw on close in some runtimes; it is still abandoned.
        }
        end({ code, reason, status });
      },
    };
  };
}
