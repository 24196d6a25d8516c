#!/usr/bin/env bash
# Builds the small images the tests of jobs in their own image use, without any registry:
# each is a root file system made here and `docker import`ed.
#
#   hodei-test-busybox:1  busybox-static only: /bin/sh and its applets, no libc, no /tmp
#   hodei-test-musl:1     an Alpine-like root: musl's loader and libc (Debian's musl package),
#                         busybox, /tmp, and a non-root default user (uid 1000)
#   hodei-test-debian:1   the worker image's Debian root without Python (needs the debootstrap
#                         tarball scripts/build_worker_image.sh caches)
#
# Skipped when an image of the current recipe exists (label io.hodei.test-image). Needs root,
# docker and apt-get (to download the two Debian packages). Usage: scripts/build_test_images.sh
set -euo pipefail

CACHE=${HODEI_IMAGE_CACHE:-/var/cache/hodei-ci}
RECIPE=2 # bump when a recipe below changes

say() { echo "build_test_images: $*" >&2; }
die() { say "error: $*"; exit 1; }

current() { # $1: image
  [ "$(docker image inspect --format '{{ index .Config.Labels "io.hodei.test-image" }}' "$1" \
    2>/dev/null || true)" = "$RECIPE" ]
}

import() { # $1: root, $2: image, then --change arguments
  local root=$1 image=$2
  shift 2
  tar -C "$root" -c . | docker import --change "LABEL io.hodei.test-image=$RECIPE" "$@" - "$image" \
    >/dev/null
  say "built $image"
}

debs() { # the two packages, downloaded once into the cache
  local dir="$CACHE/test-image-debs"
  if ! ls "$dir"/busybox-static_*.deb "$dir"/musl_*.deb >/dev/null 2>&1; then
    mkdir -p "$dir"
    (cd "$dir" && apt-get -o APT::Sandbox::User=root download busybox-static musl >/dev/null) ||
      die "apt-get download busybox-static musl failed"
  fi
  echo "$dir"
}

busybox_root() { # $1: root, $2: debs directory
  local root=$1 unpack
  unpack=$(mktemp -d)
  dpkg-deb -x "$2"/busybox-static_*.deb "$unpack"
  mkdir -p "$root/bin" "$root/etc"
  cp "$unpack/bin/busybox" "$root/bin/busybox"
  local applet
  for applet in $("$root/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
  done
  rm -rf "$unpack"
}

build_busybox() {
  local root
  root=$(mktemp -d)
  busybox_root "$root" "$1"
  printf 'NAME="busybox only"\nID=busybox\n' >"$root/etc/os-release"
  import "$root" hodei-test-busybox:1 --change 'ENV PATH=/bin' --change 'CMD ["/bin/sh"]'
  rm -rf "$root"
}

build_musl() {
  local root unpack
  root=$(mktemp -d)
  unpack=$(mktemp -d)
  busybox_root "$root" "$1"
  dpkg-deb -x "$1"/musl_*.deb "$unpack"
  mkdir -p "$root/lib" "$root/tmp" "$root/home/app"
  cp -L "$unpack"/lib/ld-musl-x86_64.so.1 "$root/lib/ld-musl-x86_64.so.1"
  ln -s ld-musl-x86_64.so.1 "$root/lib/libc.musl-x86_64.so.1" # musl's loader is its libc
  chmod 1777 "$root/tmp"
  printf 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n' \
    >"$root/etc/passwd"
  printf 'root:x:0:\napp:x:1000:\n' >"$root/etc/group"
  chown 1000:1000 "$root/home/app"
  printf 'NAME="musl, Alpine-like"\nID=musl\n' >"$root/etc/os-release"
  import "$root" hodei-test-musl:1 --change 'ENV PATH=/bin' --change 'USER 1000:1000' \
    --change 'WORKDIR /home/app' --change 'CMD ["/bin/sh"]'
  rm -rf "$root" "$unpack"
}

build_debian() {
  local tarball root
  tarball=$(ls -t "$CACHE"/rootfs-bookworm-*.tar 2>/dev/null | head -1 || true)
  [ -n "$tarball" ] || die "no Debian root file system in $CACHE (run scripts/build_worker_image.sh)"
  root=$(mktemp -d)
  tar -C "$root" -xf "$tarball"
  rm -rf "$root"/usr/bin/python3* "$root"/usr/lib/python3* "$root"/usr/lib/python3.11
  [ ! -e "$root/usr/bin/python3" ] || die "python3 is still in the Debian root"
  import "$root" hodei-test-debian:1 --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]'
  rm -rf "$root"
}

[ "$(id -u)" = 0 ] || die "run as root"
docker info >/dev/null 2>&1 || die "no Docker engine answers"
dir=""
current hodei-test-busybox:1 || { dir=${dir:-$(debs)}; build_busybox "$dir"; }
current hodei-test-musl:1 || { dir=${dir:-$(debs)}; build_musl "$dir"; }
current hodei-test-debian:1 || build_debian
say "test images ready"
