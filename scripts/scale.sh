#!/usr/bin/env bash
# Large subnets, full ranges, a million records: whole-process ADD (and DEL) at fill levels
# against an empty /24 in the same run, on etcd and on the embedded store, and the operator
# commands at 1,000,000 held addresses. Run as root from anywhere:
#
#   scripts/scale.sh              # 30 runs per point (RUNS=...), both stores
#   STORES=etcd scripts/scale.sh  # one store
#
# Stores are filled by `examples/fill.rs`, which writes address and owner records in the
# plugin's own format (and no hints, like a store written by an older version); every fill
# is checked with `kube-ipam check-store`. etcd is compacted and defragmented after the
# fills, as a long-running etcd would be. Five warm-up runs per point let the first searches
# write the hints a fill without them lacks. ONLY_BIG=1 runs only the /12 points (at 50, 90,
# 99 and 99.99 %, full, a range behind the full one, one free address) and the operator
# commands at a million held; ONLY_MISSED=1 the same and the /16 with one free address;
# SKIP_BIG=1 every point but the /12 ones and the commands at a million. The
# empty /24 is timed first and again just before each /12 point, and each point's "vs /24"
# is against the latest one before it: the store has grown by millions of records in between.
# Every network runs with `reuseDelay` REUSE_DELAY (seconds, 30 by default as in a config
# that leaves it out): each point's ADD after a DEL of the same attachment is a churn of
# releases that the delay must keep away from the address just released.
# Each point also gets pairwise ratios (`scripts/lib/pairwise.py`): its ADD and its DEL
# against the empty /24's, run in turn, which hold up on a loaded machine too.
# `gc` is run against a stand-in Kubernetes API that lists no pod (`examples/kube_api.rs`);
# the fill's records name no pod, so it reads and decodes every attachment and releases none.
set -euo pipefail

cd "$(dirname "$0")/.."
RUNS=${RUNS:-30}
REUSE_DELAY=${REUSE_DELAY:-30}
STORES=${STORES:-"etcd embedded"}
BIN=$PWD/target/release/kube-ipam
FILL=$PWD/target/release/examples/fill

