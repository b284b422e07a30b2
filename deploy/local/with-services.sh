#!/usr/bin/env bash
# Run a command with local Kafka + Redis available: starts the ones that are neither configured
# (KAFKA_BOOTSTRAP_SERVERS / REDIS_URL) nor already running, and stops exactly those afterwards,
# also when the command fails or is interrupted.
# Usage: deploy/local/with-services.sh COMMAND [ARGS...]
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
started=()
cleanup() {
  local s
  for s in "${started[@]}"; do "$HERE/$s.sh" stop || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM
if [[ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ]] && ! "$HERE/kafka.sh" status >/dev/null 2>&1; then
  "$HERE/kafka.sh" start; started+=(kafka)
fi
if [[ -z "${REDIS_URL:-}" ]] && ! "$HERE/redis.sh" status >/dev/null 2>&1; then
  "$HERE/redis.sh" start; started+=(redis)
fi
"$@"
