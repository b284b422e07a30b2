#!/usr/bin/env bash
# A local three-broker Kafka (KRaft, one JVM per broker, small heaps) for cluster mode: replication
# factor 3 and min.insync.replicas=2, so one broker may die without losing an acknowledged record.
# The default single broker (kafka.sh, 127.0.0.1:19092) is separate and untouched by this script.
# Usage: deploy/local/kafka-cluster.sh start|stop|status|reset|bootstrap|kill-broker I|start-broker I|leader TOPIC P
#   start         starts the brokers that do not run (data kept across restarts; formatted once)
#   stop / reset  stops them all at once (reset: SIGKILL and wipe their data)
#   bootstrap     prints the bootstrap servers (what KAFKA_BOOTSTRAP_SERVERS takes)
#   kill-broker I SIGKILLs broker I (a broker failure); start-broker I restarts it on its data
#   leader T P    prints the node id leading partition P of topic T
# Ports: broker I listens on KAFKA_CLUSTER_PORT + I - 1 (default 29092..29094), its controller on
# + 10. Heap per broker: KAFKA_CLUSTER_HEAP (default 256m).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BASE="${KAFKA_CLUSTER_PORT:-29092}"
BROKERS=3
HEAP="${KAFKA_CLUSTER_HEAP:-256m}"
VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$HERE/kafka/pom.xml")"
LIBS="$CACHE_DIR/kafka-$VERSION/libs"
DIR="$RUN_DIR/kafka-cluster"
PYTHON="${PYTHON:-python3}"

port() { echo $((BASE + $1 - 1)); }
cport() { echo $((BASE + 10 + $1 - 1)); }
pidfile() { echo "$DIR/broker-$1.pid"; }
config() { echo "$DIR/broker-$1.properties"; }
match() { echo "kafka.Kafka $(config "$1")"; }
bootstrap() { local i out=(); for i in $(seq 1 $BROKERS); do out+=("127.0.0.1:$(port "$i")"); done; (IFS=,; echo "${out[*]}"); }

lock() {
  command -v flock >/dev/null || return 0
  exec 9>"$DIR/lock"
  flock -w 180 9 || die "kafka-cluster: another kafka-cluster.sh holds $DIR/lock for 180 s"
}

write_config() {  # write_config I
  local voters="" i
  for i in $(seq 1 $BROKERS); do voters+="${voters:+,}$i@127.0.0.1:$(cport "$i")"; done
  sed -e "s|@NODE@|$1|g" -e "s|@PORT@|$(port "$1")|g" -e "s|@CPORT@|$(cport "$1")|g" \
      -e "s|@DATA@|$DIR/broker-$1|g" -e "s|@VOTERS@|$voters|g" "$HERE/kafka/cluster.properties.in" >"$(config "$1")"
}

JAVA_OPTS=(-Xms128m "-Xmx$HEAP" -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true
           "-Dlog4j2.configurationFile=$HERE/kafka/log4j2.properties" -cp "$LIBS/*")

ensure_storage() {  # ensure_storage I: format only a new data directory, with the cluster's one id
  [[ -f "$DIR/broker-$1/meta.properties" ]] && return 0
  # 16 random bytes, base64url without padding (Kafka's Uuid form); coreutils only: an interpreter that failed
  # here once left an empty id file, and formatting then failed with "--cluster-id: expected one argument".
  [[ -s "$DIR/cluster-id" ]] || head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' >"$DIR/cluster-id"
  [[ "$(cat "$DIR/cluster-id")" =~ ^[A-Za-z0-9_-]{22}$ ]] || die "kafka-cluster: bad cluster id in $DIR/cluster-id"
  mkdir -p "$DIR/broker-$1"
  java "${JAVA_OPTS[@]}" kafka.tools.StorageTool format -t "$(cat "$DIR/cluster-id")" -c "$(config "$1")" \
    >"$LOG_DIR/kafka-cluster-format-$1.log" 2>&1 || { cat "$LOG_DIR/kafka-cluster-format-$1.log" >&2; die "kafka-cluster: formatting broker $1 failed"; }
}

start_broker() {  # start_broker I (no wait)
  local i="$1"
  if pid_alive "$(pidfile "$i")" "$(match "$i")"; then return 0; fi
  rm -f "$(pidfile "$i")"
  check_port_free "kafka-cluster broker $i" "$(port "$i")"
  check_port_free "kafka-cluster controller $i" "$(cport "$i")"
  write_config "$i"
  ensure_storage "$i"
  nohup java "${JAVA_OPTS[@]}" kafka.Kafka "$(config "$i")" >"$LOG_DIR/kafka-cluster-$i.log" 2>&1 </dev/null 9>&- &
  echo $! >"$(pidfile "$i")"
}

