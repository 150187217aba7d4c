#!/usr/bin/env bash
# Credit spends per second (hold + capture through the ledger API) beside pgbench's
# simple-update on the same fresh database, in the same run. Prints a table and the ratio.
# Usage: bench/ledger_spends.sh [seconds=10] [concurrency=4]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
SECONDS_PER_RUN="${1:-10}"
CONCURRENCY="${2:-4}"
ensure_postgres
DB="gi2_bench_$$"
URL="postgres://postgres@${PG_HOST}:${PG_PORT}/${DB}"
psql_admin -qc "CREATE DATABASE ${DB}" >/dev/null
trap 'psql_admin -qc "DROP DATABASE IF EXISTS ${DB} WITH (FORCE)" >/dev/null' EXIT
cargo build --release --locked -q -p gptimage2-api --example ledger_bench

# Same database, same concurrency: one user per client, so spends do not share a row lock.
SPENDS=$("$CARGO_TARGET_DIR/release/examples/ledger_bench" "$URL" "$SECONDS_PER_RUN" "$CONCURRENCY" "$CONCURRENCY")
pgbench -q -i -s 1 -h "$PG_HOST" -p "$PG_PORT" -U postgres "$DB" >/dev/null 2>&1
PGBENCH=$(pgbench -n -b simple-update -c "$CONCURRENCY" -j "$CONCURRENCY" -T "$SECONDS_PER_RUN" -h "$PG_HOST" -p "$PG_PORT" -U postgres "$DB" 2>/dev/null \
  | awk '/^tps = /{print $3}')
printf '%-40s %12s\n' "workload (${CONCURRENCY} clients, ${SECONDS_PER_RUN}s)" "per second"
printf '%-40s %12.1f\n' "pgbench simple-update (baseline)" "$PGBENCH"
printf '%-40s %12.1f\n' "ledger spend (hold + capture)" "$SPENDS"
awk -v a="$SPENDS" -v b="$PGBENCH" 'BEGIN { printf "ratio spend / simple-update: %.3f\n", a / b }'
