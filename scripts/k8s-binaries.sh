#!/usr/bin/env bash
# Makes sure the Kubernetes v1.20.2 server binaries (kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet, kube-proxy) and a static
# `pause` binary exist in a cache outside the repository, and that `etcd` is
# installed. The binaries are built from Debian's `kubernetes` source package
# (it vendors all Go dependencies, so nothing but Debian's archive is needed).
#
#   scripts/k8s-binaries.sh            # prints the bin dir as its last line
#   BIN=$(scripts/k8s-binaries.sh | tail -n1)
#
# Cache: ${HPO_CACHE_DIR:-$HOME/.cache/hpo-operator}/kubernetes-1.20.2/bin/
# A warm cache costs nothing: the script checks the stamp and prints the path.
# A cold build takes several minutes of CPU (see docs/testing.md). The build
# happens in a work dir beside the cache and the finished bin dir is renamed
# into place at the end, so an interrupted build never leaves a half cache
# (a rerun resumes from the unpacked source and Go's build cache).
#
# Progress goes to stderr, the full build log to the work dir; stdout carries
# only the bin dir. Needs root (or sudo) for apt-get on a cold cache.
set -euo pipefail

K8S_VERSION=1.20.2
# Bump when the build recipe changes: a different key rebuilds the cache.
RECIPE_REV=1
CACHE_ROOT=${HPO_CACHE_DIR:-${HOME:-/root}/.cache/hpo-operator}
DEST="$CACHE_ROOT/kubernetes-$K8S_VERSION"
BIN_DIR="$DEST/bin"
STAMP="$DEST/stamp"
WORK="$CACHE_ROOT/.build-kubernetes-$K8S_VERSION"
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
REFLECT2_SRC=/usr/share/gocode/src/github.com/modern-go/reflect2
KEY="kubernetes=$K8S_VERSION recipe=$RECIPE_REV reflect2=fixed cgo=0 pause=static arch=$(uname -m)"

