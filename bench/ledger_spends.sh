#!/usr/bin/env bash
# Credit spends per second beside pgbench's simple-update on the same fresh database, in one run:
#  - through `POST /v1/generations` (auth, validation, pricing, the hold, the generation row and
#    its job in one transaction), with the workers off so rendering is not on the hot path;
#  - through the ledger API alone (hold + capture: the whole life of a spend, two transactions).
# Prints a table and the ratios. Usage: bench/ledger_spends.sh [seconds=10] [concurrency=8]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
SECONDS_PER_RUN="${1:-10}"
CONCURRENCY="${2:-8}"
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
ensure_postgres
DB="gi2_bench_$$"
URL="postgres://postgres@${PG_HOST}:${PG_PORT}/${DB}"
DIR=$(mktemp -d)
API_PORT=$(free_port)
psql_admin -qc "CREATE DATABASE ${DB}" >/dev/null
# Set at once, so a failed build or start still drops the database.
trap 'kill ${API_PID:-} 2>/dev/null || true; wait 2>/dev/null || true; psql_admin -qc "DROP DATABASE IF EXISTS ${DB} WITH (FORCE)" >/dev/null; rm -rf "$DIR"' EXIT
cargo build --release --locked -q -p gptimage2-api --bin gptimage2 --example ledger_bench
BIN="$CARGO_TARGET_DIR/release/gptimage2"
export GI2_DATABASE_URL="$URL" GI2_STORAGE_DIR="$DIR/objects" GI2_BIND="127.0.0.1:${API_PORT}" GI2_LOG=warn \
  GI2_HTTP_WORKERS=2 GI2_AUTH_RATE_PER_MINUTE=100000 GI2_DATABASE_POOL_SIZE=$((CONCURRENCY + 2))
"$BIN" serve --no-workers >"$DIR/serve.log" 2>&1 &
API_PID=$!
wait_for_port "$API_PORT" "gptimage2"
API="http://127.0.0.1:${API_PORT}"
# One user per client, as in the ledger row below: one user's spends queue on their account lock.
TOKENS=()
for i in $(seq 1 "$CONCURRENCY"); do
  TOKENS+=("$(curl -sf -X POST "$API/v1/auth/register" -H 'content-type: application/json' \
    -d "{\"email\":\"spend${i}@example.com\",\"password\":\"correct horse battery staple\",\"name\":\"Bench\"}" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')")
  "$BIN" admin grant-credits --email "spend${i}@example.com" --amount 100000000 >/dev/null
done
{
  echo 'local tokens = {'
  for t in "${TOKENS[@]}"; do echo "  \"$t\","; done
  echo '}'
  cat <<'EOF'
local n = 0
request = function()
  n = n + 1
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. tokens[(n % #tokens) + 1],
  }, '{"prompt":"a lighthouse at dusk","size":"1024x1024","quality":"low"}')
end
EOF
} >"$DIR/submit.lua"
OUT=$(wrk -t2 -c"$CONCURRENCY" -d"${SECONDS_PER_RUN}s" --latency -s "$DIR/submit.lua" "$API/v1/generations")
if echo "$OUT" | grep -q "Non-2xx"; then echo "$OUT" >&2; echo "error: some submits were refused" >&2; exit 1; fi
HTTP=$(echo "$OUT" | awk '/^Requests\/sec/{print $2}')
P99=$(echo "$OUT" | awk '$1=="99%"{print $2}')
kill $API_PID 2>/dev/null; wait $API_PID 2>/dev/null || true

# Same database, same concurrency: one user per client, so spends do not share a row lock.
LEDGER=$("$CARGO_TARGET_DIR/release/examples/ledger_bench" "$URL" "$SECONDS_PER_RUN" "$CONCURRENCY" "$CONCURRENCY")
pgbench -q -i -s 1 -h "$PG_HOST" -p "$PG_PORT" -U postgres "$DB" >/dev/null 2>&1
PGBENCH=$(pgbench -n -b simple-update -c "$CONCURRENCY" -j 2 -T "$SECONDS_PER_RUN" -h "$PG_HOST" -p "$PG_PORT" -U postgres "$DB" 2>/dev/null \
  | awk '/^tps = /{print $3}')
printf '%-52s %12s\n' "workload (${CONCURRENCY} clients, ${SECONDS_PER_RUN}s)" "per second"
printf '%-52s %12.1f\n' "pgbench simple-update (baseline)" "$PGBENCH"
printf '%-52s %12.1f   (p99 %s)\n' "POST /v1/generations (spend at submit, workers off)" "$HTTP" "$P99"
printf '%-52s %12.1f\n' "ledger hold + capture (two transactions)" "$LEDGER"
awk -v a="$HTTP" -v b="$PGBENCH" 'BEGIN { printf "ratio submit / simple-update: %.3f\n", a / b }'
awk -v a="$LEDGER" -v b="$PGBENCH" 'BEGIN { printf "ratio hold+capture / simple-update: %.3f\n", a / b }'
