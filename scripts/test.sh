#!/usr/bin/env bash
# The one test entry point (README, .ci/run): quality gates, then every test.
# Works on a fresh Debian machine as root: installs the servers tests need, and the
# tests start and stop their own servers on free 127.0.0.1 ports.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "servers (redis-server, redis-cli, valkey)"
# shellcheck source=scripts/servers.sh
source scripts/servers.sh

step "servers (postgresql)"
# shellcheck source=scripts/postgres.sh
source scripts/postgres.sh

step "headless browser (chromium, for the storefront's dashboard test)"
# shellcheck source=scripts/chromium.sh
source scripts/chromium.sh

step "cargo fmt --all --check"
cargo fmt --all --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

# Unit, integration and doc tests of every crate (benches are built by clippy above
# and run with `cargo bench`, never here: performance lives in benchmarks).
step "cargo test --workspace"
cargo test --workspace
