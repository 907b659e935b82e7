/**
 * The dissector's name tables are generated from lib/protocol/constants.ts
 * (scripts/wireshark-tables.ts); this fails when someone changes one without
 * regenerating (`npm run wireshark:tables`).
 */
import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { BackendRequest, FrontendRequest, ProtocolFeature, VirtioBlkFeature, VirtioNetFeature } from '../../lib/protocol/constants.js';
import { LUA_PATH, luaTables, withTables } from '../../scripts/wireshark-tables.js';

/** `local NAME = { [n] = "X", ... }` from the Lua source, read independently of the generator. */
function luaTable(source: string, name: string): Record<string, number> {
  const body = new RegExp(`local ${name} = \\{\\n([^}]*)\\n\\}`).exec(source)?.[1];
  expect(body, `table ${name} in ${LUA_PATH}`).to.be.a('string');
  return Object.fromEntries([...body!.matchAll(/\[(\d+)\] = "([A-Z0-9_]+)"/g)].map((m) => [m[2]!, Number(m[1])]));
}

describe('wireshark/vhost-user.lua tables', () => {
  const source = readFileSync(LUA_PATH, 'utf8');

  it('are the generated block, up to date with lib/protocol/constants.ts', () => {
    expect(source).to.include(luaTables());
    expect(withTables(source)).to.equal(source);
  });

  it('name every front-end and back-end request, protocol feature and device feature as the TS constants do', () => {
    expect(luaTable(source, 'frontend_requests')).to.deep.equal(FrontendRequest);
    expect(luaTable(source, 'backend_requests')).to.deep.equal(BackendRequest);
    expect(luaTable(source, 'protocol_features')).to.deep.equal(ProtocolFeature);
    expect(luaTable(source, 'net_features')).to.deep.equal(VirtioNetFeature);
    expect(luaTable(source, 'blk_features')).to.deep.equal(VirtioBlkFeature);
  });
});
