#!/usr/bin/env bash
# PostgreSQL 15 (Debian's) as the project's own cluster under run/, the storage of FerretDB (ops/ferretdb.sh).
#   ops/postgres.sh install   apt-get install postgresql when its binaries are missing
#   ops/postgres.sh start     install, initdb once, start on $PG_HOST:$PG_PORT, create FerretDB's role/database
#   ops/postgres.sh database  create FerretDB's role and database ($PG_USER, $PG_DB) when missing
#   ops/postgres.sh stop | status | logs
# PostgreSQL refuses to run as root, so as root the server runs as $PG_OS_USER (created when missing);
# as any other user it runs as that user.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

DATA_DIR="$RUN_DIR/postgres/data"
LOG_FILE="$RUN_DIR/postgres/postgres.log"
SOCK_DIR="$RUN_DIR/postgres/sock"
PID_FILE="$RUN_DIR/postgres.pid"

install() {
  if [ -x "$PG_BIN/postgres" ]; then return 0; fi
  command -v apt-get >/dev/null || die "PostgreSQL 15 not found in $PG_BIN and no apt-get to install it (set PG_BIN)"
  log "installing PostgreSQL (apt-get install postgresql)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null \
    || die "apt-get install postgresql failed"
  # Debian starts its own cluster on 5432 at install time; the project uses its own, so stop that one.
  command -v pg_ctlcluster >/dev/null && pg_ctlcluster 15 main stop 2>/dev/null || true
  [ -x "$PG_BIN/postgres" ] || die "apt-get installed PostgreSQL, but not in $PG_BIN (set PG_BIN)"
}

# as_pg CMD...: run CMD as the user who owns the cluster.
as_pg() {
  if [ "$(id -u)" -ne 0 ]; then "$@"; return; fi
  if command -v runuser >/dev/null; then runuser -u "$PG_OS_USER" -- "$@"; else su -s /bin/sh "$PG_OS_USER" -c "$(printf '%q ' "$@")"; fi
}

prepare_dirs() {
  mkdir -p "$RUN_DIR/postgres" "$SOCK_DIR"
  if [ "$(id -u)" -eq 0 ]; then
    id "$PG_OS_USER" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_OS_USER" \
      || die "could not create the user $PG_OS_USER to run PostgreSQL"
    chown "$PG_OS_USER" "$RUN_DIR/postgres" "$SOCK_DIR"
    [ -d "$DATA_DIR" ] && chown -R "$PG_OS_USER" "$DATA_DIR"
    # The server user must be able to reach run/ (a fresh clone under /root is not world-traversable).
    local d="$RUN_DIR/postgres"
    while [ "$d" != / ]; do
      as_pg test -x "$d" || chmod o+x "$d"
      d=$(dirname "$d")
    done
  fi
}

init() {
  if [ -f "$DATA_DIR/PG_VERSION" ]; then return 0; fi
  log "initdb of the project's PostgreSQL cluster in $DATA_DIR"
  as_pg "$PG_BIN/initdb" -D "$DATA_DIR" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 >/dev/null \
    || as_pg "$PG_BIN/initdb" -D "$DATA_DIR" -U postgres --auth=trust --encoding=UTF8 --locale=C >/dev/null \
    || die "initdb failed"
  # Settings for a local, throw-away read-model store: listen on 127.0.0.1 only; no fsync per commit
  # (a power cut can lose the last commits, and the projector re-applies them from its checkpoints, which
  # are written after the documents in the same database); room for FerretDB's pool plus a few admins.
  cat >> "$DATA_DIR/postgresql.conf" <<CONF
listen_addresses = '$PG_HOST'
port = $PG_PORT
unix_socket_directories = '$SOCK_DIR'
max_connections = $((PG_POOL_MAX + 50))
synchronous_commit = off
shared_buffers = 128MB
logging_collector = off
CONF
}

psql_admin() { as_pg "$PG_BIN/psql" -X -q -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }

start() {
  install
  if pid_alive "$PID_FILE"; then log "postgres already running (pid $(cat "$PID_FILE")) on $PG_HOST:$PG_PORT"; return 0; fi
  if port_open "$PG_HOST" "$PG_PORT"; then die "port $PG_HOST:$PG_PORT is taken by another process; set PG_PORT"; fi
  prepare_dirs
  init
  rm -f "$DATA_DIR/postmaster.pid"   # left by a killed server; nothing runs on this data dir (checked above)
  log "starting PostgreSQL on $PG_HOST:$PG_PORT (data in $DATA_DIR)"
  # -p and -k override postgresql.conf so PG_PORT can change after initdb.
  as_pg nohup "$PG_BIN/postgres" -D "$DATA_DIR" -p "$PG_PORT" -h "$PG_HOST" -k "$SOCK_DIR" \
    > "$LOG_FILE" 2>&1 < /dev/null &
  echo $! > "$PID_FILE"
  local i
  for i in $(seq 1 120); do
    if ! pid_alive "$PID_FILE"; then tail -30 "$LOG_FILE" >&2 || true; die "postgres exited during start-up"; fi
    if as_pg "$PG_BIN/pg_isready" -q -h "$PG_HOST" -p "$PG_PORT"; then break; fi
    sleep 0.5
  done
  as_pg "$PG_BIN/pg_isready" -q -h "$PG_HOST" -p "$PG_PORT" || { tail -30 "$LOG_FILE" >&2; die "postgres did not answer within 60 s"; }
  # The pid file must name the postmaster itself (runuser may fork), so `stop` signals the right process.
  head -1 "$DATA_DIR/postmaster.pid" > "$PID_FILE"
  database
  log "postgres is answering"
}

# database: FerretDB's role and database ($PG_USER, $PG_DB) on the running server, created when missing.
# A second FerretDB (bench/e2e.py's replay server) gets a database of its own on the same cluster.
database() {
  as_pg "$PG_BIN/pg_isready" -q -h "$PG_HOST" -p "$PG_PORT" \
    || die "PostgreSQL is not answering on $PG_HOST:$PG_PORT (bash ops/postgres.sh start)"
  psql_admin -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$PG_USER'" | grep -q 1 \
    || psql_admin -c "CREATE ROLE \"$PG_USER\" LOGIN"
  psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'" | grep -q 1 \
    || psql_admin -c "CREATE DATABASE \"$PG_DB\" OWNER \"$PG_USER\""
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  database) database ;;
  # TERM is PostgreSQL's "smart" shutdown (waits for clients); INT is "fast": clients are cut, data is safe.
  stop) if pid_alive "$PID_FILE"; then kill -INT "$(cat "$PID_FILE")" 2>/dev/null || true; fi; stop_pid postgres "$PID_FILE" ;;
  status) if pid_alive "$PID_FILE"; then echo "postgres running (pid $(cat "$PID_FILE")) on $PG_HOST:$PG_PORT"; else echo "postgres stopped"; exit 1; fi ;;
  logs) tail -n "${2:-100}" "$LOG_FILE" ;;
  *) echo "usage: $0 {install|start|database|stop|status|logs}" >&2; exit 2 ;;
esac
