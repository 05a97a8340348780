#!/usr/bin/env bash
# Prints the systemd exposure score of the agent's unit and fails when it is above the target.
#
#   scripts/systemd-security.sh [UNIT_FILE] [MAX_SCORE]
#
# Defaults: packaging/systemd/esb-agent.service and 6.5. Uses `systemd-analyze security
# --offline=yes`, which reads the file only (no running systemd needed). Exit 0 at or below the
# target, 1 above it, 2 when the score cannot be read.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
UNIT=${1:-$ROOT/packaging/systemd/esb-agent.service}
MAX=${2:-6.5}

if ! out=$(systemd-analyze security --offline=yes --no-pager "$UNIT" 2>&1); then
  echo "systemd-security: systemd-analyze failed on $UNIT:" >&2
  echo "$out" >&2
  exit 2
fi
score=$(printf '%s\n' "$out" | sed -n 's/^→ Overall exposure level for .*: \([0-9][0-9]*\.[0-9]\).*/\1/p' | tail -n 1)
if [ -z "$score" ]; then
  echo "systemd-security: no exposure level in the output of systemd-analyze for $UNIT" >&2
  exit 2
fi
echo "exposure $score (target <= $MAX) for $UNIT"
if awk -v s="$score" -v m="$MAX" 'BEGIN { exit !(s > m) }'; then
  printf '%s\n' "$out" | grep '✗' >&2 || true
  echo "systemd-security: exposure $score is above $MAX" >&2
  exit 1
fi
