# PostgreSQL for the store contract suite and the PostgreSQL e2e test. Sourced by .ci/run
# (as root, no stdin, under `set -euo pipefail`); safe to source again: every step checks first.
# Installs Debian's postgresql when missing, runs the newest cluster on 127.0.0.1 only, creates
# the role `hodei` and the database `hodei_test`, and exports HODEI_TEST_DATABASE_URL.
# A step that fails is reported and the run goes on: with HODEI_REQUIRE_SERVICES=1 the tests
# that need PostgreSQL then fail with the reason, and every other test still runs.

hodei_pg_psql() {
  # As the cluster's superuser over the local socket (peer authentication).
  runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$1" -d postgres "${@:2}"
}

hodei_pg_setup() {
  local version port
  if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    apt-get update -qq || return 1
    apt-get install -y -qq postgresql >/dev/null || return 1
  fi
  version=$(find /usr/lib/postgresql -maxdepth 1 -mindepth 1 -printf '%f\n' | sort -V | tail -n 1)
  if ! pg_lsclusters -h | awk '{print $1, $2}' | grep -qx "$version main"; then
    pg_createcluster "$version" main >/dev/null || return 1
  fi
  # Loopback only: the test database has a well-known password.
  printf "listen_addresses = '127.0.0.1'\n" >"/etc/postgresql/$version/main/conf.d/hodei.conf" ||
    return 1
  if ! pg_lsclusters -h | awk '$1 == v && $2 == "main" {print $4}' v="$version" | grep -q online; then
    pg_ctlcluster "$version" main start || return 1
  fi
  port=$(pg_lsclusters -h | awk '$1 == v && $2 == "main" {print $3}' v="$version")
  hodei_pg_psql "$port" <<'SQL' || return 1
SELECT 'CREATE ROLE hodei LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'hodei')
\gexec
ALTER ROLE hodei LOGIN PASSWORD 'hodei';
SELECT 'CREATE DATABASE hodei_test OWNER hodei'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'hodei_test')
\gexec
SQL
  HODEI_TEST_DATABASE_URL="postgresql://hodei:hodei@127.0.0.1:${port}/hodei_test"
  echo "postgresql $version ready: $HODEI_TEST_DATABASE_URL"
}

if ! hodei_pg_setup; then
  echo "warning: PostgreSQL could not be set up; the tests that need it will say so" >&2
fi
export HODEI_TEST_DATABASE_URL="${HODEI_TEST_DATABASE_URL:-postgresql://hodei:hodei@127.0.0.1:5432/hodei_test}"
