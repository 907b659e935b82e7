/**
 * `npm run readme:conformance`: rewrites the conformance results in README.md (between
 * the conformance-results markers) from spec/conformance/expected/. `--check` changes
 * nothing and exits 1 when the README is not what the data says.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { loadExpected, readmeSection, renderReadmeSection, replaceReadmeSection } from './conformance/expected.js';

/** README.md of this checkout (this script runs from dist/scripts/). */
export const README_PATH = fileURLToPath(new URL('../../README.md', import.meta.url));

const readme = readFileSync(README_PATH, 'utf8');
const section = renderReadmeSection(loadExpected());
if (process.argv.includes('--check')) {
  const same = readmeSection(readme) === section;
  process.stdout.write(same ? 'README.md conformance results are up to date\n' : 'README.md conformance results differ from spec/conformance/expected/: run npm run readme:conformance\n');
  process.exitCode = same ? 0 : 1;
} else {
  const next = replaceReadmeSection(readme, section);
  if (next !== readme) writeFileSync(README_PATH, next);
  process.stdout.write(next !== readme ? 'README.md conformance results rewritten\n' : 'README.md conformance results already up to date\n');
}
