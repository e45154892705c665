#!/usr/bin/env bash
# Builds the project's two container images from the repository's Dockerfiles
# and writes them as docker-archive tarballs that a containerd node imports
# (`ctr -n k8s.io images import FILE`) or kind loads (`kind load image-archive FILE`):
#
#   hpo-operator:TAG  operator/Dockerfile, repository root as context: the kopf
#                     operator and the metrics sidecar (python -m hpo_operator.sidecar)
#   hpo-trainer:TAG   trainer_image/Dockerfile, trainer_image/ as context: PyTorch,
#                     the hpo_trainer SDK and the example trainers in /opt/hpo/examples
#
# Usage:
#   scripts/build-images.sh [--out DIR] [--tag TAG] [--only operator|trainer]
#                           [--builder auto|docker|buildah] [--no-smoke]
#
#   mapfile -t ARCHIVES < <(scripts/build-images.sh --out /tmp/images)
#
# stdout carries only the archive paths, one a line, operator first, then
# trainer (file names hpo-operator_TAG.tar and hpo-trainer_TAG.tar); progress
# goes to stderr. --out defaults to ${HPO_CACHE_DIR:-~/.cache/hpo-operator}/images/archives.
#
# Builders (--builder auto picks docker when `docker info` succeeds, else buildah):
#   docker   `docker build` with the Dockerfiles' defaults (public base images,
#            packages from the package index), then `docker save`.
#   buildah  for machines without a Docker engine. Needs root (or sudo) and
#            Debian's buildah and debootstrap (installed with apt-get when missing). No registry is pulled from: the Python base
#            image is a Debian bookworm rootfs made by debootstrap, every wheel is
#            downloaded on the host with pip (the build itself runs pip with
#            --no-index), and the trainer's base is that Python base plus torch
#            in a virtual environment at /opt/venv ("torch base"). Images are
#            built with `buildah bud --isolation chroot --network host --layers`
#            and written with `buildah push ... docker-archive:FILE:NAME:TAG`.
#
# Smoke checks (skipped with --no-smoke): in each image, as its own user
# (uid 1000), the operator imports kopf, hpo_operator.controller and
# hpo_operator.sidecar and runs its entry point's `--help`; the trainer imports torch,
# sklearn and hpo_trainer and trains examples/digits_mlp.py for one epoch
# into a bind-mounted folder, which must then hold a metrics line for epoch 1.
#
# Cache (buildah; all under ${HPO_CACHE_DIR:-~/.cache/hpo-operator}/images/):
#   rootfs-KEY/       the debootstrap rootfs (KEY: suite, packages, mirror, arch)
#   wheels/NAME-KEY/  downloaded wheels (KEY: the requirements and the target
#                     Python, platform and glibc)
#   storage/          buildah's image store: the Python base (hpo-pybase:KEY),
#                     the torch base (hpo-torchbase:KEY, KEY from the base and the
#                     torch wheels), the images and their cached build layers,
#                     and the operator's dependency stage (hpo-operator-deps:TAG,
#                     named so that pruning keeps it: a source change then
#                     rebuilds only the operator image's top layers).
#                     Look inside with: buildah --root DIR/storage --runroot
#                     /run/hpo-operator/buildah images
# An archive is rewritten only when its image changed (the image ID is kept
# next to it in .NAME_TAG.tar.id), so a warm run only checks and prints.
# Wheels are hard-linked into a .build-wheels/ folder inside each build
# context for the build and removed afterwards (git-ignored).
#
# Environment: HPO_CACHE_DIR, HPO_TORCH_SPEC (default torch==2.13.0; the
# wheel pip finds for it is used, so point pip at a CPU index, e.g.
# PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu, for a small image),
# HPO_DEBIAN_MIRROR, HPO_BUILDAH_DRIVER (storage driver, default overlay; vfs
# where overlay cannot mount), HPO_BUILDAH_RUNROOT (buildah's run-time state,
# default /run/hpo-operator/buildah; give a second cache (HPO_CACHE_DIR) its
# own), PYTHON (host Python whose pip downloads wheels),
# HPO_NICE (niceness of the build, default 10).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE_ROOT=${HPO_CACHE_DIR:-${HOME:-/root}/.cache/hpo-operator}
IMG_CACHE="$CACHE_ROOT/images"
OUT=""
TAG=dev
ONLY=""
BUILDER=auto
SMOKE=1

