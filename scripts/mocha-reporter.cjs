// Mocha's spec reporter, plus one closing line in the plain form CI tools read:
// "N passed, N failed, N skipped". Plain CommonJS so mocha can load it without a build.
'use strict';
const Mocha = require('mocha');

class SpecWithSummary extends Mocha.reporters.Spec {
  constructor(runner, options) {
    super(runner, options);
    // A retried test must not pass silently: say what the failed attempt said.
    runner.on(Mocha.Runner.constants.EVENT_TEST_RETRY, (test, err) => {
      const message = String((err && err.message) || err).split('\n').slice(0, 40).join('\n        ');
      process.stdout.write(`      retrying after a failed attempt: ${test.fullTitle()}:\n        ${message}\n`);
    });
    runner.once(Mocha.Runner.constants.EVENT_RUN_END, () => {
      const s = runner.stats;
      process.stdout.write(`\ntests: ${s.passes} passed, ${s.failures} failed, ${s.pending} skipped\n`);
    });
  }
}

module.exports = SpecWithSummary;
