#!/usr/bin/env bash
# Builds the microVM provider's assets (docs/microvm.md) from Debian's archive and the worker
# image, with no other download:
#   vmlinux             the uncompressed kernel of Debian's linux-image-*-amd64 (`apt-get
#                       download`; extracted from its vmlinuz: booting the ELF kernel skips its
#                       own decompression, half the boot under software emulation)
#   initramfs.cpio.gz   busybox (busybox-static) and the virtio-mmio, virtio-blk, virtio-net and
#                       ext4 modules of that kernel: loads them, brings up the network from the
#                       kernel command line, mounts the root disk and switches to it
#   rootfs.ext4         the worker image the Docker provider uses (hodei-worker:latest: Python
#                       and the agent in /opt/hodei), `docker export`ed, plus /sbin/hodei-init,
#                       which reads the agent's settings (server address, OTP) from the VM's
#                       read-only config drive and runs the agent as uid 10001 (mkfs.ext4 -d)
#   kernel-release      the kernel's release (what `uname -r` says in a VM)
#
# The result is cached in $HODEI_IMAGE_CACHE/microvm-<key> (default /var/cache/hodei-ci), the
# key a hash of the kernel package's version, this script and the worker image's id, so a warm
# machine skips the build; then copied to OUT_DIR when one is given. Prints the asset directory.
# Needs root (the worker image's files keep their owners), apt-get, docker (with the worker
# image built: scripts/build_worker_image.sh), busybox-static, cpio, e2fsprogs and python3.
#
# Usage: scripts/build_microvm_assets.sh [--force] [OUT_DIR]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
FORCE=0
if [ "${1:-}" = --force ]; then FORCE=1; shift; fi
OUT=${1:-}
CACHE=${HODEI_IMAGE_CACHE:-/var/cache/hodei-ci}
IMAGE=${HODEI_MICROVM_WORKER_IMAGE:-hodei-worker:latest}
KERNEL_PACKAGE=${HODEI_MICROVM_KERNEL_PACKAGE:-linux-image-amd64}
BUSYBOX=${BUSYBOX:-/bin/busybox}
MODULES="virtio_mmio virtio_blk virtio_net ext4 crc32c_generic"
ASSETS_PY="$ROOT/src/hodei/adapters/providers/microvm_assets.py"
ROOTFS_SLACK_MB=256 # free space in the root file system for jobs' files

say() { echo "build_microvm_assets: $*" >&2; }
die() { say "error: $*"; exit 1; }

check_tools() {
  [ "$(id -u)" = 0 ] || die "run as root (the worker image's files keep their owners)"
  local tool
  for tool in apt-get apt-cache dpkg-deb docker cpio mkfs.ext4 python3 gzip; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install busybox-static kmod cpio e2fsprogs)"
  done
  [ -x "$BUSYBOX" ] || die "no busybox at $BUSYBOX (apt-get install busybox-static)"
  # A dynamically linked busybox would need its libraries in the initramfs.
  if command -v file >/dev/null && file -L "$BUSYBOX" | grep -q 'dynamically linked'; then
    die "$BUSYBOX is dynamically linked: install busybox-static"
  fi
  docker image inspect "$IMAGE" >/dev/null 2>&1 ||
    die "no worker image $IMAGE on the Docker engine: build it with scripts/build_worker_image.sh"
}

# linux-image-amd64 is a meta-package: the versioned package it depends on has the kernel.
kernel_package() {
  case $KERNEL_PACKAGE in
  linux-image-[0-9]*) echo "$KERNEL_PACKAGE" ;;
  *) apt-cache depends "$KERNEL_PACKAGE" 2>/dev/null |
    awk '/Depends: linux-image-[0-9]/ { print $2; exit }' ;;
  esac
}

