#!/usr/bin/env bash
# Installs the Debian packages kube-ipam's build, tests and demo use (libprotobuf-dev carries the
# well-known .proto files etcd-client's build imports; protoc alone does not). Idempotent and quiet
# when everything is already there. strace makes the exact crash points of the fault sweep;
# sqlite3 holds the embedded store's write lock in the deadline test; containerd drives kube-ipam
# over CRI in tests/containerd.rs.
set -euo pipefail

packages=(etcd-server etcd-client containernetworking-plugins protobuf-compiler libprotobuf-dev iproute2 iputils-ping openssl hyperfine podman runc busybox-static containerd prometheus strace sqlite3)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
