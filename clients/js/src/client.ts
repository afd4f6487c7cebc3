import { sseTransport } from './sse.js';
import {
  websocketTransport,
  type CloseInfo,
  type Frame,
  type Transport,
  type TransportFactory,
  type TransportRequest,
  type WebSocketConstructor,
} from './transport.js';

export type ConnectionState = 'connecting' | 'connected' | 'reconnecting' | 'disconnected';

/** Why the state changed. */
export interface StateReason {
  /**
   * `connect` / `disconnect` (the app asked), `connected`, `closed` (the connection ended, see `code`),
   * `failed` (a connect attempt failed), `token_expired` (4001), `resubscribe` (4010),
   * `unauthorized` (Node: the upgrade was refused with `status` 401 or 403; no more attempts),
   * `attempts_exhausted` (`backoff.maxAttempts` failed attempts in a row), `offline` (the browser
   * went offline; no attempts until it is back), `online`, `server_disconnect` (4000: the server
   * API disconnected this user; no more attempts), `token` (getToken failed, see `error`).
   */
  kind: string;
  code?: number;
  status?: number;
  message?: string;
  error?: unknown;
}

export interface StateEvent {
  state: ConnectionState;
  previous: ConnectionState;
  reason: StateReason;
  /** Failed connect attempts since the last successful one. */
  attempts: number;
  /** When reconnecting with a timer: the delay before the next attempt, in ms. */
  delayMs?: number;
}

export interface BackoffOptions {
  /** First delay and the floor of every delay (1000). */
  minMs: number;
  /** Cap (5000). */
  maxMs: number;
  /** Randomise each delay between minMs and its cap (true). */
  jitter: boolean;
  /** Failed connect attempts in a row before giving up with state `disconnected` (Infinity). */
  maxAttempts: number;
}

export type Transports = 'websocket' | 'sse';

export interface ClientOptions {
  /** herald's WebSocket URL, e.g. `wss://rt.example.com/ws` (http(s) is turned into ws(s)). */
  url: string;
  /** Called before every connect; its token goes in `?token=`. Null/undefined: connect without one. */
  getToken?: () => string | null | undefined | Promise<string | null | undefined>;
  /** Extra query parameters of the upgrade request (e.g. `userId` for `--insecure-query-auth`). */
  params?: Record<string, string>;
  backoff?: Partial<BackoffOptions>;
  /** `['websocket']`, or `['websocket', 'sse']` to fall back to Server-Sent Events (docs/sse.md) after
   *  `sseAfter` WebSocket connect failures in a row. */
  transports?: Transports[];
  /** WebSocket connect failures in a row before the SSE fallback is tried (3); as many SSE failures in
   *  a row go back to WebSocket. */
  sseAfter?: number;
  /** While on SSE, how often a WebSocket connection is tried, moving back when it connects (180000). */
  wsRetryMs?: number;
  /** The SSE stream's URL (default: `url`'s origin, over http(s), with path `/sse`). */
  sseUrl?: string;
  /** The fetch the SSE transport uses (the global one). */
  fetch?: typeof fetch;
  /** WebSocket constructor; required in Node (`import WebSocket from 'ws'`). */
  WebSocket?: WebSocketConstructor;
  /** Time for a request (publish, history, presence) to be answered, connection waits included (10000). */
  timeoutMs?: number;
  /** Time for a connect attempt to get the server's `connected` frame (10000). */
  connectTimeoutMs?: number;
  /** Added to the server's pingInterval before a ping is sent on a silent connection, and the time
   *  allowed for its pong (5000). */
  pingMarginMs?: number;
  /** Connect at once (true); otherwise call `connect()`. */
  autoConnect?: boolean;
  /** Replaces the WebSocket transport (tests, custom transports). */
  transport?: TransportFactory;
}

/** The server's `connected` frame. */
export interface ConnectedInfo {
  clientId: string;
  userId: string;
  role?: string;
  org?: string;
  timestamp: string;
  pingInterval: number;
}

/** A publication as delivered. */
export interface Message<T = unknown> {
  channel: string;
  data: T;
  timestamp: string;
  offset?: number;
  event?: string;
  from?: string;
}

export interface Position {
  offset: number;
  epoch: string;
}