build_initramfs() { # $1: unpacked kernel package, $2: output file
  local pkg=$1 out=$2 dir release module
  release=$(ls "$pkg/lib/modules")
  dir=$(mktemp -d "$work/initramfs.XXXXXX")
  mkdir -p "$dir"/{bin,dev,proc,sys,newroot,lib/modules}
  cp "$BUSYBOX" "$dir/bin/busybox"
  : >"$dir/lib/modules/order"
  # shellcheck disable=SC2086
  for module in $(python3 "$ASSETS_PY" module-order "$pkg/lib/modules/$release/kernel" $MODULES); do
    cp "$pkg/lib/modules/$release/kernel/$module" "$dir/lib/modules/"
    basename "$module" >>"$dir/lib/modules/order"
  done
  cat >"$dir/init" <<'EOF'
#!/bin/busybox sh
# The microVM's first user space: modules, network, root disk, then the root's /sbin/hodei-init.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
say() { echo "hodei-init: $*" >/dev/console; }
fail() { say "error: $*; powering off"; sync; reboot -f; sleep 5; exit 1; }
while read -r module; do
  insmod "/lib/modules/$module" 2>/dev/console || say "insmod $module failed"
done </lib/modules/order
ip=10.0.2.15/24 gw=10.0.2.2
for arg in $(cat /proc/cmdline); do
  case $arg in
  hodei.ip=*) ip=${arg#hodei.ip=} ;;
  hodei.gw=*) gw=${arg#hodei.gw=} ;;
  esac
done
ip link set lo up
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
ip link set eth0 up && ip addr add "$ip" dev eth0 && ip route add default via "$gw" ||
  fail "cannot configure eth0 ($ip via $gw)"
# The root disk is the writable virtio disk (the config drive is read-only).
root="" i=0
while [ -z "$root" ] && [ $i -lt 100 ]; do
  for ro in /sys/block/vd*/ro; do
    [ -e "$ro" ] && [ "$(cat "$ro")" = 0 ] && root=$(basename "$(dirname "$ro")")
  done
  [ -n "$root" ] || { sleep 0.1; i=$((i + 1)); }
done
[ -n "$root" ] || fail "no root disk (no writable virtio block device)"
mount -t ext4 "/dev/$root" /newroot 2>/dev/console || fail "cannot mount the root file system /dev/$root"
[ -x /newroot/sbin/hodei-init ] || fail "the root file system has no /sbin/hodei-init"
say "root file system /dev/$root mounted; network $ip via $gw"
mount --move /dev /newroot/dev
umount /sys /proc
exec switch_root /newroot /sbin/hodei-init
EOF
  chmod 0755 "$dir/init"
  (cd "$dir" && find . | cpio -o -H newc --quiet | gzip -9) >"$out"
  rm -rf "$dir"
}

write_guest_init() { # $1: root file system directory
  install -m 0755 /dev/stdin "$1/sbin/hodei-init" <<'EOF'
#!/usr/bin/python3
"""PID 1 of a Hodei microVM: mounts, reads the agent's settings from the read-only config drive
(a JSON object, NUL-padded: {"env": {...}, "args": [...]}), runs the agent as uid 10001,
reaps orphans, and when the agent ends, powers the VM off (the VMM exits on the reboot)."""
import ctypes, json, os, signal, sys

def say(message):
    print(f"hodei-init: {message}", file=sys.stderr, flush=True)

def mount(kind, target, options=""):
    os.makedirs(target, exist_ok=True)
    libc.mount(kind.encode(), target.encode(), kind.encode(), 0, options.encode() or None)

def power_off(code):
    say(f"agent exited ({code}); powering off")
    libc.sync()
    libc.reboot(0x01234567)  # RB_AUTOBOOT: the VMM runs with -no-reboot and exits

def config_drive():
    for name in sorted(os.listdir("/sys/block")):
        try:
            with open(f"/sys/block/{name}/ro") as f:
                if f.read().strip() != "1":
                    continue
            with open(f"/dev/{name}", "rb") as f:
                return json.loads(f.read(1 << 20).rstrip(b"\0"))
        except (OSError, ValueError):
            continue
    return None

libc = ctypes.CDLL(None, use_errno=True)
mount("proc", "/proc")
mount("sysfs", "/sys")
mount("tmpfs", "/tmp", "mode=1777")
mount("tmpfs", "/run", "mode=0755")
mount("devpts", "/dev/pts")
with open("/proc/sys/kernel/hostname", "w") as f:
    f.write("hodei-vm")
config = config_drive()
if config is None:
    say("error: no config drive")
    power_off(-1)
env = {
    "PATH": "/opt/hodei/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
    "HOME": "/home/hodei",
    "LANG": "C.UTF-8",
    "PYTHONUNBUFFERED": "1",
    **config.get("env", {}),
}
argv = ["/opt/hodei/bin/python", "-m", "hodei.agent", *config.get("args", [])]
say(f"starting agent for {env.get('HODEI_SERVER_URL', '?')}")
agent = os.fork()
if agent == 0:
    try:
        os.setgroups([])
        os.setgid(10001)
        os.setuid(10001)
        os.chdir("/home/hodei")
        os.execve(argv[0], argv, env)
    finally:
        os._exit(127)
def stop_agent(signum, frame):  # Ctrl-Alt-Del (SIGINT to init) or SIGTERM: stop the agent
    say("stop requested")
    try:
        os.kill(agent, signal.SIGTERM)
    except OSError:
        pass

signal.signal(signal.SIGINT, stop_agent)
signal.signal(signal.SIGTERM, stop_agent)
code = -1
while True:
    try:
        pid, status = os.wait()
    except ChildProcessError:
        break
    if pid == agent:
        code = os.waitstatus_to_exitcode(status)
        break
power_off(code)
EOF
}

