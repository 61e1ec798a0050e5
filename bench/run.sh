#!/usr/bin/env bash
# Reproduces bench/RESULTS.md, side by side with the anchors in one run:
#   bench/run.sh           both benchmarks
#   bench/run.sh cni       podnet vs the reference CNI plugins (ADD/DEL latency, pods/s)
#   bench/run.sh cluster   pod-to-pod across nodes vs a plain veth; route convergence, 10 nodes
#   bench/run.sh services  service proxy at 1k-100k services vs kube-proxy's iptables/nftables rulesets
#                          (PODNET_BENCH_SERVICES=1000,10000 picks the sizes)
#   bench/run.sh agent     the real agent on the embedded store and on etcd at 100k services: load,
#                          first full sync, memory, one change end to end (PODNET_BENCH_AGENT=10000,100000)
#   bench/run.sh policy    NetworkPolicy at 1,000 pods / 500 policies: change propagation to every
#                          node's kernel (p50, p95); connect latency and throughput with and without
#   bench/run.sh bgp       BGP (BIRD, FRR): pod-to-pod across segments vs VXLAN and a plain veth;
#                          a node joining and leaving, 10 nodes, mesh/reflectors/ToR beside host-gw
# Needs root; installs the reference plugins, etcd-server and iperf3 from Debian if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# podnet-bench runs the podnet binary built next to it.
cargo build --release --locked -q -p podnet -p podnet-bench
exec cargo run --release --locked -q -p podnet-bench -- "$@"
