#!/usr/bin/env bash
# skiff's main job: a cluster you can point kubectl at: `skiff server` (API server +
# embedded state store, scheduler, controller manager, registry) with its local agent, so
# this machine is a node that runs pods as containers.
# Data in ${SKIFF_DATA_DIR:-/var/lib/skiff}; API on ${SKIFF_LISTEN:-127.0.0.1:6443}.
# Ctrl-C stops it; the state stays for the next start.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --release -q
data=${SKIFF_DATA_DIR:-/var/lib/skiff}
listen=${SKIFF_LISTEN:-127.0.0.1:6443}
cat <<MSG
skiff server: API on https://$listen, registry on 127.0.0.1:5000, data in $data.
When it says "ready", in another shell (README's Quickstart walks the whole story):
  export KUBECONFIG=$data/kubeconfig.yaml
  kubectl get nodes
  cp /bin/busybox examples/kubia/ && ./target/release/skiff image build -t 127.0.0.1:5000/kubia:v1 examples/kubia
  ./target/release/skiff image push 127.0.0.1:5000/kubia:v1
  kubectl apply -f examples/kubia/          # 3 kubia pods behind the Service kubia
  kubectl run client --image=127.0.0.1:5000/kubia:v1 --command -- sleep 3600
  kubectl exec client -- sh -c 'for i in 1 2 3 4 5 6; do wget -qO- http://kubia; done'
After Ctrl-C the pods keep running; the next start adopts them
(./target/release/skiff uninstall --data-dir $data stops and removes them; --purge also the data).
MSG
exec ./target/release/skiff server --data-dir "$data" --listen "$listen"
