#!/usr/bin/env bash
# The test command: installs what is missing, type-checks every workspace, then runs the unit
# tests and the end-to-end tests (which start their own Docker engines, registry, server and
# executors, and stop them again).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

echo "== type-check"
npx turbo run typecheck --output-logs=errors-only

echo "== tests"
mkdir -p .cryo
report=.cryo/vitest-report.json
rc=0
npx vitest run --reporter=default --reporter=json --outputFile.json="$report" "$@" || rc=$?
if [ -f "$report" ]; then
  node -e '
    const r = require(process.argv[1]);
    console.log(`${r.numPassedTests} passed, ${r.numFailedTests} failed` + (r.numPendingTests ? `, ${r.numPendingTests} skipped` : ""));
  ' "$PWD/$report"
fi
exit $rc
