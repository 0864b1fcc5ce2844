#!/usr/bin/env bash
# A throwaway PostgreSQL 15 cluster owned by the postgres OS user, in a project directory.
#   cluster.sh start NAME PORT [postgresql.conf line ...]   initdb if needed, (re)start
#   cluster.sh stop NAME
#   cluster.sh sockdir NAME                                 where its socket lives
# NAME is a directory under the project (e.g. .demo); data in NAME/data, log in NAME/log.
source "$(dirname "$0")/common.sh"

cmd="${1:?usage: cluster.sh start|stop|sockdir NAME [PORT conf...]}"
name="${2:?cluster name}"
base="$(pg_dir "$name")"
data="$base/data"
# Unix socket paths are limited to 107 bytes; a deep checkout gets its socket under /tmp.
sock="${SOCKDIR:-$base/sock}"
if [ "${#sock}" -gt 90 ]; then sock="/tmp/opsmeter-sock-$(printf '%s' "$base" | md5sum | cut -c1-8)"; fi

case "$cmd" in
sockdir)
    echo "$sock"
    ;;
start)
    port="${3:?port}"
    shift 3
    own_dir "$base"
    own_dir "$sock"
    if [ ! -f "$data/PG_VERSION" ]; then
        as_pg "$PG_BIN/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$base/initdb.log" 2>&1 \
            || { cat "$base/initdb.log"; die "initdb failed in $data"; }
    fi
    # Settings are rewritten on every start so a changed port or preload list takes effect.
    {
        echo "# written by scripts/cluster.sh; edit the script, not this file"
        echo "port = $port"
        echo "listen_addresses = ''"
        echo "unix_socket_directories = '$sock'"
        echo "fsync = off"
        echo "max_worker_processes = 16"
        for line in "$@"; do echo "$line"; done
    } >"$base/opsmeter.conf"
    chown postgres:postgres "$base/opsmeter.conf" 2>/dev/null || true
    grep -q "^include = '$base/opsmeter.conf'" "$data/postgresql.conf" \
        || echo "include = '$base/opsmeter.conf'" >>"$data/postgresql.conf"
    if as_pg "$PG_BIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        as_pg "$PG_BIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null
    fi
    as_pg "$PG_BIN/pg_ctl" -D "$data" -l "$base/log" -w -t 60 start >/dev/null \
        || { tail -20 "$base/log"; die "could not start the cluster in $data (port $port)"; }
    ;;
stop)
    if [ -f "$data/PG_VERSION" ] && as_pg "$PG_BIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        as_pg "$PG_BIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null
        echo "stopped the cluster in $data"
    else
        echo "no cluster running in $data"
    fi
    ;;
*)
    die "unknown command $cmd"
    ;;
esac
