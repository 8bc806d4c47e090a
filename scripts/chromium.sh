#!/usr/bin/env bash
# Make headless Chromium available for the storefront's browser test
# (examples/storefront/tests/it/browser.rs loads /admin/caches in it).
#
# Usage:
#   source scripts/chromium.sh   # also exports CHROMIUM (the binary the test runs)
#   bash scripts/chromium.sh     # same work; the test looks for /usr/bin/chromium anyway
#
# What it does (idempotent): if /usr/bin/chromium is missing, runs `apt-get update` and
# `apt-get install -y chromium` non-interactively (Debian's package; needs root or
# passwordless sudo). A failure is an error: under CI=true the browser test fails
# without the browser, and says so.
#
# Never exits the caller's shell and never changes its shell options when sourced.

_pc_chromium_main() {
    local bin=/usr/bin/chromium sudo=""
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
        sudo="sudo -n"
    fi
    if [ ! -x "$bin" ]; then
        echo "chromium.sh: $bin missing; installing the Debian package chromium"
        if ! command -v apt-get >/dev/null 2>&1; then
            echo "ERROR: chromium.sh: apt-get not found; install Chromium by hand and set CHROMIUM" >&2
            return 1
        fi
        local rc=0
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq || rc=$?
        if [ "$rc" -eq 0 ]; then
            $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || rc=$?
        fi
        if [ "$rc" -ne 0 ] || [ ! -x "$bin" ]; then
            echo "ERROR: chromium.sh: apt-get install chromium failed (rc=$rc)" >&2
            return 1
        fi
    fi
    export CHROMIUM="$bin"
    echo "chromium.sh: $("$bin" --version 2>/dev/null | head -n1) at $bin"
}

_pc_chromium_main "$@"
_pc_chromium_rc=$?
unset -f _pc_chromium_main
# shellcheck disable=SC2317
return "$_pc_chromium_rc" 2>/dev/null || exit "$_pc_chromium_rc"
