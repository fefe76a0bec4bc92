#!/usr/bin/env bash
# deploy/install.sh: install the Sunlit flight agent on a Jetson (JetPack 6) or any Linux box.
#
# Step by step, and why each setting is what it is: deploy/README.md. Run it again at any
# time: it changes only what differs from what it would install, and says so ("ok: ..."
# for what is already right, a line for each change, "nothing to change" at the end).
set -euo pipefail
# What this makes is read by the user sunlit: not under the caller's umask (a hardened 027 left the venv
# 0750 root:root, and the services could not run it, while every check here, as root, passed; an audit).
umask 022

usage() {
    cat <<'EOF'
usage: sudo deploy/install.sh [options]

  --root DIR          install under DIR instead of / (tests, image staging); no user is
                      created and nothing is chowned unless DIR is /
  --dry-run           print every action and change nothing
  --source PATH       the Sunlit checkout or wheel to install (default: this checkout)
  --python PY         the Python that makes the virtual environment (default python3, >= 3.10)
  --ort-wheel PATH    NVIDIA's onnxruntime-gpu wheel for Jetson, or a directory of wheels
                      (default: looked for in /opt/sunlit/wheels and SOURCE/wheels)
  --ort-index URL     a package index that serves NVIDIA's Jetson onnxruntime-gpu
  --board ID          orin_nano | orin_nx_16gb | agx_orin_64gb (default: from /proc/device-tree/model)
  --link URL          the agent's link (default zmq://127.0.0.1:5550; a satellite:
                      serial:///dev/sunlit-link?baud=115200)
  --uart TTY          the Jetson UART /dev/sunlit-link points at (default per board: ttyTHS0
                      on Orin Nano/NX, ttyTHS1 on AGX Orin; see deploy/README.md)
                      --board, --link, --uart and --ort-index are remembered in
                      /etc/sunlit/install.conf, and a GPU wheel is kept in /opt/sunlit/wheels:
                      a later run without them keeps them
  --venv-from PATH    offline: the new venv sees the packages of the venv at PATH and Sunlit
                      is installed from SOURCE without dependencies (tests, air-gapped boards)
  --no-pip            offline: make the venv and install Sunlit from SOURCE without
                      dependencies and without an index (tests; the agent will not run)
  --no-systemctl      do not call systemctl or udevadm (tests)
  -h, --help          this text
EOF
}

die() { printf 'install.sh: %s\n' "$*" >&2; exit 2; }

# --- options ---------------------------------------------------------------------------------

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=/
DRY=0
SOURCE=$(dirname "$HERE")
PY=python3
ORT_WHEEL=""
ORT_INDEX=""
BOARD_OPT=""
LINK_OPT=""
UART_OPT=""
VENV_FROM=""
NO_PIP=0
NO_SYSTEMCTL=0

while [ $# -gt 0 ]; do
    EQ=0
    case "$1" in --*=*) opt=${1%%=*}; val=${1#*=}; shift; set -- "$opt" "$val" "$@"; EQ=1 ;; esac
    case "$1" in
        --root|--source|--python|--ort-wheel|--ort-index|--board|--link|--uart|--venv-from)
            [ $# -ge 2 ] || die "$1 needs a value"
            # A value that looks like an option is one forgotten (`--link --dry-run` would install for real);
            # OPT=VALUE takes it as written.
            [ "$EQ" = 1 ] || case "$2" in -*) die "$1 needs a value, not the option $2 (write $1=VALUE for one that starts with -)" ;; esac
            # An empty one is refused, not taken as not given (found in audit: --venv-from "" installed online from PyPI).
            [ -n "$2" ] || die "$1 needs a value, not an empty one (leave $1 out for its default)"
            case "$1" in
                --root) ROOT=$2 ;; --source) SOURCE=$2 ;; --python) PY=$2 ;;
                --ort-wheel) ORT_WHEEL=$2 ;; --ort-index) ORT_INDEX=$2 ;; --board) BOARD_OPT=$2 ;;
                --link) LINK_OPT=$2 ;; --uart) UART_OPT=${2#/dev/} ;; --venv-from) VENV_FROM=$2 ;;
            esac
            shift 2 ;;
        # A switch takes no value (found in audit: --no-pip=no was refused as "unknown option no").
        --dry-run|--no-pip|--no-systemctl) [ "$EQ" = 0 ] || die "$1 takes no value (leave it out, or write just $1)" ;;&
        --dry-run) DRY=1; shift ;;
        --no-pip) NO_PIP=1; shift ;;
        --no-systemctl) NO_SYSTEMCTL=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option $1" ;;
    esac
done

[ -d "$ROOT" ] || die "--root $ROOT: no such directory"
# -- before every path given: a relative one may start with a dash (found in audit: --root=-board stopped on bash's
# "cd: -b: invalid option" and cd's usage).
ROOT=$(cd -- "$ROOT" && pwd)
[ "$ROOT" = / ] && ROOT=""          # paths are "$ROOT/etc/...": "" is the real root
SHOWN_ROOT=${ROOT:-/}
[ -e "$SOURCE" ] || die "--source $SOURCE: no such file or directory"
SOURCE=$(cd -- "$(dirname -- "$SOURCE")" && pwd)/$(basename -- "$SOURCE")
SOURCE=${SOURCE%/.}
if [ -n "$VENV_FROM" ]; then
    [ -x "$VENV_FROM/bin/python" ] || die "--venv-from $VENV_FROM: no bin/python there"
    VENV_FROM=$(cd -- "$VENV_FROM" && pwd)
    PY="$VENV_FROM/bin/python"
fi
if [ -n "$ORT_WHEEL" ] && [ -e "$ORT_WHEEL" ]; then
    ORT_WHEEL=$(cd -- "$(dirname -- "$ORT_WHEEL")" && pwd)/$(basename -- "$ORT_WHEEL")
