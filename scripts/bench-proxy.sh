#!/usr/bin/env bash
# Pull-through cache benchmark (issue 14): a cold pull of one 5-layer image through our
# cache (`registry serve --upstream`), straight from the upstream, and through CNCF
# distribution 2.8's own proxy mode (`proxy: {remoteurl: ...}`), all three from the same
# upstream (Debian's `docker-registry`, fs storage, on loopback); then a warm pull through
# our cache against our normal pull of the same image pushed to a plain `registry serve`.
# Each repetition starts the cache, the distribution proxy and the plain registry fresh
# (empty folders); the upstream is filled once. The order of the cold pulls (and of the
# warm pair) is reversed in even repetitions. The report gives medians, ratios and the
# issue's targets. See docs/performance.md.
#
#   scripts/bench-proxy.sh [--reps N] [--smoke] [--out DIR] [--layers N] [--layer-mib M]
#                          [--registry-bin PATH] [--upstream-rate MBIT]
#
#   --reps N        repetitions (default 3)
#   --smoke         5 layers of 1 MiB, one repetition: checks the plumbing in seconds
#   --out DIR       keep results.jsonl, report.md and the logs there (default: a temp
#                   folder, printed at the end and kept)
#   --layers N      layers of the image (default 5)
#   --layer-mib M   size of each layer in MiB (default 16)
#   --registry-bin PATH  benchmark this `registry` binary instead of building
#                   target/release/registry
#   --upstream-rate MBIT  put the upstream behind a link of MBIT megabits/s instead of
#                   loopback: it runs in a network namespace of its own, reached over a
#                   veth pair whose two ends are shaped by a `tbf` qdisc, so the cache's
#                   fetches, the direct pulls and distribution's proxy all cross the same
#                   link (needs root, `ip` and `tc`; the namespace and the veth pair are
#                   removed at the end). No latency is added: `tbf` adds only its queueing
#                   delay (netem would add more, but not every kernel has it).
#
# A pull is what a client does: GET the manifest by tag, then GET the config and every
# layer at once (one `curl --parallel`), every byte written to a file in /dev/shm. The
# bytes are checked against their digests after the timed part. The client does not parse
# the manifest (it knows the digests), so the two curl processes are the whole client. The
# manifest GET is also timed on its own (`manifest_seconds`, part of `seconds`).
#
# Installs nothing: needs `docker-registry`, `curl`, `python3` and `sha256sum` on PATH.
set -euo pipefail

cd "$(dirname "$0")/.."

reps=3
smoke=0
out=""
layers=5
layer_mib=16
registry_bin=""
upstream_rate=""
while [ $# -gt 0 ]; do
    case "$1" in
        --reps) reps="$2"; shift 2 ;;
        --smoke) smoke=1; shift ;;
        --out) out="$2"; shift 2 ;;
        --layers) layers="$2"; shift 2 ;;
        --layer-mib) layer_mib="$2"; shift 2 ;;
        --registry-bin) registry_bin="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"; shift 2 ;;
        --upstream-rate) upstream_rate="$2"; shift 2 ;;
        -h|--help) sed -n '2,36p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
if [ "$smoke" = 1 ]; then
    reps=1
    layer_mib=1
fi

# shellcheck source=scripts/shaped-link.sh
. scripts/shaped-link.sh
tools=(docker-registry curl python3 sha256sum)
if [ -n "$upstream_rate" ]; then
    shaped_link_check --upstream-rate "$upstream_rate"
fi
for tool in "${tools[@]}"; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "$tool not found on PATH" >&2
        exit 2
    fi
done

if [ -z "$out" ]; then
    out="$(mktemp -d -t bench-proxy.XXXXXX)"
fi
mkdir -p "$out"
out="$(cd "$out" && pwd)"
results="$out/results.jsonl"
: >"$results"

work="$(mktemp -d -t bench-proxy-servers.XXXXXX)"
# The pulled bytes go to memory, so the client's writes cost the same for every server
# and never compete with the servers' disk writes.
pulled="$(mktemp -d -p /dev/shm bench-proxy-pulled.XXXXXX)"
pids=()
stop() { # pid...
    local pid
    for pid in "$@"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}
cleanup() {
    stop "${pids[@]}"
    shaped_link_down
    rm -rf "$work" "$pulled"
}
trap cleanup EXIT
echo "server data: $work (deleted at the end)" >&2

