#!/usr/bin/env bash
# S3 blob benchmark: our registry with S3 blobs, CNCF distribution 2.8 (`docker-registry`)
# with its `s3` driver, and SeaweedFS alone, side by side in one run.
#
#   push_mono_c1     64 MiB blobs, POST + PUT ?digest=, concurrency 1
#   push_mono_c4     the same at concurrency 4
#   push_chunked_c1  64 MiB blobs, POST + 8 MiB PATCHes + empty PUT ?digest=, concurrency 1
#   pull_c1 / _c4    GETs of 4 distinct 64 MiB blobs (pushed untimed), every byte read
#   pull_c4_redirect (with --with-redirect) pull_c4 from a second registry of each kind that
#                    answers blob GETs with a redirect to a presigned S3 URL (ours:
#                    --redirect-min-size 1048576; distribution: its s3 driver's default)
#
# The registries are driven by registry-bench; SeaweedFS alone by storage-s3's example
# `s3_direct` (the same HTTP client, signing with rusty-s3): a PUT per blob for the
# monolithic pushes, a multipart upload of 8 MiB parts for the chunked one, GETs for pulls.
# Each side has its own fresh SeaweedFS per repetition (started the same way by
# scripts/seaweedfs.sh, which caps a server at ~4 GiB), so no side writes into a server
# another side filled. Every scenario runs on the three sides back to back; the order is
# reversed on even repetitions. Ours runs with SQLite metadata and RUST_LOG=warn,
# distribution with log level warn and no access log; neither redirects pulls.
# Prints medians and the ratios ours/SeaweedFS and ours/distribution. See
# docs/performance.md.
#
#   scripts/bench-s3.sh [--reps N] [--out DIR] [--smoke] [--registry-bin PATH] [--only LIST]
#                       [--ours-params QUERY] [--with-redirect] [--s3-rate MBIT]
#
#   --reps N      repetitions (default 3)
#   --out DIR     keep results.jsonl, report.md and the logs there (default: a temp folder)
#   --smoke       tiny sizes, one repetition: checks the plumbing
#   --registry-bin PATH  benchmark this `registry` binary instead of target/release/registry
#   --only LIST   only these scenarios (comma-separated names from the list above)
#   --ours-params QUERY  appended to our --storage URL (e.g. part_size=16777216)
#   --with-redirect  also pull_c4_redirect
#   --s3-rate MBIT  put every SeaweedFS behind a link of MBIT megabits/s each way instead
#                 of loopback, as S3 is across a network from a registry
#                 (scripts/shaped-link.sh: a network namespace and a tbf-shaped veth pair;
#                 needs root, `ip` and `tc`). The registries and s3_direct stay here and
#                 cross the same link.
#
# Needs `docker-registry`, `weed` (scripts/ci-deps.sh installs both), curl and python3.
set -euo pipefail

cd "$(dirname "$0")/.."

reps=3
out=""
smoke=0
registry_bin=""
only=""
ours_params=""
with_redirect=0
s3_rate=""
while [ $# -gt 0 ]; do
    case "$1" in
        --reps) reps="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --smoke) smoke=1; shift ;;
        --registry-bin) registry_bin="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"; shift 2 ;;
        --only) only=",$2,"; shift 2 ;;
        --ours-params) ours_params="&$2"; shift 2 ;;
        --with-redirect) with_redirect=1; shift ;;
        --s3-rate) s3_rate="$2"; shift 2 ;;
        -h|--help) sed -n '2,41p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

for tool in docker-registry curl python3; do
    command -v "$tool" >/dev/null 2>&1 || { echo "$tool not found on PATH" >&2; exit 2; }
done
# shellcheck source=scripts/shaped-link.sh
. scripts/shaped-link.sh
if [ -n "$s3_rate" ]; then
    shaped_link_check --s3-rate "$s3_rate"
fi

blob_mib=64; chunk_mib=8
push_c1=4; push_c4=8; chunked=4; pull_distinct=4; pull_c1=8; pull_c4=16
if [ "$smoke" = 1 ]; then
    reps=1; blob_mib=6; chunk_mib=5
    push_c1=2; push_c4=4; chunked=2; pull_distinct=2; pull_c1=2; pull_c4=4
fi

if [ -z "$out" ]; then
    out="$(mktemp -d -t bench-s3.XXXXXX)"
fi
mkdir -p "$out"
out="$(cd "$out" && pwd)"
results="$out/results.jsonl"
log="$out/bench.log"
: >"$results"
: >"$log"

