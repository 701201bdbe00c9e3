#!/usr/bin/env bash
# Installs everything skiff's build, demo and tests need on a fresh Debian machine, then
# checks what it cannot install (root, overlayfs, the pinned Rust toolchain, kubectl
# 1.27…1.33) and says what to do about each thing missing. Idempotent: installs only what
# is missing, and runs apt-get update only then.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: run as root (sudo $0): it installs Debian packages, and skiff's tests create" >&2
  echo "       namespaces, cgroups, mounts and network devices" >&2
  exit 1
fi

PACKAGES=(
  curl            # the API server tests talk HTTPS with client certificates through it
  build-essential # a C toolchain: cc links skiff and builds ring, zstd and zlib-rs's C parts
  runc            # differential tests and the runtime benchmark's peer
  busybox-static  # root filesystems for test and demo containers
  iproute2        # ip netns for namespace tests
  nftables        # nft: the pod network and the service proxy apply their rules through `nft -j`
  wrk             # skiff bench net: request rate through a ClusterIP and straight to a pod
  procps          # ps for `skiff runtime ps`
  hyperfine       # benchmarks
  skopeo          # image interop tests: reads what skiff saves, writes what it loads
  umoci           # image interop tests: builds test images, reference unpack
  docker-registry # registry tests and benchmark: distribution, the reference peer
  apache2-utils   # htpasswd -B for registry auth tests
  openssl         # self-signed certificates for registry and etcd TLS tests
  etcd-server     # the store's etcd backend tests and the store benchmark's peer
  protobuf-compiler libprotobuf-dev  # protoc and its well-known protos, to build etcd-client
  python3-venv    # the venv of the official Python kubernetes client (API server tests)
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [[ " ${missing[*]} " == *" docker-registry "* ]] && command -v systemctl >/dev/null; then
    # The package enables a registry on :5000 (skiff's default port); tests and the
    # benchmark start their own on free ports.
    systemctl disable --now docker-registry >/dev/null 2>&1 || true
  fi
fi

# The official Python `kubernetes` client for the API server tests (Debian's
# python3-kubernetes is too old), in its own venv so the system Python stays as it is.
VENV=/opt/skiff-venv
if ! "$VENV/bin/python" -c 'import kubernetes' >/dev/null 2>&1; then
  echo "setup: installing the Python kubernetes client into $VENV"
  /usr/bin/python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q 'kubernetes>=31'
fi

# What cannot be installed from here: collected, then reported together.
problems=()

# The toolchain rust-toolchain.toml pins (what CI builds, lints and formats with).
TOOLCHAIN=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
if command -v rustup >/dev/null && ! rustup toolchain list | grep -q "^$TOOLCHAIN"; then
  # A toolchain of exactly that version installed under another name (stable) serves as
  # is: linked under the pinned name, so nothing is downloaded (machines without access
  # to static.rust-lang.org build too).
  RUSTUP_DIR=${RUSTUP_HOME:-$HOME/.rustup}
  for t in $(rustup toolchain list | awk '{print $1}'); do
    v=$(RUSTUP_TOOLCHAIN=$t rustc --version 2>/dev/null | awk '{print $2}')
    host=$(RUSTUP_TOOLCHAIN=$t rustc -vV 2>/dev/null | sed -n 's/^host: //p')
    if [ "$v" = "$TOOLCHAIN" ] && [ -n "$host" ] && [ -d "$RUSTUP_DIR/toolchains/$t" ]; then
      echo "setup: using the installed $t (rustc $v) as the pinned toolchain $TOOLCHAIN"
      ln -sfn "$RUSTUP_DIR/toolchains/$t" "$RUSTUP_DIR/toolchains/$TOOLCHAIN-$host"
      break
    fi
  done
fi
if ! command -v rustup >/dev/null; then
  problems+=("rustup not found: install rustup (https://rustup.rs), then
    rustup toolchain install $TOOLCHAIN --component rustfmt,clippy")
elif ! rustup toolchain list | grep -q "^$TOOLCHAIN"; then
  problems+=("Rust $TOOLCHAIN (pinned in rust-toolchain.toml) is not installed:
    rustup toolchain install $TOOLCHAIN --component rustfmt,clippy")
else
  for c in rustfmt clippy; do
    rustup component list --toolchain "$TOOLCHAIN" --installed 2>/dev/null | grep -q "^$c" ||
      problems+=("the $c component of Rust $TOOLCHAIN is missing:
    rustup component add --toolchain $TOOLCHAIN $c")
  done
fi

# overlayfs: image snapshots and `skiff run` mount overlays.
if ! grep -qw overlay /proc/filesystems; then
  modprobe overlay 2>/dev/null || true
  grep -qw overlay /proc/filesystems ||
    problems+=("the kernel has no overlay filesystem (not in /proc/filesystems, modprobe overlay failed):
    boot a kernel with CONFIG_OVERLAY_FS, or install its modules package and run modprobe overlay")
fi

# kubectl: the API server tests run kubectl.1.NN from the directory of the kubectl on PATH
# (after symlinks), else the kubectl on PATH when it is that version (tests/apiserver/common.rs).
KUBECTL_VERSIONS=(1.27 1.28 1.29 1.30 1.31 1.32 1.33)
if ! command -v kubectl >/dev/null; then
  problems+=("kubectl not found on PATH: install kubectl, and beside it (after symlinks) the official
    release binaries of v${KUBECTL_VERSIONS[0]} … v${KUBECTL_VERSIONS[-1]} named kubectl.1.NN")
else
  kdir=$(dirname "$(readlink -f "$(command -v kubectl)")")
  minor=$(kubectl version --client -o json 2>/dev/null | sed -n 's/.*"minor": *"\([0-9]*\).*/\1/p' | head -n1)
  for v in "${KUBECTL_VERSIONS[@]}"; do
    [ -x "$kdir/kubectl.$v" ] && continue
    [ "1.$minor" = "$v" ] && continue
    problems+=("kubectl $v not found: neither $kdir/kubectl.$v nor the kubectl on PATH (1.${minor:-?}):
    put the official kubectl v$v.x release binary at $kdir/kubectl.$v (chmod +x)")
  done
fi

command -v cargo >/dev/null || problems+=("cargo not found on PATH: install the Rust toolchain above")
if [ ${#problems[@]} -eq 0 ] && ! cargo nextest --version >/dev/null 2>&1; then
  echo "setup: installing cargo-nextest"
  cargo install --locked cargo-nextest >/dev/null
fi

if [ ${#problems[@]} -gt 0 ]; then
  echo "setup: ${#problems[@]} thing(s) this script cannot install:" >&2
  for p in "${problems[@]}"; do
    echo "  - $p" >&2
  done
  exit 1
fi
