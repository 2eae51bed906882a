#!/usr/bin/env bash
# What `cargo xtask dist` needs on top of scripts/setup.sh: the musl targets of the stable
# toolchain (aarch64 links with rust-lld, shipped with rustup, and the target's own musl
# objects: no C cross-compiler), file and binutils (readelf) for the static checks,
# busybox-static for the image, dpkg-deb for the packages, and qemu-user-static to run the
# arm64 binary here (--version, the man page, the completions). Idempotent.
set -euo pipefail
say() { printf 'setup-dist: %s\n' "$*" >&2; }
export PATH="$HOME/.cargo/bin:$PATH"
command -v rustup >/dev/null || { say "error: rustup not found (run scripts/setup.sh first)"; exit 1; }
for t in x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
  if ! rustup target list --installed | grep -qx "$t"; then
    say "rustup target add $t"
    rustup target add "$t"
  fi
done
missing=()
for p in file binutils busybox-static dpkg qemu-user-static; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || { say "error: run as root to install ${missing[*]}"; exit 1; }
  command -v apt-get >/dev/null || { say "error: no apt-get: install ${missing[*]}"; exit 1; }
  export DEBIAN_FRONTEND=noninteractive
  say "installing ${missing[*]}"
  apt-get install -y --no-install-recommends "${missing[@]}" >/tmp/swarmtrace-apt-dist.log 2>&1 || {
    apt-get update >>/tmp/swarmtrace-apt-dist.log 2>&1 || true
    apt-get install -y --no-install-recommends "${missing[@]}" >>/tmp/swarmtrace-apt-dist.log 2>&1 \
      || { tail -20 /tmp/swarmtrace-apt-dist.log >&2; say "error: apt-get failed (log: /tmp/swarmtrace-apt-dist.log)"; exit 1; }
  }
fi
say "done"
