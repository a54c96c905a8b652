# Shared settings for the ops scripts. Every value can be overridden from the environment.
# Sourced, never executed.
OPS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$OPS_DIR/.." && pwd)"
RUN_DIR="${RUN_DIR:-$REPO_DIR/run}"
CACHE_DIR="${STELLA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/stella-sched}"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$OPS_DIR/kafka/pom.xml")"
KAFKA_HOST="${KAFKA_HOST:-127.0.0.1}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_HEAP="${KAFKA_HEAP:--Xms256m -Xmx1g}"
FERRETDB_VERSION="${FERRETDB_VERSION:-v1.24.2}"
MONGO_HOST="${MONGO_HOST:-127.0.0.1}"
MONGO_PORT="${MONGO_PORT:-27017}"
PYTHON="${PYTHON:-$REPO_DIR/.venv/bin/python}"
export KAFKA_BOOTSTRAP="${KAFKA_BOOTSTRAP:-$KAFKA_HOST:$KAFKA_PORT}"
export MONGO_URL="${MONGO_URL:-mongodb://$MONGO_HOST:$MONGO_PORT/}"

log() { printf '[ops] %s\n' "$*" >&2; }
die() { printf '[ops] ERROR: %s\n' "$*" >&2; exit 1; }

# pid_alive FILE: true when FILE names a live process.
pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# stop_pid NAME FILE: TERM, wait up to 30 s, then KILL; removes the pid file.
stop_pid() {
  local name=$1 file=$2 pid i
  if ! pid_alive "$file"; then rm -f "$file"; log "$name not running"; return 0; fi
  pid=$(cat "$file")
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then log "$name did not stop in 30 s; killing"; kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$file"; log "$name stopped (pid $pid)"
}

# port_open HOST PORT
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# FerretDB's storage: PostgreSQL (the project's own cluster, ops/postgres.sh) unless FERRETDB_BACKEND=sqlite.
FERRETDB_BACKEND="${FERRETDB_BACKEND:-postgresql}"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
PG_HOST="${PG_HOST:-127.0.0.1}"
PG_PORT="${PG_PORT:-5433}"
PG_USER="${PG_USER:-ferretdb}"      # database role FerretDB connects as (trust auth on 127.0.0.1 only)
PG_DB="${PG_DB:-ferretdb}"
PG_OS_USER="${PG_OS_USER:-postgres}" # PostgreSQL refuses to run as root; this unprivileged user runs it
# FerretDB's pool (its default is 50); PG's max_connections (ops/postgres.sh) leaves room above it.
PG_POOL_MAX="${PG_POOL_MAX:-50}"
