#!/usr/bin/env bash
# Make sure the Debian tools the tests drive for real are installed:
#
#   - /usr/bin/chromium        (package chromium)    the web console's browser tests      required
#   - systemd-analyze          (package systemd)     `systemd-analyze verify` of the units required
#   - udevadm                  (package udev)        `udevadm test` of the serial udev rule optional
#   - shellcheck               (package shellcheck)  lint of deploy/*.sh                   optional
#
# Idempotent: does nothing when all are there. Runs `apt-get update` once, only when the
# package lists do not know a missing package yet. A required tool that cannot be installed
# fails `make test`; an optional one only prints a warning (its tests then skip, saying why).
# Never uses `playwright install`: that downloads a browser build of its own, which this
# project's machines cannot fetch.
set -euo pipefail

# binary path-or-name, Debian package, required (1) or optional (0)
TOOLS=(
    "/usr/bin/chromium chromium 1"
    "systemd-analyze systemd 1"
    "udevadm udev 0"
    "shellcheck shellcheck 0"
)

have() { if [[ $1 == /* ]]; then [ -x "$1" ]; else command -v "$1" >/dev/null 2>&1; fi; }

missing=()
for entry in "${TOOLS[@]}"; do
    read -r bin pkg _ <<<"$entry"
    if have "$bin"; then
        echo "ensure_test_tools: $bin present"
    else
        missing+=("$pkg")
    fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

# Report a tool that is still missing after the attempt: fatal if required.
finish() {
    local status=0
    for entry in "${TOOLS[@]}"; do
        read -r bin pkg required <<<"$entry"
        have "$bin" && continue
        if [ "$required" = 1 ]; then
            echo "ensure_test_tools: $bin (package $pkg) is missing and required: $1" >&2
            status=1
        else
            echo "ensure_test_tools: warning: $bin (package $pkg) is missing; its tests will skip" >&2
        fi
    done
    exit "$status"
}

if ! command -v apt-get >/dev/null 2>&1; then
    finish "this system has no apt-get; install it by hand"
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        finish "installing needs root: sudo apt-get update && sudo apt-get install -y ${missing[*]}"
    fi
fi

# apt-cache knows a package only once the lists are there; update them only if it does not.
for pkg in "${missing[@]}"; do
    candidate="$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ {print $2}')"
    if [ -z "$candidate" ] || [ "$candidate" = "(none)" ]; then
        echo "ensure_test_tools: package lists do not know $pkg yet: running apt-get update"
        $SUDO apt-get update -q || echo "ensure_test_tools: apt-get update failed" >&2
        break
    fi
done

# One package at a time: an optional one that fails must not stop a required one.
for pkg in "${missing[@]}"; do
    echo "ensure_test_tools: installing Debian's $pkg with apt-get"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "$pkg" \
        || echo "ensure_test_tools: apt-get install $pkg failed (see above)" >&2
done
finish "apt-get could not install it (see above)"
