#!/usr/bin/env bash
# An ADD storm on one etcd: N plugin processes started at once (default 500), spread over four
# simulated nodes, all drawing from one /22. Reports wall time, throughput, per-ADD latency
# (p50/p99), failures with their CNI error codes, and duplicate addresses (must be 0). Then
# DELs everything, also at once, and checks that etcd holds no kube-ipam key afterwards.
#
#   scripts/storm.sh            # as root
#   N=200 scripts/storm.sh
set -euo pipefail

cd "$(dirname "$0")/.."
N=${N:-500}
NODES=${NODES:-4}
BIN=${BIN:-$PWD/target/release/kube-ipam}

scripts/install-deps.sh
[ -x "$BIN" ] || cargo build --release
# Timestamps come from $EPOCHREALTIME so that timing a process forks nothing extra.
[ "${BASH_VERSINFO[0]}" -ge 5 ] || { echo "needs bash >= 5 for EPOCHREALTIME" >&2; exit 1; }

. scripts/lib/etcd.sh
scratch storm
start_etcd storm

cat >"$T/conf.json" <<EOF
{"cniVersion":"1.0.0","name":"storm","type":"bridge","ipam":{"type":"kube-ipam","subnet":"10.251.0.0/22","logFile":"$T/log","etcdConfig":{"etcdURL":"$ETCD_URL"}}}
EOF
mkdir -p "$T/add" "$T/del"
export CNI_IFNAME=eth0 CNI_NETNS=/x CNI_PATH=/usr/lib/cni

# One plugin call, timed from inside its own subshell: "rc start end" in DIR/i.time, the
# plugin's stdout in DIR/i.out. The subshell never fails, so `wait` collects everyone.
one() { # VERB DIR I
    local verb=$1 dir=$2 i=$3 t0 t1 rc=0
    t0=$EPOCHREALTIME
    CNI_COMMAND=$verb CNI_CONTAINERID=storm-$i KUBE_IPAM_NODE=node-$((i % NODES)) \
        "$BIN" <"$T/conf.json" >"$dir/$i.out" 2>"$dir/$i.err" || rc=$?
    t1=$EPOCHREALTIME
    echo "$rc $t0 $t1" >"$dir/$i.time"
}

# Launch all at once; wall time runs from the first launch to the last exit.
storm() { # VERB DIR -> prints wall seconds
    local verb=$1 dir=$2 t0 t1 i
    t0=$EPOCHREALTIME
    for i in $(seq "$N"); do one "$verb" "$dir" "$i" & done
    wait
    t1=$EPOCHREALTIME
    python3 -c "print(f'{$t1 - $t0:.3f}')"
}

echo "== $N ADDs at once on $NODES nodes, subnet 10.251.0.0/22, etcd $ETCD_URL" >&2
ADD_WALL=$(storm ADD "$T/add")
KEYS_AFTER_ADD=$(etcdctl --endpoints "$ETCD_URL" get --prefix /kube-ipam/ --keys-only | grep -c . || true)
echo "== $N DELs at once" >&2
DEL_WALL=$(storm DEL "$T/del")
KEYS_LEFT=$(etcdctl --endpoints "$ETCD_URL" get --prefix /kube-ipam/ --keys-only | grep -c . || true)

python3 - "$T" "$N" "$ADD_WALL" "$DEL_WALL" "$KEYS_AFTER_ADD" "$KEYS_LEFT" <<'PY'
import collections, json, os, sys
T, n, add_wall, del_wall, keys_after_add, keys_left = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])

def phase(d):
    lat, fails, addrs = [], collections.Counter(), []
    for i in range(1, n + 1):
        rc, t0, t1 = open(f"{T}/{d}/{i}.time").read().split()
        lat.append(float(t1) - float(t0))
        out = open(f"{T}/{d}/{i}.out").read()
        if rc != "0":
            try:
                j = json.loads(out); fails[f"exit {rc}, CNI code {j.get('code')}: {j.get('msg')}"] += 1
            except ValueError:
                fails[f"exit {rc}, no JSON: {out[:80]!r}"] += 1
        elif d == "add":
            addrs += [ip["address"] for ip in json.loads(out)["ips"]]
    lat.sort()
    pct = lambda p: lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1000
    return lat, pct, fails, addrs

for d, wall in (("add", add_wall), ("del", del_wall)):
    lat, pct, fails, addrs = phase(d)
    print(f"{d.upper()}: {n} processes, wall {wall:.3f} s, {n / wall:.0f} {d.upper()}s/s, "
          f"latency p50 {pct(50):.1f} ms, p99 {pct(99):.1f} ms, max {lat[-1]*1000:.1f} ms, "
          f"failures {sum(fails.values())}")
    for what, k in fails.most_common():
        print(f"    {k} x {what}")
    if d == "add":
        dup = sum(c - 1 for c in collections.Counter(addrs).values() if c > 1)
        print(f"    addresses handed out {len(addrs)}, distinct {len(set(addrs))}, duplicates {dup}")
        print(f"    etcd keys under /kube-ipam/ after ADD: {keys_after_add}")
print(f"etcd keys under /kube-ipam/ after DEL: {keys_left} (must be 0)")
PY
