#!/usr/bin/env bash
# Before a release: compares the public API of every publishable crate (the library
# crates; `publish = false` ones are skipped) with a baseline git revision, the last
# release's tag, and names every change that breaks semver (a removed item, a new
# required trait method, a new field in an exhaustive struct, ...). docs/versioning.md
# says what a breaking change allows.
#
# Needs cargo-semver-checks: `cargo install cargo-semver-checks --locked` (from
# crates.io; a long compile). It builds rustdoc JSON of both revisions with the installed
# toolchain, so the two builds take a few minutes. Not part of .ci/run: there is no
# released baseline yet, and the check is for the moment before a release.
#
# Usage: scripts/semver-check.sh BASELINE_REV [-p CRATE ...] [--release-type minor|patch|major]
# (every publishable crate unless -p names some)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 1 ]; then
    echo "usage: $0 BASELINE_REV [extra cargo semver-checks flags]" >&2
    exit 2
fi
baseline="$1"
shift
if ! cargo semver-checks --version >/dev/null 2>&1; then
    echo "semver-check: cargo-semver-checks is not installed:" >&2
    echo "    cargo install cargo-semver-checks --locked" >&2
    exit 1
fi
scope=(--workspace)
for arg in "$@"; do
    case "$arg" in
    -p | --package | --package=*) scope=() ;;
    esac
done
exec cargo semver-checks check-release "${scope[@]}" --baseline-rev "$baseline" "$@"
