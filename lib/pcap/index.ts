export {
  PcapWriter,
  type PcapWriterOptions,
  PCAP_MAGIC_MICROS,
  PCAP_MAGIC_NANOS,
  PCAP_MAX_SNAPLEN,
  LINKTYPE_ETHERNET,
} from './pcap-writer.js';
export { readPcap, readPcapFrames, parsePcap, type PcapReadOptions, type PcapRecord, type PcapFileInfo } from './pcap-reader.js';
export {
  PcapngWriter,
  type PcapngWriterOptions,
  type PcapngInterface,
  type PcapngPacketOptions,
  PCAPNG_SHB,
  PCAPNG_IDB,
  PCAPNG_EPB,
  PCAPNG_BYTE_ORDER_MAGIC,
  PCAPNG_MAX_PACKET,
  LINKTYPE_USER0,
  EPB_FLAG_INBOUND,
  EPB_FLAG_OUTBOUND,
} from './pcapng-writer.js';
