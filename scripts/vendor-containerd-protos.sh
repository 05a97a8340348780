#!/usr/bin/env bash
# Vendors containerd's gRPC API protos and the cgroups v1/v2 stats protos from Debian's
# -dev packages into proto/containerd/, laid out like their Go import paths so that
# `import "github.com/containerd/..."` resolves with proto/containerd as the include root.
#
# Re-runnable and idempotent: the tree is rebuilt from scratch each time, and VERSION records
# the exact Debian package versions the files came from. Installs the packages when missing.
#
# Skipped on purpose: introspection.proto (imports google/rpc/status.proto, which no Debian
# containerd package ships, and the agent does not call Introspection), the ttrpc events
# service and the shim protos (internal to containerd).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/proto/containerd"
gocode=/usr/share/gocode/src
pkgs=(golang-github-containerd-containerd-dev golang-github-containerd-cgroups-dev golang-github-gogo-protobuf-dev)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

ctrd="$gocode/github.com/containerd/containerd"
files=(
  api/events/container.proto api/events/content.proto api/events/image.proto
  api/events/namespace.proto api/events/snapshot.proto api/events/task.proto
  api/services/containers/v1/containers.proto api/services/content/v1/content.proto
  api/services/diff/v1/diff.proto api/services/events/v1/events.proto
  api/services/images/v1/images.proto api/services/leases/v1/leases.proto
  api/services/namespaces/v1/namespace.proto api/services/snapshots/v1/snapshots.proto
  api/services/tasks/v1/tasks.proto api/services/version/v1/version.proto
  api/types/descriptor.proto api/types/metrics.proto api/types/mount.proto
  api/types/platform.proto api/types/task/task.proto
  protobuf/plugin/fieldpath.proto runtime/v2/runc/options/oci.proto
)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for f in "${files[@]}"; do
  install -D -m 0644 "$ctrd/$f" "$tmp/github.com/containerd/containerd/$f"
done
for f in stats/v1/metrics.proto v2/stats/metrics.proto; do
  install -D -m 0644 "$gocode/github.com/containerd/cgroups/$f" "$tmp/github.com/containerd/cgroups/$f"
done
install -D -m 0644 "$gocode/github.com/gogo/protobuf/gogoproto/gogo.proto" "$tmp/gogoproto/gogo.proto"

# Licences: all three upstreams are Apache-2.0 (gogo: BSD-3-Clause); Debian ships the texts
# in copyright files rather than upstream LICENSE files.
install -m 0644 /usr/share/common-licenses/Apache-2.0 "$tmp/LICENSE"
mkdir -p "$tmp/copyright"
for p in "${pkgs[@]}"; do
  install -m 0644 "/usr/share/doc/$p/copyright" "$tmp/copyright/$p"
done
{
  echo "# Vendored by scripts/vendor-containerd-protos.sh from Debian packages (name version):"
  for p in "${pkgs[@]}"; do dpkg-query -W -f='${Package} ${Version}\n' "$p"; done
} > "$tmp/VERSION"

rm -rf "$dest"
mkdir -p "$(dirname "$dest")"
cp -a "$tmp" "$dest"
chmod 0755 "$dest"
echo "vendored $(find "$dest" -name '*.proto' | wc -l) protos into proto/containerd ($(sed -n 2p "$dest/VERSION"))"
