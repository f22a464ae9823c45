#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what it needs, then the style gates and
# every test of every crate. Run as root: the end-to-end tests create network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --all-features -- -D warnings
cargo test --workspace --all-features
