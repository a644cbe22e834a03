#!/usr/bin/env bash
# Web UI benchmark (issue 17): how long `registry serve --ui` takes to answer the
# repositories page of a registry with 10,000 repositories, and the page of a repository
# with 1,000 tags (target: under 50 ms of server time each). Not a test: run by hand on a
# release build; results go to docs/performance.md.
#
#   scripts/bench-ui.sh [--repos N] [--tags N] [--requests N] [--registry-bin PATH]
#
#   --repos N       repositories, each with one tagged image (default 10000)
#   --tags N        tags of the repository `big/app`, each its own manifest (default 1000)
#   --requests N    requests per page measured, one after the other (default 51)
#   --registry-bin PATH  benchmark this binary instead of building target/release/registry
#
# The registry runs on fs + SQLite in a temporary folder, filled over HTTP by a Python
# client (keep-alive, one request at a time). Each page's time is curl's time from the
# connection being established to the first byte of the answer (`time_starttransfer -
# time_connect`) over loopback: an upper bound of the server's time, since it also counts
# curl writing the request and any wait of curl's for a CPU. (`time_pretransfer` is not
# used: on a loaded machine curl can be descheduled after sending the request and before
# taking that timestamp, which gave impossible 0.01 ms answers.) Anonymous (no auth), so
# no bcrypt check is counted. Prints the median, the 90th percentile and the minimum.
#
# Installs nothing: needs `curl` and `python3`.
set -euo pipefail
cd "$(dirname "$0")/.."

repos=10000
tags=1000
requests=51
registry_bin=""
while [ $# -gt 0 ]; do
    case "$1" in
        --repos) repos="$2"; shift 2 ;;
        --tags) tags="$2"; shift 2 ;;
        --requests) requests="$2"; shift 2 ;;
        --registry-bin) registry_bin="$2"; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done

if [ -z "$registry_bin" ]; then
    cargo build --release -p registry >&2
    registry_bin="${CARGO_TARGET_DIR:-target}/release/registry"
fi

work="$(mktemp -d)"
server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

"$registry_bin" serve --ui --listen 127.0.0.1:0 --storage "fs://$work/blobs" \
    --metadata "sqlite://$work/registry.db" --gc-interval off >"$work/log" 2>&1 &
server_pid=$!
for _ in $(seq 1 300); do
    addr="$(grep -o 'listening on http://[0-9.:]*' "$work/log" | head -1 | sed 's|listening on http://||')" || true
    [ -n "$addr" ] && break
    sleep 0.1
done
[ -n "$addr" ] || { cat "$work/log" >&2; echo "registry did not start" >&2; exit 1; }

echo "filling: $repos repositories, $tags tags in big/app ..." >&2
fill_start=$(date +%s)
python3 - "$addr" "$repos" "$tags" <<'PY'
import hashlib, http.client, json, sys
addr, repos, tags = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
host, port = addr.rsplit(":", 1)
conn = http.client.HTTPConnection(host, int(port))

def call(method, path, body=b"", headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    res = conn.getresponse()
    data = res.read()
    if res.status >= 300:
        raise SystemExit(f"{method} {path}: {res.status} {data[:200]!r}")

def digest(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()

config = b'{"architecture":"amd64","os":"linux"}'
layer = b"layer bytes" * 100

def push_image(repo, tag):
    for blob in (config, layer):
        call("POST", f"/v2/{repo}/blobs/uploads/?digest={digest(blob)}", blob,
             {"Content-Type": "application/octet-stream"})
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": digest(layer), "size": len(layer)}],
        "annotations": {"tag": tag, "repo": repo},
    }).encode()
    call("PUT", f"/v2/{repo}/manifests/{tag}", manifest,
         {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})

for i in range(repos):
    push_image(f"many/r{i:05d}", "latest")
for i in range(tags):
    push_image("big/app", f"v{i:04d}")
PY
echo "filled in $(( $(date +%s) - fill_start )) s" >&2

measure() { # measure NAME PATH
    local name="$1" path="$2"
    curl -sf -o /dev/null "http://$addr$path" || { echo "$path failed" >&2; exit 1; }
    for _ in $(seq 1 "$requests"); do
        curl -s -o /dev/null -w '%{http_code} %{time_connect} %{time_starttransfer}\n' "http://$addr$path"
    done | python3 -c '
import sys
name = sys.argv[1]
rows = [l.split() for l in sys.stdin]
bad = [r for r in rows if r[0] != "200"]
if bad:
    sys.exit(f"{name}: {len(bad)} answers were not 200: {bad[:3]}")
t = sorted((float(b) - float(a)) * 1000 for _, a, b in rows)
print(f"{name:<44} median {t[len(t)//2]:7.2f} ms   p90 {t[int(len(t)*0.9)]:7.2f} ms   min {t[0]:7.2f} ms   ({len(t)} requests)")
' "$name"
}

echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), load average $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores"
measure "repositories, first page (by name)" "/ui/"
measure "repositories, page after many/r05000" "/ui/?after=many%2Fr05000"
measure "repositories, search many/r0999" "/ui/?q=many%2Fr0999"
measure "repositories, search r0999 (substring)" "/ui/?q=r0999"
measure "repositories, first page by last push" "/ui/?sort=last_push"
measure "repositories, first page by size" "/ui/?sort=size"
measure "repositories, by size after the 5,000th" "/ui/?sort=size&after=$(curl -s "http://$addr/v2/_ext/repositories?sort=size&n=5000" | python3 -c 'import json,sys; r=json.load(sys.stdin)["repositories"][-1]; print(str(r["attributed_bytes"]) + "," + r["name"])')"
measure "big/app (1,000 tags), first page of 50" "/ui/r/big/app"
measure "big/app, page after the 500th tag" "/ui/r/big/app?after=$(curl -s "http://$addr/v2/_ext/tags/big/app?sort=last_push&n=500" | python3 -c 'import json,sys; t=json.load(sys.stdin)["tags"][-1]; print(str(t["updated_at"]) + "," + t["name"])')"
measure "big/app, one page of 500 tags" "/ui/r/big/app?n=500"
measure "a manifest page of big/app" "/ui/r/big/app/-/manifest/v0500"
measure "storage" "/ui/storage"
echo "load average after $(cut -d' ' -f1-3 /proc/loadavg)"
