#!/usr/bin/env bash
# Runs tradegraph's whole test suite: unit tests, and the integration tests against
# SQLite and against PostgreSQL + Redis. It finds PostgreSQL and Redis on their usual
# local ports, starts them when they are installed but stopped, and says loudly when it
# cannot (under CI=true that is a failure: nothing may be skipped silently there).
#
#   TEST_POSTGRES_URL  admin connection; each test creates and drops its own database
#                      (default postgres://postgres@127.0.0.1:5432/postgres)
#   TEST_REDIS_URL     default redis://127.0.0.1:6379
set -uo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tradegraph/target}"
pg_url="${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
redis_url="${TEST_REDIS_URL:-redis://127.0.0.1:6379}"
strict="${CI:-false}"

shout() {
  printf '\n\033[1;31m%s\033[0m\n' "################################################################"
  printf '\033[1;31m# %s\033[0m\n' "$@"
  printf '\033[1;31m%s\033[0m\n\n' "################################################################"
}

pg_ready() {
  if command -v pg_isready >/dev/null 2>&1; then
    pg_isready -q -d "$pg_url" >/dev/null 2>&1
  else
    (exec 3<>/dev/tcp/127.0.0.1/5432) >/dev/null 2>&1
  fi
}

redis_ready() {
  if command -v redis-cli >/dev/null 2>&1; then
    [ "$(redis-cli -u "$redis_url" ping 2>/dev/null)" = "PONG" ]
  else
    (exec 3<>/dev/tcp/127.0.0.1/6379) >/dev/null 2>&1
  fi
}

wait_for() {
  for _ in $(seq 1 30); do "$1" && return 0; sleep 0.5; done
  return 1
}

if ! pg_ready && command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
  echo "tests: starting the local PostgreSQL cluster"
  for version in $(ls /etc/postgresql); do
    pg_ctlcluster --skip-systemctl-redirect "$version" main start >/dev/null 2>&1 || true
  done
  wait_for pg_ready || true
fi
if pg_ready; then
  echo "tests: PostgreSQL at ${pg_url%%@*}@… is up: integration tests run on SQLite and PostgreSQL"
  export TEST_POSTGRES_URL="$pg_url" TRADEGRAPH_REQUIRE_POSTGRES=1
else
  shout "PostgreSQL NOT reachable at $pg_url" \
        "the PostgreSQL half of the integration tests will be SKIPPED" \
        "install and start PostgreSQL, or set TEST_POSTGRES_URL"
  [ "$strict" = "true" ] && exit 1
fi

if ! redis_ready && command -v redis-server >/dev/null 2>&1; then
  echo "tests: starting a local Redis"
  mkdir -p /tmp/tradegraph-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp/tradegraph-redis --logfile /tmp/tradegraph-redis/redis.log >/dev/null 2>&1 || true
  wait_for redis_ready || true
fi
if redis_ready; then
  echo "tests: Redis at $redis_url is up: PostgreSQL tests use it"
  export TEST_REDIS_URL="$redis_url"
else
  shout "Redis NOT reachable at $redis_url" \
        "tests that use Redis run without it" \
        "install and start Redis, or set TEST_REDIS_URL"
  [ "$strict" = "true" ] && exit 1
fi

cargo test --workspace --locked "$@" || exit 1

# The clients, checked with the tools their users have: graphql-js validates the schema
# and every playground operation; headless Chromium drives the playground against the
# real server (built by the cargo test run above). Screenshots land in
# $BROWSER_ARTIFACTS (default target/browser-artifacts), kept as CI artefacts.
if [ "$#" -gt 0 ]; then
  exit 0 # a filtered run (tests/run.sh <filter>) is about the Rust tests only
fi
if ! command -v npm >/dev/null 2>&1; then
  shout "npm NOT found: the client checks (graphql-js, browser) are SKIPPED"
  [ "$strict" = "true" ] && exit 1
  exit 0
fi
echo "tests: graphql-js validation of schema.graphql and the playground's operations"
npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error >/dev/null || exit 1
node tests/browser/validate-operations.mjs || exit 1

chromium_bin="${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}"
if [ -z "$chromium_bin" ]; then
  shout "Chromium NOT found: the browser tests are SKIPPED" \
        "install Debian's chromium package (apt-get install chromium)"
  [ "$strict" = "true" ] && exit 1
  exit 0
fi
if [ -n "${TRADEGRAPH_SKIP_PLAYGROUND:-}" ]; then
  shout "TRADEGRAPH_SKIP_PLAYGROUND is set: the playground was not built, browser tests SKIPPED"
  [ "$strict" = "true" ] && exit 1
  exit 0
fi
workdir="$(mktemp -d)"
server_log="$workdir/server.log"
BIND_ADDR=127.0.0.1:0 LOG_FORMAT=json DATABASE_URL="sqlite://$workdir/browser.db?mode=rwc" \
  DEMO_BOT=true DEMO_BOT_INTERVAL_MS=300 \
  "$CARGO_TARGET_DIR/debug/tradegraph" serve >"$server_log" 2>&1 &
server_pid=$!
trap 'kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null; rm -rf "$workdir"' EXIT
address=""
for _ in $(seq 1 100); do
  address="$(grep -o '"address":"[^"]*"' "$server_log" | head -n1 | cut -d'"' -f4)"
  [ -n "$address" ] && break
  sleep 0.1
done
if [ -z "$address" ]; then
  echo "tests: the server for the browser tests did not start:"; cat "$server_log"; exit 1
fi
echo "tests: headless Chromium against http://$address"
export BROWSER_ARTIFACTS="${BROWSER_ARTIFACTS:-$CARGO_TARGET_DIR/browser-artifacts}"
TRADEGRAPH_URL="http://$address" CHROMIUM="$chromium_bin" node tests/browser/browser.mjs || {
  echo "tests: server log of the browser run:"; tail -n 50 "$server_log"; exit 1
}