scripts/install-deps.sh
if [ ! -x /usr/bin/time ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
fi
cargo build --release --all-features --bin kube-ipam --example fill --example kube_api
KUBE_API=$PWD/target/release/examples/kube_api

. scripts/lib/etcd.sh
scratch scale
# A million records and their history before compaction pass etcd's default 2 GiB quota.
start_etcd scale --quota-backend-bytes 8589934592
echo "etcd $ETCD_URL, scratch $T" >&2
# The API serves until this script's end closes the pipe on fd 9.
exec 9> >("$KUBE_API" "$T/kubeconfig")
for _ in $(seq 100); do [ -s "$T/kubeconfig" ] && break; sleep 0.1; done

# conf STORE NAME RANGES_JSON [TAG] -> path of a network config
conf() {
    local store=$1 name=$2 ranges=$3 tag=${4:-} backend
    if [ "$store" = etcd ]; then
        backend="\"etcdConfig\":{\"etcdURL\":\"$ETCD_URL\",\"requestTimeout\":60}"
    else
        backend="\"dataDir\":\"$T/data\""
    fi
    cat >"$T/$store-$name$tag.json" <<JSON
{"cniVersion":"1.0.0","name":"$name","type":"bridge","ipam":{"type":"kube-ipam","ranges":$ranges,"reuseDelay":$REUSE_DELAY,"logFile":"$T/log",$backend}}
JSON
    echo "$T/$store-$name$tag.json"
}

cat >"$T/run.sh" <<'SH'
#!/bin/bash
# usage: run.sh CONFIG VERB   one plugin call; a refused ADD (101) counts as a run too
export CNI_CONTAINERID=scale-0001 CNI_IFNAME=eth0 CNI_NETNS=/x CNI_PATH=/usr/lib/cni
CNI_COMMAND=$2 "$BIN" <"$1" >/dev/null || true
SH
cat >"$T/verb.sh" <<'SH'
#!/bin/bash
# usage: verb.sh VERB CONFIG   run.sh with its arguments the other way round, so that
# pairwise.py can append the config to its untimed step
bash "$(dirname "$0")/run.sh" "$2" "$1"
SH
export BIN

RESULTS=$T/results.tsv
: >"$RESULTS"

# pairwise STORE CONF: median wall ratios of an ADD (each after an untimed DEL), then of a
# DEL (each after an untimed ADD), on CONF to the same on the store's empty /24, the two run
# in turn, so that a load that drifts during the run, and a store grown by the fills since
# the /24 was timed alone, weigh on both alike.
pairwise() {
    local b24 verb other
    b24=$(conf "$1" b24 "$R24")
    for verb in ADD DEL; do
        other=DEL; [ "$verb" = DEL ] && other=ADD
        python3 scripts/lib/pairwise.py --quiet -n "$RUNS" --warmup 5 \
            --prepare "bash $T/verb.sh $other" \
            --vs "bash $T/verb.sh $verb $b24" -- bash "$T/verb.sh" "$verb" "$2"
    done | paste -sd' '
}

# point STORE LABEL CONF: ADD (each run after a DEL) and ADD+DEL, medians; peak RSS of an ADD;
# pairwise ratios against the empty /24, unless BASELINE=1 (the /24 itself, timed again).
point() {
    local store=$1 label=$2 c=$3 rss pair
    hyperfine -N --runs "$RUNS" --warmup 5 --export-json "$T/p.json" \
        --prepare "bash $T/run.sh $c DEL" -n add "bash $T/run.sh $c ADD" >/dev/null
    local add; add=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["results"][0]["median"]*1000)' "$T/p.json")
    bash "$T/run.sh" "$c" DEL
    hyperfine -N --runs "$RUNS" --warmup 5 --export-json "$T/d.json" \
        --prepare "bash $T/run.sh $c ADD" -n del "bash $T/run.sh $c DEL" >/dev/null
    local del; del=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["results"][0]["median"]*1000)' "$T/d.json")
    # A full range's ADD fails (101) by design; its peak memory counts all the same.
    rss=$(CNI_COMMAND=ADD CNI_CONTAINERID=scale-rss CNI_IFNAME=eth0 CNI_NETNS=/x CNI_PATH=/usr/lib/cni \
        /usr/bin/time -v "$BIN" <"$c" 2>&1 >/dev/null | awk -F': ' '/Maximum resident/ {print $2}' || true)
    CNI_COMMAND=DEL CNI_CONTAINERID=scale-rss CNI_IFNAME=eth0 CNI_NETNS=/x CNI_PATH=/usr/lib/cni "$BIN" <"$c" >/dev/null
    pair=-
    if [ "${BASELINE:-0}" != 1 ]; then pair=$(pairwise "$store" "$c"); fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$store" "$label" "$add" "$del" "$rss" "$pair" | tee -a "$RESULTS" >&2
}

# fill CONF MODE [N], then check-store
fill() {
    "$FILL" "$@"
    "$BIN" check-store --conf "$1" | tail -1 >&2
}

