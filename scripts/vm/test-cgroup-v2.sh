#!/usr/bin/env bash
# Runs the integration suite (a subset, see SUBSET below) inside a Debian trixie guest booted
# with cgroup v2 only, once per containerd configuration:
#   1.7  trixie's containerd package (1.7.x) with trixie's runc (1.1.x)
#   2.1  sid's containerd .deb (2.1.x) unpacked over it, same runc
# The host is cgroup v1 with containerd 1.6; production is cgroup v2 with containerd 1.7/2.x,
# so this is where the agent meets the cgroup v2 kernel interface and the newer daemons.
#
#   bash scripts/vm/test-cgroup-v2.sh [--only REGEX] [--config 1.7|2.1|all] [--record]
#
#   --only REGEX   run the integration files whose path matches REGEX instead of the subset
#                  (any integration file but the docker ones, which need a docker daemon)
#   --config C     run only one configuration (default: all)
#   --record       first record the cgroup v2 fixtures (test/fixtures/cgroups/record-v2.ts)
#                  under containerd 1.7 and copy them into the checkout
#
# Environment: ESB_VM_CACHE (default /var/cache/esb-agent-vm), ESB_VM_MIRROR (default: the
# Debian mirror the host's apt uses), ESB_VM_TIME_LIMIT (seconds per boot, default 1200),
# ESB_VM_RESULTS (where the guest's logs are copied, default .tmp/vm-results in the checkout).
#
# The guest image is built once from Debian packages (build-image.sh) and cached under
# ESB_VM_CACHE/<hash of the build inputs>; a boot never changes it (qemu snapshot=on). The
# guest has no network device. The checkout (with its node_modules) goes in as a tar over a
# 9p share, which also carries the results back. qemu runs under a time limit and is killed by
# pid on any exit of this script; the run's temp dir is removed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

# The default subset, chosen to fit CI's budget (scripts/vm/README.md): the quickstart makes
# every AgentService RPC once (Ensure, Invoke, Pause, Invoke refused while paused, Resume,
# Metrics, List, Destroy) through the CLI; hardening covers the pids and memory limits and the
# OOM kill; restart covers restart survival of running and paused workers, SIGKILL during
# Ensures, containerd crashes and graceful restarts, and the reconciliation after them; cni
# covers the CNI plugins and their cache reconciliation. Cheapest first: a run that reaches the
# time limit still reports the files before it.
SUBSET=(
  test/integration/cni.test.ts
  test/integration/quickstart.test.ts
  test/integration/hardening.test.ts
  test/integration/restart.test.ts
)
# Need a docker daemon, which the guest does not have.
NOT_IN_GUEST='docker-runtime|conformance'

only=''
configs=(1.7 2.1)
record=0
while [ $# -gt 0 ]; do
  case "$1" in
    --only) only="$2"; shift 2 ;;
    --config)
      case "$2" in
        1.7|2.1) configs=("$2") ;;
        all) configs=(1.7 2.1) ;;
        *) echo "unknown --config $2 (1.7, 2.1 or all)" >&2; exit 2 ;;
      esac
      shift 2 ;;
    --record) record=1; shift ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
if [ "$(id -u)" -ne 0 ]; then
  echo "test-cgroup-v2: run as root (debootstrap, chroot)" >&2
  exit 1
fi

files=()
if [ -z "$only" ]; then
  files=("${SUBSET[@]}")
