#!/usr/bin/env bash
# Make sure Debian's Chromium is at /usr/bin/chromium for the web console's browser tests.
#
# Idempotent: does nothing when it is already there. Runs `apt-get update` only when the
# package lists do not know chromium yet. Never uses `playwright install`: that downloads a
# browser build of its own, which this project's machines cannot fetch.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
    echo "ensure_chromium: $CHROMIUM present ($("$CHROMIUM" --version 2>/dev/null || echo 'version unknown'))"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_chromium: $CHROMIUM is missing and this system has no apt-get;" \
         "install a Chromium at $CHROMIUM by hand" >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "ensure_chromium: $CHROMIUM is missing; installing it needs root." \
             "Run: sudo apt-get update && sudo apt-get install -y chromium" >&2
        exit 1
    fi
fi

# apt-cache knows a package only once the lists are there; update them only if it does not.
candidate="$(apt-cache policy chromium 2>/dev/null | awk '/Candidate:/ {print $2}')"
if [ -z "$candidate" ] || [ "$candidate" = "(none)" ]; then
    echo "ensure_chromium: package lists do not know chromium yet: running apt-get update"
    $SUDO apt-get update -q || {
        echo "ensure_chromium: apt-get update failed; cannot install chromium" >&2
        exit 1
    }
fi

echo "ensure_chromium: installing Debian's chromium with apt-get"
if ! DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends chromium; then
    echo "ensure_chromium: apt-get install chromium failed (see above)" >&2
    exit 1
fi

if [ ! -x "$CHROMIUM" ]; then
    echo "ensure_chromium: chromium installed but $CHROMIUM is not there; check the package" >&2
    exit 1
fi
echo "ensure_chromium: installed $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
