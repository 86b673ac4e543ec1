#!/usr/bin/env bash
# Runs every check and test of the workspace from a clean clone: formatting, clippy, the WASM
# plugins' build, the Python environment of the cross-language tests, and all tests (which start
# real `converge serve` processes on loopback themselves; the FFI crate's run its Python suite),
# with PostgreSQL started for the PostgreSQL server store's tests.
set -euo pipefail
cd "$(dirname "$0")/.."

need() {
  if ! "$@" >/dev/null 2>&1; then
    echo "missing: '$*' failed. Install the Rust toolchain with rustup (components rustfmt and clippy)." >&2
    exit 1
  fi
}
need cargo --version
need cargo fmt --version
need cargo clippy --version

# The time so far, the target directory's size and the disk's free space after each stage: a disk
# that fills up shows as a linker killed by SIGBUS, which says nothing of the cause on its own.
disk() {
  echo "   at ${SECONDS} s; disk: target/ $(du -sh target 2>/dev/null | cut -f1 || echo 0), $(df -h --output=avail . | tail -n 1 | tr -d ' ') free"
}
free_gb=$(df --output=avail -BG . | tail -n 1 | tr -dc 0-9)
if [ "${free_gb:-0}" -lt 8 ]; then
  echo "warning: only ${free_gb} GB free here; a clean run takes about 5 GB under target/" >&2
fi
disk

# SQLCipher (encryption at rest) builds against the system's libcrypto headers.
if [ ! -f /usr/include/openssl/crypto.h ]; then
  echo "== installing libssl-dev (OpenSSL headers for SQLCipher)"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libssl-dev pkg-config >/dev/null
  else
    echo "missing: OpenSSL headers (/usr/include/openssl/crypto.h); install libssl-dev (apt-get install libssl-dev)" >&2
    exit 1
  fi
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
cargo fmt --all --manifest-path plugins/guests/Cargo.toml -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
disk

echo "== scripts/build-plugins.sh (the WASM plugins converge-wasm's tests load)"
./scripts/build-plugins.sh
disk

echo "== scripts/fuzz.sh --dev all 8 (every fuzz target for 8 s: libFuzzer through cargo-fuzz)"
./scripts/fuzz.sh --dev all 8
# A one-off run (CI sets CONVERGE_LEAN=1) drops the fuzz build once it has run: the tests never
# read it, and the test build can use the disk it frees.
if [ "${CONVERGE_LEAN:-}" = 1 ]; then rm -rf target/fuzz; fi
disk

echo "== scripts/python-env.sh (the stock Python gRPC client the cross-language test runs)"
./scripts/python-env.sh

echo "== scripts/pg-env.sh (PostgreSQL for the server store's tests: started, with a fresh test database)"
# Assigned first, so a failure of pg-env.sh stops the run (`eval "$(…)"` alone would hide it).
pg_env=$(./scripts/pg-env.sh)
eval "$pg_env"

echo "== cargo build -p converge-uniffi-bindgen (the FFI tests generate bindings with it)"
cargo build --locked -p converge-uniffi-bindgen
disk

echo "== cargo test"
status=0
cargo test --workspace --locked --no-fail-fast || status=$?
disk
exit $status