else
  while read -r f; do
    [ -n "$f" ] && files+=("$f")
  done < <(cd "$repo" && ls test/integration/*.test.ts | grep -Ev "$NOT_IN_GUEST" | grep -E -- "$only" || true)
  if [ ${#files[@]} -eq 0 ]; then
    echo "test-cgroup-v2: --only '$only' matches no integration file that runs in the guest" >&2
    exit 2
  fi
fi

# The guest has no network: it runs the checkout's installed node_modules (npm ci first).
if [ ! -d "$repo/node_modules/tsx" ]; then
  echo "test-cgroup-v2: $repo/node_modules is not installed; run 'npm ci' first" >&2
  exit 2
fi

# Host tools: debootstrap builds the image, qemu boots it, mke2fs -d writes it.
host_pkgs=(debootstrap qemu-system-x86 e2fsprogs)
missing=()
for p in "${host_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "test-cgroup-v2: installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

mirror="${ESB_VM_MIRROR:-}"
if [ -z "$mirror" ]; then
  mirror="$(apt-get indextargets --format '$(REPO_URI) $(ORIGIN) $(RELEASE)' 2>/dev/null \
    | awk '$2 == "Debian" && $3 !~ /-/ { print $1; exit }')"
  mirror="${mirror:-http://deb.debian.org/debian/}"
fi
cache="${ESB_VM_CACHE:-/var/cache/esb-agent-vm}"
# Per boot. Two boots of 20 min, the image build and the host suite stay under CI's 60 min.
limit="${ESB_VM_TIME_LIMIT:-1200}"
results_out="${ESB_VM_RESULTS:-$repo/.tmp/vm-results}"
mkdir -p "$cache"

run="$(mktemp -d /var/tmp/esb-vm-run.XXXXXX)"
mkdir -p "$run/share"
qemu_pid=''
partial=''
cleanup() {
  local rc=$?
  if [ -n "$partial" ]; then rm -rf --one-file-system "$partial"; fi
  if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
    kill -TERM "$qemu_pid" 2>/dev/null || true
    sleep 2
    kill -KILL "$qemu_pid" 2>/dev/null || true
  fi
  rm -rf --one-file-system "$run"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the image ------------------------------------------------------------------------------
node_bin="$(readlink -f "$(command -v node)")"
key="$( { sha256sum "$here/build-image.sh" "$here/guest-packages.txt" | cut -d' ' -f1; sha256sum "$node_bin" | cut -d' ' -f1; echo "$mirror"; } | sha256sum | cut -c1-16)"
image="$cache/$key"
t0=$(date +%s)
# One build at a time (two CI jobs on one machine would otherwise both debootstrap).
exec 9> "$cache/.lock"
flock 9
if [ ! -f "$image/rootfs.img" ]; then
  echo "test-cgroup-v2: building the guest image into $image (once)"
  # Built beside the final path and renamed: an interrupted build never looks complete.
  partial="$cache/$key.partial.$$"
  rm -rf "$partial"
  if ! nice -n 10 bash "$here/build-image.sh" "$partial" "$mirror"; then
    echo "test-cgroup-v2: image build failed" >&2
    exit 1
  fi
  rm -rf "$image"
  mv "$partial" "$image"
  partial=''
  echo "test-cgroup-v2: image built in $(( $(date +%s) - t0 )) s"
  # Images of older build inputs are never used again.
  for old in "$cache"/*; do
    case "$(basename "$old")" in
      "$key") ;;
      [0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*)
        rm -rf --one-file-system "$old" ;;
    esac
  done
fi
flock -u 9

# --- containerd 2.1 from sid, cached by version ----------------------------------------------
ctd2_deb=''
if printf '%s\n' "${configs[@]}" | grep -qx 2.1; then
  debs="$cache/debs"
  mkdir -p "$debs"
  ctd2_deb="$(ls -1 "$debs"/containerd_2.*_amd64.deb 2>/dev/null | sort -V | tail -1 || true)"
  if [ -z "$ctd2_deb" ]; then
    # A private apt configuration with only sid: the host's sources and lists stay untouched.
    apt_dir="$cache/apt-sid"
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial"
    echo "deb $mirror sid main" > "$apt_dir/sources.list"
    apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
      -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir" -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=
      -o APT::Sandbox::User=root)
    apt-get "${apt_opts[@]}" update -q
    (cd "$debs" && apt-get "${apt_opts[@]}" download containerd)
    rm -rf "$apt_dir/lists"
    ctd2_deb="$(ls -1 "$debs"/containerd_2.*_amd64.deb 2>/dev/null | sort -V | tail -1 || true)"
    if [ -z "$ctd2_deb" ]; then
      echo "test-cgroup-v2: sid's containerd is not a 2.x release: $(ls "$debs")" >&2
      exit 1
    fi
  fi
  mkdir -p "$run/share/ctd2"
  dpkg -x "$ctd2_deb" "$run/share/ctd2"
fi

# --- the checkout ----------------------------------------------------------------------------
cp "$here/guest.sh" "$run/share/guest.sh"
tar -C "$repo" --exclude=./.git --exclude=./.tmp -cf "$run/share/checkout.tar" .

if [ -e /dev/kvm ]; then
  accel=(-accel kvm -cpu host)
  slowdown=2
else
  accel=(-accel tcg,thread=multi,tb-size=512 -cpu max)
  slowdown=10
fi

# --- one boot per configuration --------------------------------------------------------------
declare -A summary
failed=0
for cfg in "${configs[@]}"; do
  res="$run/share/results"
  rm -rf "$res"
  mkdir -p "$res"
  do_record=0
  if [ "$record" = 1 ] && [ "$cfg" = 1.7 ]; then do_record=1; fi
  {
    echo "CONFIG=$cfg"
    echo "RECORD=$do_record"
    echo "ESB_TEST_SLOWDOWN=$slowdown"
    printf 'FILES=(%s)\n' "${files[*]}"
  } > "$run/share/env"
  echo "test-cgroup-v2: containerd $cfg: booting ($(date -u +%T), limit ${limit} s)"
  t_boot=$(date +%s)
  # snapshot=on: guest writes go to a temp file qemu deletes; the cached image never changes.
  TMPDIR="$run" nice -n "${ESB_VM_NICE:-10}" qemu-system-x86_64 "${accel[@]}" -smp 2 -m 4096 \
    -display none -monitor none -serial "file:$res/console.log" -no-reboot \
    -kernel "$image/vmlinuz" -initrd "$image/initrd.img" \
    -append 'console=ttyS0 root=/dev/vda rw systemd.unified_cgroup_hierarchy=1 systemd.show_status=0' \
    -drive "file=$image/rootfs.img,format=raw,if=virtio,cache=unsafe,snapshot=on" \
    -virtfs "local,path=$run/share,mount_tag=share,security_model=none" \
    -nic none &
  qemu_pid=$!
  # Waits for qemu while enforcing the time limit; samples qemu's CPU time, which (unlike the
  # wall time on a shared machine) says how long the run takes on an otherwise idle one.
  deadline=$(( SECONDS + limit ))
  ticks=0
  while :; do
    stat="$(cat "/proc/$qemu_pid/stat" 2>/dev/null || true)"
    # Gone, or a zombie waiting for `wait`: qemu has exited.
    if [ -z "$stat" ] || [ "$(echo "$stat" | awk '{print $3}')" = Z ]; then break; fi
    ticks="$(echo "$stat" | awk '{print $14 + $15}')"
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "test-cgroup-v2: containerd $cfg: time limit ${limit} s reached, killing qemu" >&2
      kill -KILL "$qemu_pid" 2>/dev/null || true
      break
    fi
    sleep 2
  done
  wait "$qemu_pid" || true
  qemu_pid=''
  cpu_secs=$(( ticks / $(getconf CLK_TCK) ))
  secs=$(( $(date +%s) - t_boot ))

  mkdir -p "$results_out/$cfg"
  rm -rf "${results_out:?}/$cfg"/*
  cp -r "$res"/. "$results_out/$cfg/"
  if [ -f "$res/tests.log" ]; then
    echo "----- containerd $cfg: test output -----"
    cat "$res/tests.log"
    echo "----- end of containerd $cfg test output -----"
  fi
  pass="$(grep -E '^# pass [0-9]+' "$res/tests.log" 2>/dev/null | tail -1 | awk '{print $3}')"
  fail="$(grep -E '^# fail [0-9]+' "$res/tests.log" 2>/dev/null | tail -1 | awk '{print $3}')"
  rc="$(cat "$res/tests.rc" 2>/dev/null || echo none)"
  if [ -z "$pass" ] || [ -z "$fail" ] || [ "$rc" = none ]; then
    echo "test-cgroup-v2: containerd $cfg: no test summary from the guest (boot or time limit); console tail:" >&2
    tail -40 "$res/console.log" >&2 || true
    tail -20 "$res/guest.log" >&2 2>/dev/null || true
    echo "files finished before that:" >&2
    cat "$res/files.txt" >&2 2>/dev/null || true
    summary[$cfg]="no result (${secs} s wall, qemu ${cpu_secs} s CPU)"
    failed=1
    continue
  fi
  if [ "$do_record" = 1 ]; then
    if [ "$(cat "$res/record.rc" 2>/dev/null)" = 0 ]; then
      mkdir -p "$repo/test/fixtures/cgroups/recorded-v2"
      cp "$res"/fixtures/v2-rec-*.json "$repo/test/fixtures/cgroups/recorded-v2/"
      echo "test-cgroup-v2: recorded fixtures copied to test/fixtures/cgroups/recorded-v2/"
    else
      echo "test-cgroup-v2: recording failed, see $results_out/$cfg/record.log" >&2
      failed=1
    fi
  fi
  summary[$cfg]="$pass passed, $fail failed (${secs} s wall, qemu ${cpu_secs} s CPU; $(head -1 "$res/versions.txt" 2>/dev/null))"
  if [ "$fail" != 0 ] || [ "$rc" != 0 ]; then failed=1; fi
done

for cfg in "${configs[@]}"; do
  echo "containerd $cfg: ${summary[$cfg]}"
done
exit "$failed"
