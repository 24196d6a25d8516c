#!/usr/bin/env bash
# Builds the worker image (hodei-worker:latest) without any image registry: the same image as
# images/worker.Dockerfile, made from a Debian bookworm root file system (debootstrap, with
# python3) and the project's own wheel plus its dependencies' wheels built on this host
# (`pip wheel`), installed into /opt/hodei inside it, then `docker import`ed. It also carries
# the agent as a self-contained executable (scripts/build_agent_binary.sh) in /opt/hodei/agent,
# which the Docker and Kubernetes providers inject into jobs' own images.
#
# The debootstrap tarball is cached in $HODEI_IMAGE_CACHE (default /var/cache/hodei-ci) and the
# build is skipped when the image already carries the current wheels' hash (label
# io.hodei.wheel-hash). Needs root (debootstrap, chroot), debootstrap, docker and python3.11.
#
# debootstrap fetches from the Debian mirror apt is configured with (see apt_mirror below):
# there is no built-in default: where apt has no bookworm source, the build stops and says so.
#
# Usage: scripts/build_worker_image.sh [--force] [IMAGE]   (default hodei-worker:latest)
#        scripts/build_worker_image.sh --print-mirror      (print that mirror and exit)
# HODEI_APT_DIR (default /etc/apt) is the apt configuration directory the mirror is read from.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
FORCE=0
PRINT_MIRROR=0
case "${1:-}" in
--force) FORCE=1; shift ;;
--print-mirror) PRINT_MIRROR=1; shift ;;
esac
IMAGE=${1:-hodei-worker:latest}
APT_DIR=${HODEI_APT_DIR:-/etc/apt}
CACHE=${HODEI_IMAGE_CACHE:-/var/cache/hodei-ci}
SUITE=bookworm
PACKAGES=python3,python3-venv
PYTHON=${PYTHON:-python3}
ROOTFS_VERSION=1 # bump when the root file system recipe below changes

say() { echo "build_worker_image: $*" >&2; }
die() { say "error: $*"; exit 1; }

# The Debian mirror apt is configured with, so debootstrap works wherever apt does: the URI of
# the first enabled `deb` source of suite $SUITE, read in apt's order from sources.list, then
# the sources.list.d files, one-line (*.list: `deb [options] URI SUITE COMPONENT...`) and
# deb822 (*.sources: a stanza with `Types: deb`, `URIs:` and `Suites: $SUITE`). Only the
# schemes debootstrap fetches from count (http, https, ftp, file). Fails, naming the files it
# read, when there is none.
apt_mirror() {
  local files=() file mirror
  [ -f "$APT_DIR/sources.list" ] && files+=("$APT_DIR/sources.list")
  for file in "$APT_DIR"/sources.list.d/*; do
    case $file in *.list | *.sources) [ -f "$file" ] && files+=("$file") ;; esac
  done
  mirror=""
  if [ ${#files[@]} -gt 0 ]; then
    mirror=$(awk -v suite="$SUITE" "$APT_MIRROR_AWK" "${files[@]}")
  fi
  if [ -z "$mirror" ]; then
    say "error: no apt source of Debian $SUITE to debootstrap from: looked in" \
      "$APT_DIR/sources.list, $APT_DIR/sources.list.d/*.list and *.sources" \
      "(read: ${files[*]:-none of them exists}) for a 'deb URI $SUITE main' line or a deb822" \
      "stanza with 'Types: deb', 'URIs: URI' and 'Suites: $SUITE'; add one to apt's sources" \
      "(or set HODEI_APT_DIR to an apt directory that has one)"
    return 1
  fi
  echo "$mirror"
}

# apt_mirror's reader: prints the first matching URI of the files it is given (or nothing).
APT_MIRROR_AWK='
function has(list, word,   n, w, i) {
  n = split(list, w, /[ \t]+/)
  for (i = 1; i <= n; i++) if (w[i] == word) return 1
  return 0
}
function usable(uri) { return uri ~ /^(https?|ftp):\/\// || uri ~ /^file:/ }
function take(uri) { if (found == "" && usable(uri)) found = uri }
function stanza_end(   n, u, i) {
  if (types != "" && has(types, "deb") && has(suites, suite) && tolower(enabled) !~ /^(no|false|off|0)$/) {
    n = split(uris, u, /[ \t]+/)
    for (i = 1; i <= n; i++) if (u[i] != "") take(u[i])
  }
  types = ""; uris = ""; suites = ""; enabled = ""
}
FNR == 1 { if (deb822) stanza_end(); deb822 = FILENAME ~ /\.sources$/ }
deb822 && /^[ \t]*#/ { next }
deb822 && /^[ \t]*$/ { stanza_end(); next }
deb822 && /^[ \t]/ { next }  # a continuation line (such as an inline Signed-By key)
deb822 {
  i = index($0, ":")
  if (i == 0) next
  key = tolower(substr($0, 1, i - 1)); value = substr($0, i + 1)
  gsub(/^[ \t]+|[ \t]+$/, "", value)
  if (key == "types") types = value
  else if (key == "uris") uris = value
  else if (key == "suites") suites = value
  else if (key == "enabled") enabled = value
  next
}
{
  line = $0
  sub(/#.*/, "", line)
  if (line !~ /^[ \t]*deb[ \t]/) next
  sub(/^[ \t]*deb[ \t]+/, "", line)
  if (line ~ /^\[/) { if (!sub(/^\[[^]]*\][ \t]*/, "", line)) next }
  split(line, w, /[ \t]+/)
  if (w[2] == suite) take(w[1])
}
END { if (deb822) stanza_end(); print found }
'