compact() {
    if [ "$1" = etcd ]; then
        local rev
        rev=$(etcdctl --endpoints "$ETCD_URL" endpoint status -w json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Status"]["header"]["revision"])')
        etcdctl --endpoints "$ETCD_URL" compact "$rev" >/dev/null
        etcdctl --endpoints "$ETCD_URL" --command-timeout=600s defrag >/dev/null
    fi
}

# op STORE LABEL CMD... : seconds and peak RSS of one operator command
op() {
    local store=$1 label=$2; shift 2
    local out rc=0
    /usr/bin/time -f '%e %M' -o "$T/time" "$@" >/dev/null 2>"$T/op.err" || rc=$?
    out=$(tail -1 "$T/time")
    # A failed command's time means nothing: say so in the table, with its last words.
    if [ "$rc" != 0 ]; then label="$label (FAILED, exit $rc)"; tail -3 "$T/op.err" >&2; fi
    printf '%s\top %s\t%s\t-\t%s\t-\n' "$store" "$label" "${out% *}" "${out#* }" | tee -a "$RESULTS" >&2
}

R24='[[{"subnet":"10.240.0.0/24"}]]'
R16='[[{"subnet":"10.241.0.0/16"}]]'
R16C='[[{"subnet":"10.242.0.0/16"}]]'
R12='[[{"subnet":"10.0.0.0/12"}]]'
R12_24='[[{"subnet":"10.0.0.0/12"},{"subnet":"10.243.0.0/24"}]]'
R8='[[{"subnet":"11.0.0.0/8"}]]'
R64='[[{"subnet":"fd00:244::/64"}]]'

for store in $STORES; do
    echo "== $store" >&2
    point "$store" "/24 empty" "$(conf "$store" b24 "$R24")"
    if [ "${ONLY_BIG:-0}" != 1 ] && [ "${ONLY_MISSED:-0}" != 1 ]; then
    # One network per point: fills add up, and each point is a fill of its own.
    for f in 500000 900000 990000; do
        c=$(conf "$store" "s16-$f" "$R16")
        fill "$c" spread $f; compact "$store"
        point "$store" "/16 at $((f / 10000)) %" "$c"
    done
    fi
    if [ "${ONLY_BIG:-0}" != 1 ]; then
    c=$(conf "$store" s16-one "$R16")
    fill "$c" one; compact "$store"
    point "$store" "/16 one free" "$c"
    fi
    if [ "${ONLY_BIG:-0}" != 1 ] && [ "${ONLY_MISSED:-0}" != 1 ]; then
    c=$(conf "$store" c16 "$R16C")
    fill "$c" cluster 999000; compact "$store"
    point "$store" "/16 at 99.9 %, free in one block" "$c"
    c=$(conf "$store" s8 "$R8"); fill "$c" count 150000; compact "$store"
    point "$store" "/8 with 150,000 held" "$c"
    c=$(conf "$store" s64 "$R64"); fill "$c" count 150000; compact "$store"
    point "$store" "/64 with 150,000 held" "$c"
    fi
    # One /12 filled further and further: a spread fill of more holds every address of a
    # smaller one, so the store grows by one /12, not one per point. Each /12 point gets its
    # own /24 timed just before it: the store holds up to millions of records more than when
    # the first was timed, and an etcd that has just taken half a million answers everything
    # slower for a while, DEL included.
    [ "${SKIP_BIG:-0}" = 1 ] && continue
    c=$(conf "$store" s12 "$R12")
    for f in 500000 900000 990000 999900; do
        fill "$c" spread $f; compact "$store"
        pct=$(python3 -c "print(f'{$f / 10000:g}')")
        BASELINE=1 point "$store" "/24 empty, beside the /12 at $pct %" "$(conf "$store" b24 "$R24")"
        point "$store" "/12 at $pct %" "$c"
    done
    fill "$c" full; compact "$store"
    BASELINE=1 point "$store" "/24 empty, beside the full /12" "$(conf "$store" b24 "$R24")"
    point "$store" "/12 full (ADD answers 101)" "$c"
    point "$store" "/24 behind a full /12" "$(conf "$store" s12 "$R12_24" -behind)"
    "$BIN" release --conf "$c" 10.7.7.7 >/dev/null
    BASELINE=1 point "$store" "/24 empty, beside the /12 with one free" "$(conf "$store" b24 "$R24")"
    point "$store" "/12 with one free address" "$c"
    # Operator commands at 1,048,573 held.
    op "$store" "ls --output json" "$BIN" ls --conf "$c" --output json
    op "$store" "ls | head" bash -c "'$BIN' ls --conf '$c' | head -1"
    op "$store" "usage" "$BIN" usage --conf "$c"
    op "$store" "show" "$BIN" show --conf "$c" 10.1.2.3
    op "$store" "check-store" "$BIN" check-store --conf "$c"
    op "$store" "gc --once" "$BIN" gc --conf "$c" --once --kubeconfig "$T/kubeconfig"
    op "$store" "release" "$BIN" release --conf "$c" 10.1.2.3
done

python3 - "$RESULTS" <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
# Each point against the latest empty /24 timed before it on the same store.
base, bdel = {}, {}
print()
print(f"{'store':9} {'case':42} {'ADD ms':>8} {'vs /24':>7} {'DEL ms':>8} {'vs /24':>7} {'RSS KiB':>8} {'pairwise ADD, DEL':>18}")
for store, label, add, dele, rss, pair in rows:
    if label.startswith("/24 empty"):
        base[store], bdel[store] = float(add), float(dele)
    if label.startswith("op "):
        print(f"{store:9} {label[3:]:42} {float(add):7.2f}s {'':>7} {'':>8} {'':>7} {rss:>8}")
        continue
    a, d = float(add), float(dele)
    print(f"{store:9} {label:42} {a:8.2f} {a/base[store]:6.2f}x {d:8.2f} {d/bdel[store]:6.2f}x {rss:>8} {pair:>18}")
PY