registry_given="$registry_bin"
if [ -z "$registry_bin" ]; then
    cargo build --release --quiet -p registry
    registry_bin="$PWD/target/release/registry"
fi

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

# Starters: each sets $url and $pid. Per-request logging is off everywhere.
start_ours() { # dir log extra-args...
    local dir="$1" log="$2" port
    shift 2
    port="$(free_port)"
    RUST_LOG=warn "$registry_bin" serve --listen "127.0.0.1:$port" \
        --storage "fs://$dir/blobs" --metadata "sqlite://$dir/registry.db" "$@" \
        >"$log" 2>&1 &
    pid=$!
    pids+=("$pid")
    url="http://127.0.0.1:$port"
    wait_ready "$url" "$pid" registry "$log"
}

# The shaped link (--upstream-rate): the upstream's end is $upstream_host, in a network
# namespace of its own (scripts/shaped-link.sh).
upstream_host=127.0.0.1
upstream_exec=()
if [ -n "$upstream_rate" ]; then
    shaped_link_up bench-proxy "$upstream_rate"
    upstream_host="$shaped_remote_ip"
    upstream_exec=("${shaped_exec[@]}")
fi

start_distribution() { # dir log [proxy-remote-url [host exec...]]
    local dir="$1" log="$2" remote="${3:-}" host="${4:-127.0.0.1}" port
    shift $(($# < 4 ? $# : 4))
    local exec=("$@")
    mkdir -p "$dir"
    if [ "$host" = 127.0.0.1 ]; then
        port="$(free_port)"
    else
        port=5000 # alone in its namespace
    fi
    cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/data
http:
  addr: $host:$port
EOF
    if [ -n "$remote" ]; then
        printf 'proxy:\n  remoteurl: %s\n' "$remote" >>"$dir/config.yml"
    fi
    # `ip netns exec` execs the server, so $! is the server's pid (for its CPU time).
    "${exec[@]}" docker-registry serve "$dir/config.yml" >"$log" 2>&1 &
    pid=$!
    pids+=("$pid")
    url="http://$host:$port"
    wait_ready "$url" "$pid" docker-registry "$log"
}

# utime + stime of a process, in clock ticks.
ticks() {
    sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}
clk_tck="$(getconf CLK_TCK)"

# Waits until the processes have used no CPU for 0.4 s (distribution's proxy keeps
# fetching a blob in the background after it served it), at most 20 s.
settle() { # pid...
    local before after
    before="$(for p in "$@"; do ticks "$p"; done)"
    for _ in $(seq 1 100); do
        sleep 0.2
        after="$(for p in "$@"; do ticks "$p"; done)"
        if [ "$after" = "$before" ]; then
            sleep 0.2
            after="$(for p in "$@"; do ticks "$p"; done)"
            [ "$after" = "$before" ] && return 0
        fi
        before="$after"
    done
}

# The image: a config and $layers random layers, an OCI manifest naming them.
media_manifest="application/vnd.oci.image.manifest.v1+json"
img="$work/image"
mkdir -p "$img"
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{"Labels":{"bench":"%s"}}}' \
    "$(date +%s%N)" >"$img/config"
for i in $(seq 1 "$layers"); do
    head -c "$((layer_mib * 1024 * 1024))" /dev/urandom >"$img/layer$i"
done
digest_of() { echo "sha256:$(sha256sum "$1" | cut -d' ' -f1)"; }
descriptor() { # media-type file
    printf '{"mediaType":"%s","digest":"%s","size":%s}' "$1" "$(digest_of "$2")" "$(stat -c %s "$2")"
}
{
    printf '{"schemaVersion":2,"mediaType":"%s","config":%s,"layers":[' \
        "$media_manifest" "$(descriptor application/vnd.oci.image.config.v1+json "$img/config")"
    for i in $(seq 1 "$layers"); do
        [ "$i" -gt 1 ] && printf ','
        descriptor application/vnd.oci.image.layer.v1.tar+gzip "$img/layer$i"
    done
    printf ']}'
} >"$img/manifest"
blob_files=("$img/config")
for i in $(seq 1 "$layers"); do blob_files+=("$img/layer$i"); done
blob_digests=()
for f in "${blob_files[@]}"; do blob_digests+=("$(digest_of "$f")"); done
manifest_digest="$(digest_of "$img/manifest")"
total_bytes=$(($(stat -c %s "$img/manifest") + $(cat "${blob_files[@]}" | wc -c)))
repo="bench/app"
tag="v1"

# push BASE: every blob (POST, then PUT ?digest= with the body) and the manifest by tag.
push() {
    local base="$1" f d location
    for f in "${blob_files[@]}"; do
        d="$(digest_of "$f")"
        location="$(curl -fsS -X POST -D - -o /dev/null "$base/v2/$repo/blobs/uploads/" |
            awk 'tolower($1) == "location:" {print $2}' | tr -d '\r')"
        case "$location" in http*) ;; *) location="$base$location" ;; esac
        case "$location" in *\?*) location="$location&digest=$d" ;; *) location="$location?digest=$d" ;; esac
        curl -fsS -X PUT -H "Content-Type: application/octet-stream" --data-binary "@$f" \
            -o /dev/null "$location"
    done
    curl -fsS -X PUT -H "Content-Type: $media_manifest" --data-binary "@$img/manifest" \
        -o /dev/null "$base/v2/$repo/manifests/$tag"
}

