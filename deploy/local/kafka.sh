#!/usr/bin/env bash
# Local Apache Kafka for tests and the demo: single-node KRaft from Maven Central jars, no Docker.
# Usage: deploy/local/kafka.sh start|stop|status|reset|fetch
#   start  starts the broker unless it runs; after a crash it restarts on the SAME data (topics,
#          messages and committed offsets survive). Storage is formatted only when the data
#          directory is new (no meta.properties), with the cluster id kept in the state dir.
#   stop   stops it (data kept).   reset  stops it and wipes its data and cluster id.
#   status "running" (exit 0) only when the process is alive, not a zombie, and the port answers;
#          exit 1 when a pid file names a dead, zombie or silent broker; exit 3 when stopped.
# Ports: KAFKA_LOCAL_PORT (default 19092, PLAINTEXT) and KAFKA_LOCAL_CONTROLLER_PORT (default 19093).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PORT="${KAFKA_LOCAL_PORT:-19092}"
CPORT="${KAFKA_LOCAL_CONTROLLER_PORT:-19093}"
VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$HERE/kafka/pom.xml")"
LIBS="$CACHE_DIR/kafka-$VERSION/libs"
PIDFILE="$RUN_DIR/kafka.pid"
DATA="$RUN_DIR/kafka-data"
CONFIG="$RUN_DIR/kafka-server.properties"
CLUSTER_ID_FILE="$RUN_DIR/kafka-cluster-id"
LOG="$LOG_DIR/kafka.log"
PYTHON="${PYTHON:-python3}"
# What our broker's command line holds: a recycled pid is never taken for (or signalled as) our broker.
MATCH="kafka.Kafka $CONFIG"

# One start/stop/reset at a time per state dir (two `make test` runs may race for the shared broker).
lock() {
  command -v flock >/dev/null || return 0
  exec 9>"$RUN_DIR/kafka.lock"
  flock -w 180 9 || die "kafka: another deploy/local/kafka.sh holds $RUN_DIR/kafka.lock for 180 s"
}

fetch_jars() {
  [[ -f "$LIBS/.complete" ]] && return 0
  command -v mvn >/dev/null || die "Maven (mvn) is needed once to fetch Kafka $VERSION jars from Maven Central; or set KAFKA_BOOTSTRAP_SERVERS"
  say "kafka: fetching Kafka $VERSION jars from Maven Central into $LIBS (first run only)"
  local tmp="$LIBS.tmp.$$"
  rm -rf "$tmp"
  mvn -q -B -f "$HERE/kafka/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$tmp" >"$LOG_DIR/kafka-fetch.log" 2>&1 \
    || { rm -rf "$tmp"; tail -30 "$LOG_DIR/kafka-fetch.log" >&2; die "kafka: Maven could not fetch the jars (log: $LOG_DIR/kafka-fetch.log)"; }
  touch "$tmp/.complete"
  # Another fetch may have finished meanwhile: keep whichever complete copy landed first.
  if [[ -f "$LIBS/.complete" ]]; then rm -rf "$tmp"; else rm -rf "$LIBS"; mv "$tmp" "$LIBS"; fi
}

check_java() {
  command -v java >/dev/null || die "kafka: Java 17+ is required (apt-get install openjdk-17-jre-headless), or set KAFKA_BOOTSTRAP_SERVERS"
  local major
  major="$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)"
  [[ "${major:-0}" -ge 17 ]] || die "kafka: Java 17+ is required, found Java ${major:-unknown}"
}

write_config() {
  sed -e "s:@PORT@:$PORT:g" -e "s:@CPORT@:$CPORT:g" -e "s:@DATA@:$DATA:g" \
    "$HERE/kafka/server.properties.in" >"$CONFIG"
}

JAVA_OPTS=(-Xms256m -Xmx512m -XX:+UseG1GC -Djava.awt.headless=true
           "-Dlog4j2.configurationFile=$HERE/kafka/log4j2.properties" -cp "$LIBS/*")

# ensure_storage: format only a new data directory; an existing one (meta.properties) is reused as is.
ensure_storage() {
  local cid
  mkdir -p "$DATA"
  if [[ -f "$DATA/meta.properties" ]]; then
    cid="$(sed -n 's/^cluster\.id=//p' "$DATA/meta.properties" | head -1)"
    if [[ -n "$cid" && "$(cat "$CLUSTER_ID_FILE" 2>/dev/null || true)" != "$cid" ]]; then
      say "kafka: recording cluster id $cid of the existing data in $CLUSTER_ID_FILE"
      echo "$cid" >"$CLUSTER_ID_FILE"
    fi
    say "kafka: reusing existing data in $DATA (cluster id ${cid:-unknown})"
    return 0
  fi
  if [[ -s "$CLUSTER_ID_FILE" ]]; then
    cid="$(cat "$CLUSTER_ID_FILE")"
  else
    cid="$("$PYTHON" -c 'import base64,os;print(base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("="))')"
    echo "$cid" >"$CLUSTER_ID_FILE"
  fi
  say "kafka: formatting new data directory $DATA (cluster id $cid)"
  java "${JAVA_OPTS[@]}" kafka.tools.StorageTool format -t "$cid" -c "$CONFIG" \
    >"$LOG_DIR/kafka-format.log" 2>&1 || { cat "$LOG_DIR/kafka-format.log" >&2; die "kafka: storage format failed"; }
}

