# Shared helpers of the deploy/local scripts (sourced, not run).
# shellcheck shell=bash
# State (pid files, data, logs) lives in $RERANK_LOCAL_DIR, by default <repo>/.run.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
RUN_DIR="${RERANK_LOCAL_DIR:-$REPO_ROOT/.run}"
LOG_DIR="$RUN_DIR/logs"
CACHE_DIR="${RERANK_CACHE_DIR:-$HOME/.cache/rerank-stream}"
mkdir -p "$RUN_DIR" "$LOG_DIR" "$CACHE_DIR"
RUN_DIR="$(cd "$RUN_DIR" && pwd)"  # absolute: it is part of the command lines we recognise our processes by
LOG_DIR="$RUN_DIR/logs"

say() { printf '[local] %s\n' "$*" >&2; }
die() { printf '[local] ERROR: %s\n' "$*" >&2; exit 1; }

# proc_state PID -> the kernel's one-letter state (R, S, D, Z, ...), nothing when there is no such process.
# A SIGKILLed daemon whose parent never reaps it stays a zombie (Z): `kill -0` still succeeds on it,
# so liveness must look at the state, not only at the pid.
proc_state() {
  local stat
  if [[ -r "/proc/$1/stat" ]]; then
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 0
    stat="${stat##*) }"  # the command name may hold spaces and ')': the state follows the last ') '
    printf '%s\n' "${stat%% *}"
  else
    ps -o stat= -p "$1" 2>/dev/null | cut -c1 || true
  fi
}

# pid_running PID [PATTERN] -> 0 when PID is a live, non-zombie process (whose command line holds PATTERN).
# The pattern guards against a recycled pid: never report or signal someone else's process as ours.
pid_running() {
  local pid="$1" pattern="${2:-}" state
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  state="$(proc_state "$pid")"
  [[ -n "$state" && "$state" != Z && "$state" != X ]] || return 1
  if [[ -n "$pattern" && -r "/proc/$pid/cmdline" ]]; then
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$pattern" || return 1
  fi
  return 0
}

# pid_alive PIDFILE [PATTERN] -> 0 when the pid file names a live (non-zombie) process
pid_alive() { [[ -f "$1" ]] && pid_running "$(cat "$1")" "${2:-}"; }

# pid_describe PIDFILE [PATTERN] -> why the pid file does not name a live process, in words.
pid_describe() {
  local pid state
  pid="$(cat "$1" 2>/dev/null || true)"
  state="$(proc_state "$pid")"
  if [[ -z "$state" ]]; then echo "pid $pid is gone"
  elif [[ "$state" == Z || "$state" == X ]]; then echo "pid $pid is a zombie (it died and its parent has not reaped it)"
  elif ! pid_running "$pid" "${2:-}"; then echo "pid $pid now belongs to another program (pid reused)"
  else echo "pid $pid is alive"
  fi
}

# port_open PORT -> 0 when something listens on 127.0.0.1:PORT
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# stop_pid NAME PIDFILE [PATTERN]: SIGTERM, wait up to 30 s, then SIGKILL; removes the pid file.
# A zombie or a recycled pid is not signalled: the pid file is only cleaned.
stop_pid() {
  local name="$1" pidfile="$2" pattern="${3:-}" pid
  if [[ ! -f "$pidfile" ]]; then say "$name: not started by us (no pid file)"; return 0; fi
  pid="$(cat "$pidfile")"
  if pid_running "$pid" "$pattern"; then
    say "$name: stopping pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do pid_running "$pid" || break; sleep 0.5; done
    if pid_running "$pid"; then
      say "$name: still alive after 30 s, SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      for _ in $(seq 1 20); do pid_running "$pid" || break; sleep 0.25; done
    fi
  else
    say "$name: stale pid file ($(pid_describe "$pidfile" "$pattern")), removing"
  fi
  rm -f "$pidfile"
}

# stop_all SECONDS PID...: SIGTERM them all at once (a cluster's members stopped one by one wait for each
# other: a quorum gone, a drain), wait up to SECONDS, SIGKILL what is left (then returns 1).
stop_all() {
  local grace="$1" pid left
  shift
  kill -TERM "$@" 2>/dev/null || true
  for _ in $(seq 1 $((grace * 2))); do
    left=""
    for pid in "$@"; do pid_running "$pid" && left=1; done
    [[ -z "$left" ]] && return 0
    sleep 0.5
  done
  say "still alive after $grace s, SIGKILL: $*"
  kill -KILL "$@" 2>/dev/null || true
  return 1
}

# check_port_free NAME PORT: refuse to start when the port is held by a process we did not start.
check_port_free() {
  local name="$1" port="$2"
  if port_open "$port"; then
    die "$name: port 127.0.0.1:$port is already in use by another process (not started by deploy/local). Stop it, or point the configuration at it (see README)."
  fi
}