fi
# A directory that is not there is said as the path given (found in audit: bash's "cd: ... No such file or
# directory", then "--python /py: not found", a path no one had given).
case "$PY" in */*)
    [ -d "$(dirname -- "$PY")" ] || die "--python $PY: not found (give the path of a python3 >= 3.10, or leave it out)"
    PY=$(cd -- "$(dirname -- "$PY")" && pwd)/$(basename -- "$PY") ;;
esac
# Every path is absolute now. Work from /, so that the Python run below imports the
# installed Sunlit, never a flight/ package in the directory install.sh was started from.
cd /
OFFLINE=0
if [ "$NO_PIP" = 1 ] || [ -n "$VENV_FROM" ]; then OFFLINE=1; fi

if [ -z "$ROOT" ] && [ "$DRY" = 0 ] && [ "$(id -u)" != 0 ]; then
    die "installing into / needs root: sudo $0 ... (or --dry-run, or --root DIR)"
fi
# A dry run over an install it cannot read would plan from nothing (found in audit: without sudo it said it
# would make new keys and put back every choice the install had kept, where a real run changes nothing).
for d in "$ROOT/etc/sunlit" "$ROOT/etc/sunlit/keys" "$ROOT/var/lib/sunlit"; do
    if [ "$DRY" = 1 ] && [ -d "$d" ] && ! { [ -r "$d" ] && [ -x "$d" ]; }; then
        die "--dry-run: cannot read $d, so it cannot say what a run would change: run it with sudo"
    fi
done

SVC=sunlit
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export PYTHONDONTWRITEBYTECODE=1    # the checks below import Python; they must leave no trace

# Ownership is given only on the real root, as root: under --root the target's users are
# not this machine's.
OWN=0
if [ -z "$ROOT" ] && [ "$(id -u)" = 0 ]; then OWN=1; fi

# --- output and actions ----------------------------------------------------------------------

CHANGES=0
step() { printf '\n[%s]\n' "$1"; }
ok() { printf '  ok: %s\n' "$*"; }
info() { printf '  %s\n' "$*"; }
WARNINGS=0
warn() { WARNINGS=$((WARNINGS + 1)); printf '  WARNING: %s\n' "$*"; }
# act DESCRIPTION COMMAND...: count a change; print it; run it unless this is a dry run.
act() {
    local what=$1
    shift
    CHANGES=$((CHANGES + 1))
    if [ "$DRY" = 1 ] && declare -F "describe_$1" >/dev/null; then
        # A step done by a function of this script: show the commands it runs.
        printf '  would %s\n' "$what"
        "describe_$1" "${@:2}" | sed 's/^/      $ /'
    elif [ "$DRY" = 1 ]; then
        printf '  would %s\n      $ %s\n' "$what" "$(printf '%q ' "$@")"
    else
        printf '  %s\n' "$what"
        "$@"
    fi
}
T() { printf '%s%s' "$ROOT" "$1"; }      # a path of the target system, under --root

# What chmod and chown change: a symlink's target (found in audit: /var/lib/sunlit linked to an NVMe drive was
# "chmod 0750" again at every run, the link's own 0777 read back each time).
mode_of() { stat -L -c %a "$1"; }
owner_of() { stat -L -c %U:%G "$1"; }

# ensure_dir PATH MODE [OWNER:GROUP]
ensure_dir() {
    local dir=$1 mode=$2 owner=${3:-root:root}
    if [ -d "$dir" ]; then
        local fixed=0
        # All of it, setgid too: a directory made under a setgid parent inherits the bit, which a chmod of
        # four digits keeps (found in audit: the same chmods at every run); five digits clear it (GNU chmod).
        if [ $((8#$(mode_of "$dir"))) != $((8#$mode)) ]; then act "chmod $mode $dir" chmod "0$mode" "$dir"; fixed=1; fi
        if [ "$OWN" = 1 ] && [ "$(owner_of "$dir")" != "$owner" ]; then act "chown $owner $dir" chown "$owner" "$dir"; fixed=1; fi
        [ "$fixed" = 1 ] || ok "$dir"
    elif [ "$OWN" = 1 ]; then
        act "create $dir ($mode, $owner)" install -d -m "0$mode" -o "${owner%:*}" -g "${owner#*:}" "$dir"
    else
        act "create $dir ($mode)" install -d -m "0$mode" "$dir"
    fi
}

# put_file SRC DEST MODE [OWNER:GROUP]: a copy made beside DEST, on disk, then renamed over it, so a full disk or
# a power cut leaves the old file or none, never a part of one (found in review: `install` straight onto a full
# disk left a truncated agent.toml, which every later run kept as the engineer's own). Hidden, the copy is no unit,
# rule or drop-in to systemd, udev or journald.
put_tmp() { printf '%s/.%s.sunlit-tmp' "$(dirname "$1")" "$(basename "$1")"; }
describe_put_file() {
    local tmp own=""
    tmp=$(put_tmp "$2")
    if [ "$OWN" = 1 ]; then own=" -o ${4%:*} -g ${4#*:}"; fi
    printf 'install -D -m %s%s %q %q\n' "$3" "$own" "$1" "$tmp"
    printf 'sync %q && mv -f %q %q && sync %q\n' "$tmp" "$tmp" "$2" "$(dirname "$2")"
}
put_file() {
    local src=$1 dest=$2 mode=$3 owner=$4 tmp
    local own=()
    tmp=$(put_tmp "$dest")
    if [ "$OWN" = 1 ]; then own=(-o "${owner%:*}" -g "${owner#*:}"); fi
    if ! install -D -m "$mode" "${own[@]}" "$src" "$tmp" || ! sync "$tmp"; then
        rm -f "$tmp"
        die "could not write $dest (is the disk full?); it is as it was: run install.sh again once it can be written"
    fi
    mv -f "$tmp" "$dest"
    sync "$(dirname "$dest")" 2>/dev/null || sync   # the rename itself
}

# install_file SRC DEST MODE [OWNER:GROUP]: copy when the content differs; sets CHANGED=1 then.
CHANGED=0
install_file() {
    local src=$1 dest=$2 mode=$3 owner=${4:-root:root}
    CHANGED=0
    if [ -f "$dest" ] && cmp -s "$src" "$dest"; then
        local fixed=0
        if [ $((8#$(mode_of "$dest"))) != $((8#$mode)) ]; then act "chmod $mode $dest" chmod "$mode" "$dest"; fixed=1; fi
        if [ "$OWN" = 1 ] && [ "$(owner_of "$dest")" != "$owner" ]; then act "chown $owner $dest" chown "$owner" "$dest"; fixed=1; fi
        [ "$fixed" = 1 ] || ok "$dest"
        return 0
    fi
    CHANGED=1
    local verb="install"
    [ -e "$dest" ] && verb="update"
    act "$verb $dest" put_file "$src" "$dest" "$mode" "$owner"
}

# --- what is installed where -----------------------------------------------------------------

OPT=$(T /opt/sunlit)
VENV=$OPT/venv
ETC=$(T /etc/sunlit)
CONF=$ETC/agent.toml
KEYDIR=$ETC/keys
OLD_KEY=$KEYDIR/link.key             # made by earlier versions; nothing uses it
TC_KEYS=$KEYDIR/tc.keys
ZMQDIR=$KEYDIR/zmq
ZMQ_PUBLIC=$ZMQDIR/agent.key
ZMQ_SECRET=$ZMQDIR/agent.key_secret
ZMQ_CLIENTS=$ZMQDIR/clients
# The same files as the board sees them: the config names these, not the --root ones.
BOARD_KEYDIR=/etc/sunlit/keys
VAR=$(T /var/lib/sunlit)
UNIT_DIR=$(T /etc/systemd/system)
JOURNALD_DROPIN=$(T /etc/systemd/journald.conf.d/sunlit.conf)
UDEV_RULE=$(T /etc/udev/rules.d/99-sunlit-link.rules)
CHOICES=$ETC/install.conf

# --board, --link and --uart given once are kept: an update (push.sh HOST, no options) must
# not point the link or the udev rule back at the defaults. KEY=VALUE lines, read, not sourced.
saved_choice() {
    [ -r "$CHOICES" ] || return 0
    sed -n "s/^$1=//p" "$CHOICES" | tail -n 1
}
# chosen NAME GIVEN VALUE: a choice as a message names it: the option given now, or the line of install.conf it was
# kept in (found in audit: a value mistyped there was refused as "--board ...", an option no one had given).
chosen() {
    if [ "$2" = 1 ]; then printf -- '--%s %s' "$1" "$3"; return; fi
    printf '%s=%s in %s (kept from an earlier run: fix that line, or give --%s)' "$1" "$3" "$CHOICES" "$1"
}
BOARD_GIVEN=${BOARD_OPT:+1}
LINK_GIVEN=${LINK_OPT:+1}
UART_GIVEN=${UART_OPT:+1}
BOARD_OPT=${BOARD_OPT:-$(saved_choice board)}
DEFAULT_LINK=zmq://127.0.0.1:5550
LINK_URL=${LINK_OPT:-$(saved_choice link)}
# A link the engineer gave, now or before (install.conf keeps only that; before, it kept the default too).
LINK_ASKED=$LINK_URL
[ "$LINK_ASKED" = "$DEFAULT_LINK" ] && [ -z "$LINK_OPT" ] && LINK_ASKED=""
LINK_URL=${LINK_URL:-$DEFAULT_LINK}
UART_OPT=${UART_OPT:-$(saved_choice uart)}
UART_OPT=${UART_OPT#/dev/}
# The GPU build of ONNX Runtime chosen before: an update with no --ort-* option must not swap it for the CPU
# build (found in audit: push.sh HOST did). A wheel is kept in /opt/sunlit/wheels (below), an index here; both
# are used only where no --ort-* option is given and no wheel is found where install.sh looks (a newer one put
# there wins: a review).
SAVED_WHEEL=$(saved_choice ort_wheel)
SAVED_INDEX=$(saved_choice ort_index)
# An index URL goes to pip and into install.conf as one line: a newline in it wrote a line of its own there, which the
# next run took as a choice (found in audit: --ort-index $'URL\nlink=zmq://0.0.0.0:9' put the link on every interface).
check_index() {  # check_index GIVEN VALUE: GIVEN 1 for the option, else install.conf's line
    case "$2" in *[[:space:][:cntrl:]]*) ;; *) return 0 ;; esac
    if [ "$1" = 1 ]; then
        die "--ort-index $(printf '%q' "$2"): an index URL has no spaces or control characters"
    fi
    die "ort_index=$(printf '%q' "$2") in $CHOICES (kept from an earlier run: fix that line, or give --ort-index): an index URL has no spaces or control characters"
}
check_index 1 "$ORT_INDEX"
# The kept one only where it is used (no --ort-* given; a review: a line an earlier version kept stopped every run,
# with --ort-index given too)
[ -n "$ORT_INDEX$ORT_WHEEL" ] || check_index 0 "$SAVED_INDEX"
case "$LINK_URL" in
    *[[:space:]\"\\]*)
        die "$(chosen link "$LINK_GIVEN" "$LINK_URL"): a link URL has no spaces, quotes or backslashes" ;;
    # TOML takes none in a string (found in audit: agent.toml and the SAFE fallback's default copy both unreadable)
    *[[:cntrl:]]*)
        die "$(chosen link "$LINK_GIVEN" "$(printf '%q' "$LINK_URL")"): a link URL has no control characters" ;;
esac

printf 'Sunlit install into %s from %s%s\n' "$SHOWN_ROOT" "$SOURCE" "$([ "$DRY" = 1 ] && echo ' (dry run: nothing will be changed)')"

# --- the board -------------------------------------------------------------------------------

step board
# The same rules as flight.hal.jetson.detect_board (tests/test_deploy.py checks they agree):
# NULs to spaces, whitespace collapsed, lower case, first matching substring wins.
MODEL=""
for p in /proc/device-tree/model /sys/firmware/devicetree/base/model; do
    if [ -r "$(T "$p")" ]; then
        MODEL=$(tr '\0' ' ' <"$(T "$p")" | tr -s '[:space:]' ' ' | sed 's/^ //; s/ $//')
        [ -n "$MODEL" ] && break
    fi
done
# As said and written into agent.toml's comment: TOML takes no control character there, nor bytes that are not UTF-8
# (found in audit: a carrier's device tree with one made agent.toml and the SAFE fallback's copy unreadable).
# iconv -c drops what is not UTF-8 but exits 1 for some of it: then ASCII alone.
MODEL_SHOWN=$(printf '%s' "$MODEL" | LC_ALL=C tr '[:cntrl:]' '?' | iconv -c -f UTF-8 -t UTF-8 2>/dev/null) \
    || MODEL_SHOWN=$(printf '%s' "$MODEL" | LC_ALL=C tr -c '[:print:]' '?')
detect_board() {
    local text
    text=$(printf '%s' "$1" | tr '[:upper:]' '[:lower:]')
    case "$text" in
        *"agx orin"*) echo agx_orin_64gb ;;
        *"orin nx"*) echo orin_nx_16gb ;;
        *"orin nano"*) echo orin_nano ;;
        *) return 1 ;;
    esac
}
BOARD=""
if [ -n "$BOARD_OPT" ]; then
    case "$BOARD_OPT" in
        orin_nano|orin_nx_16gb|agx_orin_64gb)
            BOARD=$BOARD_OPT
            KEPT_NOTE=$([ "$BOARD_GIVEN" = 1 ] || echo ', kept in install.conf')
            info "board $BOARD (--board$KEPT_NOTE; model string ${MODEL_SHOWN:-absent})" ;;
        *) die "$(chosen board "$BOARD_GIVEN" "$BOARD_OPT"): choose orin_nano, orin_nx_16gb or agx_orin_64gb" ;;
    esac
elif [ -n "$MODEL" ] && BOARD=$(detect_board "$MODEL"); then
    info "model \"$MODEL_SHOWN\" -> board profile $BOARD"
elif [ -n "$MODEL" ]; then
    BOARD=""
    info "model \"$MODEL_SHOWN\" is not an Orin Nano, Orin NX or AGX Orin: configuring the linux backend"
    info "(a PC's sensors, power modes in software only). On a Jetson, pass --board to use its profile."
else
    info "no device-tree model under $SHOWN_ROOT: not a Jetson; configuring the linux backend"
fi
if [ -n "$BOARD" ]; then BACKEND=jetson; else BACKEND=linux; fi
case "$BOARD" in
    orin_nano|orin_nx_16gb) UART_DEFAULT=ttyTHS0 ;;
    agx_orin_64gb) UART_DEFAULT=ttyTHS1 ;;
    *) UART_DEFAULT=ttyTHS0 ;;
esac
UART=${UART_OPT:-$UART_DEFAULT}
case "$UART" in
    *[!A-Za-z0-9_]*|"") die "$(chosen uart "$UART_GIVEN" "$UART"): expected a device name such as ttyTHS0" ;;
esac
info "hal backend $BACKEND; /dev/sunlit-link: USB-UART adapters, else /dev/$UART${UART_OPT:+ (chosen)}"
info "link $LINK_URL; choices kept in $CHOICES"

# --- the service user ------------------------------------------------------------------------

step user
if [ -n "$ROOT" ]; then
    info "not creating user $SVC: --root is not / (files are not chowned either; run install.sh on the target)"
elif [ "$(id -u)" != 0 ]; then
    info "not creating user $SVC: not running as root (files are not chowned either)"
else
    if getent passwd "$SVC" >/dev/null; then
        ok "user $SVC exists"
    else
        act "create system user $SVC" useradd --system --user-group --home-dir /var/lib/sunlit \
            --no-create-home --shell /usr/sbin/nologin --comment "Sunlit flight agent" "$SVC"
    fi
    # dialout: the serial link; video: the GPU device nodes on L4T (CUDA). The unit adds
    # both as SupplementaryGroups; membership here serves `sudo -u sunlit ... selftest`.
    for g in dialout video; do
        getent group "$g" >/dev/null || { info "no group $g on this system"; continue; }
        if id -nG "$SVC" 2>/dev/null | tr ' ' '\n' | grep -qx "$g"; then
            ok "$SVC is in group $g"
        else
            act "add $SVC to group $g" usermod -aG "$g" "$SVC"
        fi
    done
fi

# --- directories -----------------------------------------------------------------------------

step directories
ensure_dir "$OPT" 0755
ensure_dir "$OPT/libexec" 0755
ensure_dir "$OPT/share" 0755
ensure_dir "$ETC" 0750 "root:$SVC"
ensure_dir "$KEYDIR" 0700 "$SVC:$SVC"
ensure_dir "$ZMQDIR" 0700 "$SVC:$SVC"
ensure_dir "$ZMQ_CLIENTS" 0750 "$SVC:$SVC"
ensure_dir "$VAR" 0750 "$SVC:$SVC"
ensure_dir "$VAR/state" 0750 "$SVC:$SVC"
ensure_dir "$VAR/compute" 0750 "$SVC:$SVC"

# --- the virtual environment and Sunlit ------------------------------------------------------

step python
command -v "$PY" >/dev/null 2>&1 || die "--python $PY: not found"
PYVER=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || die "$PY is Python $PYVER; Sunlit needs >= 3.10"
PYTAG=cp${PYVER/./}
VPY=$VENV/bin/python
# A venv is whole once its pip is (ensurepip is venv's last step; --venv-from's pip comes with the other venv's
# packages): a run cut short while it was made left one that every later run took, and failed in, with "No module
# named pip" (found in audit).
venv_whole() {
    [ -x "$VPY" ] && [ -f "$VENV/pyvenv.cfg" ] || return 1
    [ "$("$VPY" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$PYVER" ] || return 1
    [ -n "$VENV_FROM" ] || "$VPY" -c 'import pip' >/dev/null 2>&1
}
AGAIN=""
if [ -e "$VENV" ]; then AGAIN=" again: the one there is another Python's, or has no pip (a run cut short)"; fi
if venv_whole; then
    ok "virtual environment $VENV (Python $PYVER)"
elif [ -n "$VENV_FROM" ]; then
    # --clear (here and below): a venv of another Python is rebuilt whole, with the markers
    # that say what is installed in it. No pip of its own: pip and setuptools come with the
    # other venv's packages (below).
    act "create the virtual environment $VENV (Python $PYVER, packages from $VENV_FROM)$AGAIN" \
        "$PY" -m venv --clear --without-pip "$VENV"
else
    if ! "$PY" -c 'import ensurepip' >/dev/null 2>&1; then
        die "$PY cannot make a virtual environment with pip (no ensurepip): sudo apt install python3-venv"
    fi
    act "create the virtual environment $VENV (Python $PYVER, from $PY)$AGAIN" "$PY" -m venv --clear "$VENV"
fi
SITE=$VENV/lib/python$PYVER/site-packages
if [ -n "$VENV_FROM" ]; then
    # A plain path line: the other venv's packages come after the venv's own, and its
    # .pth files (an editable Sunlit among them) are not run, so the copy installed below wins.
    "$VENV_FROM/bin/python" -c 'import site; print("\n".join(site.getsitepackages()))' >"$WORK/deps.pth"
    install_file "$WORK/deps.pth" "$SITE/_sunlit_deps.pth" 0644
fi

# The source: a wheel, or a checkout copied (code only) to /opt/sunlit/src and built there,
# so the build leaves nothing in the checkout. Its hash says whether anything changed.
SRC_ITEMS=(pyproject.toml README.md LICENSE flight ground hil)
if [ -f "$SOURCE" ]; then
    case "$SOURCE" in *.whl) ;; *) die "--source $SOURCE: expected a checkout directory or a .whl" ;; esac
    SRC_KIND=wheel
    SRC_HASH=$(sha256sum "$SOURCE" | cut -d' ' -f1)
    SRC_DESC=$(basename "$SOURCE")
else
    [ -f "$SOURCE/pyproject.toml" ] || die "--source $SOURCE: no pyproject.toml (not a Sunlit checkout)"
    SRC_KIND=checkout
    items=()
    for i in "${SRC_ITEMS[@]}"; do [ -e "$SOURCE/$i" ] && items+=("$i"); done
    SRC_HASH=$(cd "$SOURCE" && find "${items[@]}" -type f ! -name '*.pyc' ! -path '*/__pycache__/*' \
        ! -path '*.egg-info/*' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
    SRC_DESC="checkout $SOURCE"
fi
SRC_MARK=$VENV/.sunlit-source
# A board's clock behind the files sent to it (no RTC battery, no network for NTP; a few minutes' drift allowed):
# pip's TLS fails on one far behind, and the agent stamps its telemetry and state with it (found in audit: said
# only by tar, once for every file it copied).
NOW_S=$(date +%s)
if [ "$SRC_KIND" = checkout ]; then
    AHEAD=$(cd "$SOURCE" && find "${items[@]}" -type f -newermt "@$((NOW_S + 300))" -print -quit 2>/dev/null) || true
    [ -z "$AHEAD" ] || AHEAD=$SOURCE/$AHEAD
else
    AHEAD=$(find "$SOURCE" -newermt "@$((NOW_S + 300))" -print -quit 2>/dev/null) || true
fi
if [ -n "$AHEAD" ]; then
    AHEAD_AT=$(date -u -d "@$(stat -c %Y "$AHEAD")" '+%Y-%m-%d %H:%M UTC')
    warn "this machine's clock says $(date -u '+%Y-%m-%d %H:%M UTC'), behind $AHEAD ($AHEAD_AT):"
    info "set it before the agent starts (timedatectl set-time 'YYYY-MM-DD HH:MM:SS', or NTP: timedatectl set-ntp true)"
fi
describe_stage_source() {
    printf 'tar -C %q -cf - %s | tar -C %q --no-same-owner --no-same-permissions --warning=no-timestamp -xf -   (no __pycache__, *.pyc, *.egg-info)\n' "$SOURCE" "${items[*]}" "$OPT/src.new"
    printf 'mv %q %q\n' "$OPT/src.new" "$OPT/src"
}
stage_source() {
    local stage=$OPT/src
    rm -rf "$stage.new"
    mkdir -p "$stage.new"
    # root's files whoever pushed them (found in audit: the login user's, group-writable, code pip then builds)
    # A clock behind the files' times is said once, above, not by tar for each file (found in audit: 220 lines).
    tar -C "$SOURCE" --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' -cf - "${items[@]}" |
        tar -C "$stage.new" --no-same-owner --no-same-permissions --warning=no-timestamp -xf -
    rm -rf "$stage"
    mv "$stage.new" "$stage"
}
describe_pip_install_sunlit() {
    if [ "$OFFLINE" = 1 ]; then
        printf '%q -m pip install --no-index --no-deps --no-build-isolation --force-reinstall %q\n' "$VPY" "$1"
    else
        printf '%q -m pip install %q   (and its dependencies from PyPI)\n' "$VPY" "$1"
        printf '%q -m pip install --no-deps --force-reinstall %q\n' "$VPY" "$1"
    fi
    printf 'echo %s > %q   (once ONNX Runtime is in place too)\n' "${SRC_HASH:0:12}..." "$SRC_MARK"
}
pip_install_sunlit() {
    local target=$1
    if [ "$OFFLINE" = 1 ]; then
        if ! "$VPY" -m pip install --quiet --disable-pip-version-check --no-index --no-deps --no-build-isolation \
            --force-reinstall "$target"; then
            local st
            st=$("$VPY" -c 'import setuptools; print(setuptools.__version__)' 2>/dev/null || echo none)
            die "offline, Sunlit is built with the setuptools the venv sees ($st); it needs setuptools >= 77
(pyproject.toml's license string; bdist_wheel). Pass a wheel as --source (pip wheel --no-deps -w dist . where PyPI is
reachable), or --venv-from an environment with a newer setuptools."
        fi
    else
        # pip skips a wheel whose version is already installed (the second install): the code may still differ.
        if ! "$VPY" -m pip install --quiet --disable-pip-version-check "$target" \
            || ! "$VPY" -m pip install --quiet --disable-pip-version-check --no-deps --force-reinstall "$target"; then
            pip_failed "Sunlit and its dependencies"
        fi
    fi
    if [ "$SRC_KIND" = checkout ]; then rm -rf "$target/build" "$target"/*.egg-info; fi
    # The source's mark is written once ONNX Runtime is in place too (below): this install brought the CPU build
    # back over a GPU one, and a run cut short before ONNX Runtime's step then found both marks right (found in
    # audit: the board ran on the CPU build, and every later run said "ok").
}
# pip_index_url: the index pip looks in (PIP_INDEX_URL, else pip's config, else PyPI); empty when pip is told to use
# none (PIP_NO_INDEX, no-index in its config).
pip_index_url() {
    local conf url
    conf=$("$VPY" -m pip config list 2>/dev/null || true)
    case "${PIP_NO_INDEX:-}" in ""|0|false|no|off) ;; *) return 0 ;; esac
    if printf '%s\n' "$conf" | grep -Eiq "^[^=]*no-index='(1|true|yes|on)'$"; then return 0; fi
    # pip install reads install.index-url before global.index-url (found in review: the last of any section's,
    # a [wheel] one, was named)
    url=${PIP_INDEX_URL:-$(printf '%s\n' "$conf" | sed -n "s/^install\.index-url='\(.*\)'$/\1/p" | tail -n 1)}
    url=${url:-$(printf '%s\n' "$conf" | sed -n "s/^global\.index-url='\(.*\)'$/\1/p" | tail -n 1)}
    printf '%s' "${url:-https://pypi.org/simple/}"
}
# index_unreachable URL: why the index at URL cannot be reached, or nothing when it answers (any HTTP status is an
# answer). Asked for one small project page (pip's), not the index's root: PyPI's lists every project, megabytes.
index_unreachable() {
    "$PY" -c '
import os, sys, urllib.error, urllib.parse, urllib.request
url = sys.argv[1]
parts = urllib.parse.urlsplit(url)
if parts.scheme == "file":
    path = urllib.request.url2pathname(parts.path)
    if not os.path.isdir(path):
        print("no directory " + path)
    sys.exit()
try:
    urllib.request.urlopen(url.rstrip("/") + "/pip/", timeout=15).close()
except urllib.error.HTTPError:
    pass
except Exception as e:
    print(getattr(e, "reason", None) or e)' "$1" 2>/dev/null || true
}
# pip_failed WHAT [INDEX]: a pip that could not install WHAT online (pip said why above) stops the run with what to do,
# in one line. An index that cannot be reached is said as that (found in audit: a board with no network ended on
# pip's "No matching distribution found for setuptools>=77", the build's own first need, which reads as a build fault).
pip_failed() {
    local index why="" point="point PIP_INDEX_URL at an index it can reach"
    [ -z "${2-}" ] || point="give --ort-index an index it can reach"  # its own index, not pip's (found in review)
    # Without its credentials: said here, and an answer (401 too) is all the probe asks for.
    index=$(printf '%s' "${2-$(pip_index_url)}" | sed 's#//[^/@]*@#//#')
    [ -z "$index" ] || why=$(index_unreachable "$index")
    if [ -n "$why" ]; then
        die "pip could not reach the package index $index ($why), so $1 \
could not be installed: this board has no network to it (or its clock is so far behind that TLS fails: check date). \
Install offline: --venv-from a prepared environment, or --no-pip with a wheel as --source (deploy/README.md, \
\"Options\"); or $point. Then run install.sh again."
    fi
    die "pip could not install $1 (its messages above). A board with no network (or a clock so far behind that TLS \
fails: check date) can install offline: --venv-from a prepared environment, or --no-pip with a wheel as --source \
(deploy/README.md, \"Options\"); or let pip reach an index (PIP_INDEX_URL). Then run install.sh again."
}
SUNLIT_CHANGED=0
if [ -f "$SRC_MARK" ] && [ "$(cat "$SRC_MARK")" = "$SRC_HASH" ] && [ -x "$VENV/bin/sunlit-flight" ]; then
    ok "Sunlit installed from this $SRC_KIND (source sha256 ${SRC_HASH:0:12})"
else
    SUNLIT_CHANGED=1
    how="with its dependencies from PyPI"
    [ "$OFFLINE" = 1 ] && how="without dependencies, offline ($([ -n "$VENV_FROM" ] && echo "they come from $VENV_FROM" || echo "--no-pip: the agent will not run"))"
    if [ "$SRC_KIND" = checkout ]; then
        act "copy the code of $SOURCE to $OPT/src" stage_source
        act "install Sunlit into the venv $how" pip_install_sunlit "$OPT/src"
    else
        act "install Sunlit $SRC_DESC into the venv $how" pip_install_sunlit "$SOURCE"
    fi
fi

# --- ONNX Runtime ----------------------------------------------------------------------------

step onnxruntime
ARCH=$(uname -m)
find_wheel() {   # the newest onnxruntime_gpu wheel in $1 for this Python and machine
    find "$1" -maxdepth 1 -name "onnxruntime_gpu-*-$PYTAG-*_$ARCH.whl" 2>/dev/null | sort -V | tail -n 1
}
ORT_KIND=cpu
ORT_SRC=""
if [ -n "$ORT_WHEEL" ]; then
    if [ -f "$ORT_WHEEL" ]; then
        ORT_KIND=gpu-wheel; ORT_SRC=$ORT_WHEEL
    elif [ -d "$ORT_WHEEL" ]; then
        ORT_SRC=$(find_wheel "$ORT_WHEEL")
        [ -n "$ORT_SRC" ] || die "--ort-wheel $ORT_WHEEL: no onnxruntime_gpu-*-$PYTAG-*_$ARCH.whl there"
        ORT_KIND=gpu-wheel
    else
        die "--ort-wheel $ORT_WHEEL: no such file or directory"
    fi
elif [ -n "$ORT_INDEX" ]; then
    ORT_KIND=gpu-index; ORT_SRC=$ORT_INDEX
else
    wheel_dirs=("$OPT/wheels")
    if [ -d "$SOURCE" ]; then wheel_dirs+=("$SOURCE/wheels"); fi
    # The newest of the kept one and the checkout's (found in audit: a newer wheel put in the checkout, as the
    # README says, was never used once one was kept); the kept one wins a tie.
    for d in "${wheel_dirs[@]}"; do
        [ -d "$d" ] || continue
        found=$(find_wheel "$d")
        [ -n "$found" ] || continue
        if [ -z "$ORT_SRC" ] || [ "$(printf '%s\n%s\n' "$(basename "$ORT_SRC")" "$(basename "$found")" | sort -V | tail -n 1)" != "$(basename "$ORT_SRC")" ]; then
            ORT_SRC=$found
        fi
    done
    if [ -n "$ORT_SRC" ]; then ORT_KIND=gpu-wheel; info "found $ORT_SRC"; fi
    if [ "$ORT_KIND" = cpu ] && [ -n "$SAVED_WHEEL" ] && [ -f "$(T "$SAVED_WHEEL")" ]; then
        ORT_KIND=gpu-wheel; ORT_SRC=$(T "$SAVED_WHEEL"); info "kept from before: $ORT_SRC"
    elif [ "$ORT_KIND" = cpu ] && [ -n "$SAVED_INDEX" ]; then
        ORT_KIND=gpu-index; ORT_SRC=$SAVED_INDEX; info "kept from before: --ort-index $ORT_SRC"
    fi
fi
case "$ORT_KIND" in
    gpu-wheel) info "choice: NVIDIA's Jetson GPU build of ONNX Runtime, $(basename "$ORT_SRC")"; ORT_WANT="gpu-wheel $(sha256sum "$ORT_SRC" | cut -d' ' -f1)" ;;
    gpu-index) info "choice: NVIDIA's Jetson GPU build of ONNX Runtime, onnxruntime-gpu from $ORT_SRC"; ORT_WANT="gpu-index $ORT_SRC" ;;
    cpu)
        if [ "$OFFLINE" = 1 ]; then
            info "choice: the CPU build of ONNX Runtime, offline: whatever --venv-from provides (--no-pip: none)"
        else
            info "choice: the CPU build of ONNX Runtime (onnxruntime from PyPI): no Jetson GPU wheel given or found"
        fi
        ORT_WANT=cpu
        if [ "$BACKEND" = jetson ]; then
            warn "this is a Jetson: without NVIDIA's GPU wheel the models run on the CPU only."
            info "Get onnxruntime_gpu for JetPack 6 / Python $PYVER (NVIDIA's Jetson wheels; the generic"
            info "PyPI onnxruntime-gpu has no CUDA for Jetson), put it in /opt/sunlit/wheels and run install.sh again."
        fi ;;
esac
# The wheel is kept where every later run looks first, and its path in install.conf: the checkout it came
# from (push.sh's copy, made anew each time) may not have it next time.
KEPT_WHEEL=""
if [ "$ORT_KIND" = gpu-wheel ]; then
    KEPT_WHEEL=/opt/sunlit/wheels/$(basename "$ORT_SRC")
    if [ "$ORT_SRC" != "$(T "$KEPT_WHEEL")" ]; then
        ensure_dir "$OPT/wheels" 0755
        install_file "$ORT_SRC" "$(T "$KEPT_WHEEL")" 0644
    fi
fi
ORT_MARK=$VENV/.sunlit-ort
describe_ort_install() {
    case "$ORT_KIND" in
        gpu-wheel) printf '%q -m pip uninstall -y onnxruntime   (not offline)\n%q -m pip install --no-deps --force-reinstall %q\n' "$VPY" "$VPY" "$ORT_SRC" ;;
        gpu-index) printf '%q -m pip uninstall -y onnxruntime\n%q -m pip install --no-deps --force-reinstall --index-url %q onnxruntime-gpu\n' "$VPY" "$VPY" "$ORT_SRC" ;;
        cpu) printf '%q -m pip uninstall -y onnxruntime-gpu\n%q -m pip install --force-reinstall onnxruntime\n' "$VPY" "$VPY" ;;
    esac
}
ort_install() {
    case "$ORT_KIND" in
        gpu-wheel)
            # Sunlit depends on "onnxruntime", the CPU package; both install the same module.
            # Offline the CPU build belongs to the --venv-from environment: leave it there.
            local offline=()
            if [ "$OFFLINE" = 0 ]; then
                "$VPY" -m pip uninstall --quiet -y onnxruntime >/dev/null 2>&1 || true
            else
                offline=(--no-index)
            fi
            # A wheel pip refuses is said (found in review: exit 1, and nothing of install.sh's)
            "$VPY" -m pip install --quiet --disable-pip-version-check --no-deps --force-reinstall \
                "${offline[@]}" "$ORT_SRC" \
                || die "pip could not install $ORT_SRC (its messages above): a wheel for this board's Python ($PYTAG, \
aarch64) and JetPack? Then run install.sh again" ;;
        gpu-index)
            "$VPY" -m pip uninstall --quiet -y onnxruntime >/dev/null 2>&1 || true
            "$VPY" -m pip install --quiet --disable-pip-version-check --no-deps --force-reinstall \
                --index-url "$ORT_SRC" onnxruntime-gpu || pip_failed "onnxruntime-gpu" "$ORT_SRC" ;;
        cpu)  # back from a GPU build: sunlit's own dependency is the CPU package
            "$VPY" -m pip uninstall --quiet -y onnxruntime-gpu >/dev/null 2>&1 || true
            "$VPY" -m pip install --quiet --disable-pip-version-check --force-reinstall onnxruntime \
                || pip_failed "onnxruntime" ;;
    esac
    printf '%s\n' "$ORT_WANT" >"$ORT_MARK"
}
ORT_PREV=$(cat "$ORT_MARK" 2>/dev/null || true)
if [ "$ORT_KIND" = cpu ]; then
    case "$ORT_PREV" in
        gpu-*) warn "ONNX Runtime was NVIDIA's GPU build (${ORT_PREV%% *}); none is given, kept or found now, so the"
               info "CPU build replaces it. Give --ort-wheel or --ort-index to keep the GPU build." ;;
    esac
fi
if [ "$ORT_PREV" = "$ORT_WANT" ] && [ "$SUNLIT_CHANGED" = 0 ]; then
    ok "ONNX Runtime as chosen ($ORT_KIND)"
elif [ "$ORT_KIND" = cpu ] && [ "${ORT_PREV%% *}" != gpu-wheel ] && [ "${ORT_PREV%% *}" != gpu-index ]; then
    # A fresh Sunlit install brought the CPU build as its dependency (or, offline, none).
    if [ "$DRY" = 1 ]; then info "the CPU build comes with Sunlit's dependencies"; else printf 'cpu\n' >"$ORT_MARK"; fi
elif [ "$OFFLINE" = 1 ] && [ "$ORT_KIND" != gpu-wheel ]; then
    info "offline: not installing $ORT_KIND here"
else
    act "install ONNX Runtime ($ORT_KIND${ORT_SRC:+: $ORT_SRC})" ort_install
fi
if [ "$DRY" = 0 ] && ORT_NOW=$("$VPY" -c 'import onnxruntime as o; print(o.__version__, ", ".join(o.get_available_providers()))' 2>/dev/null); then
    info "installed: onnxruntime ${ORT_NOW%% *}, providers ${ORT_NOW#* }"
    case "$ORT_KIND" in
        gpu-*) case "$ORT_NOW" in *CUDAExecutionProvider*) ;; *) warn "the GPU build is installed but lists no CUDA provider: is JetPack's CUDA installed (apt install nvidia-jetpack)?" ;; esac ;;
    esac
elif [ "$DRY" = 0 ]; then
    info "onnxruntime is not importable in the venv$([ "$NO_PIP" = 1 ] && echo ' (--no-pip: no dependencies installed)')"
fi
if [ "$SUNLIT_CHANGED" = 1 ] && [ "$DRY" = 0 ]; then printf '%s\n' "$SRC_HASH" >"$SRC_MARK"; fi
VENV_WORKS=0
if [ "$DRY" = 0 ] && "$VPY" -c 'import flight.config, flight.compute.store, flight.compute.usecase.shipped, onnxruntime; onnxruntime.InferenceSession' >/dev/null 2>&1; then
    VENV_WORKS=1
fi

# --- helpers, documentation, services --------------------------------------------------------

step files
install_file "$HERE/libexec/sunlit-power-access" "$OPT/libexec/sunlit-power-access" 0755
install_file "$HERE/libexec/sunlit-safe-config" "$OPT/libexec/sunlit-safe-config" 0755
install_file "$HERE/README.md" "$OPT/share/README.md" 0644
install_file "$HERE/uninstall.sh" "$OPT/share/uninstall.sh" 0755
install_file "$HERE/dump_board.py" "$OPT/share/dump_board.py" 0755
UNITS_CHANGED=0
install_file "$HERE/systemd/sunlit-agent.service" "$UNIT_DIR/sunlit-agent.service" 0644
UNITS_CHANGED=$((UNITS_CHANGED | CHANGED))
install_file "$HERE/systemd/sunlit-safe.service" "$UNIT_DIR/sunlit-safe.service" 0644
UNITS_CHANGED=$((UNITS_CHANGED | CHANGED))
# The grant again whenever /etc/nvpmodel.conf appears or changes under a running agent (README.md, "Privileges").
install_file "$HERE/systemd/sunlit-power-access.service" "$UNIT_DIR/sunlit-power-access.service" 0644
UNITS_CHANGED=$((UNITS_CHANGED | CHANGED))
install_file "$HERE/systemd/sunlit-power-access.path" "$UNIT_DIR/sunlit-power-access.path" 0644
UNITS_CHANGED=$((UNITS_CHANGED | CHANGED))
PATH_UNIT_CHANGED=$CHANGED
# From systemd 254 a service being restarted passes through "failed", so OnFailure= would start
# the SAFE fallback after the first crash, whose Conflicts= then cancels the restart.
# RestartMode=direct (new in 254; older versions warn about it) restores what the unit expects:
# OnFailure= only once the start limit is hit. JetPack 6 has systemd 249 and needs none.
RESTART_DROPIN=$UNIT_DIR/sunlit-agent.service.d/10-restart-mode.conf
SYSTEMD_VERSION=$(systemctl --version 2>/dev/null | awk 'NR == 1 {print $2 + 0}' || true)
SYSTEMD_VERSION=${SYSTEMD_VERSION:-0}
if [ "$SYSTEMD_VERSION" -ge 254 ]; then
    printf '# Written by deploy/install.sh for systemd %s: restart without passing through "failed",\n# so OnFailure= (the SAFE fallback) fires only when the start limit is hit.\n[Service]\nRestartMode=direct\n' \
        "$SYSTEMD_VERSION" >"$WORK/restart-mode.conf"
    install_file "$WORK/restart-mode.conf" "$RESTART_DROPIN" 0644
    UNITS_CHANGED=$((UNITS_CHANGED | CHANGED))
elif [ -e "$RESTART_DROPIN" ]; then
    act "remove $RESTART_DROPIN (systemd $SYSTEMD_VERSION has no RestartMode=)" rm -f "$RESTART_DROPIN"
    UNITS_CHANGED=1
else
    ok "no RestartMode= drop-in (systemd $([ "$SYSTEMD_VERSION" = 0 ] && echo "version unknown" || echo "$SYSTEMD_VERSION < 254"))"
fi
# What a copy below owes the running system (journald restarted, udev's rules reloaded), marked as soon as it is made
# and cleared once done: a run cut short after it (Ctrl-C, a full disk, --no-systemctl) left journald and udev on the
# old settings, and the next run, finding the files right, never did it (found in audit).
OWED=$OPT/.owed
owe() {  # owe NAME: what the copy just made owes, kept for the next run (a live system only: --root has none)
    if [ "$CHANGED" = 1 ] && [ "$DRY" = 0 ] && [ -z "$ROOT" ]; then
        { mkdir -p "$OWED" && : >"$OWED/$1"; } \
            || warn "cannot mark $OWED/$1: a run cut short before it is done leaves it undone"
    fi
}
install_file "$HERE/systemd/journald.conf.d/sunlit.conf" "$JOURNALD_DROPIN" 0644
JOURNALD_CHANGED=$CHANGED
owe journald-restart
sed "s/KERNEL==\"ttyTHS[0-9]*\"/KERNEL==\"$UART\"/" "$HERE/udev/99-sunlit-link.rules" >"$WORK/udev.rules"
install_file "$WORK/udev.rules" "$UDEV_RULE" 0644
UDEV_CHANGED=$CHANGED
owe udev-reload
if [ -e "$OWED/journald-restart" ]; then JOURNALD_CHANGED=1; fi
if [ -e "$OWED/udev-reload" ]; then UDEV_CHANGED=1; fi

# --- configuration ---------------------------------------------------------------------------

step configuration
{
    printf '# Sunlit agent configuration, written by deploy/install.sh for this board:\n'
    printf '#   model "%s" -> %s\n' "${MODEL_SHOWN:-none}" "${BOARD:-no Jetson profile (linux backend)}"
    printf '# Every key and its default: flight/config.py. install.sh never overwrites this file:\n'
    printf '# when its own default changes it writes agent.toml.new beside it.\n\n'
    printf '[link]\n'
    printf '# zmq://HOST:PORT (commands on PORT, telemetry on PORT+1), zmq+ipc:///run/sunlit/link,\n'
    printf '# or the serial line to the spacecraft: serial:///dev/sunlit-link?baud=115200\n'
    printf 'url = "%s"\n\n' "$LINK_URL"
    printf '[hal]\n'
    printf 'backend = "%s"\n' "$BACKEND"
    if [ -n "$BOARD_OPT" ]; then
        printf '# Pinned by install.sh --board: the device-tree model does not name it (or was overruled).\n'
        printf 'board = "%s"\n' "$BOARD"
    elif [ -n "$BOARD" ]; then
        printf '# The profile is detected from /proc/device-tree/model at each start; uncomment to pin it.\n'
        printf '# board = "%s"\n' "$BOARD"
    fi
    printf '\n[paths]\nstate_dir = "/var/lib/sunlit/state"\n\n'
    printf '[compute]\ndir = "/var/lib/sunlit/compute"\n'
    printf '# true: the GPU may round Conv/MatMul operands to TF32 (faster); the checksum pass then\n'
    printf '# allows for that rounding and catches fewer faults (flight/compute/arithmetic.py)\n'
    printf 'gpu_tf32 = false\n\n'
    printf '[power]\n'
    printf '# true on a desk with no EPS and no battery: compute is admitted in full, telemetry says why\n'
    printf 'bench_supply = false\n\n'
    printf '[security]\n'
    printf '# Only telecommands sealed with a key of this file are taken (flight/link/sdls.py); the\n'
    printf '# ground server holds a copy. Rotation and lost keys: /opt/sunlit/share/README.md, "Keys".\n'
    printf 'tc_keys = "%s/tc.keys"\n' "$BOARD_KEYDIR"
    printf '# CurveZMQ on a zmq link (zmq_curve = "auto": on unless the link is ipc or loopback): the\n'
    printf "# agent's certificate, and the grounds' public certificates (*.key) allowed to connect.\n"
    printf 'zmq_server_secret = "%s/zmq/agent.key_secret"\n' "$BOARD_KEYDIR"
    printf 'zmq_clients = "%s/zmq/clients"\n' "$BOARD_KEYDIR"
} >"$WORK/agent.toml"
DEFAULT_COPY=$OPT/share/agent.default.toml
# An empty one is no one's choice: an edit a power cut cut short (sudoedit writes the file in place), a `>` by mistake.
# Kept, it ran the agent on its built-in defaults (the linux backend on a Jetson, no telecommand keys) while every
# run said "ok: kept" (found in audit). It gets the default, as a missing one does.
CONF_EMPTY=0
if [ -f "$CONF" ] && [ -r "$CONF" ] && ! grep -v '^[[:space:]]*#' "$CONF" | grep -q '[^[:space:]]'; then
    CONF_EMPTY=1
    warn "$CONF is empty or comments only (an edit cut short?): the agent would run on its built-in defaults; the default replaces it"
fi
if [ ! -e "$CONF" ] || [ "$CONF_EMPTY" = 1 ]; then
    install_file "$WORK/agent.toml" "$CONF" 0640 "root:$SVC"
elif cmp -s "$WORK/agent.toml" "$CONF"; then
    install_file "$WORK/agent.toml" "$CONF" 0640 "root:$SVC"   # same content: checks mode and owner
elif [ -f "$DEFAULT_COPY" ] && cmp -s "$WORK/agent.toml" "$DEFAULT_COPY"; then
    ok "$CONF kept: it differs from the default, and the default has not changed since the last install"
    # Said at every run while it is there (once said only on the run that wrote it).
    [ -f "$CONF.new" ] && ! cmp -s "$CONF" "$CONF.new" && info "$CONF.new, an earlier default, is still beside it: diff $CONF $CONF.new"
else
    info "$CONF kept (never overwritten); the default for this board differs from it:"
    install_file "$WORK/agent.toml" "$CONF.new" 0640 "root:$SVC"
    [ "$CHANGED" = 1 ] && info "compare them: diff $CONF $CONF.new"
fi
# A kept config names its own link: --link (kept in install.conf) changed the default, not it.
if [ -f "$CONF" ] && [ -r "$CONF" ]; then
    KEPT_LINK=$(awk '/^[[:space:]]*\[/ { in_link = ($0 ~ /^[[:space:]]*\[[[:space:]]*link[[:space:]]*\]/); next }
        in_link && /^[[:space:]]*url[[:space:]]*=/ {
            sub(/^[^=]*=[[:space:]]*/, ""); q = substr($0, 1, 1)
            if (q == "\"" || q == "\047") { v = substr($0, 2); sub(q ".*", "", v); print v; exit } }' "$CONF")
    if [ -n "$LINK_ASKED" ] && [ -n "$KEPT_LINK" ] && [ "$KEPT_LINK" != "$LINK_URL" ]; then
        warn "$CONF names the link $KEPT_LINK, and the agent uses it; install.sh was given $LINK_URL"
        info "(--link, kept in install.conf). Set [link] url in $CONF to change it (diff $CONF $DEFAULT_COPY)."
    fi
