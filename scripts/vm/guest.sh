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
# No network in here, and the image already holds the runtime packages (quickstart.sh runs it).
export ESB_SKIP_HOST_SETUP=1
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

# One runner per file: the guest log then shows each file's time, and a file that hangs up to
# the time limit leaves the others' results in tests.log.
pass=0
fail=0
rc=0
for f in "${FILES[@]}"; do
  step "integration: $f"
  t0=$(date +%s)
  node scripts/run-tests.mjs integration --test-reporter=tap "$f" > "$res/file.log" 2>&1
  frc=$?
  cat "$res/file.log" >> "$res/tests.log"
  p="$(grep -E '^# pass [0-9]+$' "$res/file.log" | tail -1 | cut -d' ' -f3)"
  x="$(grep -E '^# fail [0-9]+$' "$res/file.log" | tail -1 | cut -d' ' -f3)"
  if [ -z "$p" ] || [ -z "$x" ]; then x=$(( ${x:-0} + 1 )); fi
  pass=$(( pass + ${p:-0} ))
  fail=$(( fail + ${x:-0} ))
  if [ "$frc" != 0 ]; then rc=1; fi
  echo "$f: pass ${p:-?} fail ${x:-?} exit $frc, $(( $(date +%s) - t0 )) s" | tee -a "$res/files.txt"
done
rm -f "$res/file.log"
# The totals, last in tests.log, in the runner's own summary format.
printf '# all files of this configuration\n# pass %d\n# fail %d\n' "$pass" "$fail" >> "$res/tests.log"
echo "$rc" > "$res/tests.rc"
step "tests done: pass $pass fail $fail exit $rc"
sync
