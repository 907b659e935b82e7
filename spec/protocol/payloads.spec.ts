import { expect } from 'chai';
import * as payloads from '../../lib/protocol/payloads.js';
import {
  Config,
  DeviceStateTransfer,
  Inflight,
  IotlbMsg,
  Log,
  MemoryRegion,
  MemoryTable,
  Opaque,
  type PayloadCodec,
  SharedObject,
  ShmemConfig,
  ShmemMap,
  SingleMemoryRegion,
  U64,
  VringAddr,
  VringArea,
  VringState,
  checkVringAddrAlignment,
  decodeDeviceStateFdReply,
  decodePackedVringBase,
  decodeVringFdIndex,
  encodePackedVringBase,
  encodePayload,
  encodeVringFdIndex,
} from '../../lib/protocol/payloads.js';
import { VHOST_USER_MAX_PAYLOAD } from '../../lib/protocol/constants.js';
import { hex, thrown, toHex } from './hex.js';

const U64_MAX = (1n << 64n) - 1n;
const zeros = (bytes: number): string => '00'.repeat(bytes);

const regionA = { guestPhysAddr: 0n, memorySize: 0xa0000n, userAddr: 0x7f0000000000n, mmapOffset: 0n };
const regionB = { guestPhysAddr: 0x100000n, memorySize: 0x7ff00000n, userAddr: 0x7f0000100000n, mmapOffset: 0x100000n };
const regionAHex = '0000000000000000 00000a0000000000 0000000000 7f0000 0000000000000000';
const regionBHex = '0000100000000000 0000f07f00000000 0000100000 7f0000 0000100000000000';
const uuid = Uint8Array.from({ length: 16 }, (_, i) => i);

