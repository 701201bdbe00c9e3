#!/usr/bin/env bash
# skiff's main job: a cluster you can point kubectl at. Today that is the control plane
# (`skiff server`: API server + embedded state store, scheduler, controller manager); the
# node agent comes later (until then `skiff hollow-nodes` gives fake nodes to run pods on).
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
  kubectl get namespaces
  ./target/release/skiff hollow-nodes --kubeconfig $data/kubeconfig.yaml --count 3 &   # fake nodes
  kubectl create deployment web --image=kubia:1 --replicas=2 && kubectl get deploy,rs,pods -o wide
  kubectl set image deploy/web kubia=kubia:2 && kubectl rollout status deploy/web
MSG
exec ./target/release/skiff server --data-dir "$data" --listen "$listen" --disable-agent