# ready: an admin metadata call succeeds (kafka-python when importable, else the broker's log line).
ready() {
  port_open "$PORT" || return 1
  if "$PYTHON" -c 'import kafka' 2>/dev/null; then
    "$PYTHON" - "$PORT" <<'PY' 2>/dev/null
import sys
from kafka import KafkaAdminClient
admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{sys.argv[1]}", request_timeout_ms=3000)
admin.describe_cluster()
admin.close()
PY
  else
    grep -q "Kafka Server started" "$LOG" 2>/dev/null
  fi
}

running() { pid_alive "$PIDFILE" "$MATCH" && port_open "$PORT"; }

start() {
  lock
  if running; then say "kafka: already running (pid $(cat "$PIDFILE"), 127.0.0.1:$PORT)"; return 0; fi
  if pid_alive "$PIDFILE" "$MATCH"; then
    # Alive but silent: still starting (or recovering its logs), or hung. Give it the start-up budget.
    say "kafka: pid $(cat "$PIDFILE") is alive but 127.0.0.1:$PORT does not answer yet; waiting up to 60 s"
    for _ in $(seq 1 120); do
      pid_alive "$PIDFILE" "$MATCH" || break
      if ready; then say "kafka: already running (pid $(cat "$PIDFILE"), 127.0.0.1:$PORT)"; return 0; fi
      sleep 0.5
    done
    pid_alive "$PIDFILE" "$MATCH" && { say "kafka: pid $(cat "$PIDFILE") never answered: restarting it"; stop_pid kafka "$PIDFILE" "$MATCH"; }
  fi
  if [[ -f "$PIDFILE" ]]; then
    say "kafka: previous broker died ($(pid_describe "$PIDFILE" "$MATCH")): removing its pid file, keeping its data"
    rm -f "$PIDFILE"
  fi
  check_port_free kafka "$PORT"
  check_port_free kafka-controller "$CPORT"
  check_java
  fetch_jars
  write_config
  ensure_storage
  [[ -f "$LOG" ]] && mv -f "$LOG" "$LOG.prev"  # keep the crashed run's log for a post-mortem
  say "kafka: starting Kafka $VERSION on 127.0.0.1:$PORT (log: $LOG)"
  nohup java "${JAVA_OPTS[@]}" kafka.Kafka "$CONFIG" >"$LOG" 2>&1 </dev/null 9>&- &
  echo $! >"$PIDFILE"
  for _ in $(seq 1 120); do
    if ! pid_alive "$PIDFILE"; then tail -40 "$LOG" >&2; rm -f "$PIDFILE"; die "kafka: broker exited during start-up (log: $LOG)"; fi
    if ready; then say "kafka: ready on 127.0.0.1:$PORT"; return 0; fi
    sleep 0.5
  done
  tail -40 "$LOG" >&2
  stop_pid kafka "$PIDFILE" "$MATCH"
  die "kafka: no successful metadata call within 60 s (log: $LOG)"
}

status() {
  if running; then echo "kafka: running (pid $(cat "$PIDFILE")) 127.0.0.1:$PORT"; return 0; fi
  if [[ ! -f "$PIDFILE" ]]; then
    if port_open "$PORT"; then echo "kafka: stopped (but 127.0.0.1:$PORT is in use by a process we did not start)"
    else echo "kafka: stopped"; fi
    return 3
  fi
  if pid_alive "$PIDFILE" "$MATCH"; then echo "kafka: not answering (pid $(cat "$PIDFILE") alive, 127.0.0.1:$PORT closed)"
  else echo "kafka: dead ($(pid_describe "$PIDFILE" "$MATCH")); \`$0 start\` restarts it on its data"; fi
  return 1
}

reset() {
  lock
  stop_pid kafka "$PIDFILE" "$MATCH"
  say "kafka: wiping $DATA and the cluster id (topics, messages and offsets are gone)"
  rm -rf "$DATA" "$CLUSTER_ID_FILE" "$CONFIG"
}

case "${1:-}" in
  start) start ;;
  stop) lock; stop_pid kafka "$PIDFILE" "$MATCH" ;;
  status) status ;;
  reset) reset ;;
  fetch) check_java; fetch_jars; say "kafka: jars ready in $LIBS" ;;
  *) echo "usage: $0 start|stop|status|reset|fetch" >&2; exit 2 ;;
esac
