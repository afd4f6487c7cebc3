export * from './client.js';
export * from './transport.js';
export { sseTransport, sseTag } from './sse.js';
