#!/usr/bin/env bash
# skiff's main job, for now: build skiff and run a container from an OCI bundle made of
# busybox-static and the default spec (`skiff runtime spec`, like `runc spec`).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --release -q
SKIFF=$PWD/target/release/skiff
bundle=$(mktemp -d /tmp/skiff-demo.XXXXXX)
trap 'rm -rf "$bundle"' EXIT
mkdir -p "$bundle/rootfs/bin"
cp /bin/busybox "$bundle/rootfs/bin/busybox"
for applet in sh ls cat echo hostname id ps; do ln -s busybox "$bundle/rootfs/bin/$applet"; done
(cd "$bundle" && "$SKIFF" runtime spec)
# Non-interactive: no terminal, and a command that shows the isolation.
python3 - "$bundle/config.json" <<'PY'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["process"]["terminal"] = False
c["process"]["args"] = ["sh", "-c", "echo \"hello from $(hostname), I am pid $$\"; ps; id"]
json.dump(c, open(p, "w"), indent=2)
PY
exec "$SKIFF" runtime --root /run/skiff/demo run -b "$bundle" "demo-$$"