# Bump when the recipe of a cached piece changes: a different key rebuilds it.
BASE_RECIPE=2
TORCH_RECIPE=1
WHEELS_RECIPE=1
DEBIAN_SUITE=bookworm
DEBIAN_PACKAGES=python3,python3-venv,python-is-python3,ca-certificates
TORCH_SPEC=${HPO_TORCH_SPEC:-torch==2.13.0}
# What trainer_image/Dockerfile installs on top of the torch base.
mapfile -t TRAINER_REQS < <(grep -v '^\s*\(#\|$\)' "$REPO/trainer_image/requirements-examples.txt")
# The SDK's own dependency: its checkpoint checksum (hpo_trainer/frame.py).
TRAINER_REQS+=("xxhash>=3")
WHEELS_SUBDIR=.build-wheels

log() { printf '[build-images] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2; exit "${1:-0}"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=${2:?--out needs a folder}; shift 2 ;;
    --out=*) OUT=${1#--out=}; shift ;;
    --tag) TAG=${2:?--tag needs a value}; shift 2 ;;
    --tag=*) TAG=${1#--tag=}; shift ;;
    --only) ONLY=${2:?--only needs operator or trainer}; shift 2 ;;
    --only=*) ONLY=${1#--only=}; shift ;;
    --builder) BUILDER=${2:?--builder needs auto, docker or buildah}; shift 2 ;;
    --builder=*) BUILDER=${1#--builder=}; shift ;;
    --no-smoke) SMOKE=0; shift ;;
    -h|--help) usage 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
