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
