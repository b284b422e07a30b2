#!/usr/bin/env bash
# Command-line tools the tests and the docs use next to the local services, installed on demand.
# Usage: deploy/local/tools.sh ensure-kcat
#   ensure-kcat: makes `kcat` (librdkafka's command-line client) available, installing Debian's
#   package with apt-get when it is missing; prints its path on stdout.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ensure_kcat() {
  local bin
  for bin in kcat kafkacat; do
    if command -v "$bin" >/dev/null; then command -v "$bin"; return 0; fi
  done
  say "kcat not found: installing Debian's kcat with apt-get"
  [[ "$(id -u)" == 0 ]] || die "kcat is missing and we are not root: install it (apt-get install kcat)"
  command -v apt-get >/dev/null || die "kcat is missing and there is no apt-get here: install kcat with the system's package manager"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kcat) >"$LOG_DIR/kcat-install.log" 2>&1 \
    || { tail -20 "$LOG_DIR/kcat-install.log" >&2; die "apt-get install kcat failed; see $LOG_DIR/kcat-install.log"; }
  command -v kcat || die "apt-get installed kcat but no kcat is on PATH"
}

case "${1:-}" in
  ensure-kcat) ensure_kcat ;;
  *) echo "usage: $0 ensure-kcat" >&2; exit 2 ;;
esac
