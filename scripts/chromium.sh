#!/usr/bin/env bash
# Makes sure Debian's chromium and its WebDriver (chromium-driver) are
# installed, for the report tests that open `hpo report`'s HTML in a real
# headless browser. Prints the browser and the driver paths as its last two
# lines. Needs root (or sudo) the first time; a second run costs nothing.
#
#   read -r BROWSER DRIVER < <(scripts/chromium.sh | tail -n1)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[chromium] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# shellcheck source=lib/apt.sh
. scripts/lib/apt.sh

apt_install chromium chromium-driver fonts-dejavu-core
browser=$(command -v chromium) || die "chromium is not on PATH after installing it"
driver=$(command -v chromedriver) || die "chromedriver is not on PATH after installing chromium-driver"
echo "$browser $driver"
