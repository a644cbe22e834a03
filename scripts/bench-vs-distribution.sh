#!/usr/bin/env bash
# Load benchmark: our `registry` (release build, fs blobs + SQLite, fresh temp folders) and
# CNCF distribution (`docker-registry`, fs storage, fresh temp folder) side by side on
# loopback. Every scenario runs against both servers back to back (the order alternates per
# repetition), each repetition starts both servers fresh, and the report gives medians and
# ratios ours/distribution. See docs/performance.md.
#
#   scripts/bench-vs-distribution.sh [--reps N] [--with-10k] [--smoke] [--out DIR]
#                                    [--wrk-secs S] [--registry-bin PATH] [--first-rep K]
#                                    [--only LIST]
#
#   --reps N      repetitions (default 3)
#   --with-10k    also populate up to 10,000 repositories and walk that catalog
#                 (adds ~5-10 minutes per repetition on 2 cores)
#   --smoke       tiny sizes, one repetition: checks the plumbing in about a minute
#   --out DIR     keep results.jsonl, report.md and the logs there (default: a temp folder,
#                 printed at the end and kept)
#   --wrk-secs S  duration of each wrk run (default 10)
#   --registry-bin PATH  benchmark this `registry` binary instead of building
#                 target/release/registry (e.g. one built from a clean checkout)
#   --first-rep K number the repetitions from K (to add repetitions to an earlier run:
#                 `registry-bench report old/results.jsonl new/results.jsonl`)
#   --only LIST   run only these scenarios (comma-separated names, e.g.
#                 manifest_put_1k,manifest_get,push_mono_c1); the peak RSS line then
#                 covers only what ran
#
# Installs nothing: needs `docker-registry`, `wrk`, `curl` and `python3` on PATH.
set -euo pipefail

cd "$(dirname "$0")/.."

reps=3
with_10k=0
smoke=0
out=""
wrk_secs=10
registry_bin=""
first_rep=1
only=""
while [ $# -gt 0 ]; do
    case "$1" in
        --reps) reps="$2"; shift 2 ;;
        --with-10k) with_10k=1; shift ;;
        --smoke) smoke=1; shift ;;
        --out) out="$2"; shift 2 ;;
        --wrk-secs) wrk_secs="$2"; shift 2 ;;
        --registry-bin) registry_bin="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"; shift 2 ;;
        --first-rep) first_rep="$2"; shift 2 ;;
        --only) only=",$2,"; shift 2 ;;
        -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

for tool in docker-registry wrk curl python3; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "$tool not found on PATH" >&2
        exit 2
    fi
done

# Sizes. The full run uses the sizes of the issue; --smoke shrinks everything.
blob_mib=64; chunk_mib=8
push_c1_blobs=8; push_c4_blobs=16; chunked_blobs=8
pull_distinct=4; pull_count=16
repos_small=1000; repos_large=10000; tags_per_repo=5; put_concurrency=8
list_tags=1000; list_requests=100
if [ "$smoke" = 1 ]; then
    reps=1; blob_mib=4; chunk_mib=1
    push_c1_blobs=2; push_c4_blobs=4; chunked_blobs=2
    pull_distinct=2; pull_count=4
    repos_small=50; repos_large=120; list_tags=60; list_requests=10
    wrk_secs=2
fi

if [ -z "$out" ]; then
    out="$(mktemp -d -t bench-vs-distribution.XXXXXX)"
fi
mkdir -p "$out"
out="$(cd "$out" && pwd)"
results="$out/results.jsonl"
log="$out/bench.log"
: >"$results"
: >"$log"

work="$(mktemp -d -t bench-servers.XXXXXX)"
ours_pid=""
theirs_pid=""
stop_servers() {
    for pid in $ours_pid $theirs_pid; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    ours_pid=""
    theirs_pid=""
}
cleanup() {
    stop_servers
    rm -rf "$work"
}
trap cleanup EXIT
echo "server data: $work (deleted at the end)" >&2

if [ -z "$registry_bin" ]; then
    cargo build --release --quiet -p registry -p registry-bench
    registry_bin="$PWD/target/release/registry"
else
    cargo build --release --quiet -p registry-bench
