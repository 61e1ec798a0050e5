#!/usr/bin/env bash
# The lab demo on a fresh Debian machine, as root: build podnet, then a 3-node cluster from
# examples/cluster.yaml (two L2 segments joined by a router; host-gw inside a segment, VXLAN
# across), an agent per node, two pods per node plumbed by the real CNI plugin, and the
# connectivity matrix. Arguments replace the cluster file, e.g.
#   scripts/demo.sh --nodes 4 --segments 2 --backend vxlan --store etcd
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --locked -q -p podnet
cargo run --release --locked -q -p podnet -- lab down >/dev/null 2>&1 || true
if [ "$#" -eq 0 ]; then
    set -- -f examples/cluster.yaml
fi
cargo run --release --locked -q -p podnet -- lab up "$@"