# pull SCENARIO REP BASE REPO SERVER-PID UPSTREAM-PID: one timed pull, checked, appended
# to the results as a JSON line.
pull() {
    local scenario="$1" rep="$2" base="$3" path="$4" server_pid="$5" upstream_pid="$6"
    local dest="$pulled/$scenario" args=() d t0 tm t1 s0 s1 u0 u1
    rm -rf "$dest"
    mkdir -p "$dest"
    for d in "${blob_digests[@]}"; do
        args+=(-o "$dest/${d#sha256:}" "$base/v2/$path/blobs/$d")
    done
    # distribution never fsyncs: its dirty pages of the previous pull are written back now,
    # not during this one.
    sync
    s0="$(ticks "$server_pid")"
    u0="$(ticks "$upstream_pid")"
    t0="$(date +%s%N)"
    curl -fsS -H "Accept: $media_manifest" -o "$dest/manifest" "$base/v2/$path/manifests/$tag"
    tm="$(date +%s%N)"
    curl -fsS --no-progress-meter --parallel --parallel-immediate --parallel-max 16 "${args[@]}"
    t1="$(date +%s%N)"
    s1="$(ticks "$server_pid")"
    u1="$(ticks "$upstream_pid")"
    if [ "$(digest_of "$dest/manifest")" != "$manifest_digest" ]; then
        echo "$scenario: the manifest differs" >&2
        exit 1
    fi
    for d in "${blob_digests[@]}"; do
        if [ "$(digest_of "$dest/${d#sha256:}")" != "$d" ]; then
            echo "$scenario: blob $d differs" >&2
            exit 1
        fi
    done
    python3 -c '
import json, sys
scenario, rep, t0, tm, t1, s0, s1, u0, u1, tck, total, load = sys.argv[1:]
secs = (int(t1) - int(t0)) / 1e9
print(json.dumps({"scenario": scenario, "rep": int(rep), "seconds": round(secs, 4),
    "manifest_seconds": round((int(tm) - int(t0)) / 1e9, 4),
    "mib_per_s": round(int(total) / 1048576 / secs, 1),
    "server_cpu_ms": round((int(s1) - int(s0)) * 1000 / int(tck)),
    "upstream_cpu_ms": round((int(u1) - int(u0)) * 1000 / int(tck)),
    "load": load}))' "$scenario" "$rep" "$t0" "$tm" "$t1" "$s0" "$s1" "$u0" "$u1" "$clk_tck" \
        "$total_bytes" "$(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$results"
}

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . 2>/dev/null || echo ' (working tree has uncommitted changes)')${registry_given:+ (of this tree; the binary is --registry-bin)}"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores"
    echo "kernel: $(uname -r); memory: $(free -g | awk '/Mem:/ {print $2}') GiB"
    echo "uptime at start: $(uptime)"
    echo "docker-registry: $(docker-registry --version 2>/dev/null | awk '{print $NF}')"
    echo "curl: $(curl --version | head -1 | cut -d' ' -f1-2)"
    echo "registry binary: $registry_bin"
    if [ -n "$upstream_rate" ]; then
        echo "upstream link: $upstream_rate Mbit/s each way (tbf on a veth pair to a network namespace)"
    else
        echo "upstream link: loopback"
    fi
    echo "reps: $reps, smoke: $smoke, image: $layers layers of $layer_mib MiB + config, $total_bytes bytes"
} | tee "$out/machine.txt"

start_distribution "$work/upstream" "$out/upstream.log" "" "$upstream_host" "${upstream_exec[@]}"
upstream_url="$url"
upstream_pid="$pid"
push "$upstream_url"

