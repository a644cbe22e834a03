#!/usr/bin/env bash
# Runs the oci-conformance harness against CNCF distribution (`docker-registry`,
# e.g. Debian's package) started on a free loopback port in a temporary folder.
# Installs nothing: `docker-registry` must be on PATH.
#
#   scripts/conformance-vs-distribution.sh [extra oci-conformance args...]
#
# Prints the harness output and exits with its status (1 when a check failed;
# distribution 2.8 is expected to fail the referrers checks and a few others,
# see tests/README.md).
set -euo pipefail

cd "$(dirname "$0")/.."

if ! command -v docker-registry >/dev/null 2>&1; then
    echo "docker-registry not found (Debian: apt-get install docker-registry)" >&2
    exit 2
fi

workdir="$(mktemp -d)"
registry_pid=""
cleanup() {
    if [ -n "$registry_pid" ]; then
        kill "$registry_pid" 2>/dev/null || true
        wait "$registry_pid" 2>/dev/null || true
    fi
    rm -rf "$workdir"
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"

cat >"$workdir/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $workdir/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
EOF

docker-registry serve "$workdir/config.yml" >"$workdir/registry.log" 2>&1 &
registry_pid=$!

# Build first so the registry's start-up wait does not include compile time.
cargo build -p oci-conformance --release --quiet

for _ in $(seq 1 50); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$port/v2/" 2>/dev/null; then
        break
    fi
    if ! kill -0 "$registry_pid" 2>/dev/null; then
        echo "docker-registry exited; its log:" >&2
        cat "$workdir/registry.log" >&2
        exit 2
    fi
    sleep 0.2
done

echo "docker-registry $(docker-registry --version 2>/dev/null | awk '{print $NF}') on 127.0.0.1:$port"
status=0
cargo run -p oci-conformance --release --quiet -- --url "http://127.0.0.1:$port" "$@" || status=$?
exit "$status"
