#!/usr/bin/env bash
# Makes the Python virtual environment the cross-language tests use (target/pyenv): the stock
# gRPC client and its code generator, pytest for the FFI suite and schemathesis for the OpenAPI
# document, all pinned. Idempotent: a current environment is kept.
set -euo pipefail
cd "$(dirname "$0")/.."

ENV_DIR=target/pyenv
REQUIREMENTS=(tests/stock-grpc/requirements.txt ffi/tests/python/requirements.txt tests/schemathesis/requirements.txt)
STAMP="$ENV_DIR/.requirements"
WANTED=$(cat "${REQUIREMENTS[@]}")

if ! command -v python3 >/dev/null 2>&1; then
  echo "missing: python3 (3.9 or newer, with the venv module); install it, e.g. apt-get install python3 python3-venv" >&2
  exit 1
fi
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANTED" ]; then
  exit 0
fi
rm -rf "$ENV_DIR"
python3 -m venv "$ENV_DIR"
"$ENV_DIR/bin/pip" install --quiet --disable-pip-version-check $(printf -- '-r %s ' "${REQUIREMENTS[@]}")
printf '%s' "$WANTED" > "$STAMP"
echo "made $ENV_DIR ($(echo "$WANTED" | tr '\n' ' '))"
