#!/usr/bin/env bash
# kube-ipam on one node, for real: "pods" are network namespaces wired by Debian's bridge
# plugin, which delegates IPAM to kube-ipam on the embedded store. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cargo build --release --quiet
install -D -m 0755 target/release/kube-ipam /opt/cni/bin/kube-ipam

work=$(mktemp -d /tmp/kube-ipam-demo.XXXXXX)
pods=(demo-pod-1 demo-pod-2 demo-pod-3)
cleanup() {
    for p in "${pods[@]}"; do
        del "$p" >/dev/null 2>&1 || true
        ip netns del "$p" 2>/dev/null || true
    done
    ip link del kipam-demo0 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/net.conf" <<CONF
{
  "cniVersion": "1.0.0",
  "name": "demo",
  "type": "bridge",
  "bridge": "kipam-demo0",
  "isGateway": true,
  "ipam": {
    "type": "kube-ipam",
    "subnet": "10.188.0.0/16",
    "fixedStart": "10.188.0.10",
    "fixedEnd": "10.188.0.255",
    "rangeStart": "10.188.1.0",
    "rangeEnd": "10.188.255.254",
    "gateway": "10.188.0.1",
    "routes": [{ "dst": "0.0.0.0/0" }],
    "dataDir": "$work/data",
    "logFile": "$work/kube-ipam.log"
  }
}
CONF

# The runtime's part: run the main plugin with the CNI environment and the config on stdin.
cni() { # verb pod container-id
    CNI_COMMAND=$1 CNI_CONTAINERID=$3 CNI_NETNS=/var/run/netns/$2 CNI_IFNAME=eth0 \
        CNI_PATH=/opt/cni/bin:/usr/lib/cni CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=$2" \
        /usr/lib/cni/bridge <"$work/net.conf"
}
add() {
    ip netns add "$1"
    local out
    out=$(cni ADD "$1" "$2") || { echo "ADD of $1 failed: $out" >&2; return 1; }
}
del() { cni DEL "$1" "${ids[$1]:-$1}"; }
addr() { ip netns exec "$1" ip -o -4 addr show dev eth0 | awk '{print $4}'; }

declare -A ids
for p in "${pods[@]}"; do
    ids[$p]="$p-$RANDOM"
    add "$p" "${ids[$p]}"
done
printf '%-12s %-22s %s\n' POD CONTAINER ADDRESS
for p in "${pods[@]}"; do printf '%-12s %-22s %s\n' "$p" "${ids[$p]}" "$(addr "$p")"; done

echo
echo "deleting demo-pod-2 and creating it again (new container id):"
old=$(addr demo-pod-2)
del demo-pod-2 && ip netns del demo-pod-2
ids[demo-pod-2]="demo-pod-2-$RANDOM"
add demo-pod-2 "${ids[demo-pod-2]}"
printf '%-12s %-22s %s (was %s)\n' demo-pod-2 "${ids[demo-pod-2]}" "$(addr demo-pod-2)" "$old"

echo
if ip netns exec demo-pod-1 ping -c 1 -W 3 "$(addr demo-pod-2 | cut -d/ -f1)" >/dev/null; then
    echo "demo-pod-1 reaches demo-pod-2"
else
    echo "demo-pod-1 cannot reach demo-pod-2" >&2
    exit 1
fi
echo "log: $(wc -l <"$work/kube-ipam.log") lines in $work/kube-ipam.log (removed on exit)"
