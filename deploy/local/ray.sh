#!/usr/bin/env bash
# Local multi-node Ray cluster on this machine (cluster mode): a head plus N worker nodes, each its
# own raylet with its own custom resources and label and a small object store.
# Usage: deploy/local/ray.sh start [--workers N] | stop | status | address | kill-node I | start-node I
#   start       head + N worker nodes (default 2); a running node is left alone. The head has no CPUs,
#               so Serve's controller and proxy (0 CPUs) live there and replicas on the worker nodes.
#               Worker node I has resources {"rerank_node_I": 1, "rerank_worker": 1}, label
#               rerank-node=worker-I and RAY_LOCAL_WORKER_CPUS CPUs (default 1).
#   stop        stops every node started here (SIGTERM, then SIGKILL). Never `ray stop`: that kills
#               every Ray process on the machine, other people's included.
#   status      one line per node; exit 0 when the head and every started worker node run, 3 when none.
#   address     prints the head's address (what RERANK_SERVE_RAY_ADDRESS takes).
#   kill-node I SIGKILLs worker node I and its processes (a node failure); start-node I brings it back.
# Ports: RAY_LOCAL_PORT (GCS, default 6390), + 1 (Ray client) and + 2 (the head's minimal dashboard
# process); the others are picked free. Object store per node: RAY_LOCAL_OBJECT_STORE_MB (80).
# Ray's session files: RAY_LOCAL_TEMP_DIR (default /tmp/rr-ray-<port>; socket paths must stay short).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
PORT="${RAY_LOCAL_PORT:-6390}"  # outside Ray's worker port range (10002-19999)
CPUS="${RAY_LOCAL_WORKER_CPUS:-1}"
STORE_BYTES="$(( ${RAY_LOCAL_OBJECT_STORE_MB:-80} * 1024 * 1024 ))"
TEMP_DIR="${RAY_LOCAL_TEMP_DIR:-/tmp/rr-ray-$PORT}"
RAY="${RAY_BIN:-$(dirname "${PYTHON:-python3}")/ray}"
command -v "$RAY" >/dev/null || RAY="$(command -v ray || true)"
ADDRESS="127.0.0.1:$PORT"
export RAY_USAGE_STATS_ENABLED=0
# Ray turns token auth on when ~/.ray/auth_token exists, yet a client joining by address sends no token
# unless RAY_AUTH_MODE=token is set where it runs. This dev cluster keeps auth off (override with
# RAY_LOCAL_AUTH_MODE=token, then export RAY_AUTH_MODE=token for every client).
export RAY_AUTH_MODE="${RAY_LOCAL_AUTH_MODE:-disabled}"

pidfile() { echo "$RUN_DIR/ray-$1.pid"; }   # head | worker-I
# What a node's `ray start --block` command line holds: never signal someone else's Ray.
match() { if [[ "$1" == head ]]; then echo "--port $PORT"; else echo "--address $ADDRESS --labels rerank-node=$1"; fi; }

# ray.init retries an address where nothing listens for a long time: check the port, bound the call.
head_ready() {
  port_open "$PORT" || return 1
  timeout 30 "${PYTHON:-python3}" - "$ADDRESS" <<'PY' >/dev/null 2>&1
import sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
ray.shutdown()
PY
}

# alive_nodes -> "<node id> <rerank-node label>" per node the head reports alive
alive_nodes() {
  port_open "$PORT" || return 0
  timeout 30 "${PYTHON:-python3}" - "$ADDRESS" <<'PY' 2>/dev/null || true
import sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
for n in ray.nodes():
    if n["Alive"]:
        print(n["NodeID"], (n.get("Labels") or {}).get("rerank-node", "?"))
ray.shutdown()
PY
}

start_node() {  # start_node NAME ARGS...
  local name="$1"; shift
  local pf; pf="$(pidfile "$name")"
  if pid_alive "$pf" "$(match "$name")"; then say "ray: $name already running (pid $(cat "$pf"))"; return 0; fi
  rm -f "$pf"
  # --block: the node's processes share this process's fate; killing it takes the whole node down.
  nohup "$RAY" start --block --disable-usage-stats --dashboard-agent-listen-port 0 \
      --object-store-memory "$STORE_BYTES" "$@" >"$LOG_DIR/ray-$name.log" 2>&1 </dev/null 9>&- &
  echo $! >"$pf"
}

start_worker() {  # start_worker I
  local i="$1"
  start_node "worker-$i" --address "$ADDRESS" --labels "rerank-node=worker-$i" --num-cpus "$CPUS" \
    --resources "{\"rerank_node_$i\": 1, \"rerank_worker\": 1}"
}