case "$ONLY" in ""|operator|trainer) ;; *) die "--only takes operator or trainer, not $ONLY" ;; esac
case "$BUILDER" in auto|docker|buildah) ;; *) die "--builder takes auto, docker or buildah, not $BUILDER" ;; esac
[[ "$TAG" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "not a valid image tag: $TAG"

OUT=${OUT:-$IMG_CACHE/archives}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
IMAGES=()
[ "$ONLY" = trainer ] || IMAGES+=(operator)
[ "$ONLY" = operator ] || IMAGES+=(trainer)

# Lean on a shared machine: everything below runs at a lower CPU and I/O priority.
renice -n "${HPO_NICE:-10}" -p $$ >/dev/null 2>&1 || true
ionice -c 2 -n 7 -p $$ >/dev/null 2>&1 || true

if [ "$BUILDER" = auto ]; then
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then BUILDER=docker; else BUILDER=buildah; fi
fi

now() { date +%s; }
T0=$(now)
image_name() { echo "hpo-$1:$TAG"; }
archive_path() { echo "$OUT/hpo-$1_$TAG.tar"; }
id_file() { echo "$OUT/.hpo-$1_$TAG.tar.id"; }

# The commands each smoke check runs inside the image, as the image's own user.
OPERATOR_SMOKE='import os, pwd, kopf, kubernetes, hpo_operator.controller.handlers, hpo_operator.sidecar, hpo_operator.sidecar.__main__, hpo_trainer
assert os.getuid() == 1000, os.getuid()
pwd.getpwuid(1000)  # kopf looks its user up when it starts
print("operator image ok: uid", os.getuid(), "kopf", kopf.__version__ if hasattr(kopf, "__version__") else "?")'
TRAINER_SMOKE='import os, torch, sklearn, numpy, xxhash, hpo_trainer
assert os.getuid() == 1000, os.getuid()
print("trainer image ok: uid", os.getuid(), "torch", torch.__version__, "sklearn", sklearn.__version__)'
# Checks the metrics file the one-epoch run wrote (run on the host).
check_metrics() {
  local file=$1
  [ -s "$file" ] || die "the trainer wrote no metrics file ($file)"
  "${PYTHON:-python3}" - "$file" <<'EOF' >&2 || die "bad metrics from the one-epoch run: $(cat "$file")"
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
assert [l["epoch"] for l in lines] == [1], lines
assert "val_error" in lines[0], lines[0]
print("[build-images] one epoch trained:", json.dumps(lines[0]))
EOF
}
TRIAL_ENV=(HPO_CONFIG='{"seed": 0}' HPO_UNTIL_EPOCH=1 HPO_MAX_EPOCH=1
           HPO_CHECKPOINT_DIR=/trial/checkpoints HPO_METRICS_FILE=/trial/metrics.jsonl
           HPO_TRIAL_ID=smoke HPO_EXPERIMENT=build-images)

# --------------------------------------------------------------------- docker
build_docker() {
  local what=$1 name file tmp
  name=$(image_name "$what")
  file=$(archive_path "$what")
  local t=$(now)
  if [ "$what" = operator ]; then
    log "docker build $name (operator/Dockerfile, context $REPO)"
    docker build -f "$REPO/operator/Dockerfile" -t "$name" "$REPO" >&2
  else
    log "docker build $name (context $REPO/trainer_image)"
    docker build -t "$name" "$REPO/trainer_image" >&2
  fi
  if [ "$SMOKE" = 1 ]; then
    if [ "$what" = operator ]; then
      docker run --rm --network none --entrypoint python "$name" -c "$OPERATOR_SMOKE" >&2
      docker run --rm --network none "$name" --help >/dev/null
    else
      docker run --rm --network none "$name" python -c "$TRAINER_SMOKE" >&2
      local trial envs=() e
      trial=$(mktemp -d)
      chmod 0777 "$trial"
      for e in "${TRIAL_ENV[@]}"; do envs+=(-e "$e"); done
      docker run --rm --network none -v "$trial:/trial" "${envs[@]}" "$name" \
        python /opt/hpo/examples/digits_mlp.py >&2
      check_metrics "$trial/metrics.jsonl"
      docker run --rm -v "$trial:/trial" --entrypoint rm "$name" -rf /trial/checkpoints /trial/metrics.jsonl >/dev/null 2>&1 || true
      rm -rf "$trial"
    fi
  fi
  tmp="$file.tmp.$$"
  docker save -o "$tmp" "$name"
  mv -f "$tmp" "$file"
  log "$name -> $file ($(du -h "$file" | cut -f1), $(( $(now) - t )) s)"
}

# -------------------------------------------------------------------- buildah
as_root_reexec() {
  [ "$(id -u)" -eq 0 ] && return 0
  command -v sudo >/dev/null 2>&1 || die "the buildah builder needs root (or sudo)"
  log "re-running as root with sudo"
  exec sudo HPO_CACHE_DIR="$CACHE_ROOT" HPO_BUILDAH_RUNROOT="$BUILDAH_RUNROOT" HPO_TORCH_SPEC="$TORCH_SPEC" PYTHON="${PYTHON:-python3}" \
    "$0" --out "$OUT" --tag "$TAG" --builder buildah ${ONLY:+--only "$ONLY"} $([ "$SMOKE" = 1 ] || echo --no-smoke)
}

# shellcheck source=lib/apt.sh
. "$REPO/scripts/lib/apt.sh"

sha12() { sha256sum | cut -c1-12; }

BUILDAH_ROOT="$IMG_CACHE/storage"
BUILDAH_RUNROOT=${HPO_BUILDAH_RUNROOT:-/run/hpo-operator/buildah}
bh() { buildah --root "$BUILDAH_ROOT" --runroot "$BUILDAH_RUNROOT" --storage-driver "${HPO_BUILDAH_DRIVER:-overlay}" "$@"; }
image_exists() { bh inspect --type image --format '{{.FromImageID}}' "$1" >/dev/null 2>&1; }
image_id() { bh inspect --type image --format '{{.FromImageID}}' "$1"; }

CONTAINERS=()
CHANGED=0
CONTEXT_WHEELS=()
cleanup() {
  local c d
  for c in "${CONTAINERS[@]}"; do bh rm "$c" >/dev/null 2>&1 || true; done
  for d in "${CONTEXT_WHEELS[@]}"; do rm -rf "$d"; done
}

debian_mirror() {
  if [ -n "${HPO_DEBIAN_MIRROR:-}" ]; then echo "$HPO_DEBIAN_MIRROR"; return; fi
  local m
  m=$(grep -hsE '^\s*URIs:\s*\S+/debian/?\s*$' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1 | awk '{print $2}')
  [ -n "$m" ] || m=$(grep -hsE '^\s*deb\s+\S+/debian/?\s' /etc/apt/sources.list 2>/dev/null | head -n1 | awk '{print $2}')
  echo "${m:-http://deb.debian.org/debian}"
}

# Removes a rootfs folder; an interrupted debootstrap may have left /proc or
# /sys mounted in it, and rm must never descend into those.
remove_rootfs() {
  [ -e "$1" ] || return 0
  local m
  for m in $(awk -v d="$1/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
  rm -rf --one-file-system "$1"
}

# The debootstrap rootfs, cached; sets ROOTFS.
ROOTFS=""
ensure_rootfs() {
  local mirror arch key dir tmp t
  mirror=$(debian_mirror)
  arch=$(dpkg --print-architecture)
  key=$(printf 'suite=%s variant=minbase packages=%s mirror=%s arch=%s recipe=%s' \
    "$DEBIAN_SUITE" "$DEBIAN_PACKAGES" "$mirror" "$arch" "$BASE_RECIPE" | sha12)
  dir="$IMG_CACHE/rootfs-$key"
  ROOTFS=$dir
  [ -f "$dir/.hpo-rootfs-stamp" ] && return
  tmp="$IMG_CACHE/.rootfs-$key.tmp"
  remove_rootfs "$tmp"
  log "debootstrap $DEBIAN_SUITE ($DEBIAN_PACKAGES) from $mirror (about 40 s)"
  t=$(now)
  local keyring=()
  [ -f /usr/share/keyrings/debian-archive-keyring.gpg ] && keyring=(--keyring=/usr/share/keyrings/debian-archive-keyring.gpg)
  debootstrap --variant=minbase --arch="$arch" "${keyring[@]}" --include="$DEBIAN_PACKAGES" \
    "$DEBIAN_SUITE" "$tmp" "$mirror" >"$IMG_CACHE/debootstrap.log" 2>&1 \
    || { tail -n 20 "$IMG_CACHE/debootstrap.log" >&2; die "debootstrap failed (log: $IMG_CACHE/debootstrap.log)"; }
  # Slim like Debian's -slim images: no package caches, documentation (the
  # copyright files stay), manuals or translations, now or from later installs.
  rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/cache/apt/*.bin "$tmp"/var/lib/apt/lists/* \
    "$tmp"/var/log/* "$tmp"/debootstrap "$tmp"/usr/share/man/* "$tmp"/usr/share/info/* \
    "$tmp"/usr/share/lintian
  find "$tmp"/usr/share/locale -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
  find "$tmp"/usr/share/doc -mindepth 1 -not -name copyright -not -type d -delete
  find "$tmp"/usr/share/doc -mindepth 1 -type d -empty -delete
  cat >"$tmp/etc/dpkg/dpkg.cfg.d/slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
EOF
  printf '%s\n' "$key" >"$tmp/.hpo-rootfs-stamp"
  mv "$tmp" "$dir"
  local old
  for old in "$IMG_CACHE"/rootfs-*; do
    [ "$old" = "$dir" ] || remove_rootfs "$old"
  done
  log "rootfs ready: $dir ($(( $(now) - t )) s)"
}

# Python, glibc and platform of the base, for the wheels pip downloads.
PYVER=""
GLIBC_MINOR=""
PLATFORM_ARCH=""
read_base_facts() {
  local rootfs=$1 py libc
  py=$(readlink "$rootfs/usr/bin/python3")   # python3.11
  PYVER=${py#python}
  [[ "$PYVER" =~ ^3\.[0-9]+$ ]] || die "cannot tell the Python version of the base ($rootfs/usr/bin/python3 -> $py)"
  libc=$(awk '/^Package: libc6$/{p=1} p&&/^Version:/{print $2; exit}' "$rootfs/var/lib/dpkg/status")
  GLIBC_MINOR=$(echo "$libc" | sed -nE 's/^([0-9]+:)?2\.([0-9]+).*/\2/p')
  [ -n "$GLIBC_MINOR" ] || die "cannot tell the glibc version of the base (libc6 $libc)"
  PLATFORM_ARCH=$(uname -m)
}

# The Python base image (the debootstrap rootfs as one layer); sets PYBASE.
PYBASE=""
ensure_pybase() {
  local rootfs=$1 key name c t
  key=$(basename "$rootfs"); key=${key#rootfs-}
  name="localhost/hpo-pybase:$key"
  PYBASE=$name
  image_exists "$name" && return
  log "importing the rootfs as $name"
  t=$(now)
  c=$(bh from --quiet scratch)
  CONTAINERS+=("$c")
  bh copy --quiet "$c" "$rootfs" / >/dev/null
  bh run --isolation chroot "$c" -- rm -f /.hpo-rootfs-stamp
  bh config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
    --cmd python3 --label org.opencontainers.image.description="Debian $DEBIAN_SUITE minbase with python3 (debootstrap)" "$c"
  bh commit --quiet --rm "$c" "$name" >/dev/null
  log "$name ready ($(( $(now) - t )) s)"
}

# Downloads wheels for NAME with REQUIREMENTS... (cached by their key); sets WHEELS.
WHEELS=""
ensure_wheels() {
  local what=$1; shift
  local py=${PYTHON:-python3} key dir tmp t target=() x
  target=(--only-binary=:all: --python-version "$PYVER" --implementation cp
          --abi "cp${PYVER/./}" --abi abi3 --abi none)
  for x in $(seq "$GLIBC_MINOR" -1 17); do target+=(--platform "manylinux_2_${x}_${PLATFORM_ARCH}"); done
  target+=(--platform "manylinux2014_${PLATFORM_ARCH}")
  [ "$PLATFORM_ARCH" = x86_64 ] && target+=(--platform manylinux2010_x86_64 --platform manylinux1_x86_64)
  key=$(printf '%s\n' "recipe=$WHEELS_RECIPE" "python=$PYVER" "glibc=2.$GLIBC_MINOR" "arch=$PLATFORM_ARCH" "$@" | sha12)
  dir="$IMG_CACHE/wheels/$what-$key"
  WHEELS=$dir
  [ -f "$dir/.hpo-wheels-stamp" ] && return
  tmp="$IMG_CACHE/wheels/.$what-$key.tmp"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  log "pip download ($what): $*"
  t=$(now)
  if ! "$py" -m pip download --quiet --disable-pip-version-check --dest "$tmp" "${target[@]}" "$@" \
      >"$tmp.log" 2>&1; then
    cat "$tmp.log" >&2
    die "pip download failed for $what"
  fi
  # (A pip configured with local find-links folders warns about each name they lack.)
  grep -v 'is ignored: it is neither a file nor a directory' "$tmp.log" >&2 || true
  rm -f "$tmp.log"
  printf '%s\n' "$@" >"$tmp/.hpo-wheels-stamp"
  mv "$tmp" "$dir"
  find "$IMG_CACHE/wheels" -mindepth 1 -maxdepth 1 -name "$what-*" -not -name "$what-$key" -exec rm -rf {} +
  log "wheels ($what): $(ls "$dir" | wc -l) files, $(du -sh "$dir" | cut -f1) ($(( $(now) - t )) s)"
}

# Hard-links (or copies) a wheel folder into a build context as .build-wheels/.
stage_wheels() {
  local src=$1 context=$2 dest="$2/$WHEELS_SUBDIR"
  rm -rf "$dest"
  CONTEXT_WHEELS+=("$dest")
  mkdir -p "$dest"
  cp -l "$src"/*.whl "$dest"/ 2>/dev/null || cp "$src"/*.whl "$dest"/
}

# The torch base: the Python base plus torch in /opt/venv (first on PATH); sets TORCHBASE.
TORCHBASE=""
ensure_torchbase() {
  local pybase=$1 wheels=$2 key name c t
  key=$(printf '%s\n' "base=$pybase" "torch=$TORCH_SPEC" "recipe=$TORCH_RECIPE" "$(cd "$wheels" && ls -l --time-style=+ *.whl | awk '{print $5, $NF}')" | sha12)
  name="localhost/hpo-torchbase:$key"
  TORCHBASE=$name
  image_exists "$name" && return
  log "building the torch base $name ($TORCH_SPEC in /opt/venv)"
  t=$(now)
  c=$(bh from --quiet --pull=never "$pybase")
  CONTAINERS+=("$c")
  bh run --isolation chroot --network host -v "$wheels:/tmp/wheels:ro" "$c" -- sh -euc "
    python3 -m venv /opt/venv
    /opt/venv/bin/python -m pip install --quiet --no-index --no-cache-dir --disable-pip-version-check \
      --find-links /tmp/wheels '$TORCH_SPEC'
    /opt/venv/bin/python -W ignore -c 'import torch; print(\"torch\", torch.__version__)'" >&2
  bh config --env PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env VIRTUAL_ENV=/opt/venv \
    --label org.opencontainers.image.description="Debian $DEBIAN_SUITE python3 with $TORCH_SPEC in /opt/venv" "$c"
  bh commit --quiet --rm "$c" "$name" >/dev/null
  log "$name ready ($(( $(now) - t )) s)"
}

smoke_buildah() {
  local what=$1 name=$2 c trial
  c=$(bh from --quiet --pull=never "$name")
  CONTAINERS+=("$c")
  local user
  user=$(bh inspect --format '{{.OCIv1.Config.User}}' "$c")
  [ "$user" = "1000:1000" ] || die "$name runs as '$user', not 1000:1000"
  if [ "$what" = operator ]; then
    bh run --isolation chroot "$c" -- python -c "$OPERATOR_SMOKE" >&2
    bh run --isolation chroot "$c" -- python -m hpo_operator.controller --help >/dev/null
  else
    bh run --isolation chroot "$c" -- python -c "$TRAINER_SMOKE" >&2
    trial=$(mktemp -d)
    chown 1000:1000 "$trial"
    local envs=() e
    for e in "${TRIAL_ENV[@]}"; do envs+=(--env "$e"); done
    bh run --isolation chroot -v "$trial:/trial" "${envs[@]}" "$c" -- \
      python /opt/hpo/examples/digits_mlp.py >&2 \
      || { rm -rf "$trial"; die "the one-epoch run of digits_mlp.py failed in $name"; }
    check_metrics "$trial/metrics.jsonl"
    rm -rf "$trial"
  fi
  bh rm "$c" >/dev/null
}

build_buildah() {
  local what=$1 base=$2 wheels=$3 name file idf id t context args=()
  # Named as containerd and Docker resolve a short name, so that the archive
  # carries exactly one tag (hpo-NAME:TAG) and a pod's `image: hpo-NAME:TAG` finds it.
  name="docker.io/library/$(image_name "$what")"
  file=$(archive_path "$what")
  idf=$(id_file "$what")
  t=$(now)
  if [ "$what" = operator ]; then
    context=$REPO
    args=(-f "$REPO/operator/Dockerfile")
  else
    context=$REPO/trainer_image
    args=(-f "$REPO/trainer_image/Dockerfile")
  fi
  stage_wheels "$wheels" "$context"
  local bud=(bud --quiet --isolation chroot --network host --layers --pull=never
             --build-arg BASE="$base" --build-arg WHEELS_DIR="$WHEELS_SUBDIR" "${args[@]}")
  if [ "$what" = operator ]; then
    # The dependency stage gets a name of its own (localhost/hpo-operator-deps:TAG):
    # prune_store keeps the cache of named images only, and without it every
    # source change would reinstall the dependencies. The build below reuses it.
    log "buildah bud localhost/hpo-operator-deps:$TAG (operator/Dockerfile, stage dependencies)"
    bh "${bud[@]}" --target dependencies -t "localhost/hpo-operator-deps:$TAG" "$context" >/dev/null \
      || die "buildah bud failed for the operator's dependency stage"
  fi
  log "buildah bud $name (base $base)"
  bh "${bud[@]}" -t "$name" "$context" >/dev/null \
    || die "buildah bud failed for $name"
  rm -rf "${context:?}/$WHEELS_SUBDIR"
  id=$(image_id "$name")
  local stamp=""
  [ -f "$file" ] && [ -f "$idf" ] && stamp=$(cat "$idf")
  if [ "$stamp" = "$id:smoke=1" ] || { [ "$SMOKE" = 0 ] && [ "$stamp" = "$id:smoke=0" ]; }; then
    log "$name unchanged (${id:0:12}): $file"
    return
  fi
  [ "$SMOKE" = 1 ] && smoke_buildah "$what" "$name"
  log "writing $file"
  rm -f "$idf"
  local tmp="$file.tmp.$$"
  rm -f "$tmp"
  bh push --quiet "$name" "docker-archive:$tmp:$(image_name "$what")" >&2
  mv -f "$tmp" "$file"
  echo "$id:smoke=$SMOKE" >"$idf"
  CHANGED=1
  log "$name (${id:0:12}) -> $file ($(du -h "$file" | cut -f1), $(( $(now) - t )) s)"
}

# Drops what no current image needs from the image store: base images of
# other keys and build-cache images (from --layers) whose layers are not a
# prefix of a named image's layers (left over from earlier sources).
prune_store() {
  "${PYTHON:-python3}" - "$BUILDAH_ROOT" "$BUILDAH_RUNROOT" "${HPO_BUILDAH_DRIVER:-overlay}" "$1" "$2" <<'EOF' >&2
import json, subprocess, sys
root, runroot, driver, pybase, torchbase = sys.argv[1:]
current = {"/hpo-pybase": pybase, "/hpo-torchbase": torchbase}  # "" = not built this run: keep all
bh = ["buildah", "--root", root, "--runroot", runroot, "--storage-driver", driver]
def run(*args, check=True):
    return subprocess.run(bh + list(args), check=check, capture_output=True, text=True).stdout
def images():
    return json.loads(run("images", "-a", "--json") or "[]")
for img in images():
    for name in img.get("names") or []:
        repo = name.rsplit(":", 1)[0]
        for suffix, keep in current.items():
            if repo.endswith(suffix) and keep and name != keep:
                run("rmi", name, check=False)
chains, dangling = [], []
for img in images():
    diff_ids = json.loads(run("inspect", "--type", "image", img["id"]))["OCIv1"]["rootfs"]["diff_ids"]
    (dangling if not img.get("names") else chains).append((img["id"], diff_ids))
removed = 0
for image_id, diff_ids in sorted(dangling, key=lambda d: -len(d[1])):
    if not any(chain[:len(diff_ids)] == diff_ids for _, chain in chains):
        removed += subprocess.run(bh + ["rmi", image_id], capture_output=True).returncode == 0
if removed:
    print(f"[build-images] pruned {removed} stale cache images from the image store")
EOF
}

run_buildah() {
  as_root_reexec
  mkdir -p "$IMG_CACHE/wheels" "$BUILDAH_ROOT" "$BUILDAH_RUNROOT"
  # One build at a time per cache.
  exec 9>"$IMG_CACHE/.lock"
  flock 9
  trap cleanup EXIT
  command -v buildah >/dev/null 2>&1 || apt_install buildah
  command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
  [ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || apt_install debian-archive-keyring

  local reqs what
  ensure_rootfs
  read_base_facts "$ROOTFS"
  ensure_pybase "$ROOTFS"
  for what in "${IMAGES[@]}"; do
    if [ "$what" = operator ]; then
      # What the image installs before the project (operator/Dockerfile reads the same list).
      mapfile -t reqs < <("${PYTHON:-python3}" "$REPO/operator/image_requirements.py" "$REPO/pyproject.toml")
      [ "${#reqs[@]}" -gt 0 ] || die "no requirements read from pyproject.toml"
      ensure_wheels operator "${reqs[@]}"
      build_buildah operator "$PYBASE" "$WHEELS"
    else
      ensure_wheels torch "$TORCH_SPEC"
      ensure_torchbase "$PYBASE" "$WHEELS"
      ensure_wheels trainer "${TRAINER_REQS[@]}"
      build_buildah trainer "$TORCHBASE" "$WHEELS"
    fi
  done
  [ "$CHANGED" = 1 ] && prune_store "$PYBASE" "$TORCHBASE"
  return 0
}

if [ "$BUILDER" = docker ]; then
  command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 || die "--builder docker: no Docker engine answers (docker info failed)"
  for what in "${IMAGES[@]}"; do build_docker "$what"; done
else
  run_buildah
fi
log "done in $(( $(now) - T0 )) s"
for what in "${IMAGES[@]}"; do archive_path "$what"; done