export interface SubscribedEvent extends Position {
  /** Present when the subscribe carried `since` (after a reconnect): true when every missed
   *  publication follows in order; false when some are gone and the app must reload its state. */
  recovered?: boolean;
}

export interface SubscribeOptions {
  /** Receive only publications with these event names (filtered by the server). */
  events?: string[];
  /** Start from this position (replay what was published after it). */
  since?: Position | { time: string };
}

export interface PublishOptions {
  event?: string;
  /** Defaults to a random key, so a publish retried after a lost answer is stored once. */
  idempotencyKey?: string;
  timeoutMs?: number;
}

export interface PublishResult extends Position {
  channel: string;
  duplicate?: boolean;
}

export interface HistoryResult extends Position {
  channel: string;
  publications: Omit<Message, 'channel'>[];
  truncated?: boolean;
}

export interface PresenceResult {
  channel: string;
  numClients: number;
  numUsers: number;
  clients: { clientId: string; userId: string; connectedAt: string }[];
  truncated?: boolean;
}

/** An error answered by the server (its stable `code`), or `timeout` / `disconnected` from the client. */
export class HeraldError extends Error {
  code: string;
  channel?: string;
  constructor(code: string, message: string, channel?: string) {
    super(message);
    this.name = 'HeraldError';
    this.code = code;
    this.channel = channel;
  }
}

type Listener<T> = (v: T) => void;

class Emitter<M> {
  private ls: { [K in keyof M]?: Set<Listener<M[K]>> } = {};
  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof M>(type: K, fn: Listener<M[K]>): () => void {
    (this.ls[type] ||= new Set()).add(fn);
    return () => void this.ls[type]!.delete(fn);
  }
  protected emit<K extends keyof M>(type: K, v: M[K]) {
    this.ls[type]?.forEach((fn) => {
      try {
        fn(v);
      } catch (e) {
        setTimeout(() => {
          throw e;
        });
      }
    });
  }
}

/**
 * The delay before a reconnect, given how many were already made since the last connection:
 * without jitter min(maxMs, minMs·2^retries): 1, 2, 4, 5, 5 s by default; with jitter uniform
 * between minMs and min(maxMs, minMs·2^(retries+1)): 1–2 s, 1–4 s, then 1–5 s.
 */
export function backoffDelay(retries: number, b: BackoffOptions, random = Math.random): number {
  const cap = (n: number) => Math.min(b.maxMs, b.minMs * 2 ** Math.min(n, 30));
  if (!b.jitter) return cap(retries);
  const hi = Math.max(b.minMs, cap(retries + 1));
  return b.minMs + random() * (hi - b.minMs);
}

export type SubscriptionState = 'subscribing' | 'subscribed' | 'unsubscribed';

interface SubscriptionEvents {
  message: Message<any>;
  state: SubscriptionState;
  subscribed: SubscribedEvent;
  error: HeraldError;
  join: { clientId: string; userId: string };
  leave: { clientId: string; userId: string };
}

/** One channel of one client. `client.subscribe` returns the same object while it is subscribed. */
export class Subscription extends Emitter<SubscriptionEvents> {
  readonly channel: string;
  state: SubscriptionState = 'subscribing';
  /** The position of the last publication received (or of the subscribe), once known. */
  position?: Position;
  /** The last publication received. */
  latest?: Message<any>;
  /** @internal */ _opts: SubscribeOptions;
  /** @internal */ _c: Client;
  /** @internal the since sent with the pending subscribe. */ _since?: SubscribeOptions['since'];

  /** @internal */
  constructor(c: Client, channel: string, opts: SubscribeOptions) {
    super();
    this._c = c;
    this.channel = channel;
    this._opts = opts;
  }

  /** Leaves the channel. A later `client.subscribe` makes a new Subscription. */
  unsubscribe() {
    this._c._unsubscribe(this);
  }

  /** @internal */
  _setState(s: SubscriptionState) {
    if (s !== this.state) this.emit('state', (this.state = s));
  }

  /** @internal */
  _ack(f: Frame) {
    const since = this._since;
    const pos = { offset: f.offset, epoch: f.epoch };
    // After a recovering subscribe the replay (offsets after since) follows; keep since as the
    // position so it is not mistaken for duplicates. Otherwise start at the channel's position.
    this.position = !since
      ? pos
      : 'time' in since
        ? { offset: 0, epoch: f.epoch } // the replay starts wherever the time falls
        : since.epoch === f.epoch && since.offset <= f.offset
          ? { ...since }
          : pos;
    this._setState('subscribed');
    this.emit('subscribed', since ? { ...pos, recovered: !!f.recovered } : { ...pos });
  }

