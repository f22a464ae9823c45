#!/usr/bin/env bash
# The collector's endpoint at scale: a /12 holding 150,000 addresses on a private etcd, then
# 50 whole HTTP GETs of /metrics (connect to last byte), with min/median/max, and the time of
# the pass that reads the figures. Run as root from anywhere:
#
#   scripts/bench-metrics.sh             # 150,000 held
#   HELD=1000000 scripts/bench-metrics.sh
set -euo pipefail

cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --features testing --bin kube-ipam --example metrics_scale
KUBE_IPAM_BIN=$PWD/target/release/kube-ipam target/release/examples/metrics_scale
