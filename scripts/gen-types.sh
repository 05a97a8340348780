#!/usr/bin/env bash
# Regenerates the TypeScript types for our proto files with proto-loader-gen-types.
# The flags must equal PROTO_LOADER_OPTIONS in src/proto-options.ts (the runtime loader).
# With --check, generates into a temp dir and fails if src/gen differs (CI runs this).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
gen=node_modules/.bin/proto-loader-gen-types
flags=(--keepCase --longs=String --enums=String --defaults --oneofs --grpcLib=@grpc/grpc-js --importFileExtension=.js)

out="src/gen"
if [ "${1:-}" = "--check" ]; then out=$(mktemp -d); trap 'rm -rf "$out"' EXIT; fi
rm -rf "$out/agent" "$out/containerd"
mkdir -p "$out/agent" "$out/containerd"

"$gen" "${flags[@]}" -I proto/agent -O "$out/agent" agent.proto >/dev/null

c=github.com/containerd/containerd/api
"$gen" "${flags[@]}" -I proto/containerd -O "$out/containerd" \
  $c/services/containers/v1/containers.proto $c/services/content/v1/content.proto \
  $c/services/diff/v1/diff.proto $c/services/events/v1/events.proto \
  $c/services/images/v1/images.proto $c/services/leases/v1/leases.proto \
  $c/services/namespaces/v1/namespace.proto $c/services/snapshots/v1/snapshots.proto \
  $c/services/tasks/v1/tasks.proto $c/services/version/v1/version.proto \
  $c/events/task.proto \
  github.com/containerd/cgroups/stats/v1/metrics.proto \
  github.com/containerd/cgroups/v2/stats/metrics.proto >/dev/null

if [ "${1:-}" = "--check" ]; then
  if ! diff -r "$out" src/gen >/dev/null; then
    diff -r "$out" src/gen | head -20
    echo "src/gen is stale: run 'npm run gen' and commit the result" >&2
    exit 1
  fi
  echo "generated types are current"
fi