  /** @internal */
  _message(f: Frame) {
    const p = this.position;
    if (typeof f.offset === 'number' && f.offset > 0 && p) {
      if (f.offset <= p.offset) return; // already delivered
      p.offset = f.offset;
    }
    this.emit('message', (this.latest = f as unknown as Message));
  }

  /** @internal */
  _emit<K extends keyof SubscriptionEvents>(type: K, v: SubscriptionEvents[K]) {
    this.emit(type, v);
  }
}

interface ClientEvents {
  state: StateEvent;
  connected: ConnectedInfo;
  /** A message for a channel with no Subscription (a direct send from the server API). */
  message: Message<any>;
  /** An error frame that belongs to no request or subscription. */
  error: HeraldError;
}

interface Pending {
  f: Frame;
  resolve(v: any): void;
  reject(e: HeraldError): void;
  timer: any;
}

const DEFAULT_BACKOFF: BackoffOptions = { minMs: 1000, maxMs: 5000, jitter: true, maxAttempts: Infinity };
const RETRYABLE = new Set(['unavailable', 'rate_limited']);

/** A connection to herald that reconnects, resubscribes and recovers by itself. */
export class Client extends Emitter<ClientEvents> {
  state: ConnectionState = 'disconnected';
  /** The last state event (stable object, replaced on each change). */
  status: StateEvent;
  /** The `connected` frame of the current connection. */
  info?: ConnectedInfo;
  readonly subscriptions = new Map<string, Subscription>();

  /** The transport in use, or tried next. */
  via: Transports = 'websocket';

  private o: Required<Omit<ClientOptions, 'getToken' | 'params' | 'WebSocket' | 'transport' | 'sseUrl' | 'fetch'>> & ClientOptions;
  private b: BackoffOptions;
  private tf: TransportFactory;
  private sf: TransportFactory;
  private viaFails = 0;
  private probeTimer: any;
  private t?: Transport;
  private gen = 0;
  private failures = 0;
  private retries = 0;
  private live = false;
  private retryTimer: any;
  private connectTimer: any;
  private dogTimer: any;
  private lastRx = 0;
  private pingSent = 0;
  private nextId = 1;
  private pending = new Map<number, Pending>();
  private subIds = new Map<number, Subscription>();
  private waitingOnline = false;
  private offWin?: () => void;

  constructor(opts: ClientOptions) {
    super();
    this.o = { timeoutMs: 10000, connectTimeoutMs: 10000, pingMarginMs: 5000, autoConnect: true, transports: ['websocket'], sseAfter: 3, wsRetryMs: 180000, backoff: {}, ...opts };
    this.b = { ...DEFAULT_BACKOFF, ...opts.backoff };
    this.tf = opts.transport || websocketTransport(opts.WebSocket);
    this.sf = sseTransport(opts.fetch);
    this.via = this.o.transports[0];
    this.status = { state: 'disconnected', previous: 'disconnected', reason: { kind: 'init' }, attempts: 0 };
    const w = globalThis as any;
    if (typeof w.addEventListener === 'function' && typeof w.removeEventListener === 'function') {
      const on = () => this.onOnline();
      const off = () => this.onOffline();
      w.addEventListener('online', on);
      w.addEventListener('offline', off);
      this.offWin = () => {
        w.removeEventListener('online', on);
        w.removeEventListener('offline', off);
      };
    }
    if (this.o.autoConnect) this.connect();
  }

  /** Connects (again) after `disconnect()` or a terminal state; a no-op while active. */
  connect() {
    if (this.state !== 'disconnected') return;
    this.failures = this.retries = 0;
    this.set('connecting', { kind: 'connect' });
    this.open();
  }

  /** Closes the connection and stops reconnecting; pending requests fail with `disconnected`.
   *  Subscriptions are kept and re-established by a later `connect()`. */
  disconnect() {
    this.stop({ kind: 'disconnect' });
  }

