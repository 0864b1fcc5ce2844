# Shared settings and helpers for opsmeter's scripts. Source it; do not run it.
# Everything here can be overridden from the environment.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG_MAJOR=15
PG_BIN="/usr/lib/postgresql/${PG_MAJOR}/bin"
PG_CONFIG="${PG_CONFIG:-${PG_BIN}/pg_config}"
PGRX_VERSION="0.18.1"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# as_pg CMD...: run CMD as the OS user that owns clusters (postgres when we are root), from /
# (PostgreSQL's programs print "could not change directory to ...: Permission denied" when
# started in a folder that user cannot enter, such as a checkout under /root). Pass absolute
# paths.
as_pg() {
    if [ "$(id -u)" = 0 ]; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

# pg_dir NAME: a directory the cluster owner can use, reachable as $ROOT/NAME. When the
# checkout sits somewhere the postgres user cannot traverse (for example under /root), the
# real directory goes under /tmp and $ROOT/NAME becomes a symlink to it.
pg_dir() {
    local link="$ROOT/$1"
    if [ -L "$link" ] || [ -d "$link" ]; then
        readlink -f "$link"
        return
    fi
    if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$ROOT"; then
        local real
        real="/tmp/opsmeter-$(printf '%s' "$ROOT" | md5sum | cut -c1-8)-$1"
        mkdir -p "$real"
        ln -s "$real" "$link"
        readlink -f "$link"
    else
        mkdir -p "$link"
        readlink -f "$link"
    fi
}

# install_extension LOGNAME [--release]: build opsmeter and install it into Debian's
# PostgreSQL (with sudo when not root); the build log goes to .test/LOGNAME, its tail is shown
# on failure.
install_extension() {
    local log
    log="$(pg_dir .test)/$1"
    shift
    local sudo=()
    [ "$(id -u)" = 0 ] || sudo=(--sudo)
    cargo pgrx install "$@" "${sudo[@]}" --pg-config "$PG_CONFIG" >"$log" 2>&1 \
        || { tail -30 "$log"; die "cargo pgrx install failed (log: $log)"; }
}

# own_dir DIR: make DIR owned by the cluster owner.
own_dir() {
    mkdir -p "$1"
    if [ "$(id -u)" = 0 ]; then chown -R postgres:postgres "$1"; fi
}
