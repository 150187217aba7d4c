# Shared by scripts/run and scripts/test.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/gptimage2/target}"
TOOLS_DIR="${GI2_TOOLS_DIR:-/var/cache/gptimage2/tools}"
PG_HOST="${GI2_PG_HOST:-127.0.0.1}"
PG_PORT="${GI2_PG_PORT:-5432}"

psql_admin() { psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres "$@"; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_for_port() { # port name
  for _ in $(seq 1 100); do
    if (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "error: $2 did not start on port $1" >&2; return 1
}

# PostgreSQL on $PG_HOST:$PG_PORT: start the machine's cluster, or install one, when none answers.
ensure_postgres() {
  if pg_isready -q -h "$PG_HOST" -p "$PG_PORT" 2>/dev/null; then return 0; fi
  echo "==> PostgreSQL is not answering on $PG_HOST:$PG_PORT; starting it"
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  local version
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$version" ]; then
    echo "error: no PostgreSQL cluster found to start; set GI2_DATABASE_URL to a running server" >&2; return 1
  fi
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 50); do pg_isready -q -h "$PG_HOST" -p "$PG_PORT" && return 0; sleep 0.2; done
  echo "error: PostgreSQL did not come up on $PG_HOST:$PG_PORT" >&2; return 1
}

# The S3-compatible server tests use (it checks SigV4 signatures for real).
ensure_s3s_fs() {
  S3S_FS="$TOOLS_DIR/bin/s3s-fs"
  if [ ! -x "$S3S_FS" ]; then
    echo "==> installing s3s-fs (once per machine, about 2 minutes)"
    cargo install s3s-fs@0.14.1 --locked --features binary --root "$TOOLS_DIR" --quiet
  fi
}

# Debian's Chromium, for the Swagger UI check in a real browser (frontend-contract).
ensure_chromium() {
  if command -v chromium >/dev/null 2>&1; then return 0; fi
  echo "==> installing chromium (once per machine)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
}
