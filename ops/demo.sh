#!/usr/bin/env bash
# The demo behind `make run` (grown by later work): workers plus a feed of real files.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
case "${1:-}" in
  stop) for f in "$RUN_DIR"/demo-*.pid; do [ -e "$f" ] && stop_pid "$(basename "$f" .pid)" "$f"; done; true ;;
  run) "$PYTHON" -m cli.main demo ;;
  *) echo "usage: $0 {run|stop}" >&2; exit 2 ;;
esac
