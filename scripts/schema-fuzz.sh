#!/usr/bin/env bash
# Runs schemathesis against a fresh `converge serve` for longer than the test command does, with a
# new seed each time: scripts/schema-fuzz.sh [SECONDS] (default 600). Failures print a curl line
# and a seed to reproduce them with. A long run warns that pushes were "mostly rejected": the
# fuzzer reuses short Idempotency-Keys with new bodies, which the contract answers with 422
# `idempotency_key_reused`; that warning is expected, a failure is not.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TO_RUN=${1:-600}

./scripts/python-env.sh
cargo build --locked -p converge-cli
DIR=$(mktemp -d)
SECRET=schema-fuzz-secret
target/debug/converge serve --db "$DIR/server.db" --listen 127.0.0.1:0 --grpc-listen off \
  --jwt-secret "$SECRET" > "$DIR/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; rm -rf "$DIR"' EXIT
URL=
for _ in $(seq 100); do
  URL=$(grep -o 'listening on http://[0-9.:]*' "$DIR/serve.log" | head -n 1 | cut -d' ' -f3 || true)
  [ -n "$URL" ] && break
  kill -0 $SERVER 2>/dev/null || { cat "$DIR/serve.log" >&2; exit 1; }
  sleep 0.2
done
[ -n "$URL" ] || { echo "converge serve did not start:" >&2; cat "$DIR/serve.log" >&2; exit 1; }
TOKEN=$(target/debug/converge token --jwt-secret "$SECRET" --tenant fuzz --user schemathesis --ttl 1d)
target/pyenv/bin/schemathesis --config-file tests/schemathesis/schemathesis.toml \
  run "$URL/openapi.json" --checks all --max-time "$SECONDS_TO_RUN" \
  -H "Authorization: Bearer $TOKEN"
