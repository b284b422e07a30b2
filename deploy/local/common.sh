# Shared helpers of the deploy/local scripts (sourced, not run).
# shellcheck shell=bash
# State (pid files, data, logs) lives in $RERANK_LOCAL_DIR, by default <repo>/.run.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
RUN_DIR="${RERANK_LOCAL_DIR:-$REPO_ROOT/.run}"
LOG_DIR="$RUN_DIR/logs"
CACHE_DIR="${RERANK_CACHE_DIR:-$HOME/.cache/rerank-stream}"
mkdir -p "$RUN_DIR" "$LOG_DIR" "$CACHE_DIR"

say() { printf '[local] %s\n' "$*" >&2; }
die() { printf '[local] ERROR: %s\n' "$*" >&2; exit 1; }

# pid_alive PIDFILE -> 0 when the pid file names a live process
pid_alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# port_open PORT -> 0 when something listens on 127.0.0.1:PORT
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# stop_pid NAME PIDFILE: SIGTERM, wait up to 30 s, then SIGKILL; removes the pid file.
stop_pid() {
  local name="$1" pidfile="$2" pid i
  if [[ ! -f "$pidfile" ]]; then say "$name: not started by us (no pid file)"; return 0; fi
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    say "$name: stopping pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then say "$name: still alive after 30 s, SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; fi
  else
    say "$name: stale pid file (pid $pid not running), removing"
  fi
  rm -f "$pidfile"
}

# check_stale NAME PIDFILE PORT: refuse to start when the port is held by a process we did not start.
check_port_free() {
  local name="$1" port="$2"
  if port_open "$port"; then
    die "$name: port 127.0.0.1:$port is already in use by another process (not started by deploy/local). Stop it, or point the configuration at it (see README)."
  fi
}
