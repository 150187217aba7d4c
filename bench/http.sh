#!/usr/bin/env bash
# Requests per second and p50/p99 latency of authenticated `GET /v1/me` and
# `GET /v1/generations?limit=20`, beside a minimal actix-web handler, all measured by wrk from
# a second process in one run on this machine. The list is measured twice: served by the read
# cache (a client polling an unchanged list) and by a second server on the same database with
# the cache off (every request reads the database, as after each change).
# Usage: bench/http.sh [seconds=10] [connections=32]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
DURATION="${1:-10}"
CONNECTIONS="${2:-32}"
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
# oha holds a fixed request rate (wrk cannot), for the latency at half the maximum rate.
OHA="$TOOLS_DIR/bin/oha"
[ -x "$OHA" ] || { echo "==> installing oha (once per machine)"; cargo install oha@1.16.0 --locked --root "$TOOLS_DIR" --quiet; }
ensure_postgres
cargo build --release --locked -q -p gptimage2-api --bin gptimage2 --example hello_actix
BIN="$CARGO_TARGET_DIR/release/gptimage2"
DB="gi2_bench_$$"
DIR=$(mktemp -d)
API_PORT=$(free_port)
UNCACHED_PORT=$(free_port)
BASE_PORT=$(free_port)
psql_admin -qc "CREATE DATABASE ${DB}" >/dev/null
# Set at once, so a failed build or start still drops the database.
trap 'kill ${API_PID:-} ${UNCACHED_PID:-} ${BASE_PID:-} 2>/dev/null || true; wait 2>/dev/null || true; psql_admin -qc "DROP DATABASE IF EXISTS ${DB} WITH (FORCE)" >/dev/null; rm -rf "$DIR"' EXIT
# One signing key (and one URL key) for both servers, so the second accepts the first's token.
export GI2_JWT_SECRET="$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')" GI2_URL_SIGNING_KEY="$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
export GI2_DATABASE_URL="postgres://postgres@${PG_HOST}:${PG_PORT}/${DB}" GI2_STORAGE_DIR="$DIR" GI2_BIND="127.0.0.1:${API_PORT}" \
  GI2_LOG=warn GI2_HTTP_WORKERS=2 GI2_JOB_POLL_MS=100 GI2_AUTH_RATE_PER_MINUTE=100000
"$BIN" serve >"$DIR/serve.log" 2>&1 &
API_PID=$!
"$CARGO_TARGET_DIR/release/examples/hello_actix" "127.0.0.1:${BASE_PORT}" 2 &
BASE_PID=$!
wait_for_port "$API_PORT" "gptimage2"
GI2_BIND="127.0.0.1:${UNCACHED_PORT}" GI2_READ_CACHE_USERS=0 "$BIN" serve --no-workers >"$DIR/serve-uncached.log" 2>&1 &
UNCACHED_PID=$!
wait_for_port "$UNCACHED_PORT" "gptimage2 (cache off)"
wait_for_port "$BASE_PORT" "hello_actix"
API="http://127.0.0.1:${API_PORT}"
TOKEN=$(curl -sf -X POST "$API/v1/auth/register" -H 'content-type: application/json' \
  -d '{"email":"bench@example.com","password":"correct horse battery staple","name":"Bench"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
"$BIN" admin grant-credits --email bench@example.com --amount 1000 >/dev/null
for _ in $(seq 1 25); do
  curl -sf -X POST "$API/v1/generations" -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d '{"prompt":"bench","size":"256x256","quality":"low"}' >/dev/null
done
for _ in $(seq 1 100); do
  DONE=$(curl -sf "$API/v1/generations?status=succeeded&limit=100" -H "authorization: Bearer $TOKEN" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["data"]))')
  [ "$DONE" -ge 25 ] && break; sleep 0.2
done

