//! Token buckets by key: requests per subject, failed authentications per
//! peer address. Buckets live in sharded maps; a shard that grows past its
//! share forgets the buckets that are full again (a caller gone quiet),
//! so memory stays bounded by the callers of the last moments.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SHARDS: usize = 16;
/// Buckets a shard holds before it forgets the full ones.
const SHARD_TIDY_AT: usize = 4_096;

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A token bucket per key: `rate` tokens a second, at most `burst`.
pub(crate) struct Buckets<K> {
    rate: f64,
    burst: f64,
    hasher: RandomState,
    shards: Vec<Mutex<HashMap<K, Bucket>>>,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    pub(crate) fn new(rate: f64, burst: f64) -> Self {
        Buckets {
            rate,
            burst,
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    /// Takes a token from `key`'s bucket: `Ok` if there was one, else how
    /// long until there is.
    pub(crate) fn take(&self, key: &K) -> Result<(), Duration> {
        self.with_bucket(key, |bucket| {
            self.wait_for(bucket.tokens)?;
            bucket.tokens -= 1.0;
            Ok(())
        })
    }

    /// Whether `key`'s bucket is empty, and how long until it is not;
    /// takes nothing, and makes no bucket for a key that has none (a full
    /// one): the clients that never fail cost no memory.
    pub(crate) fn check(&self, key: &K) -> Result<(), Duration> {
        let buckets = self.shard(key);
        match buckets.get(key) {
            Some(bucket) => self.wait_for(self.tokens_at(bucket, Instant::now())),
            None => Ok(()),
        }
    }

    fn with_bucket<T>(&self, key: &K, use_bucket: impl FnOnce(&mut Bucket) -> T) -> T {
        let mut buckets = self.shard(key);
        let now = Instant::now();
        if buckets.len() >= SHARD_TIDY_AT && !buckets.contains_key(key) {
            buckets.retain(|_, bucket| self.tokens_at(bucket, now) < self.burst);
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        bucket.tokens = self.tokens_at(bucket, now);
        bucket.at = now;
        use_bucket(bucket)
    }

    fn shard(&self, key: &K) -> std::sync::MutexGuard<'_, HashMap<K, Bucket>> {
        self.shards[self.hasher.hash_one(key) as usize % SHARDS]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The tokens a bucket holds at `now`: refilled since it was last
    /// used, at most the burst.
    fn tokens_at(&self, bucket: &Bucket, now: Instant) -> f64 {
        let refill = now.duration_since(bucket.at).as_secs_f64() * self.rate;
        (bucket.tokens + refill).min(self.burst)
    }

    /// `Ok` when `tokens` hold one, else how long until they do.
    fn wait_for(&self, tokens: f64) -> Result<(), Duration> {
        if tokens >= 1.0 {
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - tokens) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_gives_its_burst_then_says_when_to_come_back() {
        let buckets = Buckets::new(1.0, 3.0);
        for _ in 0..3 {
            assert!(buckets.take(&"alice").is_ok());
        }
        let wait = buckets.take(&"alice").unwrap_err();
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(buckets.check(&"alice").is_err());
        assert!(buckets.take(&"bob").is_ok(), "each key has its own bucket");
    }

    #[test]
    fn a_check_makes_no_bucket() {
        let buckets = Buckets::new(1.0, 1.0);
        for key in 0..1000 {
            assert!(buckets.check(&key).is_ok());
        }
        let held: usize = buckets
            .shards
            .iter()
            .map(|shard| shard.lock().unwrap().len())
            .sum();
        assert_eq!(held, 0);
    }

    #[test]
    fn quiet_keys_are_forgotten_when_a_shard_fills() {
        // Refilled within nanoseconds: every bucket is full again at once.
        let buckets = Buckets::new(1e9, 1.0);
        for key in 0..(SHARDS * SHARD_TIDY_AT * 2) {
            let _ = buckets.take(&key);
        }
        let held: usize = buckets
            .shards
            .iter()
            .map(|shard| shard.lock().unwrap().len())
            .sum();
        assert!(held <= SHARDS * SHARD_TIDY_AT, "{held} buckets held");
    }
}
