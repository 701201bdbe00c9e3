#!/usr/bin/env bash
# skiff's main job: a cluster you can point kubectl at: `skiff server` (API server +
# embedded state store, scheduler, controller manager) with its local agent, so this
# machine is a node that runs pods as containers.
# Data in ${SKIFF_DATA_DIR:-/var/lib/skiff}; API on ${SKIFF_LISTEN:-127.0.0.1:6443}.
# Ctrl-C stops it; the state stays for the next start.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --release -q
data=${SKIFF_DATA_DIR:-/var/lib/skiff}
listen=${SKIFF_LISTEN:-127.0.0.1:6443}
cat <<MSG
skiff server: API on https://$listen, data in $data.
In another shell:
  export KUBECONFIG=$data/kubeconfig.yaml
  kubectl get nodes
  ./target/release/skiff registry serve --listen 127.0.0.1:5000 --data-dir /tmp/skiff-registry &
  cp /bin/busybox examples/kubia/ && ./target/release/skiff image build -t 127.0.0.1:5000/kubia:1 examples/kubia
  ./target/release/skiff image push 127.0.0.1:5000/kubia:1
  kubectl create deployment web --image=127.0.0.1:5000/kubia:1 --replicas=2 && kubectl get pods -o wide
  kubectl exec deploy/web -- hostname; kubectl port-forward deploy/web 8080:8080 & curl 127.0.0.1:8080
After Ctrl-C the pods keep running; the next start adopts them
(./target/release/skiff server --clean --data-dir $data stops them).
MSG
exec ./target/release/skiff server --data-dir "$data" --listen "$listen"
