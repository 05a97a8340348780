#!/usr/bin/env bash
# Long bad-input fuzz, beyond the ~2,400 cases CI runs: FUZZ_RUNS cases (default 20000) with a
# fresh seed each time unless FUZZ_SEED is given. The seed is printed; a failure prints the input
# too, and `FUZZ_SEED=<seed> bash scripts/soak/fuzz.sh` replays it. Not part of npm test. Root.
set -euo pipefail
cd "$(dirname "$0")/../.."
export FUZZ_RUNS="${FUZZ_RUNS:-20000}"
export FUZZ_SEED="${FUZZ_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}"
echo "fuzz soak: FUZZ_SEED=$FUZZ_SEED FUZZ_RUNS=$FUZZ_RUNS"
exec node scripts/run-tests.mjs integration test/integration/fuzz.test.ts
