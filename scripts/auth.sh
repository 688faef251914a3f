# Sourced by the scripts that run or load the services: this machine's
# own issuer (the `token` tool; its key pair in AUTH_LOCAL_ISSUER_DIR,
# .state/auth, made on first use and never committed) and the tokens the
# tools send. Needs AUTH_ISSUER and AUTH_AUDIENCE (.env.example).
#
# local_tokens BIN DIR: makes the issuer if absent and exports
#   CATALOG_TOKEN      catalog.write, for one subject (seeding)
#   CATALOG_TOKENS_FILE  DIR/catalog-tokens.json: TOKEN_SUBJECTS (100)
#                      subjects' catalog.write tokens (the load's price
#                      changes, hundreds a second: more than one subject's
#                      rate, AUTH_SUBJECT_RATE)
#   ORDER_TOKEN        orders.place orders.read, for one subject
#   ORDER_TOKENS_FILE  DIR/order-tokens.json: TOKEN_SUBJECTS subjects'
#                      tokens of the same scopes, mixed by the load
#                      generators
# all valid TOKEN_LIFETIME_SECS (a day).
local_tokens() {
  local bin=$1 dir=$2 lifetime=${TOKEN_LIFETIME_SECS:-86400}
  local orders="orders.place orders.read"
  [ -x "$bin/token" ] || { echo "$bin/token is missing (cargo build --bins)" >&2; return 1; }
  "$bin/token" keygen >/dev/null
  CATALOG_TOKEN=$("$bin/token" mint --subject catalog-admin --scope catalog.write --lifetime-secs "$lifetime")
  ORDER_TOKEN=$("$bin/token" mint --subject script-user --scope "$orders" --lifetime-secs "$lifetime")
  "$bin/token" mint --subject load-user --scope "$orders" --subjects "${TOKEN_SUBJECTS:-100}" \
    --lifetime-secs "$lifetime" >"$dir/order-tokens.json"
  "$bin/token" mint --subject catalog-admin --scope catalog.write --subjects "${TOKEN_SUBJECTS:-100}" \
    --lifetime-secs "$lifetime" >"$dir/catalog-tokens.json"
  ORDER_TOKENS_FILE="$dir/order-tokens.json" CATALOG_TOKENS_FILE="$dir/catalog-tokens.json"
  export CATALOG_TOKEN ORDER_TOKEN ORDER_TOKENS_FILE CATALOG_TOKENS_FILE
}
