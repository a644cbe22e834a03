#!/usr/bin/env bash
# Checks the minimum supported Rust version, `rust-version` in the root Cargo.toml, as far
# as this machine can:
# 1. every locked dependency (for this platform) declares a rust-version no newer than
#    ours, so nothing in Cargo.lock needs a newer compiler (`cargo update` picks such
#    versions itself: resolver 3 prefers dependencies that fit our rust-version);
# 2. if a toolchain of exactly that version is installed (`rustup toolchain list`), the
#    whole workspace is checked with it. If none is, this says so and does not claim the
#    build was tried: rustup cannot download toolchains on every machine. Clippy's
#    `incompatible_msrv` lint (every `cargo clippy` run) checks our own code's use of std
#    APIs newer than the MSRV either way; language features it does not see.
set -euo pipefail
cd "$(dirname "$0")/.."

msrv=$(sed -n 's/^rust-version = "\([0-9.]*\)"/\1/p' Cargo.toml | head -n 1)
if [ -z "$msrv" ]; then
    echo "msrv-check: no rust-version in Cargo.toml" >&2
    exit 1
fi
host=$(rustc -vV | sed -n 's/^host: //p')
cargo metadata --format-version 1 --locked --filter-platform "$host" |
    python3 -c '
import json, sys
msrv = sys.argv[1]
def key(v):
    return tuple(int(x) for x in (v.split(".") + ["0", "0"])[:3])
newer = sorted(
    (p["name"], p["version"], p["rust_version"])
    for p in json.load(sys.stdin)["packages"]
    if p.get("rust_version") and key(p["rust_version"]) > key(msrv)
)
for name, version, rv in newer:
    print(f"msrv-check: {name} {version} needs Rust {rv}, newer than our rust-version {msrv}")
if newer:
    sys.exit(1)
print(f"msrv-check: every locked dependency builds with Rust {msrv} by its rust-version")
' "$msrv"

if rustup toolchain list 2>/dev/null | grep -q "^$msrv[.-]"; then
    echo "msrv-check: building with the installed Rust $msrv toolchain"
    CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/msrv" cargo "+$msrv" check --workspace --all-targets --locked
else
    echo "msrv-check: no Rust $msrv toolchain installed (rustup toolchain install $msrv): the workspace was NOT built at the MSRV"
fi
