/**
 * PcapngWriter on its own, on an in-memory file system (memfs): block lengths and
 * padding for every payload and option length mod 4, timestamps, options present
 * only when given, the errors of bad arguments and of a closed writer. The
 * structure is checked by an independent parser (spec/trace/pcapng-parse.ts).
 */
import { expect } from 'chai';
import { memfs } from 'memfs';
import { EPB_FLAG_INBOUND, LINKTYPE_USER0, PcapngWriter, PCAPNG_EPB, PCAPNG_IDB, PCAPNG_SHB } from '../../lib/pcap/pcapng-writer.js';
import { parsePcapng } from '../trace/pcapng-parse.js';

describe('PcapngWriter', () => {
  it('writes a section header, the interfaces and one EPB per packet, padded to 4 bytes with the lengths in both fields', async () => {
    const { fs } = memfs({ '/c': null });
    const w = await PcapngWriter.open('/c/a.pcapng', {
      application: 'spec',
      interfaces: [{ linkType: LINKTYPE_USER0, name: 'one' }, { linkType: 1, snaplen: 1500, description: 'ethernet' }],
      fs,
    });
    const packets = Array.from({ length: 9 }, (_, n) => Uint8Array.from({ length: n }, (_, i) => i + 1));
    packets.forEach((p, n) =>
      w.write(p, {
        interfaceId: n % 2,
        timestampNs: 1_700_000_000_000_000_000n + BigInt(n),
        ...(n % 3 === 0 ? {} : { comment: 'é'.repeat(n) }), // 2-byte UTF-8: lengths 2, 4, ... mod 4
        ...(n % 2 ? { flags: EPB_FLAG_INBOUND } : {}),
      }),
    );
    expect(w.packets).to.equal(9);
    await w.close();
    await w.close(); // idempotent
    const { blocks, idbs, epbs } = parsePcapng(fs.readFileSync('/c/a.pcapng') as Buffer);
    expect(blocks.map((b) => b.type)).to.deep.equal([PCAPNG_SHB, PCAPNG_IDB, PCAPNG_IDB, ...packets.map(() => PCAPNG_EPB)]);
    expect(new TextDecoder().decode(blocks[0]!.options.get(4)![0])).to.equal('spec');
    expect(idbs.map((i) => [i.linkType, i.snaplen])).to.deep.equal([[LINKTYPE_USER0, 262144], [1, 1500]]);
    expect(new TextDecoder().decode(idbs[0]!.options.get(2)![0])).to.equal('one');
    expect(new TextDecoder().decode(idbs[1]!.options.get(3)![0])).to.equal('ethernet');
    packets.forEach((p, n) => {
      const e = epbs[n]!;
      expect(e.interfaceId).to.equal(n % 2);
      expect([...e.data]).to.deep.equal([...p]);
      expect(e.origLen).to.equal(n);
      expect(e.timestampNs).to.equal(1_700_000_000_000_000_000n + BigInt(n));
      expect(e.comment).to.equal(n % 3 === 0 ? undefined : 'é'.repeat(n));
      expect(e.flags).to.equal(n % 2 ? EPB_FLAG_INBOUND : undefined);
    });
    // A packet without options has no opt_endofopt either: 32 bytes + the padded data.
    expect(blocks[3]!.length).to.equal(32);
    expect(blocks[3]!.options.size).to.equal(0);
  });

  it('refuses no interface, a link type beyond u16, an unknown interface id, and writes after close', async () => {
    const { fs } = memfs({ '/c': null });
    for (const interfaces of [[], [{ linkType: 70000 }]]) {
      const err = await PcapngWriter.open('/c/x.pcapng', { interfaces, fs }).then(
        () => null,
        (e: unknown) => e as { code: string },
      );
      expect(err?.code).to.equal('VHOST_INVALID_ARGUMENT');
    }
    const w = await PcapngWriter.open('/c/b.pcapng', { interfaces: [{ linkType: LINKTYPE_USER0 }], fs });
    expect(() => w.write(new Uint8Array(4), { interfaceId: 1 })).to.throw().with.property('code', 'VHOST_INVALID_ARGUMENT');
    await w.close();
    expect(w.closed).to.equal(true);
    expect(() => w.write(new Uint8Array(4))).to.throw().with.property('code', 'VHOST_INVALID_STATE');
    const err = await PcapngWriter.open('/nowhere/c.pcapng', { interfaces: [{ linkType: 1 }], fs }).then(
      () => null,
      (e: unknown) => e as { code: string },
    );
    expect(err?.code).to.equal('VHOST_SYSCALL');
  });
});
