#!/usr/bin/env bash
# Manifest GET throughput with pull counting and rate limits on and off (issue 15's target:
# at most 5% apart). Two servers from one release build, fs blobs + SQLite in fresh temp
# folders: "off" with `--pull-counts=false` and no limits, "on" with pull counting (the
# default) and generous pull and write limits (never reached, so every GET is tallied,
# spends from the limiter and answers 200 with the RateLimit-* headers). wrk drives
# anonymous GETs of one manifest from loopback, so every request spends from one key and
# tallies one manifest: the most contended case. The servers alternate within each
# repetition (odd reps: off first).
#
# With --instructions, each server instead runs under valgrind's callgrind with
# instrumentation switched on only while wrk runs (-c4), and the figure is instructions
# per request: slow, but independent of what else the machine is doing. --keep-profiles
# copies the callgrind files (off.cg, on.cg) to DIR for `callgrind_annotate`.
#
#   scripts/bench-rate-limits.sh [--reps N] [--secs S] [--connections C] [--registry-bin PATH]
#                                [--instructions [--keep-profiles DIR]]
#
# Installs nothing: needs `wrk`, `curl`, `sha256sum`, `python3` (and `valgrind` for
# --instructions) on PATH.
set -euo pipefail

cd "$(dirname "$0")/.."

reps=5
secs=10
connections=32
registry_bin=""
limit="1000000/1s"
instructions=""
keep=""
while [ $# -gt 0 ]; do
    case "$1" in
        --reps) reps="$2"; shift 2 ;;
        --secs) secs="$2"; shift 2 ;;
        --connections) connections="$2"; shift 2 ;;
        --registry-bin) registry_bin="$2"; shift 2 ;;
        --instructions) instructions=1; shift ;;
        --keep-profiles) keep="$2"; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
if [ -z "$registry_bin" ]; then
    cargo build --release --quiet -p registry
    registry_bin="$PWD/target/release/registry"
fi

work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wrapper=""
start() { # name extra-args... ; sets url and pid
    local name="$1" port
    shift
    port="$(free_port)"
    mkdir -p "$work/$name"
    RUST_LOG=warn $wrapper "$registry_bin" serve --listen "127.0.0.1:$port" \
        --storage "fs://$work/$name/blobs" --metadata "sqlite://$work/$name/registry.db" \
        --gc-interval off "$@" >"$work/$name.log" 2>&1 &
    pid=$!
    pids+=("$pid")
    url="http://127.0.0.1:$port"
    for _ in $(seq 1 600); do
        if curl -fs -o /dev/null "$url/v2/"; then
            return 0
        fi
        sleep 0.1
    done
    cat "$work/$name.log" >&2
    exit 2
}

# CPU time (user + system, in clock ticks) a process has used so far.
cpu_ticks() {
    awk '{print $14 + $15}' "/proc/$1/stat"
}

media=application/vnd.oci.image.manifest.v1+json
push_image() { # url
    local config='{"architecture":"amd64","os":"linux"}' digest manifest
    digest="sha256:$(printf %s "$config" | sha256sum | cut -d' ' -f1)"
    curl -fsS -o /dev/null -X POST --data-binary "$config" \
        -H 'Content-Type: application/octet-stream' "$1/v2/bench/app/blobs/uploads/?digest=$digest"
    manifest="{\"schemaVersion\":2,\"mediaType\":\"$media\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"$digest\",\"size\":${#config}},\"layers\":[]}"
    curl -fsS -o /dev/null -X PUT --data-binary "$manifest" -H "Content-Type: $media" \
        "$1/v2/bench/app/manifests/v1"
}

off_args=(--pull-counts=false)
on_args=(--pull-rate-limit "$limit" --write-rate-limit "$limit")