check_tools() {
  [ "$(id -u)" = 0 ] || die "run as root (debootstrap and chroot need it)"
  command -v debootstrap >/dev/null || die "debootstrap is missing (apt-get install debootstrap)"
  command -v docker >/dev/null || die "the docker CLI is missing (apt-get install docker.io)"
  docker info >/dev/null 2>&1 || die "no Docker engine answers (is dockerd running?)"
  local version
  version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  # Wheels with compiled code must match the python3 of bookworm (3.11).
  [ "$version" = 3.11 ] || die "$PYTHON is Python $version; bookworm's python3 is 3.11 (set PYTHON)"
}

build_wheels() { # $1: directory for the project's wheel and its dependencies' wheels
  say "building wheels"
  # From a copy: an in-tree build would leave build/ and egg-info behind in the work tree.
  local src
  src=$(mktemp -d)
  cp "$ROOT/pyproject.toml" "$ROOT/README.md" "$src/"
  tar -C "$ROOT" --exclude=__pycache__ --exclude='*.egg-info' -c src | tar -C "$src" -x
  "$PYTHON" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$1" "$src" >&2
  rm -rf "$src"
}

# A hash of what goes into the image: each wheel's name and the project's own file hashes
# (its RECORD; the zip itself carries timestamps), this script and the root file system recipe.
wheel_hash() { # $1: wheels directory, $2: the agent executable's directory
  "$PYTHON" - "$1" "$0" "$SUITE $PACKAGES $ROOTFS_VERSION $2" <<'EOF'
import hashlib, sys, zipfile
from pathlib import Path

digest = hashlib.sha256(Path(sys.argv[2]).read_bytes() + sys.argv[3].encode())
for wheel in sorted(Path(sys.argv[1]).glob("*.whl")):
    digest.update(wheel.name.encode())
    if wheel.name.startswith("hodei-"):
        with zipfile.ZipFile(wheel) as zf:
            record = next(n for n in zf.namelist() if n.endswith(".dist-info/RECORD"))
            digest.update(zf.read(record))
print(digest.hexdigest()[:32])
EOF
}

image_hash() {
  docker image inspect --format '{{ index .Config.Labels "io.hodei.wheel-hash" }}' "$IMAGE" \
    2>/dev/null || true
}

# Debian's root file system with python3, cached as a tarball: debootstrap is the slow part.
rootfs_tarball() {
  local key tarball tmp
  key=$(echo "$SUITE $PACKAGES $MIRROR $ROOTFS_VERSION" | sha256sum | cut -c1-12)
  tarball="$CACHE/rootfs-$SUITE-$key.tar"
  if [ ! -s "$tarball" ]; then
    mkdir -p "$CACHE"
    tmp=$(mktemp -d "$CACHE/debootstrap.XXXXXX")
    say "debootstrap $SUITE from $MIRROR (cached in $tarball afterwards)"
    if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$tmp" "$MIRROR" \
      >"$CACHE/debootstrap.log" 2>&1; then
      tail -20 "$CACHE/debootstrap.log" >&2
      rm -rf "$tmp"
      die "debootstrap failed (log: $CACHE/debootstrap.log)"
    fi
    slim_rootfs "$tmp"
    tar -C "$tmp" -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
    rm -rf "$tmp"
  fi
  echo "$tarball"
}

