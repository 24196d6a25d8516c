# The agent as a self-contained executable (scripts/build_agent_binary.sh), which the Docker
# and Kubernetes providers inject into jobs' own images. Sourced by .ci/run (as root, no stdin,
# under `set -euo pipefail`) before docker.sh, which puts it into the worker image. The build
# is cached in /var/cache/hodei-ci keyed by the sources, so a warm machine skips it. Exports
# HODEI_TEST_AGENT_BINARY (the executable directory) for the tests that run it directly.
# A failure is reported and the run goes on: with HODEI_REQUIRE_SERVICES=1 the tests that need
# the executable then fail with the reason.

hodei_agent_tools() {
  # Debian's python3 with venv and ensurepip, and strip (binutils) for PyInstaller --strip.
  local packages=()
  /usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null || packages+=(python3-venv)
  command -v strip >/dev/null || packages+=(binutils)
  [ "${#packages[@]}" -eq 0 ] && return 0
  echo "installing ${packages[*]}"
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
}

hodei_agent_build() {
  local started=$SECONDS dir
  hodei_agent_tools || return 1
  dir=$(bash scripts/build_agent_binary.sh) || return 1
  export HODEI_TEST_AGENT_BINARY="$dir"
  echo "agent executable ready in $((SECONDS - started))s: $dir ($(du -sh "$dir" | cut -f1))"
}

if ! hodei_agent_build; then
  echo "warning: the agent executable could not be built; the tests that need it will say so" >&2
fi
