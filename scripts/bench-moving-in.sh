#!/usr/bin/env bash
# What the original plugin's records cost an ADD on etcd: ADD+DEL cycles of one container on a
# /24 with no used/ keys, and with 190 of its 253 addresses held by the original plugin (the
# first pick then usually loses, and the next one steers around the original's keys).
#
#   scripts/bench-moving-in.sh          # 100 runs each
#   RUNS=30 scripts/bench-moving-in.sh
set -euo pipefail

cd "$(dirname "$0")/.."
RUNS=${RUNS:-100}
WARMUP=${WARMUP:-10}
BIN=${BIN:-$PWD/target/release/kube-ipam}

scripts/install-deps.sh
[ -x "$BIN" ] || cargo build --release

. scripts/lib/etcd.sh
scratch moving-in
start_etcd moving-in

for net in clean original; do
    cat >"$T/$net.json" <<EOF2
{"cniVersion":"1.0.0","name":"bench-$net","type":"bridge","ipam":{"type":"kube-ipam","subnet":"10.250.0.0/24","logFile":"$T/log","etcdConfig":{"etcdURL":"$ETCD_URL"}}}
EOF2
done
# The original plugin's keys: 10.250.0.2 .. 10.250.0.191, one container each.
for i in $(seq 2 191); do
    etcdctl --endpoints "$ETCD_URL" put "/etcd-cni/networks/bench-original/used/10.250.0.$i" "old$i" >/dev/null
done

cat >"$T/run.sh" <<'EOF2'
#!/bin/bash
set -e
export CNI_CONTAINERID=bench-0001 CNI_IFNAME=eth0 CNI_NETNS=/x CNI_PATH=/usr/lib/cni
for verb in ADD DEL; do CNI_COMMAND=$verb "$1" <"$2" >/dev/null; done
EOF2

hyperfine -N --warmup "$WARMUP" --runs "$RUNS" \
    -n "ADD+DEL, no original keys" "bash $T/run.sh $BIN $T/clean.json" \
    -n "ADD+DEL, 190 of 253 held by the original" "bash $T/run.sh $BIN $T/original.json"

# Every ADD above was released by its DEL and none took an address the original holds.
held=$(etcdctl --endpoints "$ETCD_URL" get --prefix /kube-ipam/ --keys-only | grep -c . || true)
echo "kube-ipam records left: $held (want 0)"
