/** The tracing proxy and its output formats. */
export { TraceProxy, type TraceProxyOptions, type TraceProxyEvents } from './trace-proxy.js';
export type { TraceRecord, TraceMessage, TraceClose, TraceCloseError, TraceChannel, TraceSide } from './trace-record.js';
export { messageText, decodedText, showValue } from './describe.js';
export { formatRecord, formatTextLine, recordJson, jsonValue, type TraceFormat } from './trace-format.js';
export {
  TracePcapngWriter,
  tracePacket,
  traceDirection,
  TRACE_PREFIX_SIZE,
  TRACE_PREFIX_VERSION,
  TRACE_BIT_BACKEND_CHANNEL,
  TRACE_BIT_FROM_BACKEND,
  TRACE_BIT_CLOSE,
} from './trace-pcapng.js';