wait_node() {  # wait_node NAME [OLD_IDS]: until a node labelled NAME, not one of OLD_IDS, is alive (60 s)
  local deadline=$((SECONDS + 60)) id label
  while (( SECONDS < deadline )); do
    while read -r id label; do
      [[ "$label" == "$1" && " ${2:-} " != *" $id "* ]] && return 0
    done < <(alive_nodes)
    sleep 0.5
  done
  die "ray: node $1 not alive after 60 s (log: $LOG_DIR/ray-$1.log)"
}

add_worker() {  # add_worker I: start worker node I and wait until it (a new node, after a kill) is up
  if pid_alive "$(pidfile "worker-$1")" "$(match "worker-$1")"; then say "ray: worker-$1 already running"; return 0; fi
  local old; old="$(alive_nodes | awk -v n="worker-$1" '$2 == n {print $1}' | tr '\n' ' ')"
  start_worker "$1"
  wait_node "worker-$1" "$old"
}

start() {
  local workers=2
  [[ "${1:-}" == "--workers" ]] && workers="${2:?--workers N}"
  [[ -x "$RAY" ]] || die "ray: the ray command is missing (pip install 'ray[serve]'; make install)"
  if ! pid_alive "$(pidfile head)" "$(match head)"; then
    check_port_free ray-head "$PORT"
    mkdir -p "$TEMP_DIR"
    say "ray: starting head on $ADDRESS (no CPUs; log: $LOG_DIR/ray-head.log)"
    start_node head --head --port "$PORT" --num-cpus 0 --include-dashboard=false \
      --resources '{"rerank_head": 1}' --labels "rerank-node=head" --temp-dir "$TEMP_DIR" \
      --ray-client-server-port "$((PORT + 1))" --dashboard-port "$((PORT + 2))"
    for _ in $(seq 1 120); do
      pid_alive "$(pidfile head)" || { tail -30 "$LOG_DIR/ray-head.log" >&2; die "ray: head exited during start-up"; }
      head_ready && break
      sleep 0.5
    done
    head_ready || { stop; die "ray: head not answering on $ADDRESS after 60 s"; }
  fi
  echo "$workers" >"$RUN_DIR/ray-workers"
  # One at a time: nodes starting together on one machine can pick the same "free" port.
  for i in $(seq 1 "$workers"); do add_worker "$i"; done
  say "ray: head + $workers worker nodes on $ADDRESS (RERANK_SERVE_RAY_ADDRESS=$ADDRESS)"
}

kill_node() {  # kill_node I: a node failure (SIGKILL; its processes die with it)
  local pf; pf="$(pidfile "worker-$1")"
  pid_alive "$pf" "$(match "worker-$1")" || die "ray: worker node $1 is not running"
  local pid; pid="$(cat "$pf")"
  say "ray: SIGKILL worker node $1 (pid $pid and its processes)"
  pkill -KILL -P "$pid" 2>/dev/null || true   # the node's raylet, agents (children of this `ray start`)
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pf"
}

stop() {  # all nodes at once: each drains on SIGTERM (Ray waits up to 30 s), one by one that adds up
  local pf name pids=()
  for pf in "$RUN_DIR"/ray-worker-*.pid "$RUN_DIR"/ray-head.pid; do
    [[ -f "$pf" ]] || continue
    name="$(basename "$pf" .pid)"; name="${name#ray-}"
    if pid_alive "$pf" "$(match "$name")"; then pids+=("$(cat "$pf")"); say "ray $name: stopping pid $(cat "$pf")"; fi
    rm -f "$pf"
  done
  rm -f "$RUN_DIR/ray-workers"
  [[ ${#pids[@]} -gt 0 ]] || return 0
  stop_all 35 "${pids[@]}" || true  # a SIGKILLed node's processes die with it (--block fate-sharing)
}

status() {
  local rc=0 pf name any=0
  for pf in "$RUN_DIR"/ray-head.pid "$RUN_DIR"/ray-worker-*.pid; do
    [[ -f "$pf" ]] || continue
    any=1; name="$(basename "$pf" .pid)"; name="${name#ray-}"
    if pid_alive "$pf" "$(match "$name")"; then echo "ray $name: running (pid $(cat "$pf"))"
    else echo "ray $name: dead ($(pid_describe "$pf" "$(match "$name")"))"; rc=1; fi
  done
  [[ "$any" == 1 ]] || { echo "ray: stopped"; return 3; }
  echo "ray: $(alive_nodes | wc -l) nodes alive at $ADDRESS"
  return $rc
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) stop ;;
  status) status ;;
  address) echo "$ADDRESS" ;;
  kill-node) kill_node "${2:?usage: $0 kill-node I}" ;;
  start-node) add_worker "${2:?usage: $0 start-node I}" ;;
  *) echo "usage: $0 start [--workers N]|stop|status|address|kill-node I|start-node I" >&2; exit 2 ;;
esac
