# Docker engine for the Docker provider's tests. Sourced by .ci/run (as root, no stdin, under
# `set -euo pipefail`); safe to source again: every step checks first.
# Installs Debian's docker.io and debootstrap when missing, starts dockerd when no engine
# answers, with --bridge=none --iptables=false (no docker0 bridge, no firewall rules: worker
# containers use host networking and the tests talk to loopback only), waits until it answers
# (bounded), builds the worker image offline (scripts/build_worker_image.sh, its debootstrap
# root file system cached in /var/cache/hodei-ci; skipped when the image is current), the small
# job images of the tests (scripts/build_test_images.sh) and exports HODEI_TEST_WORKER_IMAGE.
# A step that fails is reported and the run goes on: with HODEI_REQUIRE_SERVICES=1 the tests
# that need Docker then fail with the reason, and every other test still runs.

HODEI_DOCKERD_LOG=/var/log/hodei-ci-dockerd.log

hodei_docker_answers() {
  timeout 10 docker info >/dev/null 2>&1
}

hodei_docker_install() {
  local packages=()
  command -v docker >/dev/null && command -v dockerd >/dev/null || packages+=(docker.io)
  command -v debootstrap >/dev/null || packages+=(debootstrap)
  [ "${#packages[@]}" -eq 0 ] && return 0
  echo "installing ${packages[*]}"
  apt-get update -qq || return 1
  # Where an init system runs, the package would start dockerd with its default bridge and
  # iptables rules; forbid service starts during the install (policy-rc.d exit 101).
  local policy=/usr/sbin/policy-rc.d made=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made=1
  fi
  apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
  local status=$?
  [ "$made" = 1 ] && rm -f "$policy"
  return "$status"
}

hodei_dockerd_run() { # $1: storage driver (empty: dockerd's choice)
  local pid i
  echo "starting dockerd --bridge=none --iptables=false ${1:+--storage-driver=$1} (log: $HODEI_DOCKERD_LOG)"
  setsid dockerd --bridge=none --iptables=false ${1:+--storage-driver="$1"} \
    </dev/null >>"$HODEI_DOCKERD_LOG" 2>&1 &
  pid=$!
  for i in $(seq 1 120); do
    hodei_docker_answers && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  echo "dockerd did not come up; its log ends with:" >&2
  tail -n 15 "$HODEI_DOCKERD_LOG" >&2
  kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  return 1
}

hodei_docker_start() {
  hodei_docker_answers && return 0
  # Docker needs a cgroup hierarchy; some minimal systems boot without one mounted.
  if ! grep -q ' /sys/fs/cgroup ' /proc/mounts; then
    mount -t cgroup2 none /sys/fs/cgroup || echo "warning: cannot mount cgroup2" >&2
  fi
  # overlay2 first; vfs (slow, but works on any file system) when the kernel refuses overlay.
  hodei_dockerd_run "" || hodei_dockerd_run vfs
}

hodei_docker_setup() {
  hodei_docker_install || return 1
  hodei_docker_start || return 1
  docker info --format 'docker engine {{.ServerVersion}} ready ({{.Driver}}, cgroup v{{.CgroupVersion}})'
  local started=$SECONDS
  bash scripts/build_worker_image.sh "$HODEI_TEST_WORKER_IMAGE" || return 1
  echo "worker image $HODEI_TEST_WORKER_IMAGE ready in $((SECONDS - started))s"
  # Small images without Python for the tests of jobs in their own image.
  bash scripts/build_test_images.sh || return 1
}

export HODEI_TEST_WORKER_IMAGE="${HODEI_TEST_WORKER_IMAGE:-hodei-worker:latest}"
if ! hodei_docker_setup; then
  echo "warning: Docker could not be set up; the tests that need it will say so" >&2
fi
