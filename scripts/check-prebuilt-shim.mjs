#!/usr/bin/env node
// The first half of package.json's install script:
//   node scripts/check-prebuilt-shim.mjs || node-gyp rebuild --directory native-shim
// Exits 0 when the prebuilt shim for this platform (prebuilds/<platform>-<arch>/, the first
// path lib/native/shim.ts tries) loads in this Node and exports what the library uses: then
// installing needs no compiler. Exits 1 otherwise (no binary for this platform, a libc it was
// not linked against, a checkout where none was built), and node-gyp builds native-shim/.
// Plain JavaScript on purpose: it runs before `prepare` compiles anything in a checkout.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const target = `${process.platform}-${process.arch}`;
const path = fileURLToPath(new URL(`../prebuilds/${target}/vhost_user_shim.node`, import.meta.url));

function miss(why) {
  process.stderr.write(
    `vhost-user-client: no prebuilt native shim for ${target} (${why}); ` +
      'building native-shim/ with node-gyp (needs a C compiler, make and python3)\n',
  );
  process.exit(1);
}

if (!existsSync(path)) miss(`${path} not present`);
let shim;
try {
  shim = createRequire(import.meta.url)(path);
} catch (e) {
  miss(`${path} does not load: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}`);
}
for (const name of ['FdWatcher', 'externalArrayBuffer', 'detachArrayBuffer']) {
  if (typeof shim[name] !== 'function') miss(`${path} does not export ${name}`);
}
