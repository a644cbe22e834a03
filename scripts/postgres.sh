#!/usr/bin/env bash
# A throwaway PostgreSQL cluster in a folder, for tests and local experiments.
#
#   scripts/postgres.sh start DIR [--stop-with-pid PID]
#       initdb a cluster in DIR/data, start it on a free port listening only on
#       127.0.0.1 (Unix socket in DIR), trust authentication, create the database
#       `registry`, and print shell lines to eval:
#           DATABASE_URL=postgres://postgres@127.0.0.1:PORT/registry
#           PGPORT=PORT
#       With --stop-with-pid, a detached watchdog stops the cluster and removes what
#       this script put in DIR once process PID exits (test binaries whose fixture is
#       never dropped use this).
#   scripts/postgres.sh createdb DIR NAME
#       create database NAME in the running cluster and print its DATABASE_URL line.
#   scripts/postgres.sh stop DIR
#       stop the cluster (pg_ctl stop -m fast); succeeds if it is not running.
#
# Needs the PostgreSQL server binaries (initdb, pg_ctl, postgres, createdb): found on
# PATH, in $PG_BIN, or in /usr/lib/postgresql/*/bin (Debian: apt-get install postgresql).
# initdb and pg_ctl refuse to run as root, so as root they run as the `postgres` user
# (created if missing) via runuser, and DIR is handed to that user. Durability is off
# (fsync=off): the cluster is for throwaway data only.
#
# Diagnostics go to stderr; stdout carries only the KEY=value lines.
set -euo pipefail

self="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"

die() {
    echo "postgres.sh: $*" >&2
    exit 1
}

usage() {
    sed -n '2,19p' "$self" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

find_bindir() {
    if [ -n "${PG_BIN:-}" ] && [ -x "$PG_BIN/initdb" ]; then
        echo "$PG_BIN"
        return
    fi
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v initdb)")"
        return
    fi
    local d
    d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [ -n "$d" ] && [ -x "$d/initdb" ]; then
        echo "$d"
        return
    fi
    die "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH, in \$PG_BIN or in /usr/lib/postgresql/*/bin; on Debian/Ubuntu: apt-get install postgresql"
}

# Runs a server command as the cluster's owner: `postgres` when we are root.
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

ensure_owner_user() {
    [ "$(id -u)" -eq 0 ] || return 0
    if ! id postgres >/dev/null 2>&1; then
        echo "postgres.sh: creating system user postgres (initdb refuses to run as root)" >&2
        useradd --system --user-group --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin postgres ||
            die "could not create the postgres user; create it (useradd --system postgres) or run as a non-root user"
    fi
    command -v runuser >/dev/null 2>&1 || die "runuser (util-linux) is needed to run initdb as postgres"
}

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

abs_dir() {
    mkdir -p "$1"
    (cd "$1" && pwd)
}

cmd_start() {
    local dir watch_pid=""
    dir="$(abs_dir "$1")"
    shift
    while [ $# -gt 0 ]; do
        case "$1" in
        --stop-with-pid)
            [ $# -ge 2 ] || usage
            watch_pid="$2"
            shift 2
            ;;
        *) usage ;;
        esac
    done

    local bindir data log
    bindir="$(find_bindir)"
    data="$dir/data"
    log="$dir/postgres.log"
    [ ! -e "$data/PG_VERSION" ] || die "$data already holds a cluster; stop it and use a fresh folder"

    ensure_owner_user
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres: "$dir"
        chmod 700 "$dir"
        as_owner test -w "$dir" ||
            die "user postgres cannot write $dir (is a parent folder closed to it? use a folder under /tmp)"
    fi
    echo "$bindir" >"$dir/bindir"

    as_owner "$bindir/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 \
        --locale=C --no-sync --no-instructions >"$dir/initdb.log" 2>&1 ||
        { cat "$dir/initdb.log" >&2; die "initdb failed"; }

    local attempt port=""
    for attempt in 1 2 3 4 5 6 7 8; do
        port=$((20000 + RANDOM % 40000))
        if port_in_use "$port"; then
            continue
        fi
        # Appended settings override earlier ones, so a retry just appends a new port.
        cat >>"$data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
        if as_owner "$bindir/pg_ctl" start -w -t 60 -D "$data" -l "$log" >/dev/null 2>&1; then
            break
        fi
        if grep -q "could not bind\|Address already in use" "$log" 2>/dev/null; then
            port=""
            continue
        fi
        tail -n 20 "$log" >&2 || true
        die "pg_ctl start failed (log: $log)"
    done
    [ -n "$port" ] || die "no free port found after $attempt attempts"
    echo "$port" >"$dir/port"

    "$bindir/createdb" -h 127.0.0.1 -p "$port" -U postgres registry ||
        die "createdb registry failed (log: $log)"

    if [ -n "$watch_pid" ]; then
        # Own session and no inherited stdio: it must outlive the caller's process group
        # and must not hold the caller's output pipes open.
        setsid bash -c '
            while kill -0 "$1" 2>/dev/null; do sleep 1; done
            "$2" stop "$3" || true
            rm -rf "$3/data" "$3/postgres.log" "$3/initdb.log" "$3/port" "$3/bindir"
            rmdir "$3" 2>/dev/null || true
        ' watchdog "$watch_pid" "$self" "$dir" </dev/null >/dev/null 2>&1 &
    fi

    echo "DATABASE_URL=postgres://postgres@127.0.0.1:$port/registry"
    echo "PGPORT=$port"
}

cmd_createdb() {
    local dir="$1" name="$2"
    [ -f "$dir/port" ] || die "no cluster started in $dir"
    [[ "$name" =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || die "database name must match [a-z_][a-z0-9_]*: $name"
    local port bindir
    port="$(cat "$dir/port")"
    bindir="$(cat "$dir/bindir")"
    "$bindir/createdb" -h 127.0.0.1 -p "$port" -U postgres "$name" || die "createdb $name failed"
    echo "DATABASE_URL=postgres://postgres@127.0.0.1:$port/$name"
}

cmd_stop() {
    local dir="$1"
    [ -d "$dir" ] || return 0
    dir="$(cd "$dir" && pwd)"
    [ -f "$dir/data/postmaster.pid" ] || return 0
    local bindir
    if [ -f "$dir/bindir" ]; then
        bindir="$(cat "$dir/bindir")"
    else
        bindir="$(find_bindir)"
    fi
    as_owner "$bindir/pg_ctl" stop -D "$dir/data" -m fast -w >/dev/null
}

case "${1:-}" in
start)
    [ $# -ge 2 ] || usage
    shift
    cmd_start "$@"
    ;;
createdb)
    [ $# -eq 3 ] || usage
    cmd_createdb "$2" "$3"
    ;;
stop)
    [ $# -eq 2 ] || usage
    cmd_stop "$2"
    ;;
*) usage ;;
esac
