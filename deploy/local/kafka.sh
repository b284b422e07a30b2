#!/usr/bin/env bash
# Local Apache Kafka for tests and the demo: single-node KRaft from Maven Central jars, no Docker.
# Usage: deploy/local/kafka.sh start|stop|status
# Ports: KAFKA_LOCAL_PORT (default 19092, PLAINTEXT) and KAFKA_LOCAL_CONTROLLER_PORT (default 19093).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PORT="${KAFKA_LOCAL_PORT:-19092}"
CPORT="${KAFKA_LOCAL_CONTROLLER_PORT:-19093}"
VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$HERE/kafka/pom.xml")"
LIBS="$CACHE_DIR/kafka-$VERSION/libs"
PIDFILE="$RUN_DIR/kafka.pid"
DATA="$RUN_DIR/kafka-data"
LOG="$LOG_DIR/kafka.log"
PYTHON="${PYTHON:-python3}"

fetch_jars() {
  [[ -f "$LIBS/.complete" ]] && return 0
  command -v mvn >/dev/null || die "Maven (mvn) is needed once to fetch Kafka $VERSION jars from Maven Central; or set KAFKA_BOOTSTRAP_SERVERS"
  say "kafka: fetching Kafka $VERSION jars from Maven Central into $LIBS (first run only)"
  rm -rf "$LIBS"
  mvn -q -B -f "$HERE/kafka/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$LIBS" >"$LOG_DIR/kafka-fetch.log" 2>&1 \
    || { tail -30 "$LOG_DIR/kafka-fetch.log" >&2; die "kafka: Maven could not fetch the jars (log: $LOG_DIR/kafka-fetch.log)"; }
  touch "$LIBS/.complete"
}

check_java() {
  command -v java >/dev/null || die "kafka: Java 17+ is required (apt-get install openjdk-17-jre-headless), or set KAFKA_BOOTSTRAP_SERVERS"
  local major
  major="$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)"
  [[ "${major:-0}" -ge 17 ]] || die "kafka: Java 17+ is required, found Java ${major:-unknown}"
}

write_config() {
  sed -e "s:@PORT@:$PORT:g" -e "s:@CPORT@:$CPORT:g" -e "s:@DATA@:$DATA:g" \
    "$HERE/kafka/server.properties.in" >"$RUN_DIR/kafka-server.properties"
}

# ready: an admin metadata call succeeds (kafka-python when importable, else the broker's log line).
ready() {
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

case "${1:-}" in
  start)
    if pid_alive "$PIDFILE"; then say "kafka: already running (pid $(cat "$PIDFILE"), 127.0.0.1:$PORT)"; exit 0; fi
    [[ -f "$PIDFILE" ]] && { say "kafka: stale pid file $PIDFILE (process gone), removing"; rm -f "$PIDFILE"; }
    check_port_free kafka "$PORT"
    check_port_free kafka-controller "$CPORT"
    check_java
    fetch_jars
    rm -rf "$DATA"; mkdir -p "$DATA"
    write_config
    CLUSTER_ID="$("$PYTHON" -c 'import base64,os;print(base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("="))')"
    JAVA_OPTS=(-Xms256m -Xmx512m -XX:+UseG1GC -Djava.awt.headless=true
               "-Dlog4j2.configurationFile=$HERE/kafka/log4j2.properties" -cp "$LIBS/*")
    java "${JAVA_OPTS[@]}" kafka.tools.StorageTool format -t "$CLUSTER_ID" -c "$RUN_DIR/kafka-server.properties" \
      >"$LOG_DIR/kafka-format.log" 2>&1 || { cat "$LOG_DIR/kafka-format.log" >&2; die "kafka: storage format failed"; }
    say "kafka: starting Kafka $VERSION on 127.0.0.1:$PORT (log: $LOG)"
    nohup java "${JAVA_OPTS[@]}" kafka.Kafka "$RUN_DIR/kafka-server.properties" >"$LOG" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
    for _ in $(seq 1 120); do
      if ! pid_alive "$PIDFILE"; then tail -40 "$LOG" >&2; rm -f "$PIDFILE"; die "kafka: broker exited during start-up (log: $LOG)"; fi
      if ready; then say "kafka: ready on 127.0.0.1:$PORT"; exit 0; fi
      sleep 0.5
    done
    tail -40 "$LOG" >&2
    stop_pid kafka "$PIDFILE"
    die "kafka: no successful metadata call within 60 s (log: $LOG)"
    ;;
  stop) stop_pid kafka "$PIDFILE" ;;
  status)
    if pid_alive "$PIDFILE"; then echo "kafka: running (pid $(cat "$PIDFILE")) 127.0.0.1:$PORT"; else echo "kafka: stopped"; exit 3; fi
    ;;
  fetch) check_java; fetch_jars; say "kafka: jars ready in $LIBS" ;;
  *) echo "usage: $0 start|stop|status|fetch" >&2; exit 2 ;;
esac
