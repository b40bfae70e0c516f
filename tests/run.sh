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

cargo test --workspace --locked "$@"
