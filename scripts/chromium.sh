#!/usr/bin/env bash
# Headless Chromium, for the dashboard test (crates/tidewater/tests/dashboard.rs) and for
# screenshots of the dashboard.
#
#   scripts/chromium.sh install   # installs Debian's `chromium` package when it is missing
#   scripts/chromium.sh path      # prints the binary's path (fails when there is none)
#
# The binary is `$CHROMIUM` when that is set, else `chromium` on PATH — the same lookup as
# the test. `install` does nothing when it is already there; otherwise it installs the
# package with apt-get, non-interactively, through sudo only when not running as root.
set -euo pipefail
source "$(dirname "$0")/common.sh"

usage() {
    echo "usage: $0 install | $0 path" >&2
    exit 2
}

find_binary() {
    if [[ -n "${CHROMIUM:-}" ]]; then
        command -v "$CHROMIUM" || return 1
    else
        command -v chromium || return 1
    fi
}

as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@"
    else
        sudo "$@"
    fi
}

install_missing() {
    if find_binary >/dev/null; then
        return
    fi
    echo "installing chromium" >&2
    # sudo does not keep the environment by default, so the setting travels as an argument.
    local apt=(env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium)
    # As in postgres.sh, the package lists are refreshed only when the install fails: on a
    # warm image they are current and `apt-get update` would cost a network round trip.
    if ! as_root "${apt[@]}" >&2; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update >&2
        as_root "${apt[@]}" >&2
    fi
    find_binary >/dev/null || { echo "chromium installed, but no \`chromium\` on PATH" >&2; exit 1; }
}

path() {
    find_binary || { echo "no chromium; run \`$0 install\`" >&2; exit 1; }
}

cmd=${1:-}
[[ -n "$cmd" ]] || usage
shift
case "$cmd" in
    install) install_missing ;;
    path) path ;;
    *) usage ;;
esac
