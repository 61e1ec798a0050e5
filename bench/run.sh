#!/usr/bin/env bash
# Reproduces bench/RESULTS.md: podnet vs the reference CNI plugins, side by side in one run.
# Needs root and Debian's containernetworking-plugins (installed here if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x /usr/lib/cni/bridge ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq containernetworking-plugins
fi
# podnet-bench runs the podnet binary built next to it.
cargo build --release --locked -q -p podnet -p podnet-bench
exec cargo run --release --locked -q -p podnet-bench
