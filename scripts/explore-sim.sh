#!/usr/bin/env bash
# Explores the simulation beyond CI's fixed seeds: runs fresh seeds (release build) for as long
# as asked, starting from the clock so every run covers a new range, and prints the start so a
# range can be run again. Run it for a while after every change to the sync path. A failing seed
# is printed with its replay command; once its bug is fixed, add it to REGRESSIONS in
# tests/it/sim.rs.
#
#   scripts/explore-sim.sh [SECONDS] [START]     (default: 600 seconds, start from the clock)
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-600}
start=${2:-$(date +%s%3N)}
chunk=2000
cargo build --release -p converge-cli
bin=./target/release/converge
echo "exploring seeds from $start for ${seconds}s (again: scripts/explore-sim.sh $seconds $start)"
deadline=$(( $(date +%s) + seconds ))
next=$start
failed=0
while [ "$(date +%s)" -lt "$deadline" ]; do
  if ! "$bin" sim --seeds "$chunk" --start "$next" --twice > /tmp/converge-explore.$$ 2>&1; then
    failed=1
    grep -A20 -E 'FAILED|differ' /tmp/converge-explore.$$ || tail -20 /tmp/converge-explore.$$
  fi
  tail -3 /tmp/converge-explore.$$ | head -1
  next=$(( next + chunk ))
done
rm -f /tmp/converge-explore.$$
echo "explored seeds $start..$(( next - 1 )) ($(( next - start )) seeds, each twice)"
exit $failed