  /** `disconnect()` and drop every listener on the window's online/offline events. */
  close() {
    this.disconnect();
    this.offWin?.();
  }

  /**
   * The channel's Subscription, made and subscribed when there is none. Asking again returns the
   * same one (its first options stay). It is re-established after every reconnect, recovering
   * from its last position.
   */
  subscribe(channel: string, opts: SubscribeOptions = {}): Subscription {
    let s = this.subscriptions.get(channel);
    if (s) return s;
    s = new Subscription(this, channel, opts);
    this.subscriptions.set(channel, s);
    if (this.live) this.sendSubscribe(s);
    return s;
  }

  /** @internal */
  _unsubscribe(s: Subscription) {
    if (this.subscriptions.get(s.channel) !== s) return;
    this.subscriptions.delete(s.channel);
    for (const [id, x] of this.subIds) if (x === s) this.subIds.delete(id);
    if (this.live) this.t!.send({ type: 'unsubscribe', channel: s.channel });
    s._setState('unsubscribed');
  }

  /** Publishes to a channel; resolves with its position. Retried on a new connection with the same
   *  idempotency key until answered or timed out. */
  publish(channel: string, data: unknown, opts: PublishOptions = {}): Promise<PublishResult> {
    const f: Frame = { type: 'message', channel, data, idempotencyKey: opts.idempotencyKey || randomKey() };
    if (opts.event) f.event = opts.event;
    return this.request(f, opts.timeoutMs);
  }

  /** The channel's history: the newest `limit`, or what came after `since`. */
  history(channel: string, opts: { limit?: number; since?: SubscribeOptions['since']; timeoutMs?: number } = {}): Promise<HistoryResult> {
    return this.request({ type: 'history', channel, limit: opts.limit, since: opts.since }, opts.timeoutMs);
  }

  /** Who is connected to the channel (where its namespace allows presence). */
  presence(channel: string, opts: { timeoutMs?: number } = {}): Promise<PresenceResult> {
    return this.request({ type: 'presence', channel }, opts.timeoutMs);
  }

