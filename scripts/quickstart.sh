#!/usr/bin/env bash
# Quickstart on a fresh Debian 12 host, as root: installs the packages the agent needs (when
# missing), installs the npm dependencies (when node_modules is missing), then runs
# scripts/quickstart.ts: a private containerd + registry + CNI test network + the agent, one
# function container driven through the gRPC API (ensure, invoke, pause, resume, metrics, list,
# destroy), and everything stopped again. Nothing is left behind; safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "quickstart: run as root (it installs packages, starts containerd and creates network namespaces)" >&2
  exit 1
fi
bash scripts/setup-host.sh
if [ ! -d node_modules ]; then
  npm ci --no-audit --no-fund
fi
# exec: signals (Ctrl-C) go straight to the quickstart, which cleans up before exiting.
exec node --import tsx scripts/quickstart.ts "$@"
