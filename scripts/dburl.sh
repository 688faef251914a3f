# Sourced by the scripts that derive one database URL from another. A URL
# may list several hosts and carry attributes
# (`postgres://u@h1:5441,h2:5442/orders?target_session_attrs=read-write`,
# a Patroni cluster): only the database name is changed, every host and
# attribute is kept, so the derived URL reaches the same primary.

# db_name URL: the database URL names.
db_name() {
  python3 -c 'import sys, urllib.parse as u; print(u.unquote(u.urlsplit(sys.argv[1]).path.lstrip("/")))' "$1"
}

# db_url URL NAME: URL naming database NAME instead.
db_url() {
  python3 -c 'import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1])
print(u.urlunsplit(p._replace(path="/" + u.quote(sys.argv[2]))))' "$1" "$2"
}

# db_user URL USER: URL with USER as its user, and no password (the
# scripts' servers trust local connections; a password comes from a file).
db_user() {
  python3 -c 'import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1])
print(u.urlunsplit(p._replace(netloc=u.quote(sys.argv[2]) + "@" + p.netloc.rpartition("@")[2])))' "$1" "$2"
}

# admin_url NAME: DATABASE_ADMIN_URL (the server's administrator: for
# provisioning, dropping databases and ending sessions, never a
# service's) naming database NAME.
admin_url() {
  db_url "${DATABASE_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}" "$1"
}

# service_urls SERVICE URL: exports <SERVICE>_DATABASE_URL as URL's
# server and database reached by the service's runtime role, and
# <SERVICE>_DATABASE_OWNER_URL by its owner role (docs/SECURITY.md).
service_urls() {
  local prefix
  prefix=$(printf '%s' "$1" | tr '[:lower:]' '[:upper:]')
  export "${prefix}_DATABASE_URL=$(db_user "$2" "$1_runtime")"
  export "${prefix}_DATABASE_OWNER_URL=$(db_user "$2" "$1_owner")"
}

# provision BIN SERVICE...: makes (or repairs) each service's roles and the
# database its <SERVICE>_DATABASE_URL names, with BIN/outbox, as the
# administrator (admin_url).
provision() {
  local bin=$1 service
  shift
  for service in "$@"; do
    DATABASE_ADMIN_URL=$(admin_url postgres) "$bin/outbox" provision postgres --service "$service" >/dev/null
  done
}
