#!/usr/bin/env bash
# Installs everything skiff's build, demo and tests need on a fresh Debian machine.
# Idempotent: installs only what is missing, and runs apt-get update only then.
set -euo pipefail

PACKAGES=(
  runc            # differential tests and the runtime benchmark's peer
  busybox-static  # root filesystems for test and demo containers
  iproute2        # ip netns for namespace tests
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

command -v cargo >/dev/null || { echo "setup: cargo not found; install a Rust toolchain (rustup) first" >&2; exit 1; }
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "setup: installing cargo-nextest"
  cargo install --locked cargo-nextest >/dev/null
fi