slim_rootfs() { # $1: root file system; no docs, man pages, locales, apt lists or caches
  local root=$1
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/usr/share/locale/* "$root"/var/log/*.log "$root"/var/log/apt/*
  # Keep it that way if a user installs packages in a derived image (as Docker's slim images).
  cat >"$root/etc/dpkg/dpkg.cfg.d/01-hodei-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
EOF
}

add_user() { # $1: root file system; the agent and its jobs run as uid 10001, not root
  local root=$1
  grep -q '^hodei:' "$root/etc/passwd" ||
    echo 'hodei:x:10001:10001:Hodei agent:/home/hodei:/bin/sh' >>"$root/etc/passwd"
  grep -q '^hodei:' "$root/etc/group" || echo 'hodei:x:10001:' >>"$root/etc/group"
  mkdir -p "$root/home/hodei"
  chown 10001:10001 "$root/home/hodei"
  chmod 0750 "$root/home/hodei"
}

install_hodei() { # $1: root file system, $2: wheels directory
  local root=$1
  say "installing hodei into /opt/hodei"
  mkdir -p "$root/tmp/wheels"
  cp "$2"/*.whl "$root/tmp/wheels/"
  chroot "$root" /usr/bin/python3 -m venv /opt/hodei
  chroot "$root" /opt/hodei/bin/pip install --quiet --no-index --no-cache-dir \
    --disable-pip-version-check --find-links /tmp/wheels hodei >&2
  # Not needed at run time: 20+ MB less (`python -m ensurepip` brings pip back if wanted).
  chroot "$root" /opt/hodei/bin/pip uninstall --quiet --yes pip setuptools >&2
  rm -rf "$root/tmp/wheels" "$root/root/.cache"
  chroot "$root" /opt/hodei/bin/hodei --version >&2
}

import_image() { # $1: root file system, $2: wheel hash
  say "importing $IMAGE"
  tar -C "$1" -c . | docker import \
    --change 'ENV PATH=/opt/hodei/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PYTHONUNBUFFERED=1' \
    --change 'ENV HOME=/home/hodei' \
    --change 'USER 10001:10001' \
    --change 'WORKDIR /home/hodei' \
    --change "LABEL io.hodei.wheel-hash=$2" \
    --change 'LABEL org.opencontainers.image.title=hodei-worker' \
    --change 'ENTRYPOINT ["/opt/hodei/bin/hodei", "agent"]' \
    --change 'CMD []' \
    - "$IMAGE" >/dev/null
}

main() {
  check_tools
  MIRROR=$(apt_mirror) # global, read by rootfs_tarball; fails here, before any work
  local hash tarball old agent
  work=$(mktemp -d) # global: the EXIT trap runs after main has returned
  trap 'rm -rf "$work"' EXIT
  build_wheels "$work/wheels"
  # Its cache key (a hash of the sources) is in its path, so the path goes into the hash.
  agent=$(bash "$ROOT/scripts/build_agent_binary.sh")
  hash=$(wheel_hash "$work/wheels" "$agent")
  if [ "$FORCE" = 0 ] && [ "$(image_hash)" = "$hash" ]; then
    say "$IMAGE is up to date (wheel hash $hash)"
    return 0
  fi
  old=$(docker image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
  tarball=$(rootfs_tarball)
  mkdir "$work/rootfs"
  tar -C "$work/rootfs" -xf "$tarball"
  add_user "$work/rootfs"
  install_hodei "$work/rootfs" "$work/wheels"
  cp -a "$agent" "$work/rootfs/opt/hodei/agent"
  import_image "$work/rootfs" "$hash"
  # The previous build, now untagged, would only take space (kept if a container uses it).
  if [ -n "$old" ] && [ "$old" != "$(docker image inspect --format '{{.Id}}' "$IMAGE")" ]; then
    docker rmi "$old" >/dev/null 2>&1 || true
  fi
  say "built $IMAGE ($(docker image inspect --format '{{.Size}}' "$IMAGE" | numfmt --to=iec))"
}

if [ "$PRINT_MIRROR" = 1 ]; then
  apt_mirror
else
  main
fi