run() { # id name url [auth]
  local id="$1"; shift
  local out
  if [ -n "${3:-}" ]; then out=$(wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency -H "Authorization: Bearer $3" "$2")
  else out=$(wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$2"); fi
  local rps p50 p99
  # Refused requests are fast: a run with any would measure the wrong thing.
  if echo "$out" | grep -q "Non-2xx"; then echo "$out" >&2; echo "error: $1 answered non-2xx" >&2; exit 1; fi
  rps=$(echo "$out" | awk '/^Requests\/sec/{print $2}')
  p50=$(echo "$out" | awk '$1=="50%"{print $2}')
  p99=$(echo "$out" | awk '$1=="99%"{print $2}')
  printf '%-40s %12s %10s %10s\n' "$1" "$rps" "$p50" "$p99"
  echo "$rps" > "$DIR/$id.rps"
}
printf '%-40s %12s %10s %10s\n' "endpoint (${CONNECTIONS} connections, ${DURATION}s)" "req/s" "p50" "p99"
run baseline "minimal actix-web handler (baseline)" "http://127.0.0.1:${BASE_PORT}/"
run me "GET /v1/me" "$API/v1/me" "$TOKEN"
run generations "GET /v1/generations?limit=20" "$API/v1/generations?limit=20" "$TOKEN"
run uncached "GET /v1/generations?limit=20, cache off" "http://127.0.0.1:${UNCACHED_PORT}/v1/generations?limit=20" "$TOKEN"
# Latency at half the list's maximum rate, held constant (corrected for coordinated omission).
HALF=$(awk -v r="$(cat "$DIR/generations.rps")" 'BEGIN { printf "%d", r / 2 }')
HALF_P99=$("$OHA" -z "${DURATION}s" -c "$CONNECTIONS" -q "$HALF" --latency-correction --no-tui --output-format json \
  -H "Authorization: Bearer $TOKEN" "$API/v1/generations?limit=20" \
  | python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.2fms" % (d["latencyPercentiles"]["p99"] * 1000))')
printf '%-40s %12s %10s %10s\n' "GET /v1/generations?limit=20 at ${HALF}/s" "$HALF" "" "$HALF_P99"

# The database work of one list request (session check, the page, its images and deliveries),
# replayed by pgbench at the same concurrency: the ceiling the database alone allows.
UID_=$(psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d "$DB" -Atc "SELECT id FROM users LIMIT 1")
SID=$(psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d "$DB" -Atc "SELECT id FROM sessions WHERE user_id = '$UID_' ORDER BY created_at DESC LIMIT 1")
cat >"$DIR/list.sql" <<'EOF'
SELECT s.last_used_at FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = :sid AND s.user_id = :uid AND s.revoked_at IS NULL AND s.expires_at > now() AND u.disabled_at IS NULL LIMIT 1;
SELECT id, status, prompt, params, provider, cost_credits, error_code, error_message, created_at, started_at, finished_at FROM generations WHERE user_id = :uid ORDER BY id DESC LIMIT 21;
SELECT i.id, i.generation_id, i.object_key, i.format, i.width, i.height, i.bytes FROM generation_images i WHERE i.generation_id IN (SELECT id FROM generations WHERE user_id = :uid ORDER BY id DESC LIMIT 20) ORDER BY i.generation_id, i.position;
SELECT d.id, d.generation_id, d.status, d.attempts, d.response_status, d.last_error, d.created_at, d.delivered_at FROM webhook_deliveries d WHERE d.generation_id IN (SELECT id FROM generations WHERE user_id = :uid ORDER BY id DESC LIMIT 20) ORDER BY d.generation_id, d.id;
EOF
SQL_TPS=$(pgbench -n -M prepared -f "$DIR/list.sql" -D uid="$UID_" -D sid="$SID" -c "$CONNECTIONS" -j 2 -T "$DURATION" \
  -h "$PG_HOST" -p "$PG_PORT" -U postgres "$DB" 2>/dev/null | awk '/^tps = /{print $3}')
printf '%-40s %12.1f\n' "its SQL alone via pgbench (DB ceiling)" "$SQL_TPS"
echo "$SQL_TPS" > "$DIR/sql.rps"
awk -v a="$(cat "$DIR/uncached.rps")" -v b="$SQL_TPS" 'BEGIN { printf "ratio uncached / its SQL via pgbench: %.3f\n", a / b }'
for id in me generations uncached; do
  awk -v a="$(cat "$DIR/$id.rps")" -v b="$(cat "$DIR/baseline.rps")" -v n="$id" 'BEGIN { printf "ratio %s / baseline: %.3f\n", n, a / b }'
done
