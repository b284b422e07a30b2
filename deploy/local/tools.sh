#!/usr/bin/env bash
# Command-line tools the tests and the docs use next to the local services, installed on demand.
# Usage: deploy/local/tools.sh ensure-kcat | ensure-chromium
#   ensure-kcat: makes `kcat` (librdkafka's command-line client) available, installing Debian's
#   package with apt-get when it is missing; prints its path on stdout.
#   ensure-chromium: makes Debian's headless-capable `chromium` available at /usr/bin/chromium (the
#   playground's browser test drives it with Playwright; Playwright never downloads a browser here),
#   with a CJK fallback font so the screenshots show the multilingual examples; prints its path on stdout.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# apt_install PACKAGE...: Debian's packages with apt-get, serialised (parallel test runs may ask at once).
apt_install() {
  local pkg="$*" log="$LOG_DIR/$1-install.log"
  say "$pkg not found: installing Debian's $pkg with apt-get"
  [[ "$(id -u)" == 0 ]] || die "$pkg is missing and we are not root: install it (apt-get install $pkg)"
  command -v apt-get >/dev/null || die "$pkg is missing and there is no apt-get here: install $pkg with the system's package manager"
  (
    flock -w 900 9 || { echo "another apt-get install held $CACHE_DIR/apt.lock for 900 s" >&2; exit 1; }
    apt-get -o DPkg::Lock::Timeout=600 update -qq \
      && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "$@"
  ) 9>"$CACHE_DIR/apt.lock" >"$log" 2>&1 \
    || { tail -20 "$log" >&2; die "apt-get install $pkg failed; see $log"; }
}

ensure_kcat() {
  local bin
  for bin in kcat kafkacat; do
    if command -v "$bin" >/dev/null; then command -v "$bin"; return 0; fi
  done
  apt_install kcat
  command -v kcat || die "apt-get installed kcat but no kcat is on PATH"
}

ensure_chromium() {
  local bin=/usr/bin/chromium font=/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf
  if [[ ! -x "$bin" || ! -e "$font" ]]; then
    apt_install chromium fonts-droid-fallback
    [[ -x "$bin" ]] || die "apt-get installed chromium but there is no $bin"
  fi
  echo "$bin"
}

case "${1:-}" in
  ensure-kcat) ensure_kcat ;;
  ensure-chromium) ensure_chromium ;;
  *) echo "usage: $0 ensure-kcat | ensure-chromium" >&2; exit 2 ;;
esac
