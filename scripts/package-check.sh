#!/usr/bin/env bash
# Packages every publishable crate of the workspace as `cargo publish` would (every crate
# without `publish = false`: the library crates), then builds each package from its
# .crate file alone. Cargo (1.90 on) packages them together and resolves their
# dependencies on each other through a local overlay registry under target/package/, so
# this works before any of them is on crates.io, and runs offline (`--offline`, from the
# cargo cache that building the workspace filled). It catches what only a published crate
# would show: a file outside the package, a path dependency without a version, a missing
# README, a feature that does not build alone.
#
# Usage: scripts/package-check.sh [extra `cargo package` flags, e.g. --allow-dirty]
set -euo pipefail
cd "$(dirname "$0")/.."

mapfile -t crates < <(cargo metadata --no-deps --format-version 1 --offline |
    python3 -c '
import json, sys
for p in json.load(sys.stdin)["packages"]:
    if p.get("publish") != []:
        print(p["name"])
')
if [ "${#crates[@]}" -eq 0 ]; then
    echo "package-check: no publishable crate found" >&2
    exit 1
fi
echo "package-check: ${crates[*]}"
args=()
for c in "${crates[@]}"; do
    args+=(-p "$c")
done
cargo package --offline "${args[@]}" "$@"
