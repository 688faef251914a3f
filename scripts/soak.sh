#!/usr/bin/env bash
# `make soak`: the pipeline left running, as users run it. Grows both
# databases to FILL_ORDERS orders first (`perf fill`, fast), starts its own
# stack with an outbox retention short enough that partitions expire during
# the run, then sends orders open-loop at RATE for MINUTES with `perf load`
# (latency from each request's planned time) and prints one line a minute:
# p50, p99 and errors of the minute, each service's resident memory, and
# the size of both outboxes, the checkpoints the server began, the
# longest any of its seconds waited for a core, and the
# upkeep statements it ran in that minute (vacuum, analyze, partition
# work: what a slow minute is to be read against, sampled each second).
# For each minute over the limit it then prints its slowest seconds with
# the upkeep and the commits' waits seen around each, and where the
# machine's time went in them (`perf sample-machine`: busy, stolen and
# waited-for time, each process's CPU, the services' busiest threads).
# It passes when every minute's p99 is under
# P99_LIMIT_MS, no request failed, memory stayed flat, the outboxes' size
# held once retention ran, and the invariants hold after the drain. Stop
# `make up` first.
#
# Settings: RATE (1000), MINUTES (30), FILL_ORDERS (2000000),
# SOAK_RETENTION_HOURS (0.1: six minutes), P99_LIMIT_MS (25), BIN_DIR,
# SOAK_ORDER_DATABASE_URL and SOAK_PRODUCT_DATABASE_URL (default: the
# settings' databases with `_soak` after their name).
set -euo pipefail