  private request<T>(f: Frame, timeoutMs = this.o.timeoutMs): Promise<T> {
    return new Promise((resolve, reject) => {
      if (this.state === 'disconnected') return reject(new HeraldError('disconnected', 'client is disconnected', f.channel));
      const id = this.nextId++;
      f.id = id;
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new HeraldError('timeout', `no answer to ${f.type} within ${timeoutMs} ms`, f.channel));
      }, timeoutMs);
      this.pending.set(id, { f, resolve, reject, timer });
      if (this.live) this.t!.send(f);
    });
  }

  private set(state: ConnectionState, reason: StateReason, delayMs?: number) {
    const previous = this.state;
    this.state = state;
    this.status = { state, previous, reason, attempts: this.failures, delayMs };
    this.emit('state', this.status);
  }

  private stop(reason: StateReason) {
    this.gen++;
    clearTimeout(this.retryTimer);
    this.waitingOnline = false;
    this.drop(1000);
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new HeraldError('disconnected', 'client is disconnected', p.f.channel));
    }
    this.pending.clear();
    if (this.state !== 'disconnected') this.set('disconnected', reason);
  }

  /** Closes the current transport without reporting it. */
  private drop(code: number) {
    const t = this.t;
    this.t = undefined;
    this.gen++;
    this.wentDown();
    t?.close(code);
  }

  private wentDown() {
    this.live = false;
    this.info = undefined;
    clearTimeout(this.connectTimer);
    clearTimeout(this.dogTimer);
    clearTimeout(this.probeTimer);
    this.subIds.clear();
    for (const s of this.subscriptions.values()) s._setState('subscribing');
  }

  private async open() {
    const gen = ++this.gen;
    let token: string | null | undefined;
    try {
      token = this.o.getToken ? await this.o.getToken() : undefined;
    } catch (error) {
      if (gen === this.gen) this.failed({ kind: 'token', error });
      return;
    }
    if (gen !== this.gen) return;
    const handlers = {
      frame: (f: Frame) => gen === this.gen && this.frame(f),
      close: (c: CloseInfo) => gen === this.gen && this.closed(c),
    };
    try {
      this.t = (this.via === 'sse' ? this.sf : this.tf)(this.req(token, handlers));
    } catch (error) {
      this.failed({ kind: 'failed', error });
      return;
    }
    this.connectTimer = setTimeout(() => this.t?.close(4002, 'connect timeout'), this.o.connectTimeoutMs);
  }

  private req(token: string | null | undefined, handlers: TransportRequest['handlers']): TransportRequest {
    const q = new URLSearchParams(this.o.params);
    if (token) q.set('token', token);
    let url = this.o.url.replace(/^http/, 'ws');
    const qs = q.toString();
    if (qs) url += (url.includes('?') ? '&' : '?') + qs;
    const subs = [...this.subscriptions.values()].map((s) => ({ channel: s.channel, since: s.position || s._opts.since, events: s._opts.events }));
    const sseUrl = this.o.sseUrl || this.o.url.replace(/^ws/, 'http').replace(/^(https?:\/\/[^/?#]+).*$/, '$1/sse');
    return { url, sseUrl, token: token || undefined, params: this.o.params, subs, handlers };
  }

  private frame(f: Frame) {
    this.lastRx = Date.now();
    this.pingSent = 0;
    const p = typeof f.id === 'number' ? this.pending.get(f.id) : undefined;
    switch (f.type) {
      case 'connected':
        return this.connected(f as any);
      case 'message': {
        delete (f as any).type;
        const s = this.subscriptions.get(f.channel);
        if (s && s.state === 'subscribed') s._message(f);
        else if (!s) this.emit('message', f as any);
        return;
      }
      case 'subscribed': {
        const s = this.subIds.get(f.id);
        if (s) {
          this.subIds.delete(f.id);
          s._ack(f);
        }
        return;
      }
      case 'join':
      case 'leave':
        return this.subscriptions.get(f.channel)?._emit(f.type, f.user);
      case 'error': {
        const e = new HeraldError(f.code, f.message, f.channel);
        const s = this.subIds.get(f.id);
        if (p) return this.settle(f.id, p, e);
        if (s) return this.subError(f.id, s, e);
        return this.emit('error', e);
      }
    }
    if (p && f.type === p.f.type.replace('message', 'published')) {
      const id = f.id;
      delete (f as any).type;
      delete f.id;
      this.settle(id, p, undefined, f);
    }
  }

  private settle(id: number, p: Pending, err?: HeraldError, v?: unknown) {
    this.pending.delete(id);
    clearTimeout(p.timer);
    err ? p.reject(err) : p.resolve(v);
  }

  private subError(id: number, s: Subscription, e: HeraldError) {
    this.subIds.delete(id);
    s._emit('error', e);
    if (RETRYABLE.has(e.code)) {
      const gen = this.gen;
      setTimeout(() => gen === this.gen && this.subscriptions.get(s.channel) === s && this.sendSubscribe(s), backoffDelay(0, this.b));
    } else {
      this._unsubscribe(s);
    }
  }

  private connected(info: ConnectedInfo) {
    clearTimeout(this.connectTimer);
    this.info = info;
    this.live = true;
    this.failures = this.retries = this.viaFails = 0;
    if (this.via === 'sse') this.probeTimer = setTimeout(this.probe, this.o.wsRetryMs);
    this.set('connected', { kind: 'connected' });
    this.emit('connected', info);
    for (const s of this.subscriptions.values()) this.sendSubscribe(s);
    for (const p of this.pending.values()) this.t!.send(p.f);
    this.dog();
  }

  private sendSubscribe(s: Subscription) {
    const id = this.nextId++;
    const since = s.position || s._opts.since;
    s._since = since && { ...since };
    this.subIds.set(id, s);
    this.t!.send({ type: 'subscribe', channel: s.channel, id, events: s._opts.events, since });
  }

  /** The ping watchdog: browsers hide WebSocket pings, so a connection silent for the server's
   *  pingInterval plus pingMarginMs is probed with herald's `ping`, and one that does not answer
   *  within pingMarginMs is dropped and reconnected. Any frame counts as an answer. */
  private dog = () => {
    clearTimeout(this.dogTimer);
    if (!this.live) return;
    const now = Date.now();
    const m = this.o.pingMarginMs;
    const idle = (this.info?.pingInterval || 30000) + m;
    if (this.pingSent) {
      if (now - this.pingSent >= m) return this.t?.close(4002, 'no pong');
    } else if (now - this.lastRx >= idle) {
      this.ping(now);
    }
    const due = this.pingSent ? this.pingSent + m : this.lastRx + idle;
    this.dogTimer = setTimeout(this.dog, Math.max(0, due - now));
  };

  private ping(now: number) {
    this.pingSent = now;
    this.t!.send({ type: 'ping' });
  }

  private closed(c: CloseInfo) {
    const wasLive = this.live;
    this.t = undefined;
    this.wentDown();
    const reason: StateReason = { kind: wasLive ? 'closed' : 'failed', code: c.code, ...(c.reason && { message: c.reason }) };
    if (c.status === 401 || c.status === 403) return this.stop({ ...reason, kind: 'unauthorized', status: c.status });
    if (c.code === 4000) return this.stop({ kind: 'server_disconnect', code: c.code });
    if (wasLive && (c.code === 4001 || c.code === 4010)) {
      // 4001: the token expired (getToken is called again); 4010: recover. Both at once.
      this.set('reconnecting', { ...reason, kind: c.code === 4001 ? 'token_expired' : 'resubscribe' }, 0);
      return this.open();
    }
    this.failed(reason, !wasLive);
  }

  /** While on SSE: tries a WebSocket connection; when it connects, moves back at once (every
   *  subscription resumes from its position on the new connection). */
  private probe = async () => {
    const gen = this.gen;
    const again = () => gen === this.gen && (this.probeTimer = setTimeout(this.probe, this.o.wsRetryMs));
    let token;
    try {
      token = this.o.getToken ? await this.o.getToken() : undefined;
    } catch {
      return again();
    }
    if (gen !== this.gen) return;
    let timer: any;
    try {
      const t = this.tf(
        this.req(token, {
          frame: (f) => {
            if (f.type !== 'connected') return;
            clearTimeout(timer);
            if (gen !== this.gen) return t.close(1000); // the client moved on meanwhile
            this.via = 'websocket';
            t.close(1000);
            this.drop(1000);
            this.set('reconnecting', { kind: 'transport' }, 0);
            this.open();
          },
          close: () => (clearTimeout(timer), this.via === 'sse' && again()),
        }),
      );
      timer = setTimeout(() => t.close(), this.o.connectTimeoutMs);
    } catch {
      again();
    }
  };

  private failed(reason: StateReason, counts = true) {
    if (counts) {
      this.failures++;
      // The SSE fallback: after sseAfter failures in a row on one transport, try the other.
      if (this.o.transports.length > 1 && ++this.viaFails >= this.o.sseAfter) {
        this.via = this.via === 'sse' ? 'websocket' : 'sse';
        this.viaFails = 0;
      }
    }
    if (this.failures >= this.b.maxAttempts) return this.stop({ ...reason, kind: 'attempts_exhausted' });
    if (this.isOffline()) {
      this.waitingOnline = true;
      return this.set('reconnecting', { kind: 'offline' });
    }
    const delay = backoffDelay(this.retries++, this.b);
    this.set('reconnecting', reason, delay);
    const gen = this.gen;
    this.retryTimer = setTimeout(() => gen === this.gen && this.open(), delay);
  }

  private isOffline() {
    const n = (globalThis as any).navigator;
    return !!n && n.onLine === false;
  }

  private onOffline() {
    if (this.state === 'reconnecting') {
      this.gen++;
      clearTimeout(this.retryTimer);
      this.waitingOnline = true;
      this.set('reconnecting', { kind: 'offline' });
    } else if (this.live) {
      // The socket may or may not have survived: probe it now rather than wait for the watchdog.
      if (!this.pingSent) this.ping(Date.now());
      this.dog();
    }
  }

  private onOnline() {
    if (this.state !== 'reconnecting' || !this.waitingOnline) return;
    this.waitingOnline = false;
    clearTimeout(this.retryTimer);
    this.set('reconnecting', { kind: 'online' }, 0);
    this.open();
  }
}

function randomKey(): string {
  const c = (globalThis as any).crypto;
  if (c?.randomUUID) return c.randomUUID();
  return Math.random().toString(36).slice(2) + Date.now().toString(36);
}

/** Makes a client; it connects at once unless `autoConnect: false`. */
export function createClient(opts: ClientOptions): Client {
  return new Client(opts);
}
