#!/usr/bin/env bash
# Job queue: submit-to-claim latency (p50/p99) beside a bare NOTIFY→LISTEN round trip, and
# jobs per second with an instant handler beside pgbench simple-update, all in one run on one
# fresh database. Usage: bench/queue.sh [jobs=5000] [concurrency=4]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
JOBS="${1:-5000}"
CONCURRENCY="${2:-4}"
ensure_postgres
DB="gi2_bench_$$"
URL="postgres://postgres@${PG_HOST}:${PG_PORT}/${DB}"
psql_admin -qc "CREATE DATABASE ${DB}" >/dev/null
trap 'psql_admin -qc "DROP DATABASE IF EXISTS ${DB} WITH (FORCE)" >/dev/null' EXIT
cargo build --release --locked -q -p gptimage2-api --example queue_bench
OUT=$("$CARGO_TARGET_DIR/release/examples/queue_bench" "$URL" "$JOBS" "$CONCURRENCY")
echo "$OUT" | grep -v '^jobs_per_sec'
JPS=$(echo "$OUT" | awk '/^jobs_per_sec/{print $2}')
pgbench -q -i -s 1 -h "$PG_HOST" -p "$PG_PORT" -U postgres "$DB" >/dev/null 2>&1
TPS=$(pgbench -n -b simple-update -c "$CONCURRENCY" -j "$CONCURRENCY" -T 10 -h "$PG_HOST" -p "$PG_PORT" -U postgres "$DB" 2>/dev/null | awk '/^tps = /{print $3}')
printf '%-44s %12s\n' "throughput (${CONCURRENCY} workers / clients)" "per second"
printf '%-44s %12.1f\n' "pgbench simple-update (baseline)" "$TPS"
printf '%-44s %12.1f\n' "jobs run (instant handler)" "$JPS"
awk -v a="$JPS" -v b="$TPS" 'BEGIN { printf "ratio jobs / simple-update: %.3f\n", a / b }'
