#!/usr/bin/env bash
# Local Redis for tests and the demo: Debian's redis-server on loopback, no persistence.
# Usage: deploy/local/redis.sh start|stop|status   (port: REDIS_LOCAL_PORT, default 16379)
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
PORT="${REDIS_LOCAL_PORT:-16379}"
PIDFILE="$RUN_DIR/redis.pid"

ensure_installed() {
  command -v redis-server >/dev/null && return 0
  say "redis-server not found: installing Debian's redis-server with apt-get"
  [[ "$(id -u)" == 0 ]] || die "redis-server is missing and we are not root: install it (apt-get install redis-server) or set REDIS_URL"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >"$LOG_DIR/redis-install.log" 2>&1 \
    || die "apt-get install redis-server failed; see $LOG_DIR/redis-install.log"
}

case "${1:-}" in
  start)
    if pid_alive "$PIDFILE"; then say "redis: already running (pid $(cat "$PIDFILE"), port $PORT)"; exit 0; fi
    [[ -f "$PIDFILE" ]] && { say "redis: stale pid file $PIDFILE (process gone), removing"; rm -f "$PIDFILE"; }
    check_port_free redis "$PORT"
    ensure_installed
    redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
      --pidfile "$PIDFILE" --logfile "$LOG_DIR/redis.log" --dir "$RUN_DIR" >/dev/null
    for _ in $(seq 1 50); do
      if redis-cli -p "$PORT" ping 2>/dev/null | grep -q PONG; then say "redis: ready on 127.0.0.1:$PORT"; exit 0; fi
      sleep 0.1
    done
    tail -20 "$LOG_DIR/redis.log" >&2 || true
    die "redis: not answering PING on port $PORT after 5 s (log: $LOG_DIR/redis.log)"
    ;;
  stop) stop_pid redis "$PIDFILE" ;;
  status)
    if pid_alive "$PIDFILE"; then echo "redis: running (pid $(cat "$PIDFILE")) redis://127.0.0.1:$PORT/0"; else echo "redis: stopped"; exit 3; fi
    ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
