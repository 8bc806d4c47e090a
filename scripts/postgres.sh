#!/usr/bin/env bash
# Make PostgreSQL server binaries available for partcache's integration tests
# (`partcache_integration_tests::postgres`, used by crates/partcache-sea-orm/tests).
#
# Usage:
#   source scripts/postgres.sh   # also exports PARTCACHE_PG_BIN (and adds it to PATH)
#   bash scripts/postgres.sh     # same work; the harness finds /usr/lib/postgresql/*/bin anyway
#
# What it does (idempotent):
#   1. If no `initdb`/`pg_ctl` under /usr/lib/postgresql/*/bin (or on PATH), runs
#      `apt-get update` once and `apt-get install -y postgresql` non-interactively
#      (needs root or passwordless sudo). The package's own cluster service is kept
#      from starting (policy-rc.d), and stopped again if it started anyway: tests
#      start their own servers on free ports in temp dirs.
#   2. Exports PARTCACHE_PG_BIN=<the newest version's bin dir>.
#
# Never exits the caller's shell and never changes its shell options when sourced.

_pc_postgres_bin() {
    local d best=""
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && best="$d"
    done
    if [ -z "$best" ] && command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        best="$(dirname "$(readlink -f "$(command -v initdb)")")"
    fi
    printf '%s' "$best"
}

_pc_postgres_main() {
    local sudo=""
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
        sudo="sudo -n"
    fi
    local bin
    bin="$(_pc_postgres_bin)"
    if [ -z "$bin" ]; then
        echo "postgres.sh: initdb/pg_ctl missing; installing the Debian package postgresql"
        if ! command -v apt-get >/dev/null 2>&1; then
            echo "ERROR: postgres.sh: apt-get not found; install PostgreSQL by hand or set PARTCACHE_PG_BIN" >&2
            return 1
        fi
        # A policy-rc.d that exits 101 keeps invoke-rc.d from starting the packaged cluster.
        local policy=/usr/sbin/policy-rc.d our_policy=0
        if [ ! -e "$policy" ]; then
            if printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null 2>&1 && $sudo chmod +x "$policy"; then
                our_policy=1
            fi
        fi
        local rc=0
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq || rc=$?
        if [ "$rc" -eq 0 ]; then
            $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null || rc=$?
        fi
        if [ "$our_policy" -eq 1 ]; then
            $sudo rm -f "$policy"
        fi
        if [ "$rc" -ne 0 ]; then
            echo "ERROR: postgres.sh: apt-get install postgresql failed ($rc)" >&2
            return "$rc"
        fi
        bin="$(_pc_postgres_bin)"
    fi
    # Whether it was just installed or came with the machine: the packaged cluster must
    # not keep running (the tests never use it).
    if command -v pg_lsclusters >/dev/null 2>&1; then
        local version cluster port status rest
        while read -r version cluster port status rest; do
            if [ "$status" = "online" ]; then
                echo "postgres.sh: stopping the packaged cluster $version/$cluster (port $port)"
                $sudo pg_ctlcluster "$version" "$cluster" stop >/dev/null 2>&1 || true
            fi
        done < <(pg_lsclusters --no-header 2>/dev/null)
    fi
    if [ -z "$bin" ]; then
        echo "ERROR: postgres.sh: PostgreSQL binaries still not found" >&2
        return 1
    fi
    export PARTCACHE_PG_BIN="$bin"
    case ":$PATH:" in
        *":$bin:"*) ;;
        *) export PATH="$bin:$PATH" ;;
    esac
    echo "postgres.sh: $("$bin/postgres" --version) in $bin"
}

_pc_postgres_main "$@"
_pc_postgres_rc=$?
unset -f _pc_postgres_main _pc_postgres_bin
# shellcheck disable=SC2317
return "$_pc_postgres_rc" 2>/dev/null || exit "$_pc_postgres_rc"
