#!/usr/bin/env bash
# The lab demo on a fresh Debian machine, as root: build podnet, then a node with four pods
# plumbed by the real CNI plugin, and the connectivity matrix. `--model bridge` and
# `--pods N` are passed through to `podnet lab up`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --locked -q -p podnet
cargo run --release --locked -q -p podnet -- lab down >/dev/null 2>&1 || true
cargo run --release --locked -q -p podnet -- lab up "$@"
