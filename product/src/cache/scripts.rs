//! The Lua scripts that keep Redis consistent with PostgreSQL. Each runs
//! atomically in Redis, so no reader sees half an update.
//!
//! Everything is ordered by the product row's `version`, which grows with
//! every committed change: Redis never takes a value older than the one it
//! has, so applying a change twice, or two changes out of order, is a no-op.

/// Fills the cache after a miss, unless a write newer than what was read
/// happened meanwhile (its fence is higher than the version read).
/// KEYS: cache, fence. ARGV: json, version, ttl seconds. Returns 1 if filled.
pub(crate) const FILL: &str = r"
local fence = tonumber(redis.call('GET', KEYS[2]) or '0')
if fence > tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[3]))
return 1
";

/// Invalidates after a write: raises the fence to the written version (so a
/// slower reader cannot put the old value back) and deletes the entry.
/// Every fence restarts the fence's TTL, even when the version is not new:
/// a write fenced again (a retried invalidation) is as recent as the retry.
/// KEYS: cache, fence. ARGV: version, fence ttl seconds.
pub(crate) const INVALIDATE: &str = r"
local fence = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[1]) > fence then
  redis.call('SET', KEYS[2], ARGV[1], 'EX', tonumber(ARGV[2]))
else
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[2]))
end
redis.call('DEL', KEYS[1])
return 1
";

/// Applies committed stock changes to the live counters.
/// KEYS: one stock hash per product. ARGV: per key, (decrement, stock,
/// version) after the commit. A counter one version behind is decremented
/// (the common case); one further behind, or missing, takes the committed
/// value; one at or past the version is left alone (already applied). If a
/// decrement does not land on the committed stock, the counter had drifted:
/// it takes the committed value and the drift is counted.
/// Returns the number of drifted counters repaired.
pub(crate) const SYNC_STOCK: &str = r"
local drifted = 0
for i, key in ipairs(KEYS) do
  local decrement = tonumber(ARGV[3 * i - 2])
  local stock = tonumber(ARGV[3 * i - 1])
  local version = tonumber(ARGV[3 * i])
  local current = tonumber(redis.call('HGET', key, 'version') or '-1')
  if current == version - 1 and decrement ~= 0 then
    local after = redis.call('HINCRBY', key, 'stock', -decrement)
    if after ~= stock then
      redis.call('HSET', key, 'stock', stock)
      drifted = drifted + 1
    end
    redis.call('HSET', key, 'version', version)
  elseif current < version then
    redis.call('HSET', key, 'stock', stock, 'version', version)
  end
end
return drifted
";

/// Rebuilds counters from SQL values read now: like [`SYNC_STOCK`] without
/// the decrement, but also overwrites a counter at the same version whose
/// stock differs. Returns, per key, 1 if it was missing or wrong.
/// KEYS: stock hashes. ARGV: per key, (stock, version).
pub(crate) const RECONCILE_STOCK: &str = r"
local fixed = {}
for i, key in ipairs(KEYS) do
  local stock = tonumber(ARGV[2 * i - 1])
  local version = tonumber(ARGV[2 * i])
  local values = redis.call('HMGET', key, 'stock', 'version')
  local current_stock = tonumber(values[1] or '-1')
  local current_version = tonumber(values[2] or '-1')
  fixed[i] = 0
  if current_version <= version and (current_version ~= version or current_stock ~= stock) then
    redis.call('HSET', key, 'stock', stock, 'version', version)
    fixed[i] = 1
  end
end
return fixed
";

/// Marks a deleted product's counter with the largest version, so no late
/// stock change recreates it; it expires after a day.
/// KEYS: stock hash.
pub(crate) const TOMBSTONE_STOCK: &str = r"
redis.call('HSET', KEYS[1], 'stock', 0, 'version', '9007199254740991')
redis.call('EXPIRE', KEYS[1], 86400)
return 1
";

/// Version of a tombstoned counter (Lua numbers are doubles: 2^53 - 1).
pub const TOMBSTONE_VERSION: i64 = 9_007_199_254_740_991;