RATE=${RATE:-1000}
MINUTES=${MINUTES:-30}
FILL_ORDERS=${FILL_ORDERS:-2000000}
P99_LIMIT_MS=${P99_LIMIT_MS:-25}
export OUTBOX_RETENTION_HOURS=${SOAK_RETENTION_HOURS:-0.1}
export RUST_LOG=${RUST_LOG:-warn}
bin=${BIN_DIR:-target/release}
ORDER_URL=${ORDER_URL:-http://127.0.0.1:${ORDER_PORT:-8080}}
PRODUCT_URL=${PRODUCT_URL:-http://127.0.0.1:${PRODUCT_PORT:-3000}}
ORDER_ADMIN_URL=${ORDER_ADMIN_URL:-http://127.0.0.1:${ORDER_ADMIN_PORT:-9380}}
PRODUCT_ADMIN_URL=${PRODUCT_ADMIN_URL:-http://127.0.0.1:${PRODUCT_ADMIN_PORT:-9330}}
export ORDER_URL PRODUCT_URL ORDER_ADMIN_URL PRODUCT_ADMIN_URL

# Databases of its own (`orders_soak`, `products_soak` beside the ones in
# the settings), kept between runs so that the fill is paid once; made
# by the first start with the soak's retention, so that their partitions
# have its length from the start.
. "$(dirname "$0")/dburl.sh"
service_urls order "${SOAK_ORDER_DATABASE_URL:-$(db_url "$ORDER_DATABASE_URL" "$(db_name "$ORDER_DATABASE_URL")_soak")}"
service_urls product "${SOAK_PRODUCT_DATABASE_URL:-$(db_url "$PRODUCT_DATABASE_URL" "$(db_name "$PRODUCT_DATABASE_URL")_soak")}"

dir="$PWD/reports/$(date +%Y%m%d-%H%M%S)-soak"
mkdir -p "$dir"
# Tokens for the whole soak (scripts/auth.sh); the key pair exists before
# the services start.
. scripts/auth.sh
local_tokens "$bin" "$dir"
if curl -fsS "$ORDER_URL/healthz" >/dev/null 2>&1 || curl -fsS "$PRODUCT_URL/healthz" >/dev/null 2>&1; then
  echo "a service already answers on $ORDER_URL or $PRODUCT_URL: stop \`make up\` first (soak runs its own)" >&2
  exit 1
fi
echo "soak: $RATE orders/s for $MINUTES minutes, outbox retention ${OUTBOX_RETENTION_HOURS} h -> $dir" >&2
scripts/services.sh
provision "$bin" product order

# The services make their tables first (a fresh database), then stop for the fill.
pids=()
start() {
  "$bin/product" >>"$dir/product.log" 2>&1 & pids+=($!)
  "$bin/order" >>"$dir/order.log" 2>&1 & pids+=($!)
}
stop() { kill -TERM "${pids[@]}" 2>/dev/null || true; wait "${pids[@]}" 2>/dev/null || true; pids=(); }
wait_ready() {
  for _ in $(seq 600); do
    curl -fsS "$ORDER_ADMIN_URL/readyz" >/dev/null 2>&1 && curl -fsS "$PRODUCT_ADMIN_URL/readyz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "the stack did not become ready (logs in $dir)" >&2
  return 1
}
# The samplers started below end with the script, however it ends.
samplers=()
trap 'kill "${samplers[@]}" 2>/dev/null || true; stop' EXIT
start; wait_ready; "$bin/perf" drain >/dev/null; stop
# Redis keeps counters of products by id; a database made anew reuses the
# ids, so its keys are its own (by the database's oid).
products_oid=$(psql "$PRODUCT_DATABASE_URL" -qAtc "SELECT oid FROM pg_database WHERE datname = current_database()")
export REDIS_KEY_PREFIX="${REDIS_KEY_PREFIX:-}db${products_oid}:"
"$bin/perf" fill --orders "$FILL_ORDERS" --up-to 2>"$dir/fill.txt"
start; wait_ready

"$bin/perf" seed --out "$dir/seed.json" >/dev/null
"$bin/perf" scrape --out "$dir/metrics-before.json"

# One sample a minute: each service's RSS and both outboxes' size.
sample() {
  local order_rss product_rss order_outbox product_outbox
  order_rss=$(curl -fsS "$ORDER_ADMIN_URL/metrics" | awk '/^process_resident_memory_bytes/ {printf "%.0f", $2 / 1048576}')
  product_rss=$(curl -fsS "$PRODUCT_ADMIN_URL/metrics" | awk '/^process_resident_memory_bytes/ {printf "%.0f", $2 / 1048576}')
  outbox_mb() {
    psql "$1" -qAtc "SELECT round(COALESCE(sum(pg_total_relation_size(c.oid)), 0) / 1048576.0, 1) \
      FROM pg_class c WHERE c.relname = 'outbox' OR c.oid IN \
      (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'outbox'::regclass)"
  }
  order_outbox=$(outbox_mb "$ORDER_DATABASE_URL")
  product_outbox=$(outbox_mb "$PRODUCT_DATABASE_URL")
  echo "$order_rss $product_rss $order_outbox $product_outbox"
}
checkpoints() {
  psql "$(admin_url postgres)" -qAtc "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter"
}
# It is stopped when the load ends, perhaps in the middle of a sample:
# what that sample's commands would say then is not wanted.
(
  for minute in $(seq 0 "$MINUTES"); do
    echo "$minute $(sample) $(checkpoints)" >>"$dir/samples.txt"
    sleep 60
  done
) 2>/dev/null &
sampler=$!
samplers+=($sampler)
# Each second: the upkeep statements running on the server (the services'
# own vacuums and partition work, autovacuum's when it is on), one line
# each: seconds since the load began, database, statement; and one line
# `(waits)` of what the clients' running statements were waiting on then
# (commits on WALWrite or WALSync are waiting for the disk).
started=$(date +%s)
echo "$started" >"$dir/started.txt"
(
  while :; do
    psql "$(admin_url postgres)" -qAt -F $'\t' -c "SELECT extract(epoch FROM now())::int - $started, \
      datname, left(regexp_replace(query, '\\s+', ' ', 'g'), 60) FROM pg_stat_activity \
      WHERE state = 'active' AND pid <> pg_backend_pid() \
        AND query ~* '^\\s*(VACUUM|ANALYZE|CREATE|DROP|ALTER|CHECKPOINT)' \
      UNION ALL SELECT extract(epoch FROM now())::int - $started, '(waits)', \
        string_agg(event || ' ' || n, ', ' ORDER BY n DESC) \
      FROM (SELECT wait_event_type || ':' || wait_event AS event, count(*) AS n FROM pg_stat_activity \
        WHERE state = 'active' AND wait_event IS NOT NULL AND backend_type = 'client backend' \
          AND pid <> pg_backend_pid() GROUP BY 1) AS waiting HAVING count(*) > 0" >>"$dir/upkeep.tsv" 2>/dev/null || true
    sleep 1
  done
) &
upkeep=$!
samplers+=($upkeep)
"$bin/perf" sample-machine --out "$dir/machine.jsonl" &
machine=$!
samplers+=($machine)

window=60
"$bin/perf" load --scenario orders --rate "$RATE" --seconds $((MINUTES * 60)) --window-seconds "$window" \
  --seed "$dir/seed.json" --out "$dir/load-summary.json" >"$dir/load.txt"
kill "$sampler" "$upkeep" "$machine" 2>/dev/null || true
"$bin/perf" drain >/dev/null || true
sleep 2
"$bin/perf" scrape --out "$dir/metrics-after.json"
held=yes
"$bin/perf" check --seed "$dir/seed.json" --out "$dir/check.json" >"$dir/check.txt" 2>&1 || held=no

python3 - "$dir" "$P99_LIMIT_MS" "$held" "$OUTBOX_RETENTION_HOURS" "$window" <<'EOF' | tee "$dir/soak.txt"
import json, sys
d, limit, held, retention_hours = sys.argv[1], float(sys.argv[2]), sys.argv[3] == "yes", float(sys.argv[4])
window = int(sys.argv[5])
# When the load began, in seconds since the epoch (upkeep.tsv counts from it).
started = int(open(f"{d}/started.txt").read())
steps = json.load(open(f"{d}/load-summary.json"))["steps"]
samples = {}
for line in open(f"{d}/samples.txt"):
    minute, *values = line.split()
    samples[int(minute)] = [float(v) for v in values]
# Upkeep seen running at each second (since the load began), by
# database and statement, and the clients' waits then.
upkeep_at, waits_at = {}, {}
try:
    for line in open(f"{d}/upkeep.tsv"):
        second, database, statement = line.rstrip("\n").split("\t", 2)
        if database == "(waits)":
            waits_at[int(second)] = statement
        else:
            upkeep_at.setdefault(int(second), set()).add(f"{database}: {statement}")
except FileNotFoundError:
    pass
# Where the machine's time went at each second (the sampler's reading
# at its end).
machine_at = {}
try:
    for line in open(f"{d}/machine.jsonl"):
        try:
            second = json.loads(line)
        except ValueError:
            continue  # the last line, cut off when the sampler was stopped
        machine_at[int(second["at"]) - 1 - started] = second
except FileNotFoundError:
    pass
def window_of(second):
    return second // window + 1
def seconds_seen(n):
    counts = {}
    for second, statements in upkeep_at.items():
        if window_of(second) == n:
            for what in statements:
                counts[what] = counts.get(what, 0) + 1
    return counts
def waited_most(n):
    # The most any second of the window waited for a core, in ms.
    waits = [m["cpu_waited_ms"] for s, m in machine_at.items() if window_of(s) == n and m.get("cpu_waited_ms") is not None]
    return max(waits) if waits else float("nan")
def machine_line(second):
    m = machine_at.get(second)
    if m is None:
        return "not sampled"
    ms = lambda v: "?" if v is None else f"{v:.0f}"
    processes = ", ".join(f"{name} {cpu:.0f}" for name, cpu in m["processes"].items())
    others = ", ".join(f"{name} {cpu:.0f}" for name, cpu in m["busiest_others"])
    threads = "; ".join(f"{service}: " + ", ".join(f"{name} {cpu:.0f}" for name, cpu in listed)
                        for service, listed in m["threads"].items() if listed)
    return (f"busy {m['busy']:.0f}% (steal {m['steal']:.0f}, iowait {m['iowait']:.0f}), "
            f"waited for a core {ms(m['cpu_waited_ms'])} ms, disk {ms(m['io_waited_ms'])} ms, "
            f"runnable {m['running']}; {processes}; others {m['others']:.0f} ({others}); threads {threads or 'none'}")
print(f"{'minute':>6} {'rate':>6} {'p50 ms':>7} {'p99 ms':>8} {'errors':>6} {'order MB':>8} {'product MB':>10} {'outbox MB o/p':>14} {'ckpt':>4} {'core wait':>9}  upkeep (seconds seen)")
for n, step in enumerate(steps, start=1):
    s = samples.get(n, [float("nan")] * 5)
    # Checkpoints begun since the minute before (none known without both samples).
    begun = s[4] - samples[n - 1][4] if len(s) > 4 and n in samples and n - 1 in samples else float("nan")
    seen = "; ".join(f"{what} ({count})" for what, count in sorted(seconds_seen(n).items()))
    print(f"{n:>6} {step['achieved']:>6.0f} {step['p50_ms']:>7.2f} {step['p99_ms']:>8.2f} {step['errors']:>6} "
          f"{s[0]:>8.0f} {s[1]:>10.0f} {s[2]:>6.1f}/{s[3]:<6.1f} {begun:>4.0f} {waited_most(n):>9.0f}  {seen}")
# Where in a slow minute its stall was: its slowest seconds (since the
# load began, as upkeep.tsv counts them), the upkeep seen within two
# seconds of each, and the machine in it and the seconds either side
# (an answer planned in one second may be waited for into the next).
for n, step in enumerate(steps, start=1):
    worst_by_second = step.get("worst_ms_by_second", [])
    if step["p99_ms"] < limit or not worst_by_second:
        continue
    slowest = sorted(sorted(range(len(worst_by_second)), key=lambda i: -worst_by_second[i])[:3])
    for i in slowest:
        at = (n - 1) * window + i
        near = sorted(set().union(*(upkeep_at.get(at + k, set()) for k in range(-2, 3))))
        waits = "; ".join(f"{at + k}: {waits_at[at + k]}" for k in range(-1, 2) if at + k in waits_at)
        print(f"  minute {n}, second {at}: slowest answer {worst_by_second[i]:.0f} ms; "
              f"upkeep within 2 s: {'; '.join(near) or 'none'}; waits seen: {waits or 'none'}")
        for k in (-1, 0, 1):
            print(f"    machine at {at + k}: {machine_line(at + k)}")
before, after = (json.load(open(f"{d}/metrics-{w}.json")) for w in ("before", "after"))
orders = sum(step["orders"] for step in steps)
cpu = {k: after["cpu"]["seconds"].get(k, 0) - before["cpu"]["seconds"].get(k, 0) for k in after["cpu"]["seconds"]}
pipeline = sum(cpu.get(k, 0) for k in ("postgres", "order", "rabbitmq", "product", "redis"))
wal = {k: after["wal"][k] - before["wal"][k] for k in after["wal"]} if after.get("wal") and before.get("wal") else None
print(f"orders {orders}; pipeline CPU {1e6 * pipeline / max(orders, 1):.0f} µs per order"
      + (f"; WAL {wal['records'] / max(orders, 1):.1f} records, {wal['bytes'] / max(orders, 1):.0f} bytes per order" if wal else ""))
worst = max(step["p99_ms"] for step in steps)
errors = sum(step["errors"] for step in steps)
minutes = sorted(samples)
# Once retention ran: past the window, the first slice (the migration's
# ten minutes) and a minute of upkeep, and in the run's second half.
settled = [m for m in minutes if m >= max(retention_hours * 60 + 11, len(steps) / 2)]
rss_flat = all(samples[minutes[-1]][i] <= 1.2 * samples[minutes[1]][i] + 5 for i in (0, 1)) if len(minutes) > 2 else True
outbox_flat = all(max(samples[m][i] for m in settled) <= 1.3 * min(samples[m][i] for m in settled) + 2 for i in (2, 3)) if len(settled) > 2 else True
checks = {f"p99 of every minute < {limit:g} ms (worst {worst:.1f})": worst < limit,
          f"no failed request ({errors})": errors == 0,
          "memory flat": rss_flat,
          "outbox size flat once retention ran": outbox_flat,
          "invariants hold": held}
for name, ok in checks.items():
    print(f"  {'ok  ' if ok else 'FAIL'} {name}")
print("PASS" if all(checks.values()) else "FAIL")
sys.exit(0 if all(checks.values()) else 1)
EOF
