#!/usr/bin/env bash
# Installs the Debian packages the agent and its tests use, when missing. Idempotent; root only.
# Nothing is started here: tests start their own containerd, registry and dockerd on private paths.
set -euo pipefail
if [ "${ESB_SKIP_HOST_SETUP:-}" = 1 ]; then
  # The cgroup v2 test guest (scripts/vm): its image already holds the runtime packages, it has
  # no network to install anything, and it runs no docker or proto-vendoring tests.
  exit 0
fi
pkgs=(
  containerd runc containernetworking-plugins iproute2 iptables   # the agent's runtime stack
  busybox-static docker-registry                                  # test images, registry
  docker.io                                                        # the docker runtime's tests (private dockerd)
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
  installs_docker=0
  own_policy=0
  for p in "${missing[@]}"; do
    if [ "$p" = docker.io ]; then installs_docker=1; fi
  done
  if [ "$installs_docker" = 1 ] && [ ! -e /usr/sbin/policy-rc.d ]; then
    own_policy=1
    # Installing docker.io would start the host's dockerd (docker0, iptables rules). Only our own
    # install is held back: a docker that already runs is never touched.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  if [ "$installs_docker" = 1 ]; then
    # Installed, not enabled: the tests start their own dockerd on private paths.
    systemctl disable docker.service docker.socket >/dev/null 2>&1 || true
  fi
  if [ "$own_policy" = 1 ]; then
    rm -f /usr/sbin/policy-rc.d
    trap - EXIT
  fi
fi
# Node ≥ 20.18 is required (undici 7); the machine image ships it.
node -e 'const [a,b]=process.versions.node.split(".").map(Number); if (a<20||(a===20&&b<18)) { console.error("node >= 20.18 required, found "+process.version); process.exit(1) }'
