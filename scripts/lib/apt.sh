# Sourced by the repo's setup scripts: install Debian packages only when missing.
# The caller defines log and die. Runs apt-get as root, or through sudo. Waits
# up to 10 minutes for another apt-get to finish (CI may run two setup scripts).

APT_UPDATED=0

_apt_as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "need root (or sudo) to run: $*"
  fi
}

# apt_update: `apt-get update`, once per script run.
apt_update() {
  if [ "$APT_UPDATED" -eq 0 ]; then
    log "apt-get update"
    _apt_as_root apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
    APT_UPDATED=1
  fi
}

# apt_install PKG...: installs the named packages that are not installed yet
# (one `apt-get update` per script run, and only when something is missing).
apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get to install them"
  apt_update
  log "apt-get install ${missing[*]}"
  _apt_as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >&2
}
