#!/bin/bash
# Runs inside the guest (esb-vm-test.service), from the 9p share that test-cgroup-v2.sh
# prepared: /share/env (configuration, files), /share/checkout.tar, /share/ctd2 (containerd 2.x
# binaries, configuration 2.1 only). Writes everything into /share/results; the unit powers the
# guest off when this script ends, whatever its exit status.
set -u
res=/share/results
mkdir -p "$res"
exec > >(tee -a "$res/guest.log") 2>&1
# shellcheck disable=SC1091
. /share/env
export PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin
export ESB_TEST_SLOWDOWN HOME=/root
step() { echo "guest: $* ($(date -u +%T), up $(cut -d' ' -f1 /proc/uptime) s)"; }

step "configuration $CONFIG, kernel $(uname -r), /sys/fs/cgroup is $(stat -fc %T /sys/fs/cgroup)"
if [ "$CONFIG" = 2.1 ]; then
  # sid's containerd over trixie's: same paths, so the harness and the shim lookup
  # (containerd-shim-runc-v2 on PATH) pick the 2.x binaries up unchanged.
  for b in containerd containerd-shim-runc-v2 ctr; do
    install -m 755 "/share/ctd2/usr/bin/$b" "/usr/bin/$b"
  done
fi
{
  containerd --version
  runc --version | head -1
  node --version
  uname -r
} | tee "$res/versions.txt"

step "unpacking the checkout"
mkdir -p /root/esb
tar -C /root/esb -xf /share/checkout.tar
cd /root/esb || exit 1

if [ "${RECORD:-0}" = 1 ]; then
  step "recording cgroup v2 fixtures"
  node --import tsx test/fixtures/cgroups/record-v2.ts --out "$res/fixtures" > "$res/record.log" 2>&1
  echo $? > "$res/record.rc"
  cat "$res/record.log"
fi

step "integration tests: ${FILES[*]}"
node scripts/run-tests.mjs integration --test-reporter=tap "${FILES[@]}" > "$res/tests.log" 2>&1
echo $? > "$res/tests.rc"
step "tests done, exit $(cat "$res/tests.rc"); $(grep -E '^# (pass|fail) ' "$res/tests.log" | tr '\n' ' ')"
sync
