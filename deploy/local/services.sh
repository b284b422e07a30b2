#!/usr/bin/env bash
# Start/stop/status of every local service the tests and the demo need.
# A service whose address is configured (KAFKA_BOOTSTRAP_SERVERS, REDIS_URL) is used as is: nothing is started.
# Usage: deploy/local/services.sh start|stop|status
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cmd="${1:-}"
case "$cmd" in start|stop|status) ;; *) echo "usage: $0 start|stop|status" >&2; exit 2 ;; esac
rc=0
if [[ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" ]]; then
  echo "[local] kafka: using configured KAFKA_BOOTSTRAP_SERVERS=$KAFKA_BOOTSTRAP_SERVERS (nothing to $cmd)" >&2
else
  "$HERE/kafka.sh" "$cmd" || rc=$?
fi
if [[ -n "${REDIS_URL:-}" ]]; then
  echo "[local] redis: using configured REDIS_URL (nothing to $cmd)" >&2
else
  "$HERE/redis.sh" "$cmd" || rc=$?
fi
exit $rc