if [ -n "$instructions" ]; then
    # One server at a time under callgrind, instrumented only while wrk runs.
    for name in off on; do
        args_name="${name}_args[@]"
        wrapper="valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=$work/$name.cg"
        start "$name" "${!args_name}"
        push_image "$url"
        curl -fsS -o /dev/null -H "Accept: $media" "$url/v2/bench/app/manifests/v1"
        callgrind_control -i on "$pid" >/dev/null
        out="$(wrk -t1 -c4 -d"${secs}s" -H "Accept: $media" "$url/v2/bench/app/manifests/v1")"
        callgrind_control -i off "$pid" >/dev/null
        if grep -q 'Non-2xx' <<<"$out"; then echo "$name: non-2xx answers" >&2; exit 1; fi
        requests="$(awk '/requests in/ {print $1}' <<<"$out")"
        kill -INT "$pid"; wait "$pid" 2>/dev/null || true
        ir="$(grep -h '^summary:\|^totals:' "$work/$name.cg"* | awk '$1 == "totals:" {s += $2} END {print s}')"
        echo "$name $requests $ir" | tee -a "$work/instructions"
        if [ -n "$keep" ]; then mkdir -p "$keep" && cp "$work/$name.cg" "$keep/"; fi
    done
    echo "commit: $(git rev-parse --short HEAD); registry binary: $registry_bin"
    python3 - "$work/instructions" <<'EOF'
import sys
rows = {r[0]: (int(r[1]), int(r[2])) for r in (line.split() for line in open(sys.argv[1]))}
per = {k: ir / n for k, (n, ir) in rows.items()}
for k in ("off", "on"):
    print(f"{k:3} {rows[k][0]} requests, {per[k]:,.0f} instructions per request")
print(f"ratio on/off: {per['on'] / per['off']:.3f}")
EOF
    exit 0
fi

start off "${off_args[@]}"
off_url="$url" off_pid="$pid"
start on "${on_args[@]}"
on_url="$url" on_pid="$pid"
push_image "$off_url"
push_image "$on_url"
echo "limits on: $(curl -fsS -D - -o /dev/null -H "Accept: $media" "$on_url/v2/bench/app/manifests/v1" | grep -i '^ratelimit-limit' | tr -d '\r')"

run() { # label url pid rep
    local out before after
    before="$(cpu_ticks "$3")"
    out="$(wrk -t2 -c"$connections" -d"${secs}s" -H "Accept: $media" "$2/v2/bench/app/manifests/v1")"
    after="$(cpu_ticks "$3")"
    if grep -q 'Non-2xx' <<<"$out"; then
        echo "$1: some answers were not 2xx:" >&2
        echo "$out" >&2
        exit 1
    fi
    # label rep req/s requests server-cpu-ticks
    echo "$1 $4 $(awk '/Requests\/sec/ {print $2}' <<<"$out") $(awk '/requests in/ {print $1}' <<<"$out") $((after - before))" \
        | tee -a "$work/results"
}

echo "commit: $(git rev-parse --short HEAD); registry binary: $registry_bin"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "reps: $reps, wrk: -t2 -c$connections -d${secs}s; on: pull counting and limits $limit (pulls and writes); off: neither"
for rep in $(seq 1 "$reps"); do
    if [ $((rep % 2)) = 1 ]; then
        run off "$off_url" "$off_pid" "$rep"; run on "$on_url" "$on_pid" "$rep"
    else
        run on "$on_url" "$on_pid" "$rep"; run off "$off_url" "$off_pid" "$rep"
    fi
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$work/results" "$(getconf CLK_TCK)" <<'EOF'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
tick_us = 1e6 / int(sys.argv[2])
rps = {k: [float(r[2]) for r in rows if r[0] == k] for k in ("off", "on")}
# Server CPU per request: steadier than req/s on a machine shared with other work.
cpu = {k: [int(r[4]) * tick_us / int(r[3]) for r in rows if r[0] == k] for k in ("off", "on")}
med = {k: (statistics.median(rps[k]), statistics.median(cpu[k])) for k in rps}
for k in ("off", "on"):
    print(f"{k:3} req/s: {' '.join(f'{v:.0f}' for v in rps[k])} (median {med[k][0]:.0f}); "
          f"server CPU us/request: {' '.join(f'{v:.1f}' for v in cpu[k])} (median {med[k][1]:.1f})")
print(f"ratio on/off (medians): req/s {med['on'][0] / med['off'][0]:.3f}, "
      f"CPU per request {med['on'][1] / med['off'][1]:.3f}")
EOF