// (name, codec, value, wire bytes): encode(value) must equal the bytes, decode(bytes) the value.
const roundTrips: [string, PayloadCodec<unknown>, unknown, string][] = [
  ['u64', U64, 0x0102030405060708n, '0807060504030201'],
  ['u64 max', U64, U64_MAX, 'ffffffffffffffff'],
  ['vring state', VringState, { index: 1, num: 256 }, '01000000 00010000'],
  [
    'vring address with VHOST_VRING_F_LOG',
    VringAddr,
    { index: 2, flags: 1, descUserAddr: 0x1000n, usedUserAddr: 0x2000n, availUserAddr: 0x3000n, logGuestAddr: 0x4000n },
    '02000000 01000000 0010000000000000 0020000000000000 0030000000000000 0040000000000000',
  ],
  ['memory region', MemoryRegion, regionB, regionBHex],
  [
    'region ending at 2^64 - 1',
    MemoryRegion,
    { guestPhysAddr: 0xfffffffffffff000n - 1n, memorySize: 0x1000n, userAddr: 0n, mmapOffset: 0n },
    'ffefffffffffffff 0010000000000000 0000000000000000 0000000000000000',
  ],
  ['memory table, 1 region', MemoryTable, { regions: [regionA] }, `01000000 00000000 ${regionAHex}`],
  ['memory table, 2 regions', MemoryTable, { regions: [regionA, regionB] }, `02000000 00000000 ${regionAHex} ${regionBHex}`],
  [
    'memory table, 8 adjacent regions',
    MemoryTable,
    {
      regions: Array.from({ length: 8 }, (_, i) => ({
        guestPhysAddr: BigInt(i) << 12n,
        memorySize: 0x1000n,
        userAddr: 0x10000n + (BigInt(i) << 12n),
        mmapOffset: 0n,
      })),
    },
    '08000000 00000000' +
      Array.from({ length: 8 }, (_, i) => `00${i}0000000000000 0010000000000000 00${i}0010000000000 0000000000000000`).join(''),
  ],
  ['single memory region', SingleMemoryRegion, regionB, `0000000000000000 ${regionBHex}`],
  ['log', Log, { mmapSize: 0x2000n, mmapOffset: 0x10n }, '0020000000000000 1000000000000000'],
  [
    'IOTLB update (32 bytes with tail padding)',
    IotlbMsg,
    { iova: 0x1000n, size: 0x1000n, userAddr: 0x7f0000001000n, perm: 3, type: 2 },
    '0010000000000000 0010000000000000 0010000000 7f0000 03 02 000000000000',
  ],
  [
    'IOTLB miss',
    IotlbMsg,
    { iova: 0xfffffffffffff000n, size: 0n, userAddr: 0n, perm: 1, type: 1 },
    '00f0ffffffffffff 0000000000000000 0000000000000000 01 01 000000000000',
  ],
  [
    'config',
    Config,
    { offset: 0, size: 4, flags: 0, payload: hex('deadbeef') },
    '00000000 04000000 00000000 deadbeef',
  ],
  [
    'config, live migration, last byte',
    Config,
    { offset: 255, size: 1, flags: 1, payload: hex('7f') },
    'ff000000 01000000 01000000 7f',
  ],
  ['config, empty', Config, { offset: 0, size: 0, flags: 0, payload: new Uint8Array(0) }, zeros(12)],
  [
    'vring area',
    VringArea,
    { index: 3, nofd: false, size: 0x1000n, offset: 0x2000n },
    '0300000000000000 0010000000000000 0020000000000000',
  ],
  ['vring area without fd', VringArea, { index: 255, nofd: true, size: 0n, offset: 0n }, `ff01000000000000 ${zeros(16)}`],
  [
    'inflight (24 bytes with tail padding)',
    Inflight,
    { mmapSize: 0x3000n, mmapOffset: 0n, numQueues: 2, queueSize: 128 },
    '0030000000000000 0000000000000000 0200 8000 00000000',
  ],
  ['shared object', SharedObject, { uuid }, '000102030405060708090a0b0c0d0e0f'],
  ['device state transfer', DeviceStateTransfer, { direction: 1, phase: 0 }, '01000000 00000000'],
  [
    'shmem map',
    ShmemMap,
    { shmid: 1, fdOffset: 0x1000n, shmOffset: 0x2000n, len: 0x3000n, flags: 1n },
    '01 00000000000000 0010000000000000 0020000000000000 0030000000000000 0100000000000000',
  ],
  [
    'shmem config',
    ShmemConfig,
    { memorySizes: [0x100000n, 0n, 0x200000n] },
    '03000000 00000000 0000100000000000 0000000000000000 0000200000000000' + zeros(253 * 8),
  ],
  ['shmem config, no regions', ShmemConfig, { memorySizes: [] }, zeros(8 + 256 * 8)],
  ['opaque', Opaque, hex('010203'), '010203'],
];

