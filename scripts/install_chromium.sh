#!/usr/bin/env bash
# Install Debian's chromium (the headless browser the report tests open report.html in), once.
# Idempotent: does nothing when `chromium` is already on PATH. Needs root and apt (Debian/Ubuntu);
# package registries are the only network it uses. The last line on stdout is the browser's path.
set -euo pipefail

die() { echo "install_chromium: $*" >&2; exit 1; }

if command -v chromium >/dev/null; then
  command -v chromium
  exit 0
fi
[ "$(id -u)" = 0 ] || die "chromium is missing and installing it needs root (apt-get install chromium)"
command -v apt-get >/dev/null || die "chromium is missing and this machine has no apt-get; install a chromium browser"

# shellcheck source=scripts/apt_lock.sh
source "$(dirname "$0")/apt_lock.sh"
take_apt_lock
if command -v chromium >/dev/null; then  # installed while this script waited for the lock
  command -v chromium
  exit 0
fi

LOG="${TMPDIR:-/tmp}/llava-more-chromium-apt.log"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -q --no-install-recommends chromium >"$LOG" 2>&1; then
  # A fresh machine's package lists may be missing or stale.
  apt-get update -q >>"$LOG" 2>&1 || die "apt-get update failed; see $LOG"
  apt-get install -y -q --no-install-recommends chromium >>"$LOG" 2>&1 || die "apt-get install chromium failed; see $LOG"
fi
command -v chromium || die "chromium was installed but is not on PATH; see $LOG"
