#!/usr/bin/env bash
# Installs what podnet's tests, lab and benchmark need on Debian (run as root).
# The product itself needs none of these: it talks to the kernel over netlink.
# iproute2, iptables, nftables and iputils-ping are the tests' cross-check tools;
# containernetworking-plugins are the reference plugins we compare against;
# etcd-server is the real etcd the etcd-backend tests and `lab up --store etcd` run;
# iperf3 and curl are load and probe tools of the benchmarks and tests.
# graphviz renders `podnet lab graph` (the DOT text is printed without it).
# bird2 is the BGP speaker the agent runs for `backend: bgp`; frr is the lab's top-of-rack router.
set -euo pipefail
packages=(iproute2 iptables nftables iputils-ping containernetworking-plugins etcd-server iperf3 curl graphviz bird2 frr)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
if ! command -v cargo >/dev/null; then
    echo "podnet needs a Rust toolchain (stable, 1.82 or newer; rustup recommended)" >&2
    exit 1
fi
