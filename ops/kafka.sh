#!/usr/bin/env bash
# Apache Kafka (KRaft, single node: broker + controller) for local runs and CI.
#   ops/kafka.sh fetch   download the pinned jars from Maven Central (cached)
#   ops/kafka.sh start   fetch, format storage once, start, wait until it answers, create topics
#   ops/kafka.sh stop    stop by pid
#   ops/kafka.sh status
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

LIB_DIR="$CACHE_DIR/kafka-$KAFKA_VERSION/lib"
DATA_DIR="$RUN_DIR/kafka"
PID_FILE="$RUN_DIR/kafka.pid"
CLUSTER_ID="c3RlbGxhLXNjaGVkLWxvY2Fs"   # fixed: a local single-node cluster needs no random id

fetch() {
  if [ -f "$LIB_DIR/.complete" ]; then return 0; fi
  command -v mvn >/dev/null || die "mvn not found (apt-get install maven)"
  log "fetching Apache Kafka $KAFKA_VERSION jars from Maven Central into $LIB_DIR"
  rm -rf "$LIB_DIR"; mkdir -p "$LIB_DIR"
  mvn -q -B -f "$OPS_DIR/kafka/pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$LIB_DIR" || die "maven could not fetch Kafka"
  touch "$LIB_DIR/.complete"
}

java_cmd() {
  java $KAFKA_HEAP -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$OPS_DIR/kafka/log4j2.properties" -Dkafka.logs.dir="$DATA_DIR/logs" \
    -cp "$LIB_DIR/*" "$@"
}

write_config() {
  mkdir -p "$DATA_DIR/logs"
  cat > "$DATA_DIR/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,CONTROLLER://$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$DATA_DIR/data
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
delete.topic.enable=true
log.segment.bytes=67108864
PROPS
}

# The broker keeps one open file per partition (its active segment) plus one per connection: raise the soft
# limit as far as we may. This machine caps it at 20,000 for everyone, which a broker holding many old runs'
# topics can exhaust (it then shuts down every log dir); the test suite therefore deletes each module's topics
# when the module ends (tests/integration/conftest.py), and a warning here says when the limit is low.
raise_fd_limit() {
  ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 100000 ]; then
    log "note: open files limit $(ulimit -n) (hard limit); every partition holds one open file"
  fi
}

start() {
  if pid_alive "$PID_FILE"; then log "kafka already running (pid $(cat "$PID_FILE")) on $KAFKA_HOST:$KAFKA_PORT"; create_topics; return 0; fi
  if port_open "$KAFKA_HOST" "$KAFKA_PORT"; then die "port $KAFKA_HOST:$KAFKA_PORT is taken by another process; set KAFKA_PORT"; fi
  command -v java >/dev/null || die "java not found (Java 17+ is needed)"
  fetch
  write_config
  if [ ! -f "$DATA_DIR/data/meta.properties" ]; then
    log "formatting KRaft storage in $DATA_DIR/data"
    java_cmd kafka.tools.StorageTool format --standalone -t "$CLUSTER_ID" -c "$DATA_DIR/server.properties" \
      > "$DATA_DIR/logs/format.log" 2>&1 || { cat "$DATA_DIR/logs/format.log" >&2; die "kafka storage format failed"; }
  fi
  raise_fd_limit
  log "starting Apache Kafka $KAFKA_VERSION on $KAFKA_HOST:$KAFKA_PORT (open files limit $(ulimit -n))"
  # shellcheck disable=SC2086  # KAFKA_HEAP holds several JVM flags on purpose
  nohup java $KAFKA_HEAP -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$OPS_DIR/kafka/log4j2.properties" -Dkafka.logs.dir="$DATA_DIR/logs" \
    -cp "$LIB_DIR/*" kafka.Kafka "$DATA_DIR/server.properties" > "$DATA_DIR/logs/stdout.log" 2>&1 < /dev/null &
  echo $! > "$PID_FILE"
  wait_ready
  create_topics
}

wait_ready() {
  local i
  for i in $(seq 1 120); do
    if ! pid_alive "$PID_FILE"; then tail -50 "$DATA_DIR/logs/stdout.log" "$DATA_DIR/logs/broker.log" >&2 || true; die "kafka exited during start-up"; fi
    if "$PYTHON" "$OPS_DIR/wait_kafka.py" "$KAFKA_HOST:$KAFKA_PORT" >/dev/null 2>&1; then log "kafka is answering"; return 0; fi
    sleep 1
  done
  tail -50 "$DATA_DIR/logs/broker.log" >&2 || true
  die "kafka did not answer within 120 s"
}

create_topics() {
  "$PYTHON" -m agents.topology_admin --bootstrap "$KAFKA_HOST:$KAFKA_PORT" || die "topic creation failed"
}

case "${1:-}" in
  fetch) fetch ;;
  start) start ;;
  stop) stop_pid kafka "$PID_FILE" ;;
  status) if pid_alive "$PID_FILE"; then echo "kafka running (pid $(cat "$PID_FILE")) on $KAFKA_HOST:$KAFKA_PORT"; else echo "kafka stopped"; exit 1; fi ;;
  logs) tail -n "${2:-100}" "$DATA_DIR/logs/broker.log" "$DATA_DIR/logs/stdout.log" ;;
  *) echo "usage: $0 {fetch|start|stop|status|logs}" >&2; exit 2 ;;
esac
