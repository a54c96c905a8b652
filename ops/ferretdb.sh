#!/usr/bin/env bash
# FerretDB (MongoDB wire protocol) with its SQLite backend, for local runs and CI.
#   ops/ferretdb.sh build   go install the pinned FerretDB into the cache (once)
#   ops/ferretdb.sh start   build, start on $MONGO_HOST:$MONGO_PORT, wait until pymongo can ping it
#   ops/ferretdb.sh stop | status | logs
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

BIN_DIR="$CACHE_DIR/ferretdb-$FERRETDB_VERSION/bin"
BIN="$BIN_DIR/ferretdb"
DATA_DIR="$RUN_DIR/ferretdb"
PID_FILE="$RUN_DIR/ferretdb.pid"

build() {
  if [ -x "$BIN" ]; then return 0; fi
  command -v go >/dev/null || die "go not found (FerretDB is built with the Go toolchain)"
  log "building FerretDB $FERRETDB_VERSION from the Go module proxy (first run only, ~8 min on 2 cores)"
  # A plain `go install ...@version` builds a binary that panics at start: FerretDB embeds
  # build/version/version.txt, which their release tooling generates and the module zip lacks.
  # So: fetch the same module, add that one file, and build it.
  local src work
  src=$(go mod download -json "github.com/FerretDB/FerretDB@$FERRETDB_VERSION" \
        | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p') || die "go mod download of FerretDB failed"
  [ -d "$src" ] || die "go mod download gave no source folder for FerretDB $FERRETDB_VERSION"
  work=$(mktemp -d)
  cp -r "$src/." "$work/" && chmod -R u+w "$work"
  echo "$FERRETDB_VERSION" > "$work/build/version/version.txt"
  mkdir -p "$BIN_DIR"
  (cd "$work" && go build -trimpath -o "$BIN.tmp" ./cmd/ferretdb) || { rm -rf "$work"; die "go build of FerretDB $FERRETDB_VERSION failed"; }
  rm -rf "$work"
  mv "$BIN.tmp" "$BIN"
}

start() {
  if pid_alive "$PID_FILE"; then log "ferretdb already running (pid $(cat "$PID_FILE")) on $MONGO_HOST:$MONGO_PORT"; return 0; fi
  if port_open "$MONGO_HOST" "$MONGO_PORT"; then die "port $MONGO_HOST:$MONGO_PORT is taken by another process; set MONGO_PORT"; fi
  build
  mkdir -p "$DATA_DIR/sqlite" "$DATA_DIR/logs"
  log "starting FerretDB $FERRETDB_VERSION (SQLite backend) on $MONGO_HOST:$MONGO_PORT"
  # synchronous(normal) with FerretDB's default WAL journal: a commit does not wait for an fsync (about 30 %
  # more single upserts/s here). A crash of FerretDB itself loses nothing; a power cut can lose the last
  # commits, documents and the projector's checkpoints together, and the projector re-applies them.
  nohup "$BIN" --handler=sqlite --sqlite-url="file:$DATA_DIR/sqlite/?_pragma=synchronous(normal)" \
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
