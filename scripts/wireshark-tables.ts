/**
 * Generates the number-to-name tables of wireshark/vhost-user.lua from
 * lib/protocol/constants.ts, so the dissector and the library cannot drift:
 * `node dist/scripts/wireshark-tables.js` rewrites the block between the
 * GENERATED markers; spec/trace/wireshark-tables.spec.ts fails when the file is
 * out of date (`npm run wireshark:tables` fixes it).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { BackendRequest, DeviceStatus, FrontendRequest, ProtocolFeature, VirtioBlkFeature, VirtioFeature, VirtioNetFeature } from '../lib/protocol/constants.js';

/** The dissector, relative to the package root. */
export const LUA_PATH = fileURLToPath(new URL('../../wireshark/vhost-user.lua', import.meta.url));
export const BEGIN = '-- BEGIN GENERATED TABLES (scripts/wireshark-tables.ts; do not edit)';
export const END = '-- END GENERATED TABLES';

function luaTable(name: string, table: Record<string, number>): string {
  const rows = Object.entries(table)
    .sort(([, a], [, b]) => a - b)
    .map(([k, v]) => `    [${v}] = "${k}",`);
  return `local ${name} = {\n${rows.join('\n')}\n}`;
}

/** The generated block, markers included. */
export function luaTables(): string {
  return [
    BEGIN,
    '-- vhost-user.rst, \'Front-end message types\'',
    luaTable('frontend_requests', FrontendRequest),
    '-- vhost-user.rst, \'Back-end message types\'',
    luaTable('backend_requests', BackendRequest),
    '-- vhost-user.rst, \'Protocol features\' (bit numbers)',
    luaTable('protocol_features', ProtocolFeature),
    '-- virtio 1.3, \'Reserved Feature Bits\', and VHOST_F_LOG_ALL / VHOST_USER_F_PROTOCOL_FEATURES (bit numbers)',
    luaTable('virtio_features', VirtioFeature),
    '-- virtio 1.3, \'Network Device: Feature bits\' (bit numbers; shown with the device preference set to net)',
    luaTable('net_features', VirtioNetFeature),
    '-- virtio 1.3, \'Block Device: Feature bits\' (bit numbers; shown with the device preference set to blk)',
    luaTable('blk_features', VirtioBlkFeature),
    '-- virtio 1.2 §2.1, device status bits (values)',
    luaTable('device_status', DeviceStatus),
    END,
  ].join('\n');
}

/** `text` with its generated block replaced by the current one. */
export function withTables(text: string): string {
  const a = text.indexOf(BEGIN);
  const b = text.indexOf(END);
  if (a < 0 || b < a) throw new Error(`${LUA_PATH} has no generated block (${BEGIN} ... ${END})`);
  return text.slice(0, a) + luaTables() + text.slice(b + END.length);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const before = readFileSync(LUA_PATH, 'utf8');
  const after = withTables(before);
  if (after !== before) writeFileSync(LUA_PATH, after);
  process.stdout.write(`${LUA_PATH}: ${after === before ? 'up to date' : 'tables rewritten'}\n`);
}
