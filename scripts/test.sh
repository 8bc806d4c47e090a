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

# Every crate's files import one way (no circle among files or top-level modules).
step "module graphs (scripts/module-graph.py, every crate)"
if ! command -v python3 >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-minimal >/dev/null
fi
for crate in crates/*/; do
  python3 scripts/module-graph.py "${crate%/}"
done

step "cargo fmt --all --check"
cargo fmt --all --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

# Every intra-doc link resolves and no rustdoc lint fires, in the docs a user reads.
step "cargo doc --no-deps --workspace (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace

# The crates with default features also build without them (no TLS stack, no macros).
step "cargo check --no-default-features (partcache, partcache-redis)"
cargo check -p partcache -p partcache-redis --no-default-features --lib

# Unit, integration and doc tests of every crate (benches are built by clippy above
# and run with `cargo bench`, never here: performance lives in benchmarks). Each crate
# has one integration-test binary, `tests/it`, with a module per area: a failed test's
# name starts with its module (`store::…`), and
# `cargo test -p partcache-redis --test it store::` runs that module alone.
# --no-fail-fast: one failing test binary does not hide the others' results. The output
# is kept so that the failures can be listed together at the end.
step "cargo test --workspace --no-fail-fast"
log=$(mktemp -t partcache-test.XXXXXX)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --no-fail-fast 2>&1 | tee "$log" || status=$?

step "summary"
# libtest prints `test <name> ... FAILED` per failed test (doc tests included), and cargo
# prints `error: test failed, to rerun pass …` per failed binary: together they say what
# failed and where. A binary that fails without a FAILED line (a crash, a build error)
# still shows up through cargo's line.
failed=$(grep -E '^test .* \.\.\. FAILED$' "$log" | sed -E 's/^test (.*) \.\.\. FAILED$/  \1/' | sort -u || true)
binaries=$(grep -E '^error: (test failed|[0-9]+ targets failed)|^    `-p ' "$log" || true)
if [ "$status" -eq 0 ]; then
  printf 'all tests passed (%s test results)\n' "$(grep -c '^test result: ok' "$log")"
else
  printf 'FAILED tests:\n%s\n' "${failed:-  (no single test reported FAILED: see the binaries below)}"
  printf '\nfailed binaries (rerun with the `-p … --test …` shown, then a test\nname or a module, e.g. `--test it store::`):\n%s\n' "$binaries"
fi
exit "$status"
