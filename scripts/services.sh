#!/usr/bin/env bash
# Makes sure PostgreSQL, Redis and RabbitMQ answer on this machine: starts
# any that is installed but down, and says clearly which one is missing.
# Used by `make up`, `make test` and .ci/run.
set -euo pipefail

say() { printf '%s\n' "services: $*" >&2; }

postgres_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]; }
rabbit_up() { timeout 20 rabbitmqctl -q status >/dev/null 2>&1; }

wait_for() { # name, check, seconds
  local name=$1 check=$2 seconds=$3
  for _ in $(seq "$seconds"); do
    if $check; then say "$name is up"; return 0; fi
    sleep 1
  done
  say "$name did not come up within ${seconds}s"; return 1
}

ensure_postgres() {
  postgres_up && { say "PostgreSQL is up"; return 0; }
  if ! command -v pg_ctlcluster >/dev/null; then
    say "PostgreSQL does not answer on 127.0.0.1:5432 and is not installed here (apt-get install postgresql); for servers elsewhere, skip this check: run the binaries or cargo test directly with the URLs set (README)"; return 1
  fi
  say "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
  wait_for PostgreSQL postgres_up 30
}

ensure_redis() {
  redis_up && { say "Redis is up"; return 0; }
  if ! command -v redis-server >/dev/null; then
    say "Redis does not answer on 127.0.0.1:6379 and is not installed here (apt-get install redis-server); for a server elsewhere, run the binaries or cargo test directly with REDIS_URL set"; return 1
  fi
  say "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for Redis redis_up 15
}

ensure_rabbitmq() {
  rabbit_up && { say "RabbitMQ is up"; return 0; }
  if ! command -v rabbitmq-server >/dev/null; then
    say "RabbitMQ does not answer here and is not installed (apt-get install rabbitmq-server); for a broker elsewhere, run the binaries or cargo test directly with AMQP_URL set"; return 1
  fi
  say "starting RabbitMQ"
  # Each quorum queue holds file descriptors; the default 1,024 ran out
  # after a few test runs here and new connections then hung.
  (ulimit -n 65536 2>/dev/null || true; rabbitmq-server -detached)
  wait_for RabbitMQ rabbit_up 90
}

ensure_postgres
ensure_redis
ensure_rabbitmq
