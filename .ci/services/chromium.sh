# Chromium for the web dashboard's browser tests. Sourced by .ci/run (as root, no stdin, under
# `set -euo pipefail`); safe to source again: every step checks first.
# Installs Debian's chromium (and fonts, so screenshots show text) when missing, checks that it
# starts headless, and exports HODEI_TEST_CHROMIUM. The tests drive it with the Python
# playwright package (a `test` extra) through executable_path: no browser is downloaded.
# A step that fails is reported and the run goes on: with HODEI_REQUIRE_SERVICES=1 the tests
# that need a browser then fail with the reason, and every other test still runs.

hodei_chromium_find() {
  local candidate
  for candidate in "${HODEI_TEST_CHROMIUM:-}" /usr/bin/chromium /usr/bin/chromium-browser; do
    [ -n "$candidate" ] && [ -x "$candidate" ] && { printf '%s\n' "$candidate"; return 0; }
  done
  return 1
}

hodei_chromium_setup() {
  local path version
  if ! path=$(hodei_chromium_find); then
    echo "installing chromium"
    apt-get update -qq || return 1
    apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null ||
      return 1
    path=$(hodei_chromium_find) || { echo "chromium installed but not found" >&2; return 1; }
  fi
  # It must start: a broken install (missing libraries) is reported here, not in the tests.
  if ! version=$(timeout 60 "$path" --headless --no-sandbox --disable-gpu --version 2>/dev/null); then
    echo "chromium at $path does not start:" >&2
    timeout 60 "$path" --headless --no-sandbox --disable-gpu --version 2>&1 | tail -n 5 >&2
    return 1
  fi
  HODEI_TEST_CHROMIUM="$path"
  echo "$version ready: $path"
}

if ! hodei_chromium_setup; then
  echo "warning: Chromium could not be set up; the browser tests will say so" >&2
fi
export HODEI_TEST_CHROMIUM="${HODEI_TEST_CHROMIUM:-/usr/bin/chromium}"
