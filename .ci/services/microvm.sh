# QEMU and the microVM provider's assets (docs/microvm.md). Sourced by .ci/run (as root, no
# stdin, under `set -euo pipefail`) after docker.sh, which builds the worker image the root
# file system is made from. Installs qemu-system-x86, busybox-static, kmod, cpio and e2fsprogs
# when missing, builds the assets with scripts/build_microvm_assets.sh (cached in
# /var/cache/hodei-ci/microvm-<key>, so a warm machine skips it) and exports
# HODEI_TEST_MICROVM_DIR. A failure is reported and the run goes on: with
# HODEI_REQUIRE_SERVICES=1 the tests that need it then fail with the reason.

hodei_microvm_install() {
  local packages=()
  command -v qemu-system-x86_64 >/dev/null || packages+=(qemu-system-x86)
  [ -x /bin/busybox ] && ! file -L /bin/busybox 2>/dev/null | grep -q 'dynamically linked' ||
    packages+=(busybox-static)
  command -v modinfo >/dev/null || packages+=(kmod)
  command -v cpio >/dev/null || packages+=(cpio)
  command -v mkfs.ext4 >/dev/null || packages+=(e2fsprogs)
  [ "${#packages[@]}" -eq 0 ] && return 0
  echo "installing ${packages[*]}"
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
}

hodei_microvm_setup() {
  local started=$SECONDS dir
  hodei_microvm_install || return 1
  dir=$(nice bash scripts/build_microvm_assets.sh) || return 1
  export HODEI_TEST_MICROVM_DIR="$dir"
  echo "microVM assets ready in $((SECONDS - started))s: $dir (kernel $(cat "$dir/kernel-release"))"
}

if ! hodei_microvm_setup; then
  echo "warning: the microVM assets could not be built; the tests that need them will say so" >&2
fi
