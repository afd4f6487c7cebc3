// @herald/client/react: hooks over one Client, on useSyncExternalStore.
// Hooks share the client's one Subscription per channel and count their users:
// the channel is left only when the last user is gone, a microtask later, so
// StrictMode's mount-unmount-mount and fast remounts neither duplicate nor
// drop a subscription.
import {
  createContext,
  createElement,
  useCallback,
  useContext,
  useEffect,
  useRef,
  useState,
  useSyncExternalStore,
  type ReactNode,
} from 'react';
import type {
  Client,
  ConnectionState,
  Message,
  PresenceResult,
  SubscribedEvent,
  SubscribeOptions,
  Subscription,
} from './client.js';

const Ctx = createContext<Client | null>(null);

/** Makes `client` available to the hooks below it. The app owns the client (create it once, outside
 *  render); the provider neither connects nor closes it. */
export function HeraldProvider(props: { client: Client; children?: ReactNode }) {
  return createElement(Ctx.Provider, { value: props.client }, props.children);
}

/** The provider's client. */
export function useHerald(): Client {
  const c = useContext(Ctx);
  if (!c) throw new Error('herald: no HeraldProvider above this component');
  return c;
}

/** The connection state; re-renders on every change. */
export function useConnectionState(): ConnectionState {
  const c = useHerald();
  const sub = useCallback((cb: () => void) => c.on('state', cb), [c]);
  const get = () => c.state;
  return useSyncExternalStore(sub, get, get);
}

const users = new WeakMap<Subscription, number>();

function retain(c: Client, channel: string, opts: SubscribeOptions): Subscription {
  const s = c.subscribe(channel, opts);
  users.set(s, (users.get(s) || 0) + 1);
  return s;
}

function release(s: Subscription) {
  const n = (users.get(s) || 1) - 1;
  users.set(s, n);
  if (!n) queueMicrotask(() => users.get(s) === 0 && s.unsubscribe());
}

export interface ChannelOptions extends SubscribeOptions {
  /** Called on every (re)subscribe; `recovered === false` after a reconnect means: reload state. */
  onSubscribed?: (e: SubscribedEvent) => void;
}

const key = (o?: SubscribeOptions) => JSON.stringify([o?.events, o?.since]);

/** Calls `onMessage` for each publication on `channel` (none while `channel` is null). The latest
 *  `onMessage` is always the one called. Options apply when the channel is first subscribed. */
export function useChannel<T = unknown>(
  channel: string | null | undefined,
  onMessage: (m: Message<T>) => void,
  opts?: ChannelOptions,
): void {
  const c = useHerald();
  const ref = useRef({ onMessage, opts });
  ref.current = { onMessage, opts };
  const k = key(opts);
  useEffect(() => {
    if (!channel) return;
    const s = retain(c, channel, ref.current.opts || {});
    const off1 = s.on('message', (m) => ref.current.onMessage(m as Message<T>));
    const off2 = s.on('subscribed', (e) => ref.current.opts?.onSubscribed?.(e));
    return () => {
      off1();
      off2();
      release(s);
    };
  }, [c, channel, k]);
}

/** The latest publication on `channel` (undefined until one arrives). */
export function useLatest<T = unknown>(channel: string | null | undefined, opts?: SubscribeOptions): Message<T> | undefined {
  const c = useHerald();
  const k = key(opts);
  const sub = useCallback(
    (cb: () => void) => {
      if (!channel) return () => {};
      const s = retain(c, channel, opts || {});
      const off = s.on('message', cb);
      return () => {
        off();
        release(s);
      };
    },
    [c, channel, k],
  );
  const get = () => (channel ? (c.subscriptions.get(channel)?.latest as Message<T> | undefined) : undefined);
  return useSyncExternalStore(sub, get, get);
}

/** Who is on `channel` (its namespace must allow presence). The hook subscribes to the channel (shared
 *  with the other hooks) and asks when the subscription is (re)established, on every join or leave
 *  the client hears there, and every `intervalMs` (10000). Undefined until the first answer. */
export function usePresence(channel: string | null | undefined, opts: { intervalMs?: number } = {}): PresenceResult | undefined {
  const c = useHerald();
  const ms = opts.intervalMs || 10000;
  const [store] = useState(() => ({ ch: '', v: undefined as PresenceResult | undefined }));
  const sub = useCallback(
    (cb: () => void) => {
      if (!channel) return () => {};
      let live = true;
      const s = retain(c, channel, {});
      const load = () =>
        s.state === 'subscribed' &&
        c.presence(channel).then(
          (r) => {
            if (!live) return;
            store.ch = channel;
            store.v = r;
            cb();
          },
          () => {},
        );
      const offs = [s.on('subscribed', load), s.on('join', load), s.on('leave', load)];
      const t = setInterval(load, ms);
      load();
      return () => {
        live = false;
        clearInterval(t);
        offs.forEach((f) => f());
        release(s);
      };
    },
    [c, channel, ms, store],
  );
  const get = () => (store.ch === channel ? store.v : undefined);
  return useSyncExternalStore(sub, get, get);
}