work="$(mktemp -d -t bench-s3-servers.XXXXXX)"
chmod 755 "$work"
ours_pid=""
theirs_pid=""
ours_redirect_pid=""
theirs_redirect_pid=""
stop_servers() {
    for pid in $ours_pid $theirs_pid $ours_redirect_pid $theirs_redirect_pid; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    ours_pid=""
    theirs_pid=""
    ours_redirect_pid=""
    theirs_redirect_pid=""
    for side in ours distribution seaweedfs; do
        scripts/seaweedfs.sh stop "$work/sw-$side" >/dev/null 2>&1 || true
        rm -rf "$work/sw-$side"
    done
}
cleanup() {
    stop_servers
    shaped_link_down
    rm -rf "$work" 2>/dev/null || true
}
trap cleanup EXIT
# A signal ends the run through the EXIT trap, so no server outlives it.
trap 'exit 130' INT TERM

target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
if [ -z "$registry_bin" ]; then
    cargo build --release --quiet -p registry -p registry-bench
    registry_bin="$target_dir/release/registry"
else
    cargo build --release --quiet -p registry-bench
fi
cargo build --release --quiet -p storage-s3 --example s3_direct
bench="$target_dir/release/registry-bench"
direct="$target_dir/release/examples/s3_direct"
unset AWS_PROFILE AWS_SESSION_TOKEN
if [ -n "$s3_rate" ]; then
    shaped_link_up bench-s3 "$s3_rate"
fi

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_ready() { # url pid name logfile
    for _ in $(seq 1 150); do
        curl -fsS -o /dev/null "$1/v2/" 2>/dev/null && return 0
        if ! kill -0 "$2" 2>/dev/null; then
            echo "$3 exited; its log:" >&2
            cat "$4" >&2
            exit 2
        fi
        sleep 0.1
    done
    echo "$3 did not become ready" >&2
    exit 2
}

# seaweedfs SIDE: a fresh server for SIDE; prints its variables as NAME=VALUE lines.
seaweedfs() {
    scripts/seaweedfs.sh stop "$work/sw-$1" >/dev/null 2>&1 || true
    rm -rf "$work/sw-$1"
    mkdir -p "$work/sw-$1"
    if [ -n "$s3_rate" ]; then
        "${shaped_exec[@]}" env SEAWEEDFS_IP="$shaped_remote_ip" \
            scripts/seaweedfs.sh start "$work/sw-$1" 2>>"$log"
    else
        scripts/seaweedfs.sh start "$work/sw-$1" 2>>"$log"
    fi
}

# with_env SIDE CMD...: CMD with SIDE's SeaweedFS variables in its environment.
with_env() {
    local side="$1"
    shift
    env $(cat "$work/env-$side") "$@"
}

# start_ours REP NAME [ARGS...]: `registry serve` on the `ours` SeaweedFS, prefix NAME;
# sets started_url and started_pid.
start_ours() {
    local rep="$1" name="$2" port
    shift 2
    local S3_ENDPOINT S3_BUCKET AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION
    eval "$(cat "$work/env-ours")"
    port="$(free_port)"
    started_url="http://127.0.0.1:$port"
    AWS_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" AWS_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY" \
        AWS_REGION="$AWS_REGION" RUST_LOG=warn "$registry_bin" serve --listen "127.0.0.1:$port" \
        --storage "s3://$S3_BUCKET/$name?endpoint=$S3_ENDPOINT&region=$AWS_REGION$ours_params" \
        --metadata "sqlite://$work/$name-rep$rep.db" --gc-interval off "$@" \
        >"$out/$name-rep$rep.log" 2>&1 &
    started_pid=$!
    wait_ready "$started_url" "$started_pid" registry "$out/$name-rep$rep.log"
}

# start_distribution REP NAME REDIRECT: docker-registry on the `distribution` SeaweedFS,
# rootdirectory /NAME; redirects on if REDIRECT is 1. Sets started_url and started_pid.
start_distribution() {
    local rep="$1" name="$2" redirect="$3" port disable=true
    if [ "$redirect" = 1 ]; then disable=false; fi
    local S3_ENDPOINT S3_BUCKET AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION
    eval "$(cat "$work/env-distribution")"
    port="$(free_port)"
    started_url="http://127.0.0.1:$port"
    mkdir -p "$work/distribution"
    # Distribution 2.8 has no path-style switch; SeaweedFS serves path-style requests on an
    # IP endpoint, which is what the driver sends there.
    cat >"$work/distribution/$name-rep$rep.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  s3:
    accesskey: $AWS_ACCESS_KEY_ID
    secretkey: $AWS_SECRET_ACCESS_KEY
    region: $AWS_REGION
    regionendpoint: $S3_ENDPOINT
    bucket: $S3_BUCKET
    rootdirectory: /$name
    secure: false
    v4auth: true
  redirect:
    disable: $disable
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
EOF
    # Its AWS SDK refuses to start the s3 driver while AWS_CA_BUNDLE is set.
    env -u AWS_CA_BUNDLE docker-registry serve "$work/distribution/$name-rep$rep.yml" \
        >"$out/$name-rep$rep.log" 2>&1 &
    started_pid=$!
    wait_ready "$started_url" "$started_pid" docker-registry "$out/$name-rep$rep.log"
}

