#!/usr/bin/env bash
# The walkthroughs on one machine: simulated nodes, the stand-in Kubernetes API, pods as
# network namespaces with eth0 on a pod network and net1 on a macvlan database network whose
# addresses come from kube-ipam. Prints a table of pods, nodes, interfaces and addresses.
#   scripts/walkthrough.sh          embedded store
#   scripts/walkthrough.sh --etcd   a local etcd started for the run
# Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

store=embedded
case "${1:-}" in
    "") ;;
    --etcd) store=etcd ;;
    *) echo "usage: $0 [--etcd]" >&2; exit 2 ;;
esac

scripts/install-deps.sh
KUBE_IPAM_WALKTHROUGH_STORE=$store cargo test --quiet --features testing --test walkthrough \
    -- --nocapture --test-threads=1 fixed_ip_survives_rescheduling statefulset_pool fixed_ip_leaves_a_lost_node layered_network 2>&1 |
    grep -v -e '^running ' -e '^test result' -e '^$' -e '^\.$'