log() { printf '[k8s-binaries] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

cache_ok() {
  [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$KEY" ] || return 1
  local b
  for b in "${BINARIES[@]}" pause; do
    [ -x "$BIN_DIR/$b" ] || return 1
  done
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "need root (or sudo) to run: $*"
  fi
}

# shellcheck source=lib/apt.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/apt.sh"

ensure_etcd() {
  command -v etcd >/dev/null 2>&1 || [ -x /usr/bin/etcd ] || apt_install etcd-server
}

ensure_deb_src() {
  # A deb-src entry for the Debian suite, same URI as the existing deb entry.
  if grep -rqsE '^\s*(Types:.*deb-src|deb-src\s)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null; then
    return 0
  fi
  local codename uri
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
  uri=$(grep -rhsE '^\s*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
  [ -n "$uri" ] || uri=$(grep -hsE '^\s*deb\s' /etc/apt/sources.list 2>/dev/null \
        | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
  [ -n "$uri" ] || uri=http://deb.debian.org/debian
  log "adding deb-src entry for $codename ($uri)"
  as_root tee /etc/apt/sources.list.d/hpo-operator-debian-src.sources >/dev/null <<EOF
Types: deb-src
URIs: $uri
Suites: $codename
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  APT_UPDATED=0
}

build() {
  ensure_deb_src
  apt_install golang-go rsync jq etcd-server golang-github-modern-go-reflect2-dev gcc libc6-dev make dpkg-dev
  [ -d "$REFLECT2_SRC" ] || die "reflect2 sources not found in $REFLECT2_SRC"

  mkdir -p "$WORK"
  local buildlog="$WORK/build.log"
  local src="$WORK/src"
  if [ ! -f "$WORK/unpacked" ]; then
    rm -rf "$src" "$WORK/dl"
    mkdir -p "$WORK/dl"
    apt_update
    # Debian's package is 1.20.5+really1.20.2: prefer that exact upstream version.
    local ver
    ver=$(apt-cache showsrc kubernetes 2>/dev/null | awk '/^Version:/{print $2}' \
          | grep -F "really$K8S_VERSION" | head -n1 || true)
    log "downloading Debian source package kubernetes${ver:+=$ver}"
    (cd "$WORK/dl" && apt-get source -qq --download-only "kubernetes${ver:+=$ver}" >>"$buildlog" 2>&1) \
      || { tail -n 20 "$buildlog" >&2; die "apt-get source failed"; }
    local orig
    orig=$(ls "$WORK"/dl/kubernetes_*.orig.tar.* 2>/dev/null | head -n1 || true)
    [ -n "$orig" ] || die "no kubernetes orig tarball in $WORK/dl"
    log "unpacking $(basename "$orig")"
    mkdir -p "$src"
    tar -xf "$orig" -C "$src" --strip-components=1
    rm -rf "$WORK/dl"
    touch "$WORK/unpacked"
  fi
  [ -f "$src/hack/lib/version.sh" ] || die "unexpected source layout in $src"

  # REQUIRED: vendored reflect2 v1.0.1 crashes ("fatal error: fault" in
  # mapiterinit) under Go >= 1.18; Debian ships the fixed v1.0.2.
  local vr="$src/vendor/github.com/modern-go/reflect2"
  [ -d "$vr" ] || die "vendored reflect2 not found in $vr"
  find "$vr" -maxdepth 1 -type f \( -name '*.go' -o -name '*.s' \) -delete
  find "$REFLECT2_SRC" -maxdepth 1 -type f \( -name '*.go' -o -name '*.s' \) \
    ! -name '*_test.go' -exec cp -f {} "$vr/" \;

  # Version stamped into the binaries (the source tree has no .git).
  cat >"$WORK/version.env" <<EOF
KUBE_GIT_COMMIT='0000000000000000000000000000000000000000'
KUBE_GIT_TREE_STATE='clean'
KUBE_GIT_VERSION='v$K8S_VERSION'
KUBE_GIT_MAJOR='1'
KUBE_GIT_MINOR='$(echo "$K8S_VERSION" | cut -d. -f2)'
EOF

  mkdir -p "$src/.go/src/k8s.io"
  ln -sfn ../../.. "$src/.go/src/k8s.io/kubernetes"
  local what=""
  for b in "${BINARIES[@]}"; do what="$what cmd/$b"; done
  log "building${what} (CGO_ENABLED=0; log: $buildlog)"
  local t0=$SECONDS
  (
    cd "$src"
    export GOPATH="$src/.go" GOCACHE="$WORK/gocache" GOPROXY=off GOFLAGS= GOTOOLCHAIN=local
    export KUBE_GIT_VERSION_FILE="$WORK/version.env" CGO_ENABLED=0
    make WHAT="${what# }" >>"$buildlog" 2>&1
  ) || { tail -n 40 "$buildlog" >&2; die "make failed (full log: $buildlog)"; }
  log "go build done in $((SECONDS - t0)) s"

  local out="$src/_output/local/bin/linux/amd64"
  case "$(uname -m)" in aarch64) out="$src/_output/local/bin/linux/arm64" ;; esac
  local tmp="$CACHE_ROOT/.kubernetes-$K8S_VERSION.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp/bin"
  for b in "${BINARIES[@]}"; do
    [ -x "$out/$b" ] || die "build produced no $out/$b"
    cp "$out/$b" "$tmp/bin/$b"
  done
  log "building static pause"
  gcc -Os -static -Wall -Werror -DVERSION=v3.4.1-hpo -o "$tmp/bin/pause" "$src/build/pause/linux/pause.c" >>"$buildlog" 2>&1 \
    || { tail -n 20 "$buildlog" >&2; die "pause build failed"; }
  strip "$tmp/bin/pause" 2>/dev/null || true
  printf '%s\n' "$KEY" >"$tmp/stamp"
  "$tmp/bin/kube-apiserver" --version >&2 || die "built kube-apiserver does not run"

  # Swap into place: rename is atomic; the old cache (if any) goes last.
  if [ -e "$DEST" ]; then mv "$DEST" "$DEST.old.$$"; fi
  mv "$tmp" "$DEST"
  rm -rf "$DEST.old.$$" "$WORK"
}

main() {
  mkdir -p "$CACHE_ROOT"
  if cache_ok; then
    ensure_etcd
    echo "$BIN_DIR"
    return 0
  fi
  # One builder at a time; a second caller waits and then sees the cache.
  exec 9>"$CACHE_ROOT/.kubernetes-$K8S_VERSION.lock"
  if command -v flock >/dev/null 2>&1; then flock 9; fi
  if ! cache_ok; then
    log "no cached binaries for $K8S_VERSION in $DEST; building (several minutes)"
    build
  fi
  ensure_etcd
  echo "$BIN_DIR"
}

main "$@"