start_servers() { # rep
    local rep="$1"
    for side in ours distribution seaweedfs; do
        seaweedfs "$side" >"$work/env-$side"
    done
    start_ours "$rep" ours
    ours_url="$started_url"; ours_pid="$started_pid"
    start_distribution "$rep" distribution 0
    theirs_url="$started_url"; theirs_pid="$started_pid"
    if [ "$with_redirect" = 1 ]; then
        start_ours "$rep" ours-redirect --redirect-min-size 1048576
        ours_redirect_url="$started_url"; ours_redirect_pid="$started_pid"
        start_distribution "$rep" distribution-redirect 1
        theirs_redirect_url="$started_url"; theirs_redirect_pid="$started_pid"
    fi
}

# side SIDE REP SCENARIO: one scenario on one side, its result line appended.
side() {
    local who="$1" rep="$2" scenario="$3" url pid
    sync
    if [ "$who" = seaweedfs ]; then
        local args
        case "$scenario" in
            push_mono_c1) args=(--kind put --count "$push_c1" --concurrency 1) ;;
            push_mono_c4) args=(--kind put --count "$push_c4" --concurrency 4) ;;
            push_chunked_c1) args=(--kind multipart --count "$chunked" --concurrency 1 --chunk-mib "$chunk_mib") ;;
            pull_c1) args=(--kind get --count "$pull_c1" --distinct "$pull_distinct" --concurrency 1) ;;
            pull_c4|pull_c4_redirect) args=(--kind get --count "$pull_c4" --distinct "$pull_distinct" --concurrency 4) ;;
        esac
        with_env seaweedfs "$direct" "$scenario" --mib "$blob_mib" --rep "$rep" \
            --prefix "direct/$scenario" "${args[@]}" 2>>"$log" | tee -a "$results"
        return
    fi
    case "$who-$scenario" in
        ours-*_redirect) url="$ours_redirect_url"; pid="$ours_redirect_pid" ;;
        distribution-*_redirect) url="$theirs_redirect_url"; pid="$theirs_redirect_pid" ;;
        ours-*) url="$ours_url"; pid="$ours_pid" ;;
        *) url="$theirs_url"; pid="$theirs_pid" ;;
    esac
    local args
    case "$scenario" in
        push_mono_c1) args=(push --blobs "$push_c1" --concurrency 1) ;;
        push_mono_c4) args=(push --blobs "$push_c4" --concurrency 4) ;;
        push_chunked_c1) args=(push --blobs "$chunked" --concurrency 1 --chunk-mib "$chunk_mib") ;;
        pull_c1) args=(pull --repo bench/pull1 --distinct "$pull_distinct" --pulls "$pull_c1" --concurrency 1) ;;
        pull_c4|pull_c4_redirect) args=(pull --repo bench/pull4 --distinct "$pull_distinct" --pulls "$pull_c4" --concurrency 4) ;;
    esac
    "$bench" --url "$url" --server-pid "$pid" --server "$who" --rep "$rep" \
        "${args[0]}" --scenario "$scenario" --blob-mib "$blob_mib" "${args[@]:1}" \
        2>>"$log" | tee -a "$results"
}

# all REP SCENARIO: the scenario on the three sides; reversed order on even repetitions.
all() {
    local rep="$1" scenario="$2"
    if [ -n "$only" ] && [[ "$only" != *",$scenario,"* ]]; then
        return 0
    fi
    if [ $((rep % 2)) = 1 ]; then
        side ours "$rep" "$scenario"; side distribution "$rep" "$scenario"; side seaweedfs "$rep" "$scenario"
    else
        side seaweedfs "$rep" "$scenario"; side distribution "$rep" "$scenario"; side ours "$rep" "$scenario"
    fi
}

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- storage-s3 2>/dev/null || echo ' (storage-s3 has uncommitted changes)')"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores"
    echo "kernel: $(uname -r); memory: $(free -g | awk '/Mem:/ {print $2}') GiB"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "weed: $( { weed version 2>/dev/null || target/venv/bin/weed version 2>/dev/null; } | head -1)"
    echo "docker-registry: $(docker-registry --version 2>/dev/null | awk '{print $NF}')"
    echo "registry binary: $registry_bin"
    if [ -n "$s3_rate" ]; then
        echo "S3 link: $s3_rate Mbit/s each way (tbf on a veth pair to a network namespace)"
    else
        echo "S3 link: loopback"
    fi
    echo "reps: $reps, blob: $blob_mib MiB, chunk: $chunk_mib MiB${only:+, only: $only}${ours_params:+, ours: $ours_params}, with-redirect: $with_redirect"
} | tee "$out/machine.txt"