// (name, codec, wire bytes, expected error code)
const malformed: [string, PayloadCodec<unknown>, Uint8Array, string][] = [
  ['u64 truncated', U64, hex('01020304050607'), 'VHOST_BAD_PAYLOAD_SIZE'],
  ['u64 oversized', U64, new Uint8Array(9), 'VHOST_BAD_PAYLOAD_SIZE'],
  ['u64 empty', U64, new Uint8Array(0), 'VHOST_BAD_PAYLOAD_SIZE'],
  ['vring state truncated', VringState, new Uint8Array(4), 'VHOST_BAD_PAYLOAD_SIZE'],
  ['vring address truncated', VringAddr, new Uint8Array(39), 'VHOST_BAD_PAYLOAD_SIZE'],
  ['vring address with size column (48 bytes)', VringAddr, new Uint8Array(48), 'VHOST_BAD_PAYLOAD_SIZE'],
  ['vring address flag bit 1', VringAddr, hex(`00000000 02000000 ${zeros(32)}`), 'VHOST_INVALID_PAYLOAD'],
  ['vring address flag bit 31', VringAddr, hex(`00000000 01000080 ${zeros(32)}`), 'VHOST_INVALID_PAYLOAD'],
  ['memory table shorter than its count', MemoryTable, hex('0100'), 'VHOST_BAD_PAYLOAD_SIZE'],
  ['memory table, nregions 0', MemoryTable, MemoryTable.encode({ regions: [] }), 'VHOST_INVALID_PAYLOAD'],
  [
    'memory table, nregions 9',
    MemoryTable,
    MemoryTable.encode({
      regions: Array.from({ length: 9 }, (_, i) => ({ ...regionA, guestPhysAddr: BigInt(i) << 20n, userAddr: BigInt(i) << 20n })),
    }),
    'VHOST_INVALID_PAYLOAD',
  ],
  ['memory table, nregions 2 with 1 region', MemoryTable, hex(`02000000 00000000 ${regionAHex}`), 'VHOST_BAD_PAYLOAD_SIZE'],
  [
    'memory table, nregions 1 with 2 regions',
    MemoryTable,
    hex(`01000000 00000000 ${regionAHex} ${regionBHex}`),
    'VHOST_BAD_PAYLOAD_SIZE',
  ],
  ['memory table, nregions 0xffffffff', MemoryTable, hex('ffffffff 00000000'), 'VHOST_INVALID_PAYLOAD'],
  ['memory table, zero-size region', MemoryTable, MemoryTable.encode({ regions: [{ ...regionA, memorySize: 0n }] }), 'VHOST_INVALID_PAYLOAD'],
  [
    'memory table, guest address + size overflows',
    MemoryTable,
    MemoryTable.encode({ regions: [{ ...regionA, guestPhysAddr: 0xfffffffffffff000n, memorySize: 0x1000n }] }),
    'VHOST_INVALID_PAYLOAD',
  ],
  [
    'memory table, user address + size overflows',
    MemoryTable,
    MemoryTable.encode({ regions: [{ ...regionA, userAddr: U64_MAX }] }),
    'VHOST_INVALID_PAYLOAD',
  ],
  [
    'memory table, mmap offset + size overflows',
    MemoryTable,
    MemoryTable.encode({ regions: [{ ...regionA, mmapOffset: 1n << 63n, memorySize: 1n << 63n }] }),
    'VHOST_INVALID_PAYLOAD',
  ],
  [
    'memory table, overlapping guest ranges',
    MemoryTable,
    MemoryTable.encode({ regions: [regionB, { ...regionA, guestPhysAddr: 0x7ff00000n }] }),
    'VHOST_INVALID_PAYLOAD',
  ],
  [
    'memory table, identical guest ranges',
    MemoryTable,
    MemoryTable.encode({ regions: [regionA, { ...regionA, userAddr: 0x1000000n }] }),
    'VHOST_INVALID_PAYLOAD',
  ],
  [
    'memory table, overlapping user ranges',
    MemoryTable,
    MemoryTable.encode({ regions: [regionA, { ...regionB, userAddr: 0x7f0000090000n }] }),
    'VHOST_INVALID_PAYLOAD',
  ],
  ['memory region, zero size', MemoryRegion, MemoryRegion.encode({ ...regionA, memorySize: 0n }), 'VHOST_INVALID_PAYLOAD'],
  ['single memory region without padding', SingleMemoryRegion, hex(regionAHex), 'VHOST_BAD_PAYLOAD_SIZE'],
  [
    'single memory region, zero size',
    SingleMemoryRegion,
    SingleMemoryRegion.encode({ ...regionA, memorySize: 0n }),
    'VHOST_INVALID_PAYLOAD',
  ],
  [
    'single memory region, guest overflow',
    SingleMemoryRegion,
    SingleMemoryRegion.encode({ ...regionA, guestPhysAddr: U64_MAX }),
    'VHOST_INVALID_PAYLOAD',
  ],
  ['log truncated', Log, new Uint8Array(8), 'VHOST_BAD_PAYLOAD_SIZE'],
  ['log size 0', Log, Log.encode({ mmapSize: 0n, mmapOffset: 0n }), 'VHOST_INVALID_PAYLOAD'],
  ['log offset + size overflows (CVE-2020-10722)', Log, Log.encode({ mmapSize: 0x1000n, mmapOffset: U64_MAX }), 'VHOST_INVALID_PAYLOAD'],
  ['IOTLB without padding (26 bytes)', IotlbMsg, new Uint8Array(26), 'VHOST_BAD_PAYLOAD_SIZE'],
  ['IOTLB permission 4', IotlbMsg, IotlbMsg.encode({ iova: 0n, size: 0n, userAddr: 0n, perm: 4, type: 1 }), 'VHOST_INVALID_PAYLOAD'],
  ['IOTLB type 0', IotlbMsg, IotlbMsg.encode({ iova: 0n, size: 0n, userAddr: 0n, perm: 1, type: 0 }), 'VHOST_INVALID_PAYLOAD'],
  ['IOTLB type 5', IotlbMsg, IotlbMsg.encode({ iova: 0n, size: 0n, userAddr: 0n, perm: 1, type: 5 }), 'VHOST_INVALID_PAYLOAD'],
  [
    'IOTLB update, iova + size overflows',
    IotlbMsg,
    IotlbMsg.encode({ iova: U64_MAX, size: 2n, userAddr: 0n, perm: 3, type: 2 }),
    'VHOST_INVALID_PAYLOAD',
  ],
  [
    'IOTLB update, user address + size overflows',
    IotlbMsg,
    IotlbMsg.encode({ iova: 0n, size: 2n, userAddr: U64_MAX, perm: 3, type: 2 }),
    'VHOST_INVALID_PAYLOAD',
  ],
  ['config shorter than its header', Config, new Uint8Array(11), 'VHOST_BAD_PAYLOAD_SIZE'],
  ['config size 257', Config, hex(`00000000 01010000 00000000 ${zeros(257)}`), 'VHOST_INVALID_PAYLOAD'],
  ['config offset + size wraps u32', Config, hex('ffffffff 01000000 00000000 00'), 'VHOST_INVALID_PAYLOAD'],
  ['config offset + size past 256', Config, hex(`fa000000 08000000 00000000 ${zeros(8)}`), 'VHOST_INVALID_PAYLOAD'],
  ['config flags 2', Config, hex('00000000 01000000 02000000 00'), 'VHOST_INVALID_PAYLOAD'],
  ['config size 4 with 2 bytes', Config, hex('00000000 04000000 00000000 0000'), 'VHOST_BAD_PAYLOAD_SIZE'],
  ['config size 1 with 2 bytes', Config, hex('00000000 01000000 00000000 0000'), 'VHOST_BAD_PAYLOAD_SIZE'],
  ['vring area, bit 9 set', VringArea, hex(`0002000000000000 ${zeros(16)}`), 'VHOST_INVALID_PAYLOAD'],
  ['vring area, offset + size overflows', VringArea, hex(`0000000000000000 0200000000000000 ffffffffffffffff`), 'VHOST_INVALID_PAYLOAD'],
  ['vring area truncated', VringArea, new Uint8Array(16), 'VHOST_BAD_PAYLOAD_SIZE'],
  ['inflight without padding (20 bytes)', Inflight, new Uint8Array(20), 'VHOST_BAD_PAYLOAD_SIZE'],
  [
    'inflight offset + size overflows',
    Inflight,
    Inflight.encode({ mmapSize: 2n, mmapOffset: U64_MAX, numQueues: 1, queueSize: 1 }),
    'VHOST_INVALID_PAYLOAD',
  ],
  ['shared object truncated', SharedObject, new Uint8Array(15), 'VHOST_BAD_PAYLOAD_SIZE'],
  ['device state direction 2', DeviceStateTransfer, hex('02000000 00000000'), 'VHOST_INVALID_PAYLOAD'],
  ['device state phase 1', DeviceStateTransfer, hex('00000000 01000000'), 'VHOST_INVALID_PAYLOAD'],
  ['shmem map flag bit 1', ShmemMap, ShmemMap.encode({ shmid: 0, fdOffset: 0n, shmOffset: 0n, len: 1n, flags: 2n }), 'VHOST_INVALID_PAYLOAD'],
  ['shmem map len 0', ShmemMap, ShmemMap.encode({ shmid: 0, fdOffset: 0n, shmOffset: 0n, len: 0n, flags: 0n }), 'VHOST_INVALID_PAYLOAD'],
  [
    'shmem map fd_offset + len overflows',
    ShmemMap,
    ShmemMap.encode({ shmid: 0, fdOffset: U64_MAX, shmOffset: 0n, len: 1n, flags: 0n }),
    'VHOST_INVALID_PAYLOAD',
  ],
  [
    'shmem map shm_offset + len overflows',
    ShmemMap,
    ShmemMap.encode({ shmid: 0, fdOffset: 0n, shmOffset: U64_MAX, len: 1n, flags: 0n }),
    'VHOST_INVALID_PAYLOAD',
  ],
  ['shmem config truncated', ShmemConfig, new Uint8Array(2055), 'VHOST_BAD_PAYLOAD_SIZE'],
  ['shmem config, 257 regions', ShmemConfig, hex(`01010000 00000000 ${zeros(2048)}`), 'VHOST_INVALID_PAYLOAD'],
  ['opaque above the maximum', Opaque, new Uint8Array(VHOST_USER_MAX_PAYLOAD + 1), 'VHOST_BAD_PAYLOAD_SIZE'],
];

