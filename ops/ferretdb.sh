#!/usr/bin/env bash
# FerretDB (MongoDB wire protocol) on the project's PostgreSQL (ops/postgres.sh), for local runs and CI.
# FERRETDB_BACKEND=sqlite keeps the old SQLite backend (no PostgreSQL needed).
#   ops/ferretdb.sh build   build the pinned FerretDB with ops/ferretdb/ferretdb-$VERSION.patch (cached)
#   ops/ferretdb.sh start   build, start on $MONGO_HOST:$MONGO_PORT, wait until pymongo can ping it
#   ops/ferretdb.sh stop | status | logs
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

PATCH_FILE="$OPS_DIR/ferretdb/ferretdb-$FERRETDB_VERSION.patch"
DATA_DIR="$RUN_DIR/ferretdb"
PID_FILE="$RUN_DIR/ferretdb.pid"

# The cached binary's path names the patch's sha256: a changed patch builds a new binary.
patch_sha() { if [ -f "$PATCH_FILE" ]; then sha256sum "$PATCH_FILE" | cut -c1-16; else echo unpatched; fi; }
BIN="$CACHE_DIR/ferretdb-$FERRETDB_VERSION-$(patch_sha)/bin/ferretdb"

build() {
  if [ -x "$BIN" ]; then return 0; fi
  command -v go >/dev/null || die "go not found (FerretDB is built with the Go toolchain)"
  command -v patch >/dev/null || die "patch not found (apt-get install patch)"
  log "building FerretDB $FERRETDB_VERSION with $(basename "$PATCH_FILE") from the Go module proxy (once per patch, ~8 min on 2 cores)"
  # A plain `go install ...@version` builds a binary that panics at start: FerretDB embeds
  # build/version/version.txt, which their release tooling generates and the module zip lacks.
  # So: fetch the same module, add that one file, apply our fixes, and build it.
  local src work
  src=$(go mod download -json "github.com/FerretDB/FerretDB@$FERRETDB_VERSION" \
        | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p') || die "go mod download of FerretDB failed"
  [ -d "$src" ] || die "go mod download gave no source folder for FerretDB $FERRETDB_VERSION"
  work=$(mktemp -d)
  cp -r "$src/." "$work/" && chmod -R u+w "$work"
  echo "$FERRETDB_VERSION" > "$work/build/version/version.txt"
  if [ -f "$PATCH_FILE" ]; then
    patch -d "$work" -p1 --forward --batch --quiet < "$PATCH_FILE" \
      || { rm -rf "$work"; die "$PATCH_FILE does not apply to FerretDB $FERRETDB_VERSION"; }
  fi
  mkdir -p "$(dirname "$BIN")"
  (cd "$work" && go build -trimpath -o "$BIN.tmp" ./cmd/ferretdb) || { rm -rf "$work"; die "go build of FerretDB $FERRETDB_VERSION failed"; }
  rm -rf "$work"
  mv "$BIN.tmp" "$BIN"
}

backend_args() {
  case "$FERRETDB_BACKEND" in
    postgresql)
      echo "--handler=postgresql" "--postgresql-url=postgres://$PG_USER@$PG_HOST:$PG_PORT/$PG_DB?pool_max_conns=$PG_POOL_MAX" ;;
    sqlite)
      # synchronous(normal) with FerretDB's default WAL journal: a commit does not wait for an fsync.
      echo "--handler=sqlite" "--sqlite-url=file:$DATA_DIR/sqlite/?_pragma=synchronous(normal)" ;;
    *) die "FERRETDB_BACKEND must be postgresql or sqlite, not '$FERRETDB_BACKEND'" ;;
  esac
}

start() {
  if pid_alive "$PID_FILE"; then log "ferretdb already running (pid $(cat "$PID_FILE")) on $MONGO_HOST:$MONGO_PORT"; return 0; fi
  if port_open "$MONGO_HOST" "$MONGO_PORT"; then die "port $MONGO_HOST:$MONGO_PORT is taken by another process; set MONGO_PORT"; fi
  [ -x "$PYTHON" ] || die "$PYTHON not found: it waits for FerretDB to answer (make venv, or set PYTHON)"
  build
  mkdir -p "$DATA_DIR/sqlite" "$DATA_DIR/logs"
  if [ "$FERRETDB_BACKEND" = postgresql ]; then
    bash "$OPS_DIR/postgres.sh" database   # dies with a hint when PostgreSQL is not answering
  fi
  log "starting FerretDB $FERRETDB_VERSION ($FERRETDB_BACKEND backend) on $MONGO_HOST:$MONGO_PORT"
  # shellcheck disable=SC2046  # backend_args prints separate words without spaces inside them
  nohup "$BIN" $(backend_args) \
    --listen-addr="$MONGO_HOST:$MONGO_PORT" --debug-addr=- --telemetry=disable \
    --log-level=WARN --state-dir="$DATA_DIR" > "$DATA_DIR/logs/ferretdb.log" 2>&1 < /dev/null &
  echo $! > "$PID_FILE"
  local i
  for i in $(seq 1 60); do
    if ! pid_alive "$PID_FILE"; then tail -50 "$DATA_DIR/logs/ferretdb.log" >&2 || true; die "ferretdb exited during start-up"; fi
    if "$PYTHON" "$OPS_DIR/wait_mongo.py" "mongodb://$MONGO_HOST:$MONGO_PORT/" >/dev/null 2>&1; then log "ferretdb is answering"; return 0; fi
    sleep 0.5
  done
  tail -50 "$DATA_DIR/logs/ferretdb.log" >&2 || true
  die "ferretdb did not answer within 30 s"
}

case "${1:-}" in
  build) build ;;
  start) start ;;
  stop) stop_pid ferretdb "$PID_FILE" ;;
  status) if pid_alive "$PID_FILE"; then echo "ferretdb running (pid $(cat "$PID_FILE")) on $MONGO_HOST:$MONGO_PORT"; else echo "ferretdb stopped"; exit 1; fi ;;
  logs) tail -n "${2:-100}" "$DATA_DIR/logs/ferretdb.log" ;;
  *) echo "usage: $0 {build|start|stop|status|logs}" >&2; exit 2 ;;
esac
