#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what it needs, then the style gates and
# every test of every crate, then a short run of every fuzz target (FUZZ_SECONDS each, 30 by
# default). Run as root: the end-to-end tests create network namespaces and mounts.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
cargo clippy --workspace --all-targets --all-features -- -D warnings
cargo test --workspace --all-features
FUZZ_SECONDS=${FUZZ_SECONDS:-30} scripts/fuzz.sh
