# Sourced by the scripts that run a stack of their own to put faults into
# it (chaos.sh, alert-drill.sh, cluster-chaos.sh, pg-cluster-chaos.sh):
# starting its processes, telling when both services are ready again, and
# timing what happened, with the tokens of this machine's issuer. They set
# $dir (logs and pid files), $bin, ORDER_URL and PRODUCT_URL first, and
# ORDER_ADMIN_URL and PRODUCT_ADMIN_URL (the admin listeners) if not the
# defaults.

# start NAME COMMAND...: runs COMMAND in the background, its output
# appended to $dir/NAME.log and its pid in $dir/NAME.pid.
start() {
  local name=$1
  shift
  "$@" >>"$dir/$name.log" 2>&1 &
  echo $! >"$dir/$name.pid"
}

# pid_of NAME: the pid start NAME wrote.
pid_of() { cat "$dir/$1.pid"; }

ORDER_ADMIN_URL=${ORDER_ADMIN_URL:-http://127.0.0.1:${ORDER_ADMIN_PORT:-9380}}
PRODUCT_ADMIN_URL=${PRODUCT_ADMIN_URL:-http://127.0.0.1:${PRODUCT_ADMIN_PORT:-9330}}
export ORDER_ADMIN_URL PRODUCT_ADMIN_URL

# stack_ready [PATTERN]: whether both services' /readyz (on their admin
# listeners) match PATTERN (by default: their RabbitMQ connection is up).
stack_ready() {
  local pattern=${1:-'"rabbitmq":"up"'}
  curl -fsS "$ORDER_ADMIN_URL/readyz" 2>/dev/null | grep -q "$pattern" &&
    curl -fsS "$PRODUCT_ADMIN_URL/readyz" 2>/dev/null | grep -q "$pattern"
}

# wait_for_stack [PATTERN]: stack_ready within 60 s, or fails.
wait_for_stack() {
  for _ in $(seq 1200); do stack_ready "$@" && return 0; sleep 0.05; done
  return 1
}

# The tokens the load and the checks send (scripts/auth.sh), valid for
# the run: the issuer's key pair is made before the services start.
. "$(dirname "${BASH_SOURCE[0]}")/auth.sh"
local_tokens "$bin" "$dir"

# Both services' roles and databases, as an administrator makes them
# (dburl.sh's provision); nothing changes if they are there already.
. "$(dirname "${BASH_SOURCE[0]}")/dburl.sh"
provision "$bin" product order

# now_us: the time in microseconds.
now_us() { echo "${EPOCHREALTIME/./}"; }

# seconds_between START_US END_US: the seconds between two now_us, to the
# hundredth.
seconds_between() {
  local elapsed=$(($2 - $1))
  printf '%d.%02d' $((elapsed / 1000000)) $(((elapsed / 10000) % 100))
}
