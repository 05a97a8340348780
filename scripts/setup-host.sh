#!/usr/bin/env bash
# Installs the Debian packages the agent and its tests use, when missing. Idempotent; root only.
# Nothing is started here: tests start their own containerd, registry and dockerd on private paths.
set -euo pipefail
pkgs=(
  containerd runc containernetworking-plugins iproute2 iptables   # the agent's runtime stack
  busybox-static docker-registry                                  # test images, registry
  openssl ca-certificates                                         # test certificates
  golang-github-containerd-containerd-dev golang-github-containerd-cgroups-dev golang-github-gogo-protobuf-dev  # vendored protos' source
  systemd                                                          # systemd-analyze verify of the unit
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# Node ≥ 20.18 is required (undici 7); the machine image ships it.
node -e 'const [a,b]=process.versions.node.split(".").map(Number); if (a<20||(a===20&&b<18)) { console.error("node >= 20.18 required, found "+process.version); process.exit(1) }'
