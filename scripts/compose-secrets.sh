#!/usr/bin/env bash
# Makes the secrets docker-compose.yml reads, once, in .state/secrets (a
# folder only its owner may enter; never committed): PostgreSQL's
# superuser password and its URL for the provisioning step, each
# service's two database URLs (runtime and owner roles, each with a
# password of its own, which `outbox provision postgres` sets from them),
# and Grafana's admin password. A file that exists is kept.
set -euo pipefail
dir=${SECRETS_DIR:-.state/secrets}
mkdir -p "$dir"
chmod 700 "$dir"

# write NAME VALUE: NAME in the folder unless it exists. Readable inside
# the containers, whose users are not this machine's.
write() {
  [ -e "$dir/$1" ] && return
  (umask 022 && printf '%s\n' "$2" >"$dir/$1")
  echo "made $dir/$1" >&2
}
password() { openssl rand -hex 16; }

write postgres-password "$(password)"
write postgres-admin-url "postgres://postgres:$(head -1 "$dir/postgres-password")@postgres:5432/postgres"
for service in order product; do
  write "$service-database-url" "postgres://${service}_runtime:$(password)@postgres:5432/${service}s"
  write "$service-database-owner-url" "postgres://${service}_owner:$(password)@postgres:5432/${service}s"
done
write grafana-admin-password "$(password)"
write rabbitmq-erlang-cookie "$(openssl rand -hex 32)"
