#!/usr/bin/env bash
# deploy/uninstall.sh: remove what deploy/install.sh installed (installed as
# /opt/sunlit/share/uninstall.sh too, so a board without the checkout can run it).
#
# Keeps, unless --purge: the agent's data (/var/lib/sunlit: state, parameters, models,
# products, checkpoints), its configuration and keys (/etc/sunlit), the GPU wheels in
# /opt/sunlit/wheels and the user sunlit.
# A second run finds nothing to remove and says so.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: sudo deploy/uninstall.sh [--root DIR] [--dry-run] [--purge] [--no-systemctl]

  --root DIR       remove from under DIR instead of / (tests, images)
  --dry-run        print every action and change nothing
  --purge          also remove /var/lib/sunlit, /etc/sunlit (config and keys), /opt/sunlit/wheels
                   and the user sunlit
  --no-systemctl   do not call systemctl or udevadm (tests)
EOF
}
die() { printf 'uninstall.sh: %s\n' "$*" >&2; exit 2; }

ROOT=/
DRY=0
PURGE=0
NO_SYSTEMCTL=0
while [ $# -gt 0 ]; do
    EQ=0
    case "$1" in --*=*) opt=${1%%=*}; val=${1#*=}; shift; set -- "$opt" "$val" "$@"; EQ=1 ;; esac
    case "$1" in
        # A switch takes no value (found in audit: --purge=no was refused as "unknown option no").
        --dry-run|--purge|--no-systemctl) [ "$EQ" = 0 ] || die "$1 takes no value (leave it out, or write just $1)" ;;&
        --root) [ $# -ge 2 ] || die "--root needs a value"; ROOT=$2; shift 2 ;;
        --dry-run) DRY=1; shift ;;
        --purge) PURGE=1; shift ;;
        --no-systemctl) NO_SYSTEMCTL=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option $1" ;;
    esac
done
[ -d "$ROOT" ] || die "--root $ROOT: no such directory"
ROOT=$(cd -- "$ROOT" && pwd)   # -- : a relative DIR may start with a dash (found in audit)
[ "$ROOT" = / ] && ROOT=""
SHOWN_ROOT=${ROOT:-/}
if [ -z "$ROOT" ] && [ "$DRY" = 0 ] && [ "$(id -u)" != 0 ]; then
    die "removing from / needs root: sudo $0 ... (or --dry-run, or --root DIR)"
fi
T() { printf '%s%s' "$ROOT" "$1"; }

CHANGES=0
act() {
    local what=$1
    shift
    CHANGES=$((CHANGES + 1))
    if [ "$DRY" = 1 ]; then
        printf '  would %s\n      $ %s\n' "$what" "$(printf '%q ' "$@")"
    else
        printf '  %s\n' "$what"
        "$@"
    fi
}
remove() {   # remove PATH...: each that exists
    local p
    for p in "$@"; do
        if [ -e "$p" ] || [ -L "$p" ]; then
            # the golden model copy is read-only (0444): make it writable so rm -rf works without root
            # shellcheck disable=SC2016  # $1 is for the inner sh
            act "remove $p" sh -c 'chmod -R u+w "$1" 2>/dev/null; rm -rf "$1"' sh "$p"
        fi
    done
}

printf 'Sunlit uninstall from %s%s\n' "$SHOWN_ROOT" "$([ "$DRY" = 1 ] && echo ' (dry run: nothing will be changed)')"

