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

metadata=$(cargo metadata --no-deps --format-version 1 --offline)
mapfile -t crates < <(python3 -c '
import json, sys
for p in json.load(sys.stdin)["packages"]:
    if p.get("publish") != []:
        print(p["name"])
' <<<"$metadata")
if [ "${#crates[@]}" -eq 0 ]; then
    echo "package-check: no publishable crate found" >&2
    exit 1
fi
echo "package-check: ${crates[*]}"
args=()
for c in "${crates[@]}"; do
    args+=(-p "$c")
done
# Start clean. Cargo takes a registry crate of a given name and version to be immutable: it
# never unpacks one again ($CARGO_HOME/registry/src/-HASH/NAME-VERSION/, a local
# registry's folder starting with `-`) nor rebuilds one (target/debug/), so a run after a
# change verified each crate against an earlier run's build of its dependencies in the
# workspace (E0432 on a type added in between). The package directory, those unpacked
# copies and the dev builds of these crates go (the next build recompiles them; release
# builds are untouched).
rm -rf "$(python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])' <<<"$metadata")/package"
for c in "${crates[@]}"; do
    version=$(python3 -c '
import json, sys
print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == sys.argv[1]))
' "$c" <<<"$metadata")
    rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/-*/"$c-$version"
done
cargo clean --offline "${args[@]}"
cargo package --offline "${args[@]}" "$@"
