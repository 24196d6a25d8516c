#!/usr/bin/env bash
# Builds the Kubernetes control plane the Kubernetes provider's tests run against
# (kube-apiserver, kube-controller-manager, kube-scheduler and kubectl) from Debian's
# `kubernetes` source package (bookworm: 1.20.2, its Go dependencies vendored), offline:
# GOFLAGS=-mod=vendor GOPROXY=off CGO_ENABLED=0.
#
# The binaries are cached in $HODEI_K8S_CACHE/kubernetes-<source version>/bin (default cache
# /var/cache/hodei-ci), so a machine that has built them once skips the build (a few minutes
# and about 1.3 GB of memory, on 2 cores). Prints the bin directory on its last line.
#
# Needs root (apt). Enables the deb-src counterpart of apt's configured Debian sources when
# apt has none (a separate file, hodei-ci-deb-src.sources or .list, in sources.list.d), and
# installs golang-go, rsync, jq and dpkg-dev when missing.
#
# Usage: scripts/build_test_kubernetes.sh [--force]
# HODEI_APT_DIR (default /etc/apt) is the apt configuration directory.
set -euo pipefail

FORCE=0
[ "${1:-}" = --force ] && FORCE=1
APT_DIR=${HODEI_APT_DIR:-/etc/apt}
CACHE=${HODEI_K8S_CACHE:-/var/cache/hodei-ci}
PACKAGE=kubernetes
TARGETS=(cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler cmd/kubectl)
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl)

say() { echo "build_test_kubernetes: $*" >&2; }
die() { say "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (apt-get)"

source_version() {
  { apt-cache showsrc "$PACKAGE" 2>/dev/null || true; } | awk '/^Version:/ { print $2; exit }'
}

# Writes deb-src twins of the enabled `deb` sources: deb822 stanzas (Types: deb -> deb-src) of
# the *.sources files and one-line `deb ` entries of sources.list and *.list files.
enable_deb_src() {
  local d822="$APT_DIR/sources.list.d/hodei-ci-deb-src.sources"
  local line="$APT_DIR/sources.list.d/hodei-ci-deb-src.list"
  local file
  : >"$d822.tmp"
  : >"$line.tmp"
  for file in "$APT_DIR"/sources.list.d/*.sources; do
    [ -f "$file" ] && [ "$file" != "$d822" ] || continue
    awk 'BEGIN { RS = ""; ORS = "\n\n" }
      /(^|\n)Types:[ \t]*deb([ \t]|\n|$)/ && !/(^|\n)Enabled:[ \t]*(no|false)/ {
        sub(/(^|\n)Types:[^\n]*/, "\nTypes: deb-src"); sub(/^\n/, ""); print }' \
      "$file" >>"$d822.tmp"
  done
  for file in "$APT_DIR/sources.list" "$APT_DIR"/sources.list.d/*.list; do
    [ -f "$file" ] && [ "$file" != "$line" ] || continue
    sed -n 's/^[ \t]*deb[ \t]/deb-src /p' "$file" >>"$line.tmp"
  done
  if [ -s "$d822.tmp" ]; then mv "$d822.tmp" "$d822"; else rm -f "$d822.tmp"; fi
  if [ -s "$line.tmp" ]; then mv "$line.tmp" "$line"; else rm -f "$line.tmp"; fi
  [ -e "$d822" ] || [ -e "$line" ] || die "apt has no deb source to make a deb-src one from"
  say "enabled deb-src sources ($(ls "$d822" "$line" 2>/dev/null | tr '\n' ' '))"
  apt-get update -qq
}

version=$(source_version)
if [ -z "$version" ]; then
  enable_deb_src
  version=$(source_version)
  [ -n "$version" ] || die "apt knows no source package '$PACKAGE' even with deb-src enabled"
fi
out="$CACHE/kubernetes-$version"
bin="$out/bin"

cached() {
  local b
  for b in "${BINARIES[@]}"; do [ -x "$bin/$b" ] || return 1; done
}

if [ "$FORCE" = 0 ] && cached; then
  say "cached: Kubernetes $version in $bin"
  echo "$bin"
  exit 0
fi

tools=()
command -v go >/dev/null || tools+=(golang-go)
command -v rsync >/dev/null || tools+=(rsync)
command -v jq >/dev/null || tools+=(jq)
command -v dpkg-source >/dev/null || tools+=(dpkg-dev)
if [ "${#tools[@]}" -gt 0 ]; then
  say "installing ${tools[*]}"
  apt-get install -y -qq --no-install-recommends "${tools[@]}" >/dev/null
fi

work="$CACHE/kubernetes-src.$$"
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
say "fetching the source of $PACKAGE $version"
(cd "$work" && apt-get source -qq --download-only "$PACKAGE=$version" >/dev/null &&
  dpkg-source --no-check -x ./*.dsc src >/dev/null)
[ -d "$work/src/vendor" ] || die "the $PACKAGE source has no vendor/ directory"

started=$SECONDS
say "building ${TARGETS[*]} (takes minutes)"
(
  cd "$work/src"
  export GOFLAGS=-mod=vendor GOPROXY=off CGO_ENABLED=0 GO111MODULE=on
  export GOCACHE="$work/gocache" GOPATH="$work/gopath"
  # Debian's tarball is not a git checkout: give the version stamp its values explicitly.
  # (Debian's version may read 1.20.5+really1.20.2-1: the source is what follows "really".)
  upstream=${version#*really}
  export KUBE_GIT_VERSION="v${upstream%%[-+~]*}" KUBE_GIT_TREE_STATE=clean
  # One target at a time keeps the peak memory at one linker's.
  for target in "${TARGETS[@]}"; do
    make WHAT="$target" >"$work/make.log" 2>&1 || { tail -n 30 "$work/make.log" >&2; exit 1; }
  done
)
mkdir -p "$bin.new"
for b in "${BINARIES[@]}"; do
  found=$(find "$work/src/_output" -type f -name "$b" -perm -u+x | head -n 1)
  [ -n "$found" ] || die "the build made no $b"
  cp "$found" "$bin.new/$b"
done
rm -rf "$bin"
mv "$bin.new" "$bin"
say "built Kubernetes $version in $((SECONDS - started))s: $bin"
echo "$bin"
