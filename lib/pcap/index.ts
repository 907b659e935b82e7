export {
  PcapWriter,
  type PcapWriterOptions,
  PCAP_MAGIC_MICROS,
  PCAP_MAGIC_NANOS,
  PCAP_MAX_SNAPLEN,
  LINKTYPE_ETHERNET,
} from './pcap-writer.js';
export { readPcap, readPcapFrames, parsePcap, type PcapReadOptions, type PcapRecord, type PcapFileInfo } from './pcap-reader.js';
