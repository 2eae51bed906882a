#!/usr/bin/env bash
# Installs what swarmtrace needs to build its kernel programs and run its tests.
# Idempotent: every step checks first and skips what is already there.
set -euo pipefail

LLVM_MAJOR=22
BPF_LINKER_VERSION=0.13.0
LLVM_PREFIX="/usr/lib/llvm-${LLVM_MAJOR}"
APT_PACKAGES=(
  "llvm-${LLVM_MAJOR}-dev" "libpolly-${LLVM_MAJOR}-dev" libzstd-dev zlib1g-dev
  iproute2 iptables nftables conntrack tshark python3 ethtool
  docker.io busybox-static tmux prometheus libcap2-bin
)

say() { printf 'setup: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

if [ "$(id -u)" -ne 0 ]; then
  die "run as root (the packages go into the system and the tests need CAP_BPF and CAP_NET_ADMIN)"
fi

export PATH="$HOME/.cargo/bin:$PATH"
command -v rustup >/dev/null || die "rustup not found: install it from https://rustup.rs, then rerun"

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if ! command -v apt-get >/dev/null; then
    die "no apt-get on this system: install the equivalents of ${missing[*]} (LLVM ${LLVM_MAJOR} with its development files and Polly, zstd and zlib headers, iproute2, iptables/nftables, conntrack, tshark), then rerun"
  fi
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # tshark asks whether non-root users may capture; answer no without a prompt.
  echo 'wireshark-common wireshark-common/install-setuid boolean false' | debconf-set-selections 2>/dev/null || true
  if ! apt-get install -y --no-install-recommends "${missing[@]}" >/tmp/swarmtrace-apt.log 2>&1; then
    apt-get update >>/tmp/swarmtrace-apt.log 2>&1 || true
    apt-get install -y --no-install-recommends "${missing[@]}" >>/tmp/swarmtrace-apt.log 2>&1 \
      || { tail -20 /tmp/swarmtrace-apt.log >&2; die "apt-get install failed (log: /tmp/swarmtrace-apt.log)"; }
  fi
  # Only promtool is wanted from these: do not leave a Prometheus server or a Docker daemon
  # running that this script started (a user's own ones were installed already, so untouched).
  for svc in prometheus docker docker.socket; do
    case " ${missing[*]} " in
      *" prometheus "*|*" docker.io "*) systemctl disable --now "$svc" >/dev/null 2>&1 || true ;;
    esac
  done
else
  say "system packages present"
fi

if ! rustup toolchain list | grep -q '^nightly'; then
  say "installing the nightly toolchain"
  rustup toolchain install nightly --profile minimal
fi
if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
  say "adding rust-src to nightly"
  rustup component add rust-src --toolchain nightly
else
  say "nightly rust-src present"
fi
for c in rustfmt clippy; do
  rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
done
# The kernel crate is checked with nightly clippy.
rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^clippy' \
  || rustup component add clippy --toolchain nightly

# The fuzz targets (cargo xtask fuzz).
if ! cargo fuzz --version >/dev/null 2>&1; then
  say "installing cargo-fuzz"
  cargo install cargo-fuzz --locked --version 0.13.2
fi

if command -v bpf-linker >/dev/null && bpf-linker --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"; then
  say "bpf-linker $BPF_LINKER_VERSION present"
else
  say "building bpf-linker $BPF_LINKER_VERSION against LLVM $LLVM_MAJOR (a few minutes)"
  LLVM_PREFIX="$LLVM_PREFIX" cargo install bpf-linker --locked --version "$BPF_LINKER_VERSION" \
    --no-default-features --features "llvm-${LLVM_MAJOR}" --force
fi

# tracefs is where the kernel describes its tracepoints; mount it if the system has not.
if [ ! -e /sys/kernel/tracing/events ] && [ -d /sys/kernel/tracing ]; then
  mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || say "warning: could not mount tracefs"
fi
say "done"
