#!/usr/bin/env bash
# Starts the PostgreSQL the tests use and prints the environment that points them at it:
# the main cluster (port 5432) with a `converge` role and a fresh `converge_test` database, and a
# second cluster, `converge_restart` (port 5433), that the restart test stops and starts. Installs
# PostgreSQL with apt-get when it is missing. Usage: eval "$(scripts/pg-env.sh)".
set -euo pipefail
# Only the exports go to stdout: everything the tools print (pg_ctlcluster says "Removed stale pid
# file." after an unclean stop) goes to stderr, so `eval` never runs it. No copy of stdout is kept
# in another descriptor: the server pg_ctlcluster starts would inherit it, and `$(…)` would wait
# for the server to exit.
main() {

as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else sudo -n -u postgres "$@"; fi
}
run_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi
}

if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  echo "== installing postgresql" >&2
  if command -v apt-get >/dev/null 2>&1; then
    run_root apt-get update -qq >&2
    run_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  else
    echo "missing: PostgreSQL (pg_ctlcluster); install it, e.g. apt-get install postgresql" >&2
    exit 1
  fi
fi

VERSION=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
cluster() { # name port
  if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -qx "$VERSION $1"; then
    run_root pg_createcluster "$VERSION" "$1" -p "$2" >/dev/null
  fi
  if ! pg_lsclusters -h | awk -v v="$VERSION" -v n="$1" '$1==v && $2==n {print $4}' | grep -qx online; then
    run_root pg_ctlcluster "$VERSION" "$1" start
  fi
  as_postgres psql -q -p "$2" -v ON_ERROR_STOP=1 >/dev/null <<SQL
SET client_min_messages = warning;
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'converge') THEN
    CREATE ROLE converge LOGIN PASSWORD 'converge' CREATEDB;
  END IF;
END \$\$;
DROP DATABASE IF EXISTS converge_test WITH (FORCE);
CREATE DATABASE converge_test OWNER converge;
SQL
}
cluster main 5432
cluster converge_restart 5433
}

main >&2
echo "export CONVERGE_TEST_PG='postgres://converge:converge@127.0.0.1:5432/converge_test'"
echo "export CONVERGE_TEST_PG_RESTART='postgres://converge:converge@127.0.0.1:5433/converge_test'"
echo "export CONVERGE_TEST_PG_RESTART_CLUSTER='$VERSION converge_restart'"
