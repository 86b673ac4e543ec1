#!/usr/bin/env bash
# Builds ffi/swift/ConvergeFFI.xcframework (device + simulator slices of the static library,
# with the generated header and module map) for the Swift package in ffi/swift/.
# macOS with Xcode only: it is not run on Linux or in CI.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(uname)" != "Darwin" ] || ! command -v xcodebuild >/dev/null; then
  echo "build-xcframework.sh runs on macOS with Xcode (xcodebuild); this machine has neither" >&2
  exit 1
fi
TARGETS=(aarch64-apple-ios aarch64-apple-ios-sim x86_64-apple-ios)
rustup target add "${TARGETS[@]}"
for t in "${TARGETS[@]}"; do
  cargo rustc --locked --release -p converge-ffi --lib --target "$t" --crate-type staticlib
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/headers" "$work/sim"
cp ffi/swift/converge_ffiFFI.h "$work/headers/"
cp ffi/swift/converge_ffiFFI.modulemap "$work/headers/module.modulemap"
lipo -create target/aarch64-apple-ios-sim/release/libconverge_ffi.a target/x86_64-apple-ios/release/libconverge_ffi.a \
  -output "$work/sim/libconverge_ffi.a"
rm -rf ffi/swift/ConvergeFFI.xcframework
xcodebuild -create-xcframework \
  -library target/aarch64-apple-ios/release/libconverge_ffi.a -headers "$work/headers" \
  -library "$work/sim/libconverge_ffi.a" -headers "$work/headers" \
  -output ffi/swift/ConvergeFFI.xcframework
echo "built ffi/swift/ConvergeFFI.xcframework; add ffi/swift as a local Swift package"
