#!/usr/bin/env bash
# Backend benchmark: what the S3 blob store and the PostgreSQL metadata store cost.
#
#   a. S3 throughput: 64 MiB blob push (POST + PUT ?digest=, concurrency 1) and pull (GET,
#      every byte read, concurrency 1) through our `registry` (S3 blobs on SeaweedFS, SQLite
#      metadata), against SeaweedFS alone as the ceiling: signed PUT / GET of 64 MiB objects
#      straight to its S3 endpoint with `curl --aws-sigv4`, same count, same concurrency.
#   b. Metadata: manifest PUTs/s (registry-bench populate: 1,000 repos x 5 tags,
#      concurrency 8) and manifest GETs/s (wrk, 2 threads, 32 connections) with PostgreSQL
#      metadata vs SQLite metadata, fs blobs in both.
#
# Every repetition starts fresh servers (fresh SeaweedFS, fresh database / SQLite file); the
# order of the two sides alternates per repetition. Prints medians and ratios
# registry/SeaweedFS and PostgreSQL/SQLite. See docs/performance.md.
#
#   scripts/bench-backends.sh [--reps N] [--out DIR] [--wrk-secs S] [--smoke]
#
#   --reps N      repetitions (default 3)
#   --out DIR     keep results.jsonl, report.md and logs there (default: a temp folder)
#   --wrk-secs S  duration of each wrk run (default 10)
#   --smoke       tiny sizes, one repetition: checks the plumbing
#
# Starts SeaweedFS and PostgreSQL with scripts/seaweedfs.sh and scripts/postgres.sh (stopped
# at the end). Needs `weed`, the PostgreSQL server binaries, `wrk`, `curl` (>= 7.75 for
# --aws-sigv4) and `python3`.
set -euo pipefail

cd "$(dirname "$0")/.."

reps=3
out=""
wrk_secs=10
smoke=0
while [ $# -gt 0 ]; do
    case "$1" in
        --reps) reps="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --wrk-secs) wrk_secs="$2"; shift 2 ;;
        --smoke) smoke=1; shift ;;
        -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

for tool in wrk curl python3; do
    command -v "$tool" >/dev/null 2>&1 || { echo "$tool not found on PATH" >&2; exit 2; }
done

blob_mib=64; push_blobs=4; pull_distinct=4; pulls=8
repos=1000; tags=5; put_concurrency=8
if [ "$smoke" = 1 ]; then
    reps=1; blob_mib=4; push_blobs=2; pull_distinct=2; pulls=2; repos=50; wrk_secs=2
fi

if [ -z "$out" ]; then
    out="$(mktemp -d -t bench-backends.XXXXXX)"
fi
mkdir -p "$out"
out="$(cd "$out" && pwd)"
results="$out/results.jsonl"
log="$out/bench.log"
: >"$results"
: >"$log"

work="$(mktemp -d -t bench-backends-servers.XXXXXX)"
chmod 755 "$work"
reg_pid=""
stop_registry() {
    if [ -n "$reg_pid" ]; then
        kill "$reg_pid" 2>/dev/null || true
        wait "$reg_pid" 2>/dev/null || true
        reg_pid=""
    fi
}
cleanup() {
    stop_registry
    scripts/seaweedfs.sh stop "$work/seaweedfs" >/dev/null 2>&1 || true
    scripts/postgres.sh stop "$work/postgres" >/dev/null 2>&1 || true
    rm -rf "$work" 2>/dev/null || true
}
trap cleanup EXIT

cargo build --release --quiet -p registry -p registry-bench
registry_bin="$PWD/target/release/registry"
bench="$PWD/target/release/registry-bench"

