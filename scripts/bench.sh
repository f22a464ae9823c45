#!/usr/bin/env bash
# Whole-process benchmarks of kube-ipam, side by side with Debian's host-local and with the
# cost of one durable etcd write. Run as root from anywhere:
#
#   scripts/bench.sh                 # ~100 runs per measurement
#   RUNS=30 scripts/bench.sh         # quicker, noisier
#
# Everything lives in one temp dir (stores, logs, etcd data, hyperfine JSON), removed on exit
# together with the etcd this script starts. Set KEEP=1 to keep the dir for inspection.
set -euo pipefail

cd "$(dirname "$0")/.."
RUNS=${RUNS:-100}
WARMUP=${WARMUP:-10}
BIN=${BIN:-$PWD/target/release/kube-ipam}
HOST_LOCAL=${HOST_LOCAL:-/usr/lib/cni/host-local}

scripts/install-deps.sh
# GNU time gives peak RSS (-v); the shell keyword `time` does not.
if [ ! -x /usr/bin/time ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
fi
[ -x "$BIN" ] || cargo build --release

. scripts/lib/etcd.sh
scratch bench
start_etcd bench

# Network configs. Same subnet for every plugin so the work is comparable.
cat >"$T/embedded.json" <<EOF
{"cniVersion":"1.0.0","name":"bench","type":"bridge","ipam":{"type":"kube-ipam","subnet":"10.250.0.0/16","dataDir":"$T/data","logFile":"$T/log"}}
EOF
cat >"$T/etcd.json" <<EOF
{"cniVersion":"1.0.0","name":"bench","type":"bridge","ipam":{"type":"kube-ipam","subnet":"10.250.0.0/16","logFile":"$T/log-etcd","etcdConfig":{"etcdURL":"$ETCD_URL"}}}
EOF
cat >"$T/host-local.json" <<EOF
{"cniVersion":"1.0.0","name":"bench","type":"bridge","ipam":{"type":"host-local","subnet":"10.250.0.0/16","dataDir":"$T/hl"}}
EOF
echo '{"cniVersion":"1.1.0"}' >"$T/version.json"

# One wrapper for every measured command, so the shell's own cost is identical in each and
# cancels; running it with /bin/true as the "plugin" measures that cost (the floor): bash
# start-up plus two fork+exec of a trivial binary.
cat >"$T/run.sh" <<'EOF'
#!/bin/bash
# usage: run.sh PLUGIN CONFIG VERB...   runs PLUGIN once per VERB with CONFIG on stdin
set -e
plugin=$1 conf=$2; shift 2
export CNI_CONTAINERID=bench-0001 CNI_IFNAME=eth0 CNI_NETNS=/x CNI_PATH=/usr/lib/cni
for verb in "$@"; do CNI_COMMAND=$verb "$plugin" <"$conf" >/dev/null; done
EOF
R="bash $T/run.sh"

# The bare start-up run below takes CNI_COMMAND from here; run.sh sets it per call itself.
export CNI_COMMAND=VERSION

echo "== plugin cycles and start-up: hyperfine, $RUNS runs each, $WARMUP warm-up runs" >&2
# -N: hyperfine starts no shell of its own; run.sh is the only shell, the same in every row.
hyperfine -N --warmup "$WARMUP" --runs "$RUNS" --export-json "$T/plugins.json" \
    -n floor-2x-true           "$R /bin/true /dev/null ADD DEL" \
    -n kube-ipam-embedded      "$R $BIN $T/embedded.json ADD DEL" \
    -n host-local              "$R $HOST_LOCAL $T/host-local.json ADD DEL" \
    -n kube-ipam-etcd          "$R $BIN $T/etcd.json ADD DEL" \
    -n floor-1x-true           "$R /bin/true /dev/null VERSION" \
    -n kube-ipam-version       "$R $BIN $T/version.json VERSION" \
    -n kube-ipam-version-bare  "$BIN" >&2
# kube-ipam-version-bare: the binary alone, no wrapper, stdin empty (VERSION accepts that).

echo "== etcd floor: one durable write by etcdctl, and etcdctl's own start-up" >&2
hyperfine -N --warmup "$WARMUP" --runs "$RUNS" --export-json "$T/etcdctl.json" \
    -n etcdctl-put     "etcdctl --endpoints $ETCD_URL put /bench/k v" \
    -n etcdctl-version "etcdctl version" >&2
unset CNI_COMMAND

echo "== peak RSS: GNU time -v, 10 ADDs each (then DEL), max taken" >&2
peak_rss() { # PLUGIN CONFIG -> max "Maximum resident set size" in KiB over 10 ADDs
    local plugin=$1 conf=$2 max=0 kb i
    for i in $(seq 10); do
        kb=$(CNI_COMMAND=ADD CNI_CONTAINERID=rss-$i CNI_IFNAME=eth0 CNI_NETNS=/x CNI_PATH=/usr/lib/cni \
            /usr/bin/time -v "$plugin" <"$conf" 2>&1 >/dev/null | awk -F': ' '/Maximum resident/ {print $2}')
        [ "$kb" -gt "$max" ] && max=$kb
        CNI_COMMAND=DEL CNI_CONTAINERID=rss-$i CNI_IFNAME=eth0 CNI_NETNS=/x CNI_PATH=/usr/lib/cni \
            "$plugin" <"$conf" >/dev/null
    done
    echo "$max"
}
RSS_EMB=$(peak_rss "$BIN" "$T/embedded.json")
RSS_ETCD=$(peak_rss "$BIN" "$T/etcd.json")
RSS_HL=$(peak_rss "$HOST_LOCAL" "$T/host-local.json")

# The summary: medians from hyperfine's JSON, floors subtracted where stated.
python3 - "$T/plugins.json" "$T/etcdctl.json" "$RSS_EMB" "$RSS_ETCD" "$RSS_HL" <<'PY'
import json, sys
med = {}
for f in sys.argv[1:3]:
    for r in json.load(open(f))["results"]:
        med[r["command"]] = r["median"] * 1000  # ms
rss_emb, rss_etcd, rss_hl = map(int, sys.argv[3:6])
f2, f1 = med["floor-2x-true"], med["floor-1x-true"]
print()
print(f"{'measurement':26} {'median ms':>10} {'minus floor':>12}")
for name, floor in [("floor-2x-true", None), ("kube-ipam-embedded", f2), ("host-local", f2),
                    ("kube-ipam-etcd", f2), ("floor-1x-true", None), ("kube-ipam-version", f1),
                    ("kube-ipam-version-bare", None), ("etcdctl-put", None), ("etcdctl-version", None)]:
    extra = f"{med[name] - floor:12.3f}" if floor is not None else ""
    print(f"{name:26} {med[name]:10.3f} {extra}")
emb, hl, etcd, put = med["kube-ipam-embedded"], med["host-local"], med["kube-ipam-etcd"], med["etcdctl-put"]
print()
print(f"embedded / host-local, ADD+DEL:       raw {emb/hl:.2f}, floor-subtracted {(emb-f2)/(hl-f2):.2f}  (target <= 1.0)")
print(f"etcd ADD+DEL / (2 x etcdctl put):     raw {etcd/(2*put):.2f}, floor-subtracted {(etcd-f2)/(2*put):.2f}  (target <= 1.0)")
print(f"start-up (VERSION), ms:               bare {med['kube-ipam-version-bare']:.3f}, wrapper minus floor {med['kube-ipam-version']-f1:.3f}  (target < 2)")
print(f"peak RSS of one ADD, KiB:             embedded {rss_emb}, etcd {rss_etcd}, host-local {rss_hl}  (target < 15360)")
PY