started=$SECONDS
for rep in $(seq 1 "$reps"); do
    echo "== repetition $rep ($((SECONDS - started))s elapsed)" >&2
    start_servers "$rep"
    scenarios="push_mono_c1 push_mono_c4 push_chunked_c1 pull_c1 pull_c4"
    [ "$with_redirect" = 1 ] && scenarios="$scenarios pull_c4_redirect"
    for scenario in $scenarios; do
        all "$rep" "$scenario"
    done
    stop_servers
done
echo "== done in $((SECONDS - started))s; load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

python3 - "$results" <<'EOF' | tee "$out/report.md"
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
rows = [r for r in rows if r.get("kind") == "result"]
def values(scenario, server, key):
    return [r[key] for r in sorted(rows, key=lambda r: r["rep"])
            if r["scenario"] == scenario and r["server"] == server and r.get(key) is not None]
def med(scenario, server, key):
    v = values(scenario, server, key)
    return statistics.median(v) if v else None
def ratio(a, b):
    return "%.2fx" % (a / b) if a and b else "–"
def fmt(v, f="%.0f"):
    return f % v if v is not None else "–"
scenarios = []
for r in rows:
    if r["scenario"] not in scenarios:
        scenarios.append(r["scenario"])
def per_rep(s, a, b):
    x, y = dict((r["rep"], r["mib_per_s"]) for r in rows if r["scenario"] == s and r["server"] == a), \
           dict((r["rep"], r["mib_per_s"]) for r in rows if r["scenario"] == s and r["server"] == b)
    return [x[k] / y[k] for k in sorted(x) if k in y and y[k]]
print("Medians over %d repetition(s), MiB/s. Ratios: the median of the ratios within each"
      " repetition (the three sides of a scenario run back to back), then the ratio of the"
      " medians." % len({r["rep"] for r in rows}))
print()
print("| scenario | ours | distribution | SeaweedFS alone | ours/SeaweedFS | ours/distribution | ratio of medians ours/SeaweedFS, ours/distribution |")
print("|---|---|---|---|---|---|---|")
for s in scenarios:
    o, d, w = (med(s, x, "mib_per_s") for x in ("ours", "distribution", "seaweedfs"))
    rw, rd = per_rep(s, "ours", "seaweedfs"), per_rep(s, "ours", "distribution")
    print("| %s | %s | %s | %s | %s | %s | %s, %s |" % (s, fmt(o, "%.1f"), fmt(d, "%.1f"), fmt(w, "%.1f"),
          "%.2fx" % statistics.median(rw) if rw else "–", "%.2fx" % statistics.median(rd) if rd else "–",
          ratio(o, w), ratio(o, d)))
print()
print("Per repetition, MiB/s (ours / distribution / SeaweedFS) and ours/SeaweedFS:")
print()
for s in scenarios:
    per = " / ".join(", ".join("%.0f" % v for v in values(s, x, "mib_per_s"))
                     for x in ("ours", "distribution", "seaweedfs"))
    print("- %s: %s; %s" % (s, per, ", ".join("%.2f" % v for v in per_rep(s, "ours", "seaweedfs"))))
print()
print("| scenario | server CPU ms/op ours | distribution | peak RSS MiB ours | distribution | p50 ms ours | distribution | SeaweedFS |")
print("|---|---|---|---|---|---|---|---|")
for s in scenarios:
    c = [med(s, x, "cpu_ms_per_op") for x in ("ours", "distribution")]
    m = [med(s, x, "server_rss_hwm_kib") for x in ("ours", "distribution")]
    p = [med(s, x, "p50_ms") for x in ("ours", "distribution", "seaweedfs")]
    print("| %s | %s | %s | %s | %s | %s | %s | %s |" % (s, fmt(c[0]), fmt(c[1]),
          fmt(m[0] and m[0] / 1024), fmt(m[1] and m[1] / 1024), fmt(p[0]), fmt(p[1]), fmt(p[2])))
EOF
echo
echo "results: $results"
echo "report:  $out/report.md"
