// The tiny backend of the analytics example: what the seed's emitMessageEvent,
// emitSentimentEvent and emitMetricsEvent did over Socket.IO rooms, done with
// herald's server API. Each organisation's events go to its own channel,
// org:{id}; herald lets only tokens with that org claim subscribe to it.
//
//   node backend.mjs            (HERALD_URL, HERALD_API_KEY, ORGS=1,2, INTERVAL_MS=1000)

/** Publishes one event to org:{org}; resolves with herald's answer ({ok, offset, epoch, delivered}). */
export async function emit({ url, apiKey }, org, event, data) {
  const r = await fetch(`${url}/api/publish`, {
    method: 'POST',
    headers: { 'X-API-Key': apiKey, 'Content-Type': 'application/json' },
    // The key makes a retried call publish once.
    body: JSON.stringify({ channel: `org:${org}`, event, data, idempotencyKey: `${org}-${data.seq}` }),
  });
  const answer = await r.json();
  if (!answer.ok) throw new Error(`publish to org:${org}: ${answer.error} ${answer.message || ''}`);
  return answer;
}

/** The seed's three event kinds, in turn, numbered per organisation by seq. */
export function makeEvent(org, seq) {
  const timestamp = new Date().toISOString();
  switch (seq % 3) {
    case 1:
      return ['message', { seq, org, conversationId: `conv-${org}-${seq % 5}`, messageId: `msg-${org}-${seq}`, role: seq % 2 ? 'user' : 'assistant', content: `Message ${seq} for org ${org}`, responseTime: +(0.5 + Math.random()).toFixed(2), timestamp }];
    case 2: {
      const score = +(Math.random() * 2 - 1).toFixed(2);
      return ['sentiment', { seq, org, conversationId: `conv-${org}-${seq % 5}`, messageId: `msg-${org}-${seq - 1}`, score, confidence: 0.9, sentiment: score > 0.2 ? 'positive' : score < -0.2 ? 'negative' : 'neutral', timestamp }];
    }
    default:
      return ['metrics', { seq, org, totalMessages: seq, avgResponseTime: +(1 + Math.random()).toFixed(2), satisfactionScore: +(3.5 + Math.random() * 1.5).toFixed(1), resolutionRate: +(0.7 + Math.random() * 0.3).toFixed(2), timestamp }];
  }
}

/** Emits one event per organisation every intervalMs until stop() is called. */
export function startBackend({ url, apiKey, orgs = ['1', '2'], intervalMs = 1000, log = () => {} }) {
  const seq = Object.fromEntries(orgs.map((o) => [o, 0]));
  const tick = async () => {
    for (const org of orgs) {
      const [event, data] = makeEvent(org, ++seq[org]);
      try {
        const a = await emit({ url, apiKey }, org, event, data);
        log(`org:${org} ${event} #${data.seq} -> offset ${a.offset}, ${a.delivered} delivered`);
      } catch (e) {
        log(String(e));
      }
    }
  };
  const timer = setInterval(tick, intervalMs);
  return { stop: () => clearInterval(timer) };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  startBackend({
    url: process.env.HERALD_URL || 'http://127.0.0.1:8080',
    apiKey: process.env.HERALD_API_KEY || 'local-dev-key-change-me',
    orgs: (process.env.ORGS || '1,2').split(','),
    intervalMs: +(process.env.INTERVAL_MS || 1000),
    log: console.log,
  });
}