fi
bench="$PWD/target/release/registry-bench"

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_ready() { # url pid name logfile
    for _ in $(seq 1 100); do
        if curl -fsS -o /dev/null "$1/v2/" 2>/dev/null; then
            return 0
        fi
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

start_servers() { # rep
    local dir="$work/rep-$1"
    mkdir -p "$dir/ours" "$dir/theirs"

    local port
    port="$(free_port)"
    ours_url="http://127.0.0.1:$port"
    # Per-request logging off on both sides (distribution: access log disabled, level warn).
    RUST_LOG=warn "$registry_bin" serve --listen "127.0.0.1:$port" \
        --storage "fs://$dir/ours/blobs" --metadata "sqlite://$dir/ours/registry.db" \
        >"$out/ours-rep$1.log" 2>&1 &
    ours_pid=$!
    wait_ready "$ours_url" "$ours_pid" registry "$out/ours-rep$1.log"

    port="$(free_port)"
    theirs_url="http://127.0.0.1:$port"
    cat >"$dir/theirs/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/theirs/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
EOF
    docker-registry serve "$dir/theirs/config.yml" >"$out/theirs-rep$1.log" 2>&1 &
    theirs_pid=$!
    wait_ready "$theirs_url" "$theirs_pid" docker-registry "$out/theirs-rep$1.log"
}

# run_one LABEL REP BENCH-ARGS...: one scenario against one server, result appended.
run_one() {
    local label="$1" rep="$2"
    shift 2
    local url pid
    if [ "$label" = ours ]; then url="$ours_url"; pid="$ours_pid"; else url="$theirs_url"; pid="$theirs_pid"; fi
    # Dirty pages of the previous scenario (distribution does not fsync) are written back
    # now, not during the next timed part.
    sync
    "$bench" --url "$url" --server-pid "$pid" --server "$label" --rep "$rep" "$@" \
        2>>"$log" | tee -a "$results"
}

# both REP COMMAND --scenario NAME ARGS...: the scenario against both servers; odd reps
# ours first. Skipped unless --only names it (or there is no --only).
both() {
    local rep="$1"
    if [ -n "$only" ] && [[ "$only" != *",$4,"* ]]; then
        return 0
    fi
    shift
    if [ $((rep % 2)) = 1 ]; then
        run_one ours "$rep" "$@"
        run_one distribution "$rep" "$@"
    else
        run_one distribution "$rep" "$@"
        run_one ours "$rep" "$@"
    fi
}

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . 2>/dev/null || echo ' (working tree has uncommitted changes)')"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores, sha_ni: $(grep -qw sha_ni /proc/cpuinfo && echo yes || echo no)"
    echo "kernel: $(uname -r); memory: $(free -g | awk '/Mem:/ {print $2}') GiB"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "docker-registry: $(docker-registry --version 2>/dev/null | awk '{print $NF}')"
    echo "wrk: $(wrk -v 2>&1 | head -1)"
    echo "registry binary: $registry_bin"
    echo "SHA-NI instructions (sha256rnds2) in it: $(objdump -d --no-show-raw-insn "$registry_bin" 2>/dev/null | grep -c sha256rnds2 || true)"
    echo "reps: $reps, with-10k: $with_10k, smoke: $smoke, blob: $blob_mib MiB, wrk: ${wrk_secs}s${only:+, only: $only}"
} | tee "$out/machine.txt"

"$bench" sha256 | tee -a "$results"

started=$SECONDS
for rep in $(seq "$first_rep" "$((first_rep + reps - 1))"); do
    echo "== repetition $rep ($((SECONDS - started))s elapsed)" >&2
    start_servers "$rep"

    both "$rep" populate --scenario manifest_put_1k --start 0 --repos "$repos_small" \
        --tags "$tags_per_repo" --concurrency "$put_concurrency"
    both "$rep" catalog --scenario catalog_1k --n 100 --expect "$repos_small"
    if [ "$with_10k" = 1 ]; then
        both "$rep" populate --scenario manifest_put_10k --start "$repos_small" \
            --repos "$((repos_large - repos_small))" --tags "$tags_per_repo" \
            --concurrency "$put_concurrency"
        both "$rep" catalog --scenario catalog_10k --n 100 --expect "$repos_large" \
            --min-walks 1 --min-secs 2 --max-walks 20
    fi
    both "$rep" tags-list --scenario tags_list_1k --tags "$list_tags" --requests "$list_requests"

    "$bench" --url "$ours_url" setup-manifest
    "$bench" --url "$theirs_url" setup-manifest
    both "$rep" wrk --scenario manifest_get --method GET --connections 32 --duration "$wrk_secs"
    # wrk cannot do HEAD (wg/wrk#198): our own client drives it, so its req/s are lower.
    both "$rep" load --scenario manifest_head --method HEAD --concurrency 32 --duration "$wrk_secs"

    both "$rep" push --scenario push_mono_c1 --blob-mib "$blob_mib" --blobs "$push_c1_blobs" \
        --concurrency 1
    both "$rep" push --scenario push_mono_c4 --blob-mib "$blob_mib" --blobs "$push_c4_blobs" \
        --concurrency 4
    both "$rep" push --scenario push_chunked_c1 --blob-mib "$blob_mib" --blobs "$chunked_blobs" \
        --concurrency 1 --chunk-mib "$chunk_mib"
    both "$rep" pull --scenario pull_c4 --blob-mib "$blob_mib" --distinct "$pull_distinct" \
        --pulls "$pull_count" --concurrency 4

    "$bench" --server-pid "$ours_pid" --server ours --rep "$rep" proc | tee -a "$results"
    "$bench" --server-pid "$theirs_pid" --server distribution --rep "$rep" proc | tee -a "$results"
    stop_servers
    # The 64 MiB blobs (about 5 GiB per repetition for both servers) go now, or three
    # repetitions can fill the disk; deleting a hundred large files takes a moment.
    # Deleting distribution's 10,000-repository tree (~450,000 small files) takes minutes
    # on a slow disk; it waits for the end so it never overlaps a measurement.
    find "$work/rep-$rep" -type f -size +1M -delete
done
echo "== done in $((SECONDS - started))s" >&2

"$bench" report "$results" | tee "$out/report.md"
echo
echo "results: $results"
echo "report:  $out/report.md"
