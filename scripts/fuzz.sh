#!/usr/bin/env bash
# Runs the fuzz targets (fuzz/, libFuzzer through cargo-fuzz) on the stable toolchain with
# RUSTC_BOOTSTRAP=1, which cargo-fuzz's flags need.
#   scripts/fuzz.sh TARGET [SECONDS]   one target, for longer (default 300 s)
#   scripts/fuzz.sh all [SECONDS]      every target in turn
#   scripts/fuzz.sh --dev all 8        the test command's run: an unoptimised build, which takes
#                                      half the time to build and runs each target for 8 s
# Seeds come from fuzz/corpus/TARGET (checked in); what the run adds goes to
# target/fuzz-corpus/TARGET, and a crash, panic or hang (one input over 10 s; 60 s with --dev) to
# target/fuzz-artifacts/TARGET, with a non-zero exit. A line per target says what ran:
# executions, coverage (edges) and features.
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=()
if [ "${1:-}" = --dev ]; then
  PROFILE=(--dev)
  shift
fi
WHICH=${1:?usage: scripts/fuzz.sh [--dev] TARGET|all [SECONDS]}
SECONDS_EACH=${2:-300}
CARGO_FUZZ_VERSION=0.13.2
TOOLS=target/tools
export RUSTC_BOOTSTRAP=1
export PATH="$PWD/$TOOLS/bin:$PATH"

if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION into $TOOLS" >&2
  # Unoptimised: it only drives cargo and libFuzzer, and builds in 18 s instead of 30 s here.
  cargo install --locked --quiet --debug --root "$TOOLS" cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

# Without AddressSanitizer: the code under test is safe Rust and SQLite's C, and ASan would
# double the build of wasmtime on two cores. libFuzzer still finds panics, aborts, hangs and
# runaway memory.
# One input taking longer than this is a hang. The unoptimised build is slower by far, and the
# test command's run may share the machine, so it gets more.
TIMEOUT=10
[ ${#PROFILE[@]} -eq 0 ] || TIMEOUT=60
FLAGS=(--sanitizer none --target-dir "$PWD/target/fuzz" "${PROFILE[@]}")
(cd fuzz && cargo fuzz build "${FLAGS[@]}" >&2)

if [ "$WHICH" = all ]; then
  TARGETS=$(cd fuzz && cargo fuzz list)
else
  TARGETS=$WHICH
fi

failed=0
for t in $TARGETS; do
  corpus=target/fuzz-corpus/$t
  artifacts=target/fuzz-artifacts/$t
  mkdir -p "$corpus" "$artifacts"
  seeds=("$PWD/fuzz/corpus/$t")
  # The example plugins built by scripts/build-plugins.sh are seeds too, when present, except
  # in the unoptimised run: there compiling each takes seconds, more on a busy machine.
  if [ "$t" = wasm_plugin ] && [ ${#PROFILE[@]} -eq 0 ] && compgen -G 'target/guests/wasm32-unknown-unknown/release/*.wasm' >/dev/null; then
    mkdir -p target/fuzz-seeds/wasm_plugin
    cp target/guests/wasm32-unknown-unknown/release/*.wasm target/fuzz-seeds/wasm_plugin/
    seeds+=("$PWD/target/fuzz-seeds/wasm_plugin")
  fi
  log=target/fuzz-artifacts/$t.log
  if (cd fuzz && cargo fuzz run "${FLAGS[@]}" "$t" "$PWD/../$corpus" "${seeds[@]}" -- \
      -max_total_time="$SECONDS_EACH" -timeout="$TIMEOUT" -rss_limit_mb=2048 -max_len=262144 \
      -artifact_prefix="$PWD/../$artifacts/" -print_final_stats=1) > "$log" 2>&1; then
    stats=$(grep -E '#[0-9]+\s+DONE' "$log" | tail -n 1 | sed -E 's/.*DONE +//')
    runs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}')
    echo "fuzz $t: ${runs:-?} executions in ${SECONDS_EACH} s, $stats, 0 crashes"
  else
    failed=1
    echo "fuzz $t: FAILED, see $log and $artifacts:" >&2
    grep -E 'panicked|ERROR|SUMMARY|Test unit written' "$log" | head -n 10 >&2 || tail -n 30 "$log" >&2
  fi
done
exit $failed
