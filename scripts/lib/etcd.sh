# Sourced by the bench scripts: a scratch directory and a private etcd on loopback, both
# removed when the script exits (KEEP=1 keeps the directory for a look afterwards).

# scratch NAME: sets T to a new temp dir and installs the exit cleanup.
scratch() {
    # mktemp paths have no spaces, which matters: hyperfine -N splits commands on whitespace.
    T=$(mktemp -d "/tmp/kube-ipam-$1.XXXXXX")
    ETCD_PID=
    trap cleanup EXIT
}

cleanup() {
    if [ -n "$ETCD_PID" ]; then kill "$ETCD_PID" 2>/dev/null || true; wait "$ETCD_PID" 2>/dev/null || true; fi
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $T" >&2; else rm -rf "$T"; fi
}

# Free loopback ports: bind port 0 and let the kernel choose.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_etcd NAME [ETCD ARGS...]: a one-member etcd with its data in $T; sets ETCD_URL and
# ETCD_PID and returns once it answers a health check.
start_etcd() {
    local cport pport
    cport=$(free_port); pport=$(free_port)
    ETCD_URL=http://127.0.0.1:$cport
    etcd --name "$1" --data-dir "$T/etcd" \
        --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
        --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
        --initial-cluster "$1=http://127.0.0.1:$pport" "${@:2}" >"$T/etcd.log" 2>&1 &
    ETCD_PID=$!
    export ETCDCTL_API=3
    for _ in $(seq 100); do
        etcdctl --endpoints "$ETCD_URL" endpoint health >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "etcd did not start; see $T/etcd.log" >&2; cat "$T/etcd.log" >&2; exit 1
}