fi
# A kept config from before telecommand authentication: the agent takes any command then.
if [ -f "$CONF" ] && [ -r "$CONF" ] \
    && ! sed -n '/^[[:space:]]*\[[[:space:]]*security[[:space:]]*\]/,/^[[:space:]]*\[/p' "$CONF" \
        | grep -Eq '^[[:space:]]*tc_keys[[:space:]]*='; then
    warn "$CONF has no [security] tc_keys: the agent takes unauthenticated telecommands from anyone"
    info "who reaches its link. Add the [security] lines of the default (diff $CONF $DEFAULT_COPY)."
fi
# The SAFE fallback uses this copy when agent.toml does not parse (sunlit-safe-config).
install_file "$WORK/agent.toml" "$DEFAULT_COPY" 0644
{
    printf '# Written by deploy/install.sh: the choices a later run keeps when not given again.\n'
    printf 'board=%s\nlink=%s\nuart=%s\n' "$BOARD_OPT" "$LINK_ASKED" "$UART_OPT"
    printf 'ort_wheel=%s\nort_index=%s\n' "$KEPT_WHEEL" "$([ "$ORT_KIND" = gpu-index ] && printf '%s' "$ORT_SRC")"
} >"$WORK/install.conf"
install_file "$WORK/install.conf" "$CHOICES" 0640 "root:$SVC"
# The config is checked with the agent's loader once the keys it names exist (below).

