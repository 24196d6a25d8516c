#!/usr/bin/env bash
# Builds the worker image (hodei-worker:latest) without any image registry: the same image as
# images/worker.Dockerfile, made from a Debian bookworm root file system (debootstrap, with
# python3) and the project's own wheel plus its dependencies' wheels built on this host
# (`pip wheel`), installed into /opt/hodei inside it, then `docker import`ed.
#
# The debootstrap tarball is cached in $HODEI_IMAGE_CACHE (default /var/cache/hodei-ci) and the
# build is skipped when the image already carries the current wheels' hash (label
# io.hodei.wheel-hash). Needs root (debootstrap, chroot), debootstrap, docker and python3.11.
#
# Usage: scripts/build_worker_image.sh [IMAGE]   (default hodei-worker:latest; --force rebuilds)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
FORCE=0
if [ "${1:-}" = "--force" ]; then FORCE=1; shift; fi
IMAGE=${1:-hodei-worker:latest}
CACHE=${HODEI_IMAGE_CACHE:-/var/cache/hodei-ci}
SUITE=bookworm
PACKAGES=python3,python3-venv
PYTHON=${PYTHON:-python3}
ROOTFS_VERSION=1 # bump when the root file system recipe below changes

say() { echo "build_worker_image: $*" >&2; }
die() { say "error: $*"; exit 1; }

# The apt mirror this machine is configured with (the first URIs: line), so debootstrap works
# wherever apt does.
apt_mirror() {
  local mirror=""
  if [ -r /etc/apt/sources.list.d/debian.sources ]; then
    mirror=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources)
  fi
  echo "${mirror:-http://deb.debian.org/debian}"
}

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
wheel_hash() { # $1: wheels directory
  "$PYTHON" - "$1" "$0" "$SUITE $PACKAGES $ROOTFS_VERSION" <<'EOF'
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
  key=$(echo "$SUITE $PACKAGES $(apt_mirror) $ROOTFS_VERSION" | sha256sum | cut -c1-12)
  tarball="$CACHE/rootfs-$SUITE-$key.tar"
  if [ ! -s "$tarball" ]; then
    mkdir -p "$CACHE"
    tmp=$(mktemp -d "$CACHE/debootstrap.XXXXXX")
    say "debootstrap $SUITE from $(apt_mirror) (cached in $tarball afterwards)"
    if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$tmp" "$(apt_mirror)" \
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
  local hash tarball old
  work=$(mktemp -d) # global: the EXIT trap runs after main has returned
  trap 'rm -rf "$work"' EXIT
  build_wheels "$work/wheels"
  hash=$(wheel_hash "$work/wheels")
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
  import_image "$work/rootfs" "$hash"
  # The previous build, now untagged, would only take space (kept if a container uses it).
  if [ -n "$old" ] && [ "$old" != "$(docker image inspect --format '{{.Id}}' "$IMAGE")" ]; then
    docker rmi "$old" >/dev/null 2>&1 || true
  fi
  say "built $IMAGE ($(docker image inspect --format '{{.Size}}' "$IMAGE" | numfmt --to=iec))"
}

main
