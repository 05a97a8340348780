#!/usr/bin/env bash
# Builds the cgroup v2 guest image from Debian packages only: debootstrap of trixie, the
# packages in guest-packages.txt, the host's node binary, and a oneshot unit that runs
# /share/guest.sh (copied in per run by test-cgroup-v2.sh) and powers the guest off.
#
#   build-image.sh OUT_DIR MIRROR
#
# Writes OUT_DIR/{rootfs.img,vmlinuz,initrd.img,versions.txt} and nothing else; the image is
# made with `mkfs.ext4 -d` (no loop device, no mount of the image). The only mount is /proc
# inside the chroot during package installation, removed by the EXIT trap also on failure.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$1"
mirror="$2"
suite=trixie

work="$(mktemp -d /var/tmp/esb-vm-build.XXXXXX)"
root="$work/root"
cleanup() {
  # Unmount before removing: rm -rf through a live /proc mount would fail (and must never
  # reach the host's /proc).
  if mountpoint -q "$root/proc" 2>/dev/null; then umount -l "$root/proc" || true; fi
  if mountpoint -q "$root/proc" 2>/dev/null; then
    echo "build-image: $root/proc still mounted; leaving $work" >&2
    return
  fi
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

pkgs=()
while read -r p; do
  p="${p%%#*}"
  p="$(echo "$p" | tr -d '[:space:]')"
  [ -n "$p" ] && pkgs+=("$p")
done < "$here/guest-packages.txt"

echo "build-image: debootstrap $suite ($(date -u +%T))"
debootstrap --variant=minbase --include=systemd-sysv,udev,kmod,iproute2,ca-certificates,procps \
  "$suite" "$root" "$mirror" > "$work/debootstrap.log" 2>&1 || {
  tail -30 "$work/debootstrap.log" >&2
  exit 1
}

echo "build-image: packages ($(date -u +%T))"
mount -t proc proc "$root/proc"
# No service may start inside the chroot (it would run on the host's kernel).
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"
chroot "$root" env DEBIAN_FRONTEND=noninteractive LC_ALL=C apt-get install -y -q --no-install-recommends "${pkgs[@]}" \
  > "$work/apt.log" 2>&1 || {
  tail -30 "$work/apt.log" >&2
  exit 1
}
chroot "$root" apt-get clean
rm -f "$root/usr/sbin/policy-rc.d"
chroot "$root" dpkg-query -W containerd runc containernetworking-plugins docker-registry linux-image-amd64 systemd > "$work/versions.txt"
umount "$root/proc"

# The host's node (v20, needs only glibc and libstdc++, both in the guest).
install -m 755 "$(readlink -f "$(command -v node)")" "$root/usr/local/bin/node"
node --version >> "$work/versions.txt"

echo "esb-vm" > "$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 esb-vm\n' > "$root/etc/hosts"
cat > "$root/etc/fstab" <<'FSTAB'
/dev/vda / ext4 rw,noatime 0 1
share /share 9p trans=virtio,version=9p2000.L,msize=262144,nofail 0 0
FSTAB
mkdir -p "$root/share"
printf '9p\n9pnet_virtio\n' > "$root/etc/modules-load.d/9p.conf"
# The tests start their own containerd and registry on private paths; nothing else may run
# beside them (timers would only add noise to an already slow emulated machine).
for u in containerd.service docker-registry.service apt-daily.timer apt-daily-upgrade.timer \
  e2scrub_all.timer e2scrub_reap.service fstrim.timer man-db.timer dpkg-db-backup.timer \
  systemd-timesyncd.service getty@tty1.service serial-getty@ttyS0.service; do
  ln -sf /dev/null "$root/etc/systemd/system/$u"
done
cat > "$root/etc/systemd/system/esb-vm-test.service" <<'UNIT'
[Unit]
Description=esb-agent guest test job (/share/guest.sh), then power off
After=multi-user.target
RequiresMountsFor=/share

[Service]
Type=oneshot
ExecStart=/bin/bash /share/guest.sh
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=infinity
SuccessAction=poweroff-force
FailureAction=poweroff-force

[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/esb-vm-test.service "$root/etc/systemd/system/multi-user.target.wants/esb-vm-test.service"

cp "$root"/boot/vmlinuz-* "$work/vmlinuz"
cp "$root"/boot/initrd.img-* "$work/initrd.img"
echo "build-image: mkfs ($(date -u +%T))"
mkfs.ext4 -q -F -L esb-vm -d "$root" "$work/rootfs.img" 6G

mkdir -p "$out"
mv "$work/vmlinuz" "$work/initrd.img" "$work/versions.txt" "$out/"
mv "$work/rootfs.img" "$out/rootfs.img"
echo "build-image: done ($(date -u +%T))"
cat "$out/versions.txt"