# SeaweedFS as scripts/seaweedfs.sh starts it holds at most 64 volumes of 64 MB (~4 GiB) and
# deleted objects are not reclaimed, so every repetition gets a fresh server (a repetition
# writes ~1.5 GiB; the third one on a shared server failed with S3 500s when it was full).
fresh_seaweedfs() {
    scripts/seaweedfs.sh stop "$work/seaweedfs" >/dev/null 2>&1 || true
    rm -rf "$work/seaweedfs"
    eval "$(scripts/seaweedfs.sh start "$work/seaweedfs")"
    export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION S3_ENDPOINT S3_BUCKET
}
echo "starting PostgreSQL in $work" >&2
mkdir -p "$work/postgres"
eval "$(scripts/postgres.sh start "$work/postgres")"
unset AWS_PROFILE AWS_SESSION_TOKEN

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_registry NAME STORAGE METADATA: a fresh `registry serve`; sets reg_url, reg_pid.
start_registry() {
    local port
    port="$(free_port)"
    reg_url="http://127.0.0.1:$port"
    RUST_LOG=warn "$registry_bin" serve --listen "127.0.0.1:$port" \
        --storage "$2" --metadata "$3" --gc-interval off >"$out/registry-$1.log" 2>&1 &
    reg_pid=$!
    for _ in $(seq 1 100); do
        curl -fsS -o /dev/null "$reg_url/v2/" 2>/dev/null && return 0
        if ! kill -0 "$reg_pid" 2>/dev/null; then
            cat "$out/registry-$1.log" >&2
            exit 2
        fi
        sleep 0.1
    done
    echo "registry did not become ready" >&2
    exit 2
}

run() { # LABEL REP BENCH-ARGS...
    local label="$1" rep="$2"
    shift 2
    sync
    "$bench" --url "$reg_url" --server-pid "$reg_pid" --server "$label" --rep "$rep" "$@" \
        2>>"$log" | tee -a "$results"
}

# s3 through the registry, one repetition.
registry_s3() { # REP
    start_registry "s3-rep$1" \
        "s3://$S3_BUCKET/bench-rep$1?endpoint=$S3_ENDPOINT&region=$AWS_REGION" \
        "sqlite://$work/s3-rep$1.db"
    run registry "$1" push --scenario s3_push_c1 --repo bench/s3push --blob-mib "$blob_mib" \
        --blobs "$push_blobs" --concurrency 1
    run registry "$1" pull --scenario s3_pull_c1 --repo bench/s3pull --blob-mib "$blob_mib" \
        --distinct "$pull_distinct" --pulls "$pulls" --concurrency 1
    stop_registry
}

# SeaweedFS alone: signed PUT/GET with curl, timed per request; prints result lines in the
# format of registry-bench.
seaweedfs_direct() { # REP
    sync
    python3 - "$1" "$blob_mib" "$push_blobs" "$pull_distinct" "$pulls" "$work" <<'EOF' | tee -a "$results"
import json, os, subprocess, sys, time
rep, mib, push_n, distinct, pulls, work = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
endpoint, bucket = os.environ["S3_ENDPOINT"], os.environ["S3_BUCKET"]
auth = ["--aws-sigv4", "aws:amz:%s:s3" % os.environ["AWS_REGION"],
        "-u", "%s:%s" % (os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])]
size = mib * 1024 * 1024
def curl(args):
    t = time.perf_counter()
    code = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", *auth, *args],
                          check=True, capture_output=True, text=True).stdout
    if code != "200":
        sys.exit("curl %s: HTTP %s" % (args[-1], code))
    return time.perf_counter() - t
def files(n, tag):
    paths = []
    for i in range(n):
        p = os.path.join(work, "direct-%s-%s-%d.bin" % (rep, tag, i))
        with open(p, "wb") as f:
            f.write(os.urandom(size))
        paths.append(p)
    return paths