# --- keys ------------------------------------------------------------------------------------

step keys
# keep_secret FILE WHAT: an existing key file is kept; only its mode and owner are corrected.
keep_secret() {
    local file=$1 what=$2 fixed=0
    if [ "$(mode_of "$file")" != 600 ]; then act "chmod 0600 $file" chmod 0600 "$file"; fixed=1; fi
    if [ "$OWN" = 1 ] && [ "$(owner_of "$file")" != "$SVC:$SVC" ]; then act "chown $SVC:$SVC $file" chown "$SVC:$SVC" "$file"; fixed=1; fi
    [ "$fixed" = 1 ] || ok "$file kept ($what)"
}

# The telecommand keys (flight/link/sdls.py KeyRing): SPI 1 seals and checks telecommands;
# SPI 100, the master key, only unwraps new keys uploaded by KEY_LOAD and never authenticates a
# command. 32 bytes each from /dev/urandom, in hex, with shell tools only (no venv needed).
rand_hex() { od -An -tx1 -N32 /dev/urandom | tr -d ' \n'; }
# shellcheck disable=SC2016  # commands shown, not run: their $(...) and $d stay as they are
describe_make_tc_keys() {
    local rand="od -An -tx1 -N32 /dev/urandom | tr -d ' \\n'"
    printf '(umask 077; printf "1 %%s\\n100 %%s master\\n" "$(%s)" "$(%s)" > %q)   (after a comment header)\n' \
        "$rand" "$rand" "$TC_KEYS.tmp"
    if [ "$OWN" = 1 ]; then printf 'chown %s:%s %q\n' "$SVC" "$SVC" "$TC_KEYS.tmp"; fi
    printf 'sync %q; mv %q %q\n' "$TC_KEYS.tmp" "$TC_KEYS.tmp" "$TC_KEYS"
}
make_tc_keys() {
    local tmp=$TC_KEYS.tmp active master
    active=$(rand_hex)
    master=$(rand_hex)
    case "$active$master" in
        *[!0-9a-f]*) die "reading /dev/urandom gave no hex key" ;;
    esac
    if [ ${#active} != 64 ] || [ ${#master} != 64 ]; then die "reading /dev/urandom gave a short key"; fi
    rm -f "$tmp"
    (
        umask 077
        {
            printf '# Sunlit telecommand keys, made by deploy/install.sh (format: flight/link/sdls.py KeyRing).\n'
            printf '# SPI KEY [state]: no state = active (seals telecommands); master = key-encryption key,\n'
            printf '# only unwraps keys sent up by KEY_LOAD. The ground server holds a copy ([[spacecraft]]\n'
            printf '# tc_keys); keep a copy offline as well: /opt/sunlit/share/README.md, "Keys".\n'
            printf '1 %s\n100 %s master\n' "$active" "$master"
        } >"$tmp"
    )
    chmod 0600 "$tmp"
    if [ "$OWN" = 1 ]; then chown "$SVC:$SVC" "$tmp"; fi
    sync "$tmp" 2>/dev/null || sync     # a power cut must not leave an empty key file behind
    mv "$tmp" "$TC_KEYS"
    sync "$KEYDIR" 2>/dev/null || sync  # and the rename itself
}
if [ -f "$TC_KEYS" ]; then
    keep_secret "$TC_KEYS" "telecommand keys"
    if [ -r "$TC_KEYS" ] && ! grep -Eq '^[[:space:]]*[0-9]+[[:space:]]+[0-9a-fA-F]{64}[[:space:]]+master[[:space:]]*(#.*)?$' "$TC_KEYS"; then
        info "$TC_KEYS has no master key: new keys cannot be sent up by command (KEY_LOAD)"
    fi
else
    act "generate the telecommand keys $TC_KEYS (SPI 1 active, SPI 100 master; mode 0600)" make_tc_keys
    info "copy $TC_KEYS to the ground server over a secure channel"
    info "(scp or ssh; never over the link, never by e-mail), mode 600 there, and name it in the ground"
    info "server's config: [[spacecraft]] tc_keys = PATH. Keep one more copy offline, on paper in a"
    info "safe: without it a ground that loses its key file must re-flash the board (README.md, \"Lost keys\")."
    info "On the ground, move the master out of the server's copy: sunlit-ground key split --keys PATH"
    info "--master-keys CUSTODIAN-FILE (README.md, \"Keys\")."
fi
if [ -f "$OLD_KEY" ]; then
    info "$OLD_KEY (the link key of earlier versions) is not used by anything; kept: remove it when you like"
fi

# The agent's CurveZMQ certificate (pyzmq's zmq.auth format): made with the venv's pyzmq in a
# private directory beside it, the secret 0600 before it is moved into place (the secret last:
# it is what says the pair exists).
# shellcheck disable=SC2016  # commands shown, not run: their $(...) and $d stay as they are
describe_make_zmq_cert() {
    printf 'd=$(mktemp -d %q)\n' "$ZMQDIR/.new.XXXXXX"
    printf '(umask 077; %q -c %s "$d")\n' "$VPY" "'import sys, zmq.auth; zmq.auth.create_certificates(sys.argv[1], \"agent\")'"
    printf 'chmod 0600 "$d/agent.key_secret"; chmod 0644 "$d/agent.key"\n'
    if [ "$OWN" = 1 ]; then printf 'chown %s:%s "$d/agent.key" "$d/agent.key_secret"\n' "$SVC" "$SVC"; fi
    printf 'mv "$d/agent.key" %q; mv "$d/agent.key_secret" %q; rmdir "$d"\n' "$ZMQ_PUBLIC" "$ZMQ_SECRET"
}
make_zmq_cert() {
    local d
    rm -rf "$ZMQDIR"/.new.*        # left by an interrupted run
    d=$(mktemp -d "$ZMQDIR/.new.XXXXXX")
    (umask 077 && "$VPY" -c 'import sys, zmq.auth; zmq.auth.create_certificates(sys.argv[1], "agent")' "$d")
    chmod 0600 "$d/agent.key_secret"
    chmod 0644 "$d/agent.key"
    if [ "$OWN" = 1 ]; then chown "$SVC:$SVC" "$d/agent.key" "$d/agent.key_secret"; fi
    sync "$d/agent.key" "$d/agent.key_secret" 2>/dev/null || sync  # never an empty secret after a power cut
    mv "$d/agent.key" "$ZMQ_PUBLIC"
    mv "$d/agent.key_secret" "$ZMQ_SECRET"
    rmdir "$d"
    sync "$ZMQDIR" 2>/dev/null || sync  # the renames themselves
}
if [ -f "$ZMQ_SECRET" ]; then
    keep_secret "$ZMQ_SECRET" "the agent's CurveZMQ secret certificate"
    if [ ! -f "$ZMQ_PUBLIC" ]; then
        warn "$ZMQ_PUBLIC is missing beside $ZMQ_SECRET: the ground needs it; remove the secret and run install.sh again for a new pair"
    fi
elif [ "$DRY" = 1 ] || { [ -x "$VPY" ] && "$VPY" -c 'import zmq.auth' >/dev/null 2>&1; }; then
    act "generate the agent's CurveZMQ certificate $ZMQ_PUBLIC and $ZMQ_SECRET (mode 0600)" make_zmq_cert
    info "give the ground server a copy of $ZMQ_PUBLIC (its [[spacecraft]] zmq_server_public),"
    info "and put the ground's public certificate (its NAME.key, never NAME.key_secret) into"
    info "$ZMQ_CLIENTS/ (README.md, \"CurveZMQ\"): a link off loopback takes no ground without it."
else
    info "not made: the venv cannot import pyzmq; run install.sh again once it can"
fi

# The agent's own check of its config, now that the keys it names exist. Under --root the
# [security] files are looked up under ROOT (the config names them as the board sees them).
if [ "$VENV_WORKS" = 1 ] && [ -f "$CONF" ]; then
    if err=$("$VPY" - "$CONF" "$ROOT" 2>&1 <<'PYEOF'
import sys
from pathlib import Path

from flight.config import load_config

conf, root = sys.argv[1], sys.argv[2]
overrides = {}
if root:
    try:
        import tomllib
    except ImportError:  # Python 3.10: tomli is a dependency of Sunlit there
        import tomli as tomllib
    try:
        security = tomllib.loads(Path(conf).read_text()).get("security", {})
    except (OSError, ValueError):
        security = {}  # load_config says what is wrong with it
    if isinstance(security, dict):
        overrides = {f"security.{key}": root + value for key, value in security.items()
                     if isinstance(value, str) and value.startswith("/")}
load_config(conf, overrides)
PYEOF
    ); then
        ok "$CONF passes the agent's checks${ROOT:+ (its [security] files looked up under $ROOT)}"
    else
        warn "$CONF does not pass the agent's checks: ${err##*$'\n'}"
    fi
fi

# --- model store -----------------------------------------------------------------------------

step "model store"
STORE=$VAR/compute/models
if [ -f "$STORE/golden/manifest.json" ]; then
    ok "$STORE has a golden copy"
elif [ "$DRY" = 1 ] || [ "$VENV_WORKS" = 1 ]; then
    describe_store_install() {
        printf '%q -c "ModelStore(%q).install(<the shipped model>, golden=True)"\n' "$VPY" "$STORE"
        if [ "$OWN" = 1 ]; then printf 'chown -R %s:%s %q\n' "$SVC" "$SVC" "$VAR/compute"; fi
    }
    store_install() {
        "$VPY" - "$STORE" <<'PYEOF'
import sys
from pathlib import Path

from flight.compute.store import ModelStore
from flight.compute.usecase.shipped import MODEL_FILE, MODEL_NAME, MODELS_DIR, load_card

# What the compute worker does on its first start (Worker.install_shipped_models).
store = ModelStore(Path(sys.argv[1]))
if not any(e.name == MODEL_NAME for e in store.list()):
    store.install(MODEL_NAME, str(load_card().get("version", "1")), MODELS_DIR / MODEL_FILE, golden=True)
PYEOF
        if [ "$OWN" = 1 ]; then chown -R "$SVC:$SVC" "$VAR/compute"; fi
    }
    act "install the shipped model into $STORE (working and read-only golden copy)" store_install
else
    info "not prepared: the venv cannot import Sunlit's dependencies; the agent installs it at its first start"
fi

# --- systemd and udev ------------------------------------------------------------------------

step systemd
if [ "$NO_SYSTEMCTL" = 1 ]; then
    info "not calling systemctl or udevadm (--no-systemctl). On the board, later:"
    info "systemctl daemon-reload && systemctl enable sunlit-agent && systemctl enable --now sunlit-power-access.path"
    info "&& udevadm control --reload-rules"
elif ! command -v systemctl >/dev/null 2>&1; then
    warn "no systemctl here: enable sunlit-agent.service and sunlit-power-access.path by hand"
elif [ -n "$ROOT" ]; then
    for unit in sunlit-agent.service sunlit-power-access.path; do
        if systemctl --root="$ROOT" is-enabled "$unit" >/dev/null 2>&1; then
            ok "$unit enabled in $ROOT"
        else
            act "enable $unit in $ROOT" systemctl --root="$ROOT" --quiet enable "$unit"
        fi
    done
else
    # Also when this run copied nothing: a run cut short after the copy (a full disk, Ctrl-C) left systemd on the
    # units it had read, and found nothing to copy the next time (found in review). systemd says which it read
    # from a file changed since.
    stale=""
    for unit in sunlit-agent.service sunlit-safe.service sunlit-power-access.service sunlit-power-access.path; do
        if [ "$(systemctl show -p NeedDaemonReload --value "$unit" 2>/dev/null || true)" = yes ]; then
            stale+=" $unit"
        fi
    done
    if [ "$UNITS_CHANGED" = 1 ]; then
        act "reload systemd's units" systemctl daemon-reload
    elif [ -n "$stale" ]; then
        act "reload systemd's units (changed on disk since systemd read them:$stale)" systemctl daemon-reload
    fi
    if systemctl is-enabled --quiet sunlit-agent.service 2>/dev/null; then
        ok "sunlit-agent.service enabled"
    else
        act "enable sunlit-agent.service (starts at boot)" systemctl enable --quiet sunlit-agent.service
    fi
    # Watching from now on, not from the next boot: a conf put back before then is granted too.
    if systemctl is-enabled --quiet sunlit-power-access.path 2>/dev/null; then
        ok "sunlit-power-access.path enabled"
    else
        act "enable sunlit-power-access.path (grants power-mode access when /etc/nvpmodel.conf appears or changes)" \
            systemctl enable --quiet sunlit-power-access.path
    fi
    if ! systemctl is-active --quiet sunlit-power-access.path 2>/dev/null; then
        act "start sunlit-power-access.path" systemctl start sunlit-power-access.path
    elif [ "$PATH_UNIT_CHANGED" = 1 ] || [[ "$stale" == *sunlit-power-access.path* ]]; then
        act "restart sunlit-power-access.path (it changed)" systemctl restart sunlit-power-access.path
    else
        ok "sunlit-power-access.path watching /etc/nvpmodel.conf"
    fi
    if [ "$JOURNALD_CHANGED" = 1 ]; then
        act "restart journald for the new size limits" systemctl restart systemd-journald
        if [ "$DRY" = 0 ]; then rm -f "$OWED/journald-restart"; fi
    fi
    if [ "$UDEV_CHANGED" = 1 ] && command -v udevadm >/dev/null 2>&1; then
        act "reload the udev rules" udevadm control --reload-rules
        act "apply them to serial devices" udevadm trigger --action=add --subsystem-match=tty
        if [ "$DRY" = 0 ]; then rm -f "$OWED/udev-reload"; fi
    fi
    # A login console on the link's UART would answer the spacecraft with a login prompt.
    for getty in "serial-getty@$UART.service" nvgetty.service; do
        if systemctl is-enabled --quiet "$getty" 2>/dev/null; then
            warn "$getty is enabled: a console on the UART may be on the link's line; if so: systemctl disable --now $getty"
        fi
    done
    if systemctl is-active --quiet sunlit-agent.service 2>/dev/null \
        && { [ $((SUNLIT_CHANGED | UNITS_CHANGED)) = 1 ] || [ -n "$stale" ]; }; then
        info "the agent is running the old version: systemctl restart sunlit-agent when the spacecraft allows"
    fi
fi

# The unit grants the power-mode files at every start; do it now too, so a selftest run as
# sunlit before the first start sees what the agent will (sysfs forgets it at reboot).
if [ "$OWN" = 1 ] && [ "$DRY" = 0 ] && [ -f /etc/nvpmodel.conf ]; then
    step "power modes"
    info "$(sh "$OPT/libexec/sunlit-power-access" --group "$SVC")"
fi

# --- summary ---------------------------------------------------------------------------------

printf '\n'
# Said again where it is read: a WARNING scrolls past in push.sh's output (found in audit: a config the agent refuses,
# then "nothing to change: Sunlit is installed and up to date").
if [ "$WARNINGS" -gt 0 ]; then
    printf '%d WARNING(s) above: read them before the agent starts\n' "$WARNINGS"
fi
if [ "$DRY" = 1 ]; then
    printf 'dry run: %d change(s) would be made; nothing was changed\n' "$CHANGES"
elif [ "$CHANGES" = 0 ]; then
    printf 'nothing to change: Sunlit is installed and up to date in %s\n' "$SHOWN_ROOT"
else
    printf 'done: %d change(s) in %s\n' "$CHANGES" "$SHOWN_ROOT"
    if [ -z "$ROOT" ]; then
        printf 'next: sudo -u %s %s selftest --config /etc/sunlit/agent.toml\n' "$SVC" "/opt/sunlit/venv/bin/sunlit-flight"
        printf '      sudo systemctl start sunlit-agent && journalctl -u sunlit-agent -f\n'
    fi
fi
