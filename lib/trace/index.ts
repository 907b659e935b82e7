/** The tracing proxy and its output formats. */
export { TraceProxy, type TraceProxyOptions, type TraceProxyEvents } from './trace-proxy.js';
export type { TraceRecord, TraceMessage, TraceClose, TraceChannel, TraceSide } from './trace-record.js';
export { messageText, decodedText, showValue } from './describe.js';
