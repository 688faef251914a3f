#!/usr/bin/env bash
# What dropping a large table costs the commits around it: pgbench commits
# one small insert at a time at RATE a second for 40 s on a database of its
# own (`drop_stall`, on DATABASE_ADMIN_URL's server); 20 s in, a table of
# ROWS rows of 300 bytes (written and checkpointed first) is dropped, as
# the outbox's upkeep drops an expired partition. Prints, for the seconds
# around the drop, the commits of each second and their p99 and worst
# latency (counted from each one's planned start, so a stall shows whole).
#
# Settings: ROWS (2000000: about 650 MB), RATE (1000), DATABASE_ADMIN_URL.
set -euo pipefail
. "$(dirname "$0")/dburl.sh"
ROWS=${ROWS:-2000000}
RATE=${RATE:-1000}
url=$(admin_url drop_stall)
work=$(mktemp -d)
trap 'rm -rf "$work"; psql "$(admin_url postgres)" -qc "DROP DATABASE IF EXISTS drop_stall" >/dev/null 2>&1 || true' EXIT

psql "$(admin_url postgres)" -qc "DROP DATABASE IF EXISTS drop_stall" -qc "CREATE DATABASE drop_stall"
psql "$url" -qAt \
  -c "CREATE TABLE commits (id bigserial PRIMARY KEY, v text)" \
  -c "CREATE TABLE expired AS SELECT g, repeat('x', 300) AS v FROM generate_series(1, $ROWS) g" \
  -c "SELECT 'table to drop: ' || pg_size_pretty(pg_total_relation_size('expired'))" \
  -c "CHECKPOINT"
echo "INSERT INTO commits (v) VALUES (repeat('y', 200));" >"$work/commit.sql"
(cd "$work" && pgbench -n -c 4 -j 2 -R "$RATE" -T 40 -f commit.sql -l "$url" >/dev/null 2>&1) &
bench=$!
sleep 20
date +%s.%N >"$work/dropped_at"
start=$(date +%s%N)
psql "$url" -qc "DROP TABLE expired"
echo "DROP TABLE took $(( ($(date +%s%N) - start) / 1000000 )) ms"
wait "$bench"
python3 - "$work" <<'EOF'
import collections, glob, math, sys
work = sys.argv[1]
dropped = float(open(f"{work}/dropped_at").read())
by_second = collections.defaultdict(list)
for log in glob.glob(f"{work}/pgbench_log.*"):
    for line in open(log):
        fields = line.split()
        # client, transaction, latency µs, script, epoch s, µs, schedule lag µs
        done = int(fields[4]) + int(fields[5]) / 1e6
        by_second[math.floor(done - dropped)].append(int(fields[2]) / 1000)
print(f"{'second':>6} {'commits':>7} {'p99 ms':>7} {'max ms':>7}")
for second in range(-3, 6):
    latencies = sorted(by_second.get(second, []))
    if latencies:
        p99 = latencies[max(0, int(0.99 * len(latencies)) - 1)]
        print(f"{second:>6} {len(latencies):>7} {p99:>7.1f} {latencies[-1]:>7.1f}")
EOF
