#!/usr/bin/env bash
# Personal-data export of <images> images of <mib> MiB each from the S3-compatible test server
# (s3s-fs, random credentials), run by a separate `gptimage2 worker`: wall time queue →
# succeeded and the worker's idle and peak RSS, beside a plain copy of the same objects through
# the same S3 client and `ObjectStore::put` (no ZIP, no hashing), timed before and after the
# export in the same run (the faster copy is the baseline); the reads alone are shown for
# context. A fresh database (migrated by `gptimage2 migrate`) and bucket, removed afterwards.
# Usage: bench/export.sh [images=1000] [mib=1]   (mib may be a decimal: 0.01 is 10 KiB)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
IMAGES="${1:-1000}"
MIB="${2:-1}"
ensure_postgres
ensure_s3s_fs
cargo build --release --locked -q -p gptimage2-api --bin gptimage2 --example export_bench
BIN="$CARGO_TARGET_DIR/release/gptimage2"
BENCH="$CARGO_TARGET_DIR/release/examples/export_bench"

DB="gi2_bench_$$"
DIR=$(mktemp -d /tmp/gi2-bench-export.XXXXXX)
mkdir -p "$DIR/s3"
S3_PORT=$(free_port)
S3_PID="" WORKER_PID=""
cleanup() {
  for pid in $WORKER_PID $S3_PID; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql_admin -qc "DROP DATABASE IF EXISTS ${DB} WITH (FORCE)" >/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT

# The S3 test server as scripts/test starts it: random credentials, a temporary directory.
ACCESS_KEY="gi2bench$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')"
SECRET_KEY="$(od -An -N16 -tx4 /dev/urandom | tr -d ' ')"
"$S3S_FS" --host 127.0.0.1 --port "$S3_PORT" --access-key "$ACCESS_KEY" --secret-key "$SECRET_KEY" \
  "$DIR/s3" >"$DIR/s3s-fs.log" 2>&1 &
S3_PID=$!
wait_for_port "$S3_PORT" "s3s-fs"

psql_admin -qc "CREATE DATABASE ${DB}" >/dev/null
export GI2_DATABASE_URL="postgres://postgres@${PG_HOST}:${PG_PORT}/${DB}" GI2_LOG=info \
  GI2_STORAGE=s3 GI2_S3_ENDPOINT="http://127.0.0.1:${S3_PORT}" GI2_S3_BUCKET=gi2-bench \
  GI2_S3_ACCESS_KEY_ID="$ACCESS_KEY" GI2_S3_SECRET_ACCESS_KEY="$SECRET_KEY" \
  GI2_S3_PATH_STYLE=true GI2_S3_CREATE_BUCKET=true
"$BIN" migrate >"$DIR/migrate.log" 2>&1

echo "seeding ${IMAGES} images of ${MIB} MiB ..." >&2
USER_ID=$("$BENCH" seed "$IMAGES" "$MIB")

# Context: the reads alone. Baseline: the same objects copied into one object with the same
# client and put, once before and once after the export (the faster one counts).
READ=$("$BENCH" read "$USER_ID")
read -r READ_S _ HEAD_MS GET_P50 GET_P90 <<<"$READ"
COPY=$("$BENCH" copy "$USER_ID")
read -r COPY1_S COPY_BYTES <<<"$COPY"

# The export, run by a separate worker process started (and idle) beforehand.
"$BIN" worker >"$DIR/worker.log" 2>&1 &
WORKER_PID=$!
for _ in $(seq 1 200); do grep -q "worker started" "$DIR/worker.log" && break; sleep 0.05; done
grep -q "worker started" "$DIR/worker.log" || { cat "$DIR/worker.log" >&2; echo "error: the worker did not start" >&2; exit 1; }
sleep 2
status_kib() { awk -v k="$2:" '$1==k {print $2}' "/proc/$1/status"; }
IDLE_KIB=$(status_kib "$WORKER_PID" VmRSS)
EXPORT=$("$BENCH" export "$USER_ID")
read -r EXPORT_S EXPORT_BYTES <<<"$EXPORT"
PEAK_KIB=$(status_kib "$WORKER_PID" VmHWM)
AFTER_KIB=$(status_kib "$WORKER_PID" VmRSS)
THREADS=$(status_kib "$WORKER_PID" Threads)
kill "$WORKER_PID"; wait "$WORKER_PID" 2>/dev/null || true; WORKER_PID=""

COPY=$("$BENCH" copy "$USER_ID")
read -r COPY2_S _ <<<"$COPY"
COPY_S=$(awk -v a="$COPY1_S" -v b="$COPY2_S" 'BEGIN { print (a < b) ? a : b }')

TOTAL_MIB=$(awk -v n="$IMAGES" -v m="$MIB" 'BEGIN { print n * m }')
row() { awk -v n="$1" -v s="$2" -v b="$3" -v t="$TOTAL_MIB" -v i="$IMAGES" \
  'BEGIN { printf "%-50s %9.2f %8.1f %8.1f %8.1f\n", n, s, t / s, s * 1000 / i, b / 1048576 }'; }
printf '%-50s %9s %8s %8s %8s\n' "${IMAGES} images x ${MIB} MiB from s3s-fs" "seconds" "MiB/s" "ms/img" "MiB out"
row "GET each, bytes dropped (reads alone, context)" "$READ_S" 0
row "GET each + one multipart put (baseline: before)" "$COPY1_S" "$COPY_BYTES"
row "GET each + one multipart put (baseline: after)" "$COPY2_S" "$COPY_BYTES"
row "export job, queue -> succeeded (gptimage2 worker)" "$EXPORT_S" "$EXPORT_BYTES"
echo "one GET (reads alone): answer after ${HEAD_MS} ms (median); body's end after ${GET_P50} ms (median), ${GET_P90} ms (p90)"
awk -v a="$EXPORT_S" -v b="$COPY_S" 'BEGIN { r = a / b
  printf "ratio export / copy (faster baseline): %.3f (target <= 1.3: %s)\n", r, (r <= 1.3) ? "met" : "NOT met" }'
printf '%-50s %9s\n' "gptimage2 worker RSS" "MiB"
awk -v k="$IDLE_KIB" 'BEGIN { printf "%-50s %9.1f\n", "idle, 2 s after start (VmRSS)", k / 1024 }'
awk -v k="$PEAK_KIB" 'BEGIN { printf "%-50s %9.1f  (target <= 64: %s)\n", "peak during the export (VmHWM)", k / 1024, (k / 1024 <= 64) ? "met" : "NOT met" }'
awk -v k="$AFTER_KIB" -v t="$THREADS" 'BEGIN { printf "%-50s %9.1f\n", "after the export (VmRSS, " t " threads)", k / 1024 }'
