import { expect } from 'chai';
import {
  BackendRequest,
  Config,
  FrontendRequest,
  Inflight,
  MemoryTable,
  ProtocolFeature,
  ShmemConfig,
  ShmemMap,
  U64,
  VHOST_USER_MAX_PAYLOAD,
  VringArea,
  VringState,
  allBackendRequestSpecs,
  allFrontendRequestSpecs,
  backendRequestName,
  backendRequestSpec,
  frontendRequestName,
  frontendRequestSpec,
  requireBackendRequestSpec,
  requireFrontendRequestSpec,
} from '../../lib/protocol/index.js';
import { thrown } from './hex.js';

const F = FrontendRequest;
const B = BackendRequest;
const P = ProtocolFeature;

describe('protocol request table', () => {
  it('has an entry and a name for every front-end code 1..45', () => {
    for (let code = 1; code <= 45; code++) {
      const spec = frontendRequestSpec(code);
      expect(spec, `code ${code}`).to.not.equal(undefined);
      expect(spec!.code).to.equal(code);
      expect(spec!.name).to.equal(frontendRequestName(code));
      expect(spec!.name).to.not.match(/^UNKNOWN/);
    }
    expect(allFrontendRequestSpecs()).to.have.length(45);
  });

  it('has an entry and a name for every back-end code 1..10', () => {
    for (let code = 1; code <= 10; code++) {
      const spec = backendRequestSpec(code);
      expect(spec, `code ${code}`).to.not.equal(undefined);
      expect(spec!.code).to.equal(code);
      expect(spec!.name).to.equal(backendRequestName(code));
    }
    expect(allBackendRequestSpecs()).to.have.length(10);
  });

  it('knows no other codes', () => {
    for (const code of [0, 46, 0xffffffff, -1]) expect(frontendRequestSpec(code)).to.equal(undefined);
    for (const code of [0, 11]) expect(backendRequestSpec(code)).to.equal(undefined);
  });

  const unknown: [string, () => unknown][] = [
    ['front-end code 0', () => requireFrontendRequestSpec(0)],
    ['front-end code 46', () => requireFrontendRequestSpec(46)],
    ['back-end code 0', () => requireBackendRequestSpec(0)],
    ['back-end code 11', () => requireBackendRequestSpec(11)],
  ];
  for (const [name, fn] of unknown) {
    it(`rejects ${name} with VHOST_UNKNOWN_REQUEST`, () => {
      const err = thrown(fn);
      expect(err.code).to.equal('VHOST_UNKNOWN_REQUEST');
      expect(err.request).to.match(/^UNKNOWN\(/);
    });
  }

  it('is internally consistent', () => {
    const bits = new Set<number>(Object.values(P));
    for (const spec of [...allFrontendRequestSpecs(), ...allBackendRequestSpecs()]) {
      if (spec.requires !== undefined) expect(bits.has(spec.requires), spec.name).to.equal(true);
      if (spec.reply) {
        const conditional = spec.replyIfFeature !== undefined || spec.replyInPostcopy === true;
        expect(spec.replyAlways || conditional, spec.name).to.equal(true);
      }
      if (spec.replyFds !== 'none') expect(spec.replyAlways, spec.name).to.equal(true);
      for (const codec of [spec.payload, spec.reply]) {
        if (codec) expect(codec.maxSize, spec.name).to.be.at.most(VHOST_USER_MAX_PAYLOAD);
      }
    }
  });

  it('marks exactly these front-end requests as always replied', () => {
    const always = allFrontendRequestSpecs()
      .filter((s) => s.replyAlways)
      .map((s) => s.name)
      .sort();
    expect(always).to.deep.equal(
      [
        'GET_FEATURES',
        'GET_PROTOCOL_FEATURES',
        'GET_QUEUE_NUM',
        'GET_VRING_BASE',
        'IOTLB_MSG',
        'GET_CONFIG',
        'CREATE_CRYPTO_SESSION',
        'POSTCOPY_ADVISE',
        'POSTCOPY_END',
        'GET_INFLIGHT_FD',
        'GET_MAX_MEM_SLOTS',
        'GET_STATUS',
        'GET_SHARED_OBJECT',
        'SET_DEVICE_STATE_FD',
        'CHECK_DEVICE_STATE',
        'GET_SHMEM_CONFIG',
        'GET_VRING_BASE_SKIP_DRAIN',
      ].sort(),
    );
  });

  it('describes the requests the brief singles out', () => {
    const get = (code: number) => requireFrontendRequestSpec(code);

    expect(get(F.GET_FEATURES)).to.include({ reply: U64, replyAlways: true, payload: null });
    expect(get(F.SET_LOG_BASE)).to.include({ replyAlways: false, replyIfFeature: P.LOG_SHMFD, replyBodyIgnored: true });
    expect(get(F.GET_CONFIG)).to.include({ payload: Config, reply: Config, requires: P.CONFIG });
    expect(get(F.SET_BACKEND_REQ_FD)).to.include({ fds: 'one', ackWithReplyAck: true, requires: P.BACKEND_REQ });
    expect(get(F.NET_SET_MTU)).to.include({ ackWithReplyAck: true, requires: P.MTU });
    expect(get(F.CHECK_DEVICE_STATE)).to.include({ reply: U64, replyAlways: true, fds: 'none' });
    expect(get(F.SET_DEVICE_STATE_FD)).to.include({ fds: 'one', reply: U64, replyFds: 'optional-one' });
    expect(get(F.GET_SHARED_OBJECT)).to.include({ reply: U64, replyFds: 'optional-one' });
    expect(get(F.VRING_KICK)).to.include({ payload: VringState, requires: P.INBAND_NOTIFICATIONS });
    expect(get(F.GET_INFLIGHT_FD)).to.include({ payload: Inflight, reply: Inflight, replyFds: 'one' });
    expect(get(F.SET_MEM_TABLE)).to.include({ payload: MemoryTable, fds: 'per-region', replyInPostcopy: true });
    expect(get(F.GET_SHMEM_CONFIG)).to.include({ reply: ShmemConfig, requires: P.SHMEM });
    for (const code of [F.SET_VRING_KICK, F.SET_VRING_CALL, F.SET_VRING_ERR]) {
      expect(get(code)).to.include({ payload: U64, fds: 'optional-one' });
    }
    expect(get(F.REM_MEM_REG).fds).to.equal('none');

    expect(requireBackendRequestSpec(B.VRING_HOST_NOTIFIER_MSG)).to.include({ payload: VringArea, fds: 'optional-one' });
    expect(requireBackendRequestSpec(B.SHMEM_MAP)).to.include({ payload: ShmemMap, fds: 'one' });
    expect(requireBackendRequestSpec(B.SHMEM_UNMAP)).to.include({ payload: ShmemMap, fds: 'none' });
    expect(requireBackendRequestSpec(B.SHARED_OBJECT_LOOKUP)).to.include({ reply: U64, replyFds: 'optional-one' });
  });
});
