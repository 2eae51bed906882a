#!/usr/bin/env bash
# What `cargo xtask vm-test` needs on the host, on top of scripts/setup.sh: QEMU (software
# emulation; KVM is not needed), debootstrap, kmod (depmod), e2fsprogs (mkfs.ext4, debugfs), fdisk (sfdisk),
# binutils (strip); for the arm64 guest qemu-system-arm and busybox-static. Idempotent.
set -euo pipefail
say() { printf 'setup-vm: %s\n' "$*" >&2; }
[ "$(id -u)" -eq 0 ] || { say "error: run as root"; exit 1; }
command -v apt-get >/dev/null || { say "error: no apt-get: install QEMU (qemu-system-x86_64), debootstrap, kmod, e2fsprogs and binutils"; exit 1; }
export DEBIAN_FRONTEND=noninteractive
missing=()
for p in debootstrap kmod e2fsprogs fdisk binutils debian-archive-keyring; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ! command -v qemu-system-x86_64 >/dev/null; then
  apt-get update >/dev/null 2>&1 || true
  # A backported qemu-utils may be installed; qemu-system-x86 wants bookworm's, which the
  # downgrade below takes (same version for both).
  ver=$(apt-cache madison qemu-system-x86 | awk '{print $3; exit}')
  [ -n "$ver" ] || { say "error: no qemu-system-x86 package in the apt sources"; exit 1; }
  missing+=("qemu-system-x86=$ver" "qemu-utils=$ver")
fi
# The arm64 guest (vm/arm64/run.sh): qemu-system-aarch64, busybox for cpio.
for p in qemu-system-arm busybox-static; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing ${missing[*]}"
  apt-get install -y --no-install-recommends --allow-downgrades "${missing[@]}" >/tmp/swarmtrace-apt-vm.log 2>&1 \
    || { tail -20 /tmp/swarmtrace-apt-vm.log >&2; say "error: apt-get failed (log: /tmp/swarmtrace-apt-vm.log)"; exit 1; }
fi
say "done"
