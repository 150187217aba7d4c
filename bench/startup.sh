#!/usr/bin/env bash
# Start-up time and resident memory of `gptimage2 serve` (embedded defaults, local storage, a
# fresh database already migrated) beside the minimal actix-web handler of
# api/examples/hello_actix.rs, in the same run: time from spawn to the first 200 (of /readyz,
# of / for the baseline; polled every 5 ms; median of <runs> starts), RSS after 2 s idle and
# after a warm-up of <requests> requests over 4 keep-alive connections.
# Usage: bench/startup.sh [runs=5] [requests=400]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
RUNS="${1:-5}"
REQUESTS="${2:-400}"
ensure_postgres
cargo build --release --locked -q -p gptimage2-api --bin gptimage2 --example hello_actix
BIN="$CARGO_TARGET_DIR/release/gptimage2"
HELLO="$CARGO_TARGET_DIR/release/examples/hello_actix"
PROBE="bench/startup_probe.py"
# serve's default GI2_HTTP_WORKERS is the number of cores; the baseline gets as many. Other
# documented GI2_* settings set by the caller reach serve too (e.g. GI2_HTTP_WORKERS=1).
WORKERS="${GI2_HTTP_WORKERS:-$(nproc)}"
DB="gi2_bench_$$"
DIR=$(mktemp -d /tmp/gi2-bench-startup.XXXXXX)
API_PORT=$(free_port)
BASE_PORT=$(free_port)
PIDS=""
cleanup() {
  for pid in $PIDS; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql_admin -qc "DROP DATABASE IF EXISTS ${DB} WITH (FORCE)" >/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT

psql_admin -qc "CREATE DATABASE ${DB}" >/dev/null
# Only what a local run has to name: the database, where objects go, the port.
export GI2_DATABASE_URL="postgres://postgres@${PG_HOST}:${PG_PORT}/${DB}" \
  GI2_STORAGE_DIR="$DIR/objects" GI2_BIND="127.0.0.1:${API_PORT}"
"$BIN" migrate >"$DIR/migrate.log" 2>&1
API="http://127.0.0.1:${API_PORT}"
BASE="http://127.0.0.1:${BASE_PORT}"

median() { tr ' ' '\n' | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
kib() { awk -v k="$2:" '$1==k {print $2}' "/proc/$1/status"; }
wait_200() { # url pid
  for _ in $(seq 1 600); do
    curl -sf -o /dev/null "$1" && return 0
    kill -0 "$2" 2>/dev/null || { echo "error: the process behind $1 exited" >&2; return 1; }
    sleep 0.05
  done
  echo "error: no 200 from $1" >&2; return 1
}

# Start-up: spawn → first 200, RUNS times each.
BASE_READY=$(python3 "$PROBE" ready "$RUNS" "$BASE/" -- "$HELLO" "127.0.0.1:${BASE_PORT}" "$WORKERS")
API_READY=$(python3 "$PROBE" ready "$RUNS" "$API/readyz" -- "$BIN" serve)

# Memory: one long-lived instance of each, measured idle and after the warm-up.
status() { echo "$(kib "$1" VmRSS) $(kib "$1" VmHWM) $(kib "$1" Threads)"; }
"$HELLO" "127.0.0.1:${BASE_PORT}" "$WORKERS" >"$DIR/hello.log" 2>&1 &
PID=$!; PIDS="$PIDS $PID"
wait_200 "$BASE/" "$PID"
sleep 2
BASE_IDLE=$(kib "$PID" VmRSS)
python3 "$PROBE" warm "$REQUESTS" 4 "$BASE" - /
sleep 1
read -r BASE_WARM BASE_PEAK BASE_THREADS <<<"$(status "$PID")"
kill "$PID"; wait "$PID" 2>/dev/null || true

"$BIN" serve >"$DIR/serve.log" 2>&1 &
PID=$!; PIDS="$PIDS $PID"
wait_200 "$API/readyz" "$PID"
sleep 2
API_IDLE=$(kib "$PID" VmRSS)
# One account (the argon2 hash of the sign-up is part of the warm-up), then its reads.
TOKEN=$(curl -sf -X POST "$API/v1/auth/register" -H 'content-type: application/json' \
  -d '{"email":"startup@example.com","password":"correct horse battery staple","name":"Bench"}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
python3 "$PROBE" warm "$REQUESTS" 4 "$API" "Authorization: Bearer $TOKEN" \
  /v1/me "/v1/generations?limit=20" /v1/credits /readyz
sleep 1
read -r API_WARM API_PEAK API_THREADS <<<"$(status "$PID")"
kill "$PID"; wait "$PID" 2>/dev/null || true

B_MED=$(echo "$BASE_READY" | median)
A_MED=$(echo "$API_READY" | median)
printf '%-40s %9s %9s %9s %9s %8s\n' "start-up and memory (${WORKERS} HTTP workers)" "ready ms" "idle MiB" "warm MiB" "peak MiB" "threads"
row() { awk -v n="$1" -v r="$2" -v i="$3" -v w="$4" -v p="$5" -v t="$6" \
  'BEGIN { printf "%-40s %9.1f %9.1f %9.1f %9.1f %8d\n", n, r, i / 1024, w / 1024, p / 1024, t }'; }
row "minimal actix-web handler (baseline)" "$B_MED" "$BASE_IDLE" "$BASE_WARM" "$BASE_PEAK" "$BASE_THREADS"
row "gptimage2 serve (/readyz)" "$A_MED" "$API_IDLE" "$API_WARM" "$API_PEAK" "$API_THREADS"
echo "ready ms, each start: baseline ${BASE_READY}; serve ${API_READY}"
echo "warm = RSS after ${REQUESTS} requests over 4 connections (serve: after one sign-up too);"
echo "peak = VmHWM (serve's includes the sign-up's argon2id hash, GI2_ARGON2_MEMORY_KIB)"
awk -v a="$A_MED" -v b="$B_MED" -v ai="$API_IDLE" -v bi="$BASE_IDLE" -v aw="$API_WARM" -v bw="$BASE_WARM" 'BEGIN {
  printf "ratio serve / baseline: ready %.1fx, idle RSS %.1fx, warm RSS %.1fx\n", a / b, ai / bi, aw / bw
  printf "targets: idle RSS <= 30 MiB: %s; ready <= 1 s: %s\n", (ai / 1024 <= 30) ? "met" : "NOT met", (a <= 1000) ? "met" : "NOT met" }'
