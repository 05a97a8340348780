#!/usr/bin/env bash
# Installs esb-agent as a systemd service, from this repository. Safe to re-run (upgrades in
# place; an existing /etc/esb-agent/env is never touched).
#
#   scripts/install.sh [--root DIR] [--prefix DIR] [--bindir DIR] [--offline] [--enable-now]
#
# What it does (paths shown for --root /):
#   /opt/esb-agent/              compiled agent (dist/), bin/, proto/, production node_modules,
#                                README.md, env.example  (replaced as a whole on every run)
#   /usr/local/bin/esb-agent     wrapper: the node that ran this script + /opt/esb-agent/bin/esb-agent.js
#   /etc/systemd/system/esb-agent.service   the unit (packaging/systemd/esb-agent.service)
#   /etc/esb-agent/env           configuration template (packaging/env.example), only if missing
#   systemctl daemon-reload      when --root is / and systemd runs; the service is started
#                                only with --enable-now (systemctl enable --now esb-agent)
#
# Options:
#   --root DIR     install under DIR instead of / (DESTDIR-style: files name their final paths;
#                  no systemctl). For packaging and tests.
#   --prefix DIR   application directory (default /opt/esb-agent)
#   --bindir DIR   directory of the esb-agent command (default /usr/local/bin)
#   --offline      npm from its cache only (no registry access)
#   --enable-now   enable and start the service (only with --root /)
set -euo pipefail

ROOT=/
PREFIX=/opt/esb-agent
BINDIR=/usr/local/bin
OFFLINE=0
ENABLE_NOW=0
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 64; }
while [ $# -gt 0 ]; do
  case "$1" in
    --root) ROOT=${2:?--root needs a directory}; shift 2 ;;
    --prefix) PREFIX=${2:?--prefix needs a directory}; shift 2 ;;
    --bindir) BINDIR=${2:?--bindir needs a directory}; shift 2 ;;
    --offline) OFFLINE=1; shift ;;
    --enable-now) ENABLE_NOW=1; shift ;;
    -h|--help) usage ;;
    *) echo "install.sh: unknown option $1" >&2; usage ;;
  esac
done
for d in "$PREFIX" "$BINDIR"; do
  case "$d" in /?*) ;; *) echo "install.sh: --prefix and --bindir must be absolute directories, got $d" >&2; exit 64 ;; esac
done
ROOT=$(realpath -m "$ROOT")
if [ "$ROOT" != / ] && [ "$ENABLE_NOW" = 1 ]; then
  echo "install.sh: --enable-now needs --root / (it starts the service on this host)" >&2
  exit 64
fi

SRC=$(cd "$(dirname "$0")/.." && pwd)
NODE=$(command -v node) || { echo "install.sh: node not found on PATH (Node.js >= 20.18 is needed)" >&2; exit 1; }
node -e 'const [a,b]=process.versions.node.split(".").map(Number); if (a<20||(a===20&&b<18)) { console.error("install.sh: node >= 20.18 required, found "+process.version); process.exit(1) }'
NPM_FLAGS=(--no-audit --no-fund)
[ "$OFFLINE" = 1 ] && NPM_FLAGS+=(--offline)

r() { printf '%s%s' "${ROOT%/}" "$1"; }   # a final path under the install root
APP=$(r "$PREFIX")
STAGE="$APP.new-$$"
trap 'rm -rf "$STAGE"' EXIT

# 1. Build: the compiler is a dev dependency of the source tree.
if [ ! -x "$SRC/node_modules/.bin/tsc" ]; then
  echo "==> npm ci (build dependencies) in $SRC"
  (cd "$SRC" && npm ci "${NPM_FLAGS[@]}")
fi
echo "==> compiling into $STAGE/dist"
mkdir -p "$STAGE"
(cd "$SRC" && node_modules/.bin/tsc -p tsconfig.build.json --outDir "$STAGE/dist")

# 2. Runtime files and production dependencies only.
cp -r "$SRC/bin" "$SRC/proto" "$STAGE/"
cp "$SRC/package.json" "$SRC/package-lock.json" "$SRC/README.md" "$STAGE/"
cp "$SRC/packaging/env.example" "$STAGE/env.example"
echo "==> npm ci --omit=dev in $STAGE"
(cd "$STAGE" && npm ci --omit=dev --ignore-scripts "${NPM_FLAGS[@]}" >/dev/null)

# 3. Swap the application directory in one step (a re-run replaces the old version).
mkdir -p "$(dirname "$APP")"
if [ -e "$APP" ]; then
  rm -rf "$APP.old"
  mv "$APP" "$APP.old"
fi
mv "$STAGE" "$APP"
rm -rf "$APP.old"
echo "==> installed $APP"

# 4. The command: the absolute node path, so systemd's minimal PATH does not matter.
mkdir -p "$(r "$BINDIR")"
cat >"$(r "$BINDIR")/esb-agent.tmp" <<EOF
#!/bin/sh
# esb-agent command, written by scripts/install.sh
exec $NODE $PREFIX/bin/esb-agent.js "\$@"
EOF
chmod 0755 "$(r "$BINDIR")/esb-agent.tmp"
mv "$(r "$BINDIR")/esb-agent.tmp" "$(r "$BINDIR")/esb-agent"
echo "==> installed $(r "$BINDIR")/esb-agent"

# 5. The unit, pointing at this --bindir and --prefix.
UNIT=$(r /etc/systemd/system/esb-agent.service)
mkdir -p "$(dirname "$UNIT")"
sed -e "s|/usr/local/bin/esb-agent|$BINDIR/esb-agent|g" -e "s|/opt/esb-agent|$PREFIX|g" \
  "$SRC/packaging/systemd/esb-agent.service" >"$UNIT.tmp"
chmod 0644 "$UNIT.tmp"
mv "$UNIT.tmp" "$UNIT"
echo "==> installed $UNIT"

# 6. The configuration: an operator's file is never overwritten.
ENVFILE=$(r /etc/esb-agent/env)
mkdir -p "$(dirname "$ENVFILE")"
if [ -e "$ENVFILE" ]; then
  echo "==> kept existing $ENVFILE (template for new settings: $PREFIX/env.example)"
else
  install -m 0600 "$SRC/packaging/env.example" "$ENVFILE"
  echo "==> installed $ENVFILE from packaging/env.example: review it (TLS files, CNI_BIN_DIR)"
fi

# 7. systemd, only on the real root.
if [ "$ROOT" = / ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  if [ "$ENABLE_NOW" = 1 ]; then
    systemctl enable --now esb-agent.service
    echo "==> esb-agent enabled and started (journalctl -u esb-agent)"
  else
    echo "==> next: esb-agent doctor --env-file /etc/esb-agent/env && systemctl enable --now esb-agent"
  fi
elif [ "$ROOT" = / ]; then
  echo "==> systemd is not running here: skipped daemon-reload"
else
  echo "==> installed under $ROOT (no systemctl)"
fi