build_rootfs() { # $1: output file
  local dir container size_mb
  dir="$work/rootfs"
  mkdir "$dir"
  container=$(docker create "$IMAGE")
  docker export "$container" | tar -C "$dir" -x
  docker rm "$container" >/dev/null
  rm -f "$dir/.dockerenv"
  mkdir -p "$dir"/{proc,sys,dev,run,tmp}
  write_guest_init "$dir"
  [ -x "$dir/opt/hodei/bin/python" ] || die "$IMAGE has no /opt/hodei/bin/python"
  size_mb=$(($(du -sm "$dir" | cut -f1) * 12 / 10 + ROOTFS_SLACK_MB))
  # Its -d prints what it copies even with -q: to stderr, stdout carries only the path.
  mkfs.ext4 -q -F -L hodei-root -d "$dir" "$1" "${size_mb}M" >&2
}

main() {
  check_tools
  local package version image_id key dir
  package=$(kernel_package)
  [ -n "$package" ] || die "no kernel package for $KERNEL_PACKAGE in apt's lists (apt-get update?)"
  version=$(apt-cache policy "$package" | awk '/Candidate:/ { print $2; exit }')
  image_id=$(docker image inspect --format '{{.Id}}' "$IMAGE")
  key=$(cat "$0" "$ASSETS_PY" | sha256sum | cut -c1-16)
  key=$(echo "$key $package $version $image_id $MODULES" | sha256sum | cut -c1-12)
  dir="$CACHE/microvm-$key"
  if [ "$FORCE" = 1 ] || [ ! -s "$dir/rootfs.ext4" ]; then
    work=$(mktemp -d) # global: the EXIT trap runs after main has returned
    trap 'rm -rf "$work"' EXIT
    say "downloading $package $version"
    (cd "$work" && apt-get download -qq "$package=$version" 2>/dev/null) ||
      die "apt-get download $package failed"
    dpkg-deb -x "$work"/*.deb "$work/kernel"
    mkdir -p "$dir.part"
    python3 "$ASSETS_PY" extract-vmlinux "$work"/kernel/boot/vmlinuz-* "$dir.part/vmlinux"
    ls "$work/kernel/lib/modules" >"$dir.part/kernel-release"
    say "building the initramfs"
    build_initramfs "$work/kernel" "$dir.part/initramfs.cpio.gz"
    say "building the root file system from $IMAGE"
    build_rootfs "$dir.part/rootfs.ext4"
    rm -rf "$dir"
    mv "$dir.part" "$dir"
    # Older builds only take space.
    find "$CACHE" -maxdepth 1 -name 'microvm-*' ! -name "microvm-$key" -exec rm -rf {} +
    say "built $dir (kernel $(cat "$dir/kernel-release"))"
  else
    say "$dir is up to date"
  fi
  if [ -n "$OUT" ]; then
    mkdir -p "$OUT"
    cp --sparse=always "$dir"/{vmlinux,initramfs.cpio.gz,rootfs.ext4,kernel-release} "$OUT/"
    dir=$(cd "$OUT" && pwd)
  fi
  echo "$dir"
}

main