started=$SECONDS
for rep in $(seq 1 "$reps"); do
    echo "== repetition $rep ($((SECONDS - started))s elapsed; load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
    dir="$work/rep-$rep"
    start_ours "$dir/cache" "$out/cache-rep$rep.log" --gc-interval off \
        --upstream "up=$upstream_url"
    cache_url="$url"
    cache_pid="$pid"
    start_distribution "$dir/distproxy" "$out/distproxy-rep$rep.log" "$upstream_url"
    dist_url="$url"
    dist_pid="$pid"
    start_ours "$dir/plain" "$out/plain-rep$rep.log" --gc-interval off
    plain_url="$url"
    plain_pid="$pid"
    push "$plain_url"

    cold=(cache direct distproxy)
    warm=(cache plain)
    if [ $((rep % 2)) = 0 ]; then
        cold=(distproxy direct cache)
        warm=(plain cache)
    fi
    for which in "${cold[@]}"; do
        case "$which" in
            cache) pull cold_cache "$rep" "$cache_url" "up/$repo" "$cache_pid" "$upstream_pid" ;;
            direct) pull cold_direct "$rep" "$upstream_url" "$repo" "$upstream_pid" "$upstream_pid" ;;
            distproxy) pull cold_distproxy "$rep" "$dist_url" "$repo" "$dist_pid" "$upstream_pid" ;;
        esac
        settle "$upstream_pid" "$cache_pid" "$dist_pid"
    done
    for which in "${warm[@]}"; do
        case "$which" in
            cache) pull warm_cache "$rep" "$cache_url" "up/$repo" "$cache_pid" "$upstream_pid" ;;
            plain) pull warm_plain "$rep" "$plain_url" "$repo" "$plain_pid" "$upstream_pid" ;;
        esac
    done
    stop "$cache_pid" "$dist_pid" "$plain_pid"
    rm -rf "$dir"
done
echo "== done in $((SECONDS - started))s; uptime at the end: $(uptime)" | tee -a "$out/machine.txt" >&2

python3 - "$results" >"$out/report.md" <<'EOF'
import json, statistics, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
by = {}
for r in rows:
    by.setdefault(r["scenario"], {})[r["rep"]] = r
order = ["cold_cache", "cold_direct", "cold_distproxy", "warm_cache", "warm_plain"]
what = {
    "cold_cache": "through our cache, cold (empty cache)",
    "cold_direct": "straight from the upstream",
    "cold_distproxy": "through distribution's proxy mode, cold",
    "warm_cache": "through our cache, warm (tag within its TTL)",
    "warm_plain": "our plain registry, image pushed to it",
}
med = lambda s, k: statistics.median(r[k] for r in by[s].values())
print("| scenario | pull | median s | of which manifest s | median MiB/s | per-rep s | server CPU ms | upstream CPU ms |")
print("|---|---|---|---|---|---|---|---|")
for s in order:
    if s not in by:
        continue
    reps = [by[s][k]["seconds"] for k in sorted(by[s])]
    print(f"| {s} | {what[s]} | {med(s, 'seconds'):.3f} | {med(s, 'manifest_seconds'):.3f} | {med(s, 'mib_per_s'):.0f} | "
          + ", ".join(f"{x:.3f}" for x in reps)
          + f" | {med(s, 'server_cpu_ms'):.0f} | {med(s, 'upstream_cpu_ms'):.0f} |")
print()
print("| ratio (speed, median times) | value | per rep | target | met |")
print("|---|---|---|---|---|")
for ours, theirs, target, name in [
    ("cold_cache", "cold_direct", 0.9, "cold: our cache / direct"),
    ("cold_cache", "cold_distproxy", 1.5, "cold: our cache / distribution's proxy"),
    ("warm_cache", "warm_plain", 1.0, "warm: our cache / our normal pull"),
]:
    if ours not in by or theirs not in by:
        continue
    value = med(theirs, "seconds") / med(ours, "seconds")
    per = [by[theirs][k]["seconds"] / by[ours][k]["seconds"] for k in sorted(by[ours]) if k in by[theirs]]
    print(f"| {name} | {value:.2f}x | " + ", ".join(f"{x:.2f}" for x in per)
          + f" | >= {target}x | {'yes' if value >= target else 'NO'} |")
EOF
cat "$out/report.md"
echo
echo "results: $results"
echo "report:  $out/report.md"
