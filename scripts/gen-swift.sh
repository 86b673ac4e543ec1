#!/usr/bin/env bash
# Regenerates the committed Swift bindings (ffi/swift/: the Swift file, the C header and the
# module map) from the library converge-ffi builds. `cargo test -p converge-ffi` fails while
# they differ from what the library generates.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked -p converge-ffi -p converge-uniffi-bindgen
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
./target/debug/uniffi-bindgen generate --library target/debug/libconverge_ffi.so --language swift --out-dir "$out" >/dev/null
mkdir -p ffi/swift
cp "$out"/converge_ffi.swift "$out"/converge_ffiFFI.h "$out"/converge_ffiFFI.modulemap ffi/swift/
echo "ffi/swift/ regenerated"