# ready N: the cluster answers a metadata call listing N brokers (kafka-python, bounded)
ready() {
  timeout 20 "$PYTHON" - "$(bootstrap)" "$1" <<'PY' >/dev/null 2>&1
import sys
from kafka import KafkaAdminClient
admin = KafkaAdminClient(bootstrap_servers=sys.argv[1].split(","), request_timeout_ms=5000)
brokers = admin.describe_cluster()["brokers"]
admin.close()
sys.exit(0 if len(brokers) >= int(sys.argv[2]) else 1)
PY
}

wait_ready() {  # wait_ready N
  local deadline=$((SECONDS + 120)) i
  while (( SECONDS < deadline )); do
    for i in $(seq 1 $BROKERS); do
      [[ -f "$(pidfile "$i")" ]] && ! pid_alive "$(pidfile "$i")" \
        && { tail -30 "$LOG_DIR/kafka-cluster-$i.log" >&2; die "kafka-cluster: broker $i exited (log: $LOG_DIR/kafka-cluster-$i.log)"; }
    done
    ready "$1" && return 0
    sleep 1
  done
  die "kafka-cluster: $1 brokers not answering within 120 s (logs: $LOG_DIR/kafka-cluster-*.log)"
}

start() {
  mkdir -p "$DIR"; lock
  command -v java >/dev/null || die "kafka-cluster: Java 17+ is required (apt-get install openjdk-17-jre-headless)"
  "$HERE/kafka.sh" fetch 2>/dev/null || die "kafka-cluster: could not fetch the Kafka jars (deploy/local/kafka.sh fetch)"
  local i
  for i in $(seq 1 $BROKERS); do start_broker "$i"; done
  wait_ready $BROKERS
  say "kafka-cluster: $BROKERS brokers ready (KAFKA_BOOTSTRAP_SERVERS=$(bootstrap))"
}

stop() {  # stop [KILL]: all brokers at once (one by one, the last would wait for a quorum that is gone)
  mkdir -p "$DIR"; lock
  local i pids=()
  for i in $(seq 1 $BROKERS); do
    if pid_alive "$(pidfile "$i")" "$(match "$i")"; then pids+=("$(cat "$(pidfile "$i")")"); fi
    rm -f "$(pidfile "$i")"
  done
  [[ ${#pids[@]} -gt 0 ]] || return 0
  say "kafka-cluster: stopping pids ${pids[*]}"
  if [[ "${1:-}" == KILL ]]; then kill -KILL "${pids[@]}" 2>/dev/null || true; else stop_all 30 "${pids[@]}" || true; fi
}

status() {
  local i rc=0 any=0
  for i in $(seq 1 $BROKERS); do
    [[ -f "$(pidfile "$i")" ]] || continue
    any=1
    if pid_alive "$(pidfile "$i")" "$(match "$i")"; then echo "kafka-cluster broker $i: running (pid $(cat "$(pidfile "$i")")) 127.0.0.1:$(port "$i")"
    else echo "kafka-cluster broker $i: dead ($(pid_describe "$(pidfile "$i")" "$(match "$i")"))"; rc=1; fi
  done
  [[ "$any" == 1 ]] || { echo "kafka-cluster: stopped"; return 3; }
  return $rc
}

kill_broker() {
  local pf; pf="$(pidfile "$1")"
  pid_alive "$pf" "$(match "$1")" || die "kafka-cluster: broker $1 is not running"
  say "kafka-cluster: SIGKILL broker $1 (pid $(cat "$pf"))"
  kill -KILL "$(cat "$pf")"
  rm -f "$pf"
}

leader() {
  timeout 20 "$PYTHON" - "$(bootstrap)" "$1" "$2" <<'PY'
import sys
from kafka import KafkaAdminClient
admin = KafkaAdminClient(bootstrap_servers=sys.argv[1].split(","), request_timeout_ms=5000)
(topic,) = admin.describe_topics([sys.argv[2]])
print(next(p["leader_id"] for p in topic["partitions"] if p["partition_index"] == int(sys.argv[3])))
admin.close()
PY
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  reset) stop KILL; say "kafka-cluster: wiping $DIR"; rm -rf "$DIR" ;;
  bootstrap) bootstrap ;;
  kill-broker) kill_broker "${2:?usage: $0 kill-broker I}" ;;
  start-broker) mkdir -p "$DIR"; start_broker "${2:?usage: $0 start-broker I}"; wait_ready $BROKERS ;;
  leader) leader "${2:?usage: $0 leader TOPIC PARTITION}" "${3:?usage: $0 leader TOPIC PARTITION}" ;;
  *) echo "usage: $0 start|stop|status|reset|bootstrap|kill-broker I|start-broker I|leader TOPIC P" >&2; exit 2 ;;
esac
