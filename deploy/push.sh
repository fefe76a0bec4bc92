#!/usr/bin/env bash
# deploy/push.sh: copy this checkout to a board over ssh and run install.sh there.
#
#   deploy/push.sh HOST [--user U] [--dir DIR] [--dry-run] [-- INSTALL_OPTIONS...]
#
# rsync (over ssh) sends the checkout without .venv, .git, reports, var and build output
# to ~/sunlit-src on the board (--dir to change), then `sudo bash deploy/install.sh
# --source DIR` runs there, in a terminal so sudo can ask for the password. Options after
# -- go to install.sh (--link, --ort-wheel, --uart ...). A wheel for the board's ONNX
# Runtime placed in wheels/ of this checkout travels along and is found by install.sh.
# --dry-run prints the commands and runs none. ssh options (port, key, jump host)
# belong in ~/.ssh/config.
#
# rsync --delete makes DIR an exact copy, so DIR must be Sunlit's own: push.sh refuses a
# DIR that names the home directory or above, and a DIR on the board that exists, is not
# empty and has no .sunlit-push marker (which push.sh leaves there the first time).
set -euo pipefail

usage() { awk 'NR > 2 && /^#/ { sub(/^# ?/, ""); print; next } NR > 2 { exit }' "$0"; }
die() { printf 'push.sh: %s\n' "$*" >&2; exit 2; }

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC=$(dirname "$HERE")
HOST=""
USER_AT=""
DIR="sunlit-src"
DRY=0
INSTALL_ARGS=()
# OPT VALUE: a value that looks like an option is one the user forgot (`--user --dry-run` would lose the dry
# run); OPT=VALUE takes it as written.
# An empty one is refused, not taken (--user "" pushed to @HOST).
value() { [ $# -ge 2 ] || die "$1 needs a value"; [ -n "$2" ] || die "$1 needs a value, not an empty one"; [ "$EQ" = 1 ] || case "$2" in -*) die "$1 needs a value, not the option $2 (write $1=VALUE for one that starts with -)" ;; esac; }
while [ $# -gt 0 ]; do
    EQ=0
    case "$1" in --*=*) opt=${1%%=*}; val=${1#*=}; shift; set -- "$opt" "$val" "$@"; EQ=1 ;; esac
    case "$1" in
        --user) value "$@"; USER_AT="$2@"; shift 2 ;;
        --dir) value "$@"; DIR=$2; shift 2 ;;
        # A switch takes no value (found in audit: --dry-run=no made "no" the HOST).
        --dry-run) [ "$EQ" = 0 ] || die "$1 takes no value (leave it out, or write just $1)"; DRY=1; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; INSTALL_ARGS=("$@"); break ;;
        -*) usage >&2; die "unknown option $1" ;;
        *) [ -z "$HOST" ] || die "one HOST only (got $HOST and $1)"; HOST=$1; shift ;;
    esac
done
[ -n "$HOST" ] || { usage >&2; die "give the board's HOST"; }
case "$DIR" in *[!A-Za-z0-9._/~-]*) die "--dir $DIR: letters, digits and . _ / ~ - only" ;; esac
# Found in audit: --dir=-x/src reached mkdir, ls and bash on the board as an option ("mkdir: invalid option").
case "$DIR" in -*) die "--dir $DIR: must not start with - (the board's mkdir and bash would take it as an option)" ;; esac
DIR=$(printf '%s' "$DIR" | tr -s /)   # a//b is a/b (found in audit: /home/u// passed the checks below)
DIR=${DIR%/}
DIR=${DIR#\~/}    # ssh and rsync start in the home directory: ~/x is x
# ~USER/x: the guard (quoted), rsync and the remote shell would each read it their own way.
case "$DIR" in \~?*) die "--dir $DIR: ~USER is not taken; give the directory relative to the home push.sh logs in to (e.g. sunlit-src, with --user USER), or absolute" ;; esac
case "/$DIR/" in
    //|/./|/~/|*/../*|*/./*|/~*/) die "--dir ${DIR:-/}: must name a directory of its own below your home (rsync --delete would empty it)" ;;
esac
case "$DIR" in /*/*/*) ;; /*) die "--dir $DIR: an absolute path needs at least three components (e.g. /opt/src/sunlit)" ;; esac
TARGET="$USER_AT$HOST"

RSYNC=(rsync -az --delete --human-readable
       --exclude=/.venv --exclude=/.git --exclude=/reports --exclude=/var --exclude=/build
       --exclude='*.egg-info' --exclude=__pycache__ --exclude=.pytest_cache --exclude='*.pyc'
       --exclude=/etc --exclude=/runs --exclude='*.key' --exclude='*.key_secret'
       --exclude=/.sunlit-push -e ssh "$SRC/" "$TARGET:$DIR/")
# /etc, *.key: the README's ground users file and an operator's keys, made in a checkout (found in review: a model's
# signing key and the users' password hashes went to the board with the code)
# Before rsync --delete: DIR on the board is new, empty, or ours (marker), else stop.
GUARD="d=$(printf '%q' "$DIR"); if [ -e \"\$d\" ] && [ ! -e \"\$d/.sunlit-push\" ] && [ -n \"\$(ls -A \"\$d\" 2>/dev/null)\" ]; then echo \"push.sh: \$d on the board is not empty and not from push.sh; not overwriting it\" >&2; exit 3; fi; mkdir -p \"\$d\" && touch \"\$d/.sunlit-push\""
CHECK=(ssh "$TARGET" "$GUARD")
# The remote command is one string for the remote shell: quote every word of it.
REMOTE="sudo bash $DIR/deploy/install.sh --source $DIR"
for a in "${INSTALL_ARGS[@]+"${INSTALL_ARGS[@]}"}"; do REMOTE+=" $(printf '%q' "$a")"; done
SSH=(ssh -t "$TARGET" "$REMOTE")

if [ "$DRY" = 1 ]; then
    printf 'dry run: would run\n'
    printf '  %s\n' "$(printf '%q ' "${CHECK[@]}")" "$(printf '%q ' "${RSYNC[@]}")" "$(printf '%q ' "${SSH[@]}")"
    exit 0
fi
command -v rsync >/dev/null 2>&1 || die "rsync is not installed here (apt install rsync); the board needs it too"
printf 'push.sh: sending %s to %s:%s\n' "$SRC" "$TARGET" "$DIR"
"${CHECK[@]}" || die "$TARGET:$DIR: refused (above), or ssh failed"
"${RSYNC[@]}"
printf 'push.sh: installing on %s\n' "$TARGET"
"${SSH[@]}"
