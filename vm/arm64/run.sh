#!/usr/bin/env bash
# The arm64 guest: Debian 12's arm64 cloud kernel under qemu-system-aarch64 (TCG) runs
# `swarmtrace demo all` (the namespace lab, no Docker) with the static aarch64 binary of
# `cargo xtask dist`, and must get every scenario's verdict, as the x86_64 guests' `lab`.
#
#   cargo xtask dist --arch aarch64 && sudo bash vm/arm64/run.sh [CACHE]   (default /work/vmcache)
#
# Host side: the arm64 packages (kernel, iproute2, iptables, conntrack, kmod, busybox-static and
# their libraries) come from the Debian mirror through a temporary apt configuration under
# CACHE/arm64 (APT::Architecture=arm64, its own lists, an empty dpkg status: the system's apt
# and dpkg are left alone), unpacked with dpkg-deb -x (no maintainer scripts run, nothing
# executes arm64 code on the host), packed with vm/arm64/init into an initramfs (the cloud
# kernel has virtio-blk only as a module). Needs qemu-system-arm, busybox (cpio), kmod (depmod).
# Exit: 0 pass, 1 a scenario failed, 2 this machine cannot run the guest.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
CACHE=${1:-/work/vmcache}/arm64
BIN=$ROOT/target/dist/swarmtrace-aarch64-linux-musl
say() { printf 'vm-arm64: %s\n' "$*" >&2; }
[ "$(id -u)" = 0 ] || { say "run as root"; exit 2; }
[ -x "$BIN" ] || { say "no $BIN: run cargo xtask dist --arch aarch64"; exit 2; }
for t in qemu-system-aarch64 busybox depmod dpkg-deb apt-get; do
    command -v $t >/dev/null || { say "missing $t (apt-get install qemu-system-arm busybox-static kmod)"; exit 2; }
done
MIRROR=${SWARMTRACE_VM_MIRROR:-http://deb.debian.org/debian}
mkdir -p "$CACHE/apt/lists/partial" "$CACHE/apt/cache/archives/partial" "$CACHE/apt/state"
cat > "$CACHE/apt/sources.list" <<EOL
deb [arch=arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR bookworm main
deb [arch=arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${MIRROR%/debian}/debian-security bookworm-security main
EOL
A=(-o "Dir::Etc::sourcelist=$CACHE/apt/sources.list" -o Dir::Etc::sourceparts=- -o "Dir::State::Lists=$CACHE/apt/lists"
   -o "Dir::Cache=$CACHE/apt/cache" -o "Dir::State=$CACHE/apt/state" -o Dir::State::status=/dev/null
   -o APT::Architecture=arm64 -o APT::Architectures=arm64 -o Debug::NoLocking=1)
t0=$(date +%s)
if [ ! -f "$CACHE/Image" ] || [ ! -f "$CACHE/rootfs.stamp" ]; then
    apt-get "${A[@]}" update >/dev/null 2>&1 || { say "apt-get update (arm64) failed"; exit 2; }
    KPKG=$(apt-cache "${A[@]}" search --names-only '^linux-image-6\.1\.0-[0-9]+-cloud-arm64$' | awk '{print $1}' | sort -t- -k4,4n | tail -n1)
    [ -n "$KPKG" ] || { say "no linux-image-6.1.0-*-cloud-arm64 package"; exit 2; }
    apt-get "${A[@]}" install --download-only -y --no-install-recommends "$KPKG" iproute2 iptables conntrack \
        busybox-static kmod >/dev/null 2>&1 || { say "apt-get download (arm64) failed"; exit 2; }
    rm -rf "$CACHE/rootfs"; mkdir -p "$CACHE/rootfs"
    for d in "$CACHE"/apt/cache/archives/*.deb; do dpkg-deb -x "$d" "$CACHE/rootfs"; done
    rel=${KPKG#linux-image-}
    mv "$CACHE/rootfs/boot/vmlinuz-$rel" "$CACHE/Image"
    rm -rf "$CACHE/rootfs/boot" "$CACHE"/rootfs/usr/share/{doc,man,locale,zoneinfo,initramfs-tools}
    # What the iptables package's postinst (update-alternatives) would make.
    for t in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
        ln -sf xtables-nft-multi "$CACHE/rootfs/usr/sbin/$t"
    done
    depmod -b "$CACHE/rootfs" "$rel"
    echo "$rel" > "$CACHE/rootfs.stamp"
fi
R=$CACHE/rootfs
mkdir -p "$R"/{proc,sys,dev,run,tmp,etc,usr/local/bin}
install -m 0755 "$BIN" "$R/usr/local/bin/swarmtrace"
install -m 0755 "$ROOT/vm/arm64/init" "$R/init"
(cd "$R" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) > "$CACHE/initrd.gz"
say "kernel $(cat "$CACHE/rootfs.stamp"), initramfs $(du -h "$CACHE/initrd.gz" | cut -f1) in $(( $(date +%s) - t0 )) s"
t1=$(date +%s)
# A fresh log: `tail -f` below must not print the previous run's.
rm -f "$CACHE/serial.log"
: > "$CACHE/serial.log"
timeout "${SWARMTRACE_ARM64_TIMEOUT:-1800}" qemu-system-aarch64 -M virt -cpu max,pauth-impdef=on -smp 2 -m 2048 \
    -accel tcg,thread=multi -kernel "$CACHE/Image" -initrd "$CACHE/initrd.gz" \
    -append "console=ttyAMA0 rdinit=/init panic=-1 quiet loglevel=5 softlockup_panic=1" \
    -nic none -display none -monitor none -no-reboot -serial "file:$CACHE/serial.log" </dev/null &
QPID=$!
trap 'kill $QPID 2>/dev/null' EXIT INT TERM
tail -n +1 --pid=$QPID -f "$CACHE/serial.log" 2>/dev/null | sed -u 's/^/[arm64] /'
wait $QPID
say "guest ran $(( $(date +%s) - t1 )) s"
line=$(grep -a 'SWARMTRACE-RESULT' "$CACHE/serial.log" | tail -n1)
[ -n "$line" ] || { say "no result from the guest"; exit 1; }
echo "$line"
case "$line" in *status=pass*) exit 0 ;; *) exit 1 ;; esac