def line(scenario, lat, nbytes):
    secs = sum(lat)
    s = sorted(lat)
    pick = lambda p: s[max(1, min(len(s), -(-len(s) * p // 100))) - 1] * 1000
    return json.dumps({"kind": "result", "scenario": scenario, "server": "seaweedfs", "rep": int(rep),
        "ops": len(lat), "bytes": nbytes, "secs": secs, "ops_per_s": len(lat) / secs,
        "mib_per_s": nbytes / 1048576 / secs, "p50_ms": pick(50), "p99_ms": pick(99),
        "server_cpu_s": None, "cpu_ms_per_op": None, "server_rss_hwm_kib": None, "errors": 0})
base = "%s/%s/direct-rep%s" % (endpoint, bucket, rep)
push = files(push_n, "push")
lat = [curl(["-X", "PUT", "-T", p, "%s/push-%d" % (base, i)]) for i, p in enumerate(push)]
print(line("s3_push_c1", lat, push_n * size), flush=True)
for i, p in enumerate(files(distinct, "pull")):
    curl(["-X", "PUT", "-T", p, "%s/pull-%d" % (base, i)])
lat = [curl(["%s/pull-%d" % (base, i % distinct)]) for i in range(pulls)]
print(line("s3_pull_c1", lat, pulls * size), flush=True)
for name in os.listdir(work):
    if name.startswith("direct-%s-" % rep):
        os.remove(os.path.join(work, name))
EOF
}

# Manifest PUT and GET with one metadata store (fs blobs), one repetition.
metadata_run() { # LABEL REP METADATA-URL
    start_registry "$1-rep$2" "fs://$work/$1-rep$2-blobs" "$3"
    run "$1" "$2" populate --scenario manifest_put_1k --start 0 --repos "$repos" --tags "$tags" \
        --concurrency "$put_concurrency"
    "$bench" --url "$reg_url" setup-manifest 2>>"$log"
    run "$1" "$2" wrk --scenario manifest_get --method GET --connections 32 --duration "$wrk_secs"
    stop_registry
}

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . 2>/dev/null || echo ' (working tree has uncommitted changes)')"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores"
    echo "kernel: $(uname -r); memory: $(free -g | awk '/Mem:/ {print $2}') GiB"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "weed: $( { weed version 2>/dev/null || target/venv/bin/weed version 2>/dev/null; } | head -1)"
    echo "postgres: $(psql --version 2>/dev/null || ls -d /usr/lib/postgresql/*/ 2>/dev/null | tail -1)"
    echo "wrk: $(wrk -v 2>&1 | head -1)"
    echo "reps: $reps, blob: $blob_mib MiB, push: $push_blobs, pulls: $pulls of $pull_distinct, repos: $repos x $tags tags, wrk: ${wrk_secs}s"
} | tee "$out/machine.txt"

started=$SECONDS
for rep in $(seq 1 "$reps"); do
    echo "== repetition $rep ($((SECONDS - started))s elapsed)" >&2
    fresh_seaweedfs
    pg_url="$(scripts/postgres.sh createdb "$work/postgres" "bench_rep$rep" | sed -n 's/^DATABASE_URL=//p')"
    if [ $((rep % 2)) = 1 ]; then
        registry_s3 "$rep"; seaweedfs_direct "$rep"
        metadata_run postgres "$rep" "$pg_url"; metadata_run sqlite "$rep" "sqlite://$work/meta-rep$rep.db"
    else
        seaweedfs_direct "$rep"; registry_s3 "$rep"
        metadata_run sqlite "$rep" "sqlite://$work/meta-rep$rep.db"; metadata_run postgres "$rep" "$pg_url"
    fi
done
echo "== done in $((SECONDS - started))s; load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

python3 - "$results" <<'EOF' | tee "$out/report.md"
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
rows = [r for r in rows if r.get("kind") == "result"]
def values(scenario, server, key):
    return [r[key] for r in rows if r["scenario"] == scenario and r["server"] == server]
def med(scenario, server, key):
    v = values(scenario, server, key)
    return statistics.median(v) if v else None
def table(title, a, b, scenarios, key, unit):
    print("\n%s\n" % title)
    print("| scenario | unit | %s | %s | ratio %s/%s | per-rep values %s / %s |" % (a, b, a, b, a, b))
    print("|---|---|---|---|---|---|")
    for s in scenarios:
        x, y = med(s, a, key), med(s, b, key)
        ratio = "%.2fx" % (x / y) if x and y else "–"
        per = "%s / %s" % (", ".join("%.0f" % v for v in values(s, a, key)),
                           ", ".join("%.0f" % v for v in values(s, b, key)))
        print("| %s | %s | %s | %s | %s | %s |" % (s, unit, "%.1f" % x if x else "–",
              "%.1f" % y if y else "–", ratio, per))
reps = len({r["rep"] for r in rows})
print("Medians over %d repetition(s)." % reps)
mib = values("s3_push_c1", "registry", "bytes")[0] // values("s3_push_c1", "registry", "ops")[0] // 1048576
table("S3 blobs (%d MiB, concurrency 1): registry (S3 + SQLite) vs SeaweedFS alone" % mib,
      "registry", "seaweedfs", ["s3_push_c1", "s3_pull_c1"], "mib_per_s", "MiB/s")
table("Metadata (fs blobs): PostgreSQL vs SQLite",
      "postgres", "sqlite", ["manifest_put_1k", "manifest_get"], "ops_per_s", "req/s")
EOF
echo
echo "results: $results"
echo "report:  $out/report.md"