# The path unit first: once it is stopped, nothing starts the power-access service again.
UNITS=(sunlit-power-access.path sunlit-agent.service sunlit-safe.service sunlit-power-access.service)
ENABLED_UNITS=(sunlit-agent.service sunlit-power-access.path)   # what install.sh enables
# not_stopped UNIT: how UNIT is not stopped yet ("activating", "inactive, job 42 queued"); nothing once it is.
not_stopped() {
    local state job
    state=$(systemctl show -p ActiveState --value "$1" 2>/dev/null || true)
    job=$(systemctl show -p Job --value "$1" 2>/dev/null || true)
    case "$state" in ""|inactive|failed) [ -z "$job" ] && return 0 ;; esac
    printf '%s%s' "${state:-unknown}" "${job:+, job $job queued}"
}
if [ "$NO_SYSTEMCTL" = 0 ] && [ -z "$ROOT" ] && command -v systemctl >/dev/null 2>&1; then
    # Disabled first, so that nothing below starts one at the next boot (the others are static: is-enabled
    # says so with status 0, and disable does nothing to them).
    for u in "${ENABLED_UNITS[@]}"; do
        if systemctl is-enabled --quiet "$u" 2>/dev/null; then act "disable $u" systemctl disable --quiet "$u"; fi
    done
    # Stopped in any state but stopped: starting (before READY=1) or waiting to restart counts (found in
    # audit: is-active skips those, and a crash-looping agent ran on from a deleted venv, --purge's userdel
    # failing under it); so does a unit still inactive with a start job queued: the agent's at boot, waiting
    # for the network, or the SAFE fallback that OnFailure= queues when the agent's stop ends "failed" (found
    # in review: read as "inactive", skipped, and started from the deleted venv once the files were gone).
    # `systemctl stop` waits for its job; the units are read again until none is left, and nothing is
    # removed while one is.
    for round in 1 2 3; do
        left=0
        for u in "${UNITS[@]}"; do
            how=$(not_stopped "$u")
            [ -n "$how" ] || continue
            left=1
            act "stop $u ($how)" systemctl stop "$u" || true
        done
        if [ "$left" = 0 ] || [ "$DRY" = 1 ]; then break; fi
    done
    if [ "$DRY" = 0 ]; then
        still=()
        for u in "${UNITS[@]}"; do
            how=$(not_stopped "$u")
            [ -z "$how" ] || still+=("$u ($how)")
        done
        if [ ${#still[@]} -gt 0 ]; then
            die "could not stop ${still[*]} after $round tries: nothing removed. Stop it (systemctl stop UNIT;
journalctl -u UNIT says why) and run uninstall.sh again"
        fi
    fi
    for u in "${UNITS[@]}"; do
        if [ "$(systemctl show -p ActiveState --value "$u" 2>/dev/null || true)" = failed ]; then
            act "reset-failed $u" systemctl reset-failed "$u"
        fi
    done
elif [ "$NO_SYSTEMCTL" = 0 ] && [ -n "$ROOT" ] && command -v systemctl >/dev/null 2>&1; then
    for u in "${ENABLED_UNITS[@]}"; do
        if systemctl --root="$ROOT" is-enabled --quiet "$u" 2>/dev/null; then
            act "disable $u in $ROOT" systemctl --root="$ROOT" --quiet disable "$u"
        fi
    done
fi
# What `enable` links, in case systemctl was not there to disable it.
for u in "${ENABLED_UNITS[@]}"; do remove "$(T "/etc/systemd/system/multi-user.target.wants/$u")"; done
UNIT_FILES=()
for u in "${UNITS[@]}"; do UNIT_FILES+=("$(T "/etc/systemd/system/$u")"); done
before=$CHANGES
remove "${UNIT_FILES[@]}" "$(T /etc/systemd/system/sunlit-agent.service.d/10-restart-mode.conf)"
# Drop-ins of your own (systemctl edit) go with --purge; an empty directory goes anyway.
for u in "${UNITS[@]}"; do
    d=$(T "/etc/systemd/system/$u.d")
    [ -d "$d" ] || continue
    if [ "$PURGE" = 1 ] || [ -z "$(ls -A "$d")" ]; then remove "$d"; else printf '  kept: %s (your drop-ins; --purge removes them)\n' "$d"; fi
done
units_removed=$((CHANGES - before))
before=$CHANGES
remove "$(T /etc/systemd/journald.conf.d/sunlit.conf)"
journald_removed=$((CHANGES - before))
before=$CHANGES
remove "$(T /etc/udev/rules.d/99-sunlit-link.rules)"
udev_removed=$((CHANGES - before))
# /opt/sunlit/wheels is the engineer's (NVIDIA's onnxruntime_gpu wheel, put there or kept there by
# install.sh): kept unless --purge, as the data, so a reinstall finds the GPU build again (found in audit).
WHEELS=$(T /opt/sunlit/wheels)
if [ "$PURGE" = 0 ] && [ -d "$WHEELS" ] && [ -n "$(ls -A "$WHEELS")" ]; then
    for p in "$(T /opt/sunlit)"/* "$(T /opt/sunlit)"/.[!.]*; do
        [ -e "$p" ] || [ -L "$p" ] || continue
        [ "$p" = "$WHEELS" ] || remove "$p"
    done
else
    remove "$(T /opt/sunlit)"
fi

# What sunlit-power-access granted on disk (sysfs's grants go with the next reboot): nvpmodel's own status
# back to root alone (found in audit: left group-writable for a group that --purge then deletes). The
# service's group is the one install.sh gave /etc/sunlit (sunlit on a board).
SVC_GROUP=sunlit
if [ -d "$(T /etc/sunlit)" ]; then SVC_GROUP=$(stat -c %G "$(T /etc/sunlit)"); fi
for p in "$(T /var/lib/nvpmodel)" "$(T /var/lib/nvpmodel/status)"; do
    # Not a link the service's group put there: chgrp and chmod would change what it points at (found in audit).
    if [ -e "$p" ] && [ ! -L "$p" ] && [ "$(stat -c %G "$p")" = "$SVC_GROUP" ] && [ -n "$(find "$p" -maxdepth 0 -perm -g+w)" ]; then
        # shellcheck disable=SC2016  # $1 is for the inner sh
        act "give $p back to root (no group write)" sh -c 'chgrp -h root "$1" && chmod g-w "$1"' sh "$p"
    fi
done

if [ "$PURGE" = 1 ]; then
    remove "$(T /var/lib/sunlit)" "$(T /etc/sunlit)"
    if [ -z "$ROOT" ] && [ "$(id -u)" = 0 ] && getent passwd sunlit >/dev/null; then
        act "remove user sunlit" userdel sunlit
    fi
else
    kept=()
    for p in /var/lib/sunlit /etc/sunlit /opt/sunlit/wheels; do [ -e "$(T "$p")" ] && kept+=("$(T "$p")"); done
    if [ ${#kept[@]} -gt 0 ]; then printf '  kept: %s (--purge removes them, the keys too)\n' "${kept[*]}"; fi
fi

if [ "$NO_SYSTEMCTL" = 0 ] && [ -z "$ROOT" ]; then
    if [ "$units_removed" -gt 0 ] && command -v systemctl >/dev/null 2>&1; then act "reload systemd's units" systemctl daemon-reload; fi
    if [ "$journald_removed" -gt 0 ] && command -v systemctl >/dev/null 2>&1; then act "restart journald" systemctl restart systemd-journald; fi
    if [ "$udev_removed" -gt 0 ] && command -v udevadm >/dev/null 2>&1; then act "reload the udev rules" udevadm control --reload-rules; fi
fi

if [ "$DRY" = 1 ]; then
    printf 'dry run: %d change(s) would be made; nothing was changed\n' "$CHANGES"
elif [ "$CHANGES" = 0 ]; then
    printf 'nothing to remove from %s\n' "$SHOWN_ROOT"
else
    printf 'done: %d change(s) in %s\n' "$CHANGES" "$SHOWN_ROOT"
fi
