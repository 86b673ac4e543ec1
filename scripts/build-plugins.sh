#!/usr/bin/env bash
# Builds the WASM plugins of plugins/guests (examples and misbehaving fixtures) for
# wasm32-unknown-unknown, release. They land in target/guests/wasm32-unknown-unknown/release/*.wasm
# under the repository, whatever CARGO_TARGET_DIR says (an outer CARGO_TARGET_DIR is ignored for
# the guests, so the host's tests find them at a fixed path). converge-wasm's tests load them.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-unknown-unknown >/dev/null

export CARGO_TARGET_DIR="$PWD/target/guests"
lock=()
if [ -n "${CI:-}" ]; then lock=(--locked); fi
cargo build --release --target wasm32-unknown-unknown --manifest-path plugins/guests/Cargo.toml "${lock[@]}"

ls -l "$CARGO_TARGET_DIR"/wasm32-unknown-unknown/release/*.wasm
