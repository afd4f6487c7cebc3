// The seed's analytics dashboard on @herald/client: one panel per organisation,
// each signed in with its own token (as two different users would be), each
// with its live feed and the Live / Reconnecting / Offline indicator.
import { useState } from 'react';
import { createRoot } from 'react-dom/client';
import { createClient, type Client, type Message } from '@herald/client';
import { HeraldProvider, useChannel, useConnectionState, useLatest } from '@herald/client/react';

type Update = { seq: number; org: string; timestamp: string; [k: string]: unknown };

// The seed's hook, on herald: { isConnected, latestUpdate } plus the state for the indicator.
function useRealtimeAnalytics({ organizationId, enabled = true }: { organizationId: string; enabled?: boolean }) {
  const state = useConnectionState();
  const latestUpdate = useLatest<Update>(enabled ? `org:${organizationId}` : null);
  return { isConnected: state === 'connected', state, latestUpdate };
}

function Indicator({ org }: { org: string }) {
  const state = useConnectionState();
  const [label, cls] =
    state === 'connected' ? ['Live', 'live'] : state === 'disconnected' ? ['Offline', 'offline'] : ['Reconnecting…', 'reconnecting'];
  return (
    <span className={`status ${cls}`} data-testid={`status-${org}`}>
      <i className="dot" />
      {label}
    </span>
  );
}

function Dashboard({ org }: { org: string }) {
  const { latestUpdate } = useRealtimeAnalytics({ organizationId: org });
  const [feed, setFeed] = useState<Message<Update>[]>([]);
  const [metrics, setMetrics] = useState<Update>();
  useChannel<Update>(
    `org:${org}`,
    (m) => {
      setFeed((f) => [m, ...f].slice(0, 200));
      if (m.event === 'metrics') setMetrics(m.data);
    },
    // After a reconnect with a gap herald could not fill, a real dashboard refetches here.
    { onSubscribed: (e) => e.recovered === false && console.warn(`org:${org}: reload state`) },
  );
  return (
    <section className="panel">
      <header>
        <h2>Organisation {org}</h2>
        <Indicator org={org} />
      </header>
      <div className="cards">
        <div className="card">
          <b>{String(metrics?.totalMessages ?? '–')}</b>messages
        </div>
        <div className="card">
          <b>{String(metrics?.avgResponseTime ?? '–')}</b>avg response (s)
        </div>
        <div className="card">
          <b>{String(metrics?.satisfactionScore ?? '–')}</b>satisfaction
        </div>
      </div>
      <p className="latest">latest: {latestUpdate ? `${latestUpdate.event} #${latestUpdate.data.seq}` : 'waiting…'}</p>
      <ol className="feed" data-testid={`feed-${org}`}>
        {feed.map((m) => (
          <li key={m.offset} data-org={m.data.org} data-seq={m.data.seq}>
            <span className={`ev ${m.event}`}>{m.event}</span> #{m.data.seq}{' '}
            {m.event === 'message' ? String(m.data.content) : m.event === 'sentiment' ? String(m.data.sentiment) : `${String(m.data.totalMessages)} total`}
          </li>
        ))}
      </ol>
    </section>
  );
}

async function main() {
  const config: { url: string; orgs: string[] } = await (await fetch('/config')).json();
  const orgs = new URLSearchParams(location.search).get('orgs')?.split(',') || config.orgs;
  const clients: [string, Client][] = orgs.map((org) => [
    org,
    createClient({
      url: config.url,
      // The backend mints a short-lived token for this organisation's user; called before every connect.
      getToken: async () => (await (await fetch(`/token?org=${encodeURIComponent(org)}`)).json()).token,
      // The seed's reconnection: 1 s → 5 s, 10 attempts, then Offline.
      backoff: { minMs: 1000, maxMs: 5000, maxAttempts: 10 },
    }),
  ]);
  createRoot(document.getElementById('root')!).render(
    <main>
      {clients.map(([org, client]) => (
        <HeraldProvider key={org} client={client}>
          <Dashboard org={org} />
        </HeraldProvider>
      ))}
    </main>,
  );
}

main();