describe('protocol payloads', () => {
  describe('round trips', () => {
    for (const [name, codec, value, bytes] of roundTrips) {
      it(`${name}: encode and decode`, () => {
        expect(toHex(codec.encode(value))).to.equal(toHex(hex(bytes)));
        expect(codec.decode(hex(bytes))).to.deep.equal(value);
      });
    }

    it('covers every codec, and every encoding fits its codec limits', () => {
      const codecs = (Object.values(payloads) as unknown[]).filter(
        (v): v is PayloadCodec<unknown> => typeof v === 'object' && v !== null && 'decode' in v && 'minSize' in v,
      );
      const tested = new Set(roundTrips.map(([, codec]) => codec));
      for (const codec of codecs) {
        expect(tested.has(codec), codec.name).to.equal(true);
        expect(codec.maxSize).to.be.at.most(VHOST_USER_MAX_PAYLOAD);
      }
      for (const [name, codec, , bytes] of roundTrips) {
        const n = hex(bytes).length;
        expect(n, name).to.be.within(codec.minSize, codec.maxSize);
      }
    });

    it('decodes from a view into a larger buffer', () => {
      const buf = hex('ffffffff 01000000 00010000 ffffffff');
      expect(VringState.decode(buf.subarray(4, 12))).to.deep.equal({ index: 1, num: 256 });
    });

    it('ignores padding bytes on decode', () => {
      expect(MemoryTable.decode(hex(`01000000 ffffffff ${regionAHex}`))).to.deep.equal({ regions: [regionA] });
      expect(SingleMemoryRegion.decode(hex(`ffffffffffffffff ${regionAHex}`))).to.deep.equal(regionA);
      expect(Inflight.decode(hex(`${zeros(16)} 0100 0100 ffffffff`)).numQueues).to.equal(1);
    });
  });

  describe('malformed payloads', () => {
    for (const [name, codec, bytes, code] of malformed) {
      it(`${name} -> ${code}`, () => {
        const err = thrown(() => codec.decode(bytes, 'TEST_REQUEST'));
        expect(err.code).to.equal(code);
        expect(err.request).to.equal('TEST_REQUEST');
        expect(err.rule).to.match(/vhost-user\.rst, '/);
      });
    }

    it('cites the section a rule comes from', () => {
      const overlap = thrown(() =>
        MemoryTable.decode(MemoryTable.encode({ regions: [regionA, { ...regionA, userAddr: 1n << 40n }] }), 'SET_MEM_TABLE'),
      );
      expect(overlap.rule).to.match(/'Memory access'/);
      expect(overlap.request).to.equal('SET_MEM_TABLE');
      const log = thrown(() => Log.decode(Log.encode({ mmapSize: 2n, mmapOffset: U64_MAX })));
      expect(log.rule).to.match(/'Log description'.*CVE-2020-10722/);
    });
  });

  describe('encoding', () => {
    const notRepresentable: [string, () => unknown][] = [
      ['negative u64', () => U64.encode(-1n)],
      ['u64 of 2^64', () => U64.encode(1n << 64n)],
      ['u64 given a number', () => U64.encode(1 as unknown as bigint)],
      ['u32 of 2^32', () => VringState.encode({ index: 2 ** 32, num: 0 })],
      ['fractional u32', () => VringState.encode({ index: 0.5, num: 0 })],
      ['u16 of 65536', () => Inflight.encode({ mmapSize: 0n, mmapOffset: 0n, numQueues: 65536, queueSize: 0 })],
      ['u8 of 256', () => IotlbMsg.encode({ iova: 0n, size: 0n, userAddr: 0n, perm: 256, type: 1 })],
      ['15-byte UUID', () => SharedObject.encode({ uuid: new Uint8Array(15) })],
      ['vring area index 256', () => VringArea.encode({ index: 256, nofd: false, size: 0n, offset: 0n })],
      ['257 shmem regions', () => ShmemConfig.encode({ memorySizes: new Array<bigint>(257).fill(0n) })],
      ['memory table beyond 4 KiB', () => MemoryTable.encode({ regions: new Array<typeof regionA>(128).fill(regionA) })],
      ['config beyond 4 KiB', () => Config.encode({ offset: 0, size: 0, flags: 0, payload: new Uint8Array(4085) })],
    ];
    for (const [name, fn] of notRepresentable) {
      it(`rejects ${name} with VHOST_INVALID_ARGUMENT`, () => {
        expect(thrown(fn).code).to.equal('VHOST_INVALID_ARGUMENT');
      });
    }

    it('lets a config size disagree with its bytes (for conformance tests)', () => {
      expect(toHex(Config.encode({ offset: 0, size: 8, flags: 0, payload: hex('aa') }))).to.equal(
        toHex(hex('00000000 08000000 00000000 aa')),
      );
    });

    it('encodePayload applies the decode rules', () => {
      expect(thrown(() => encodePayload(MemoryTable, { regions: [] }, 'SET_MEM_TABLE')).code).to.equal(
        'VHOST_INVALID_PAYLOAD',
      );
      expect(toHex(encodePayload(Log, { mmapSize: 1n, mmapOffset: 0n }))).to.equal(toHex(hex(`01${zeros(15)}`)));
    });
  });

  describe('vring fd index (KICK/CALL/ERR u64)', () => {
    it('packs index in bits 0-7 and NOFD in bit 8', () => {
      expect(encodeVringFdIndex(5)).to.equal(5n);
      expect(encodeVringFdIndex(5, true)).to.equal(0x105n);
      expect(encodeVringFdIndex(255, true)).to.equal(0x1ffn);
      expect(decodeVringFdIndex(0x105n)).to.deep.equal({ index: 5, nofd: true });
      expect(decodeVringFdIndex(0xffn)).to.deep.equal({ index: 255, nofd: false });
    });

    it('rejects other bits and out-of-range indexes', () => {
      expect(thrown(() => decodeVringFdIndex(0x200n, 'SET_VRING_KICK')).code).to.equal('VHOST_INVALID_PAYLOAD');
      expect(thrown(() => decodeVringFdIndex(1n << 32n)).code).to.equal('VHOST_INVALID_PAYLOAD');
      expect(thrown(() => decodeVringFdIndex(-1n)).code).to.equal('VHOST_INVALID_ARGUMENT');
      expect(thrown(() => encodeVringFdIndex(256)).code).to.equal('VHOST_INVALID_ARGUMENT');
      expect(thrown(() => encodeVringFdIndex(-1)).code).to.equal('VHOST_INVALID_ARGUMENT');
    });
  });

  describe('packed vring base', () => {
    const base = { lastAvailIdx: 2, availWrapCounter: true, lastUsedIdx: 1, usedWrapCounter: true };

    it('uses bits 0-14, 15, 16-30 and 31', () => {
      expect(encodePackedVringBase(base)).to.equal(0x80018002);
      expect(decodePackedVringBase(0x80018002)).to.deep.equal(base);
      const zero = { lastAvailIdx: 0, availWrapCounter: false, lastUsedIdx: 0, usedWrapCounter: false };
      expect(decodePackedVringBase(0)).to.deep.equal(zero);
      const top = { lastAvailIdx: 0x7fff, availWrapCounter: false, lastUsedIdx: 0x7fff, usedWrapCounter: false };
      expect(encodePackedVringBase(top)).to.equal(0x7fff7fff);
    });

    it('rejects indexes beyond 15 bits and non-u32 values', () => {
      expect(thrown(() => encodePackedVringBase({ ...base, lastAvailIdx: 0x8000 })).code).to.equal('VHOST_INVALID_ARGUMENT');
      expect(thrown(() => encodePackedVringBase({ ...base, lastUsedIdx: -1 })).code).to.equal('VHOST_INVALID_ARGUMENT');
      expect(thrown(() => decodePackedVringBase(2 ** 32)).code).to.equal('VHOST_INVALID_ARGUMENT');
    });
  });

  describe('vring address alignment', () => {
    const addr = { index: 0, flags: 0, descUserAddr: 0x1000n, usedUserAddr: 0x2004n, availUserAddr: 0x3002n, logGuestAddr: 1n };

    it('accepts 16/2/4 alignment for split rings', () => {
      expect(() => checkVringAddrAlignment(addr)).not.to.throw();
    });

    const misaligned: [string, typeof addr, boolean][] = [
      ['descriptor table at 8', { ...addr, descUserAddr: 0x1008n }, false],
      ['available ring at odd address', { ...addr, availUserAddr: 0x3001n }, false],
      ['used ring at 2', { ...addr, usedUserAddr: 0x2002n }, false],
      ['packed driver area at 2', addr, true],
    ];
    for (const [name, a, packed] of misaligned) {
      it(`rejects ${name}`, () => {
        const err = thrown(() => checkVringAddrAlignment(a, packed, 'SET_VRING_ADDR'));
        expect(err.code).to.equal('VHOST_INVALID_PAYLOAD');
        expect(err.request).to.equal('SET_VRING_ADDR');
      });
    }
  });

  describe('SET_DEVICE_STATE_FD reply', () => {
    it('reads status and NOFD', () => {
      expect(decodeDeviceStateFdReply(0n)).to.deep.equal({ status: 0, nofd: false });
      expect(decodeDeviceStateFdReply(0x100n)).to.deep.equal({ status: 0, nofd: true });
      expect(decodeDeviceStateFdReply(0x105n)).to.deep.equal({ status: 5, nofd: true });
    });

    it('rejects an error with an fd, and undefined bits', () => {
      expect(thrown(() => decodeDeviceStateFdReply(1n)).code).to.equal('VHOST_INVALID_PAYLOAD');
      expect(thrown(() => decodeDeviceStateFdReply(0x200n)).code).to.equal('VHOST_INVALID_PAYLOAD');
    });
  });
});
