//! The product service's settings, read from the environment once at start.

use std::time::Duration;

use http_api::lifecycle::HttpSettings;
use outbox::settings::PipelineSettings;
use platform::db::DatabaseSettings;
use platform::settings::{ConfigError, Settings};

/// Everything the service needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// `PRODUCT_DATABASE_URL`, `PRODUCT_DATABASE_POOL_SIZE`.
    pub database: DatabaseSettings,
    pub redis_url: String,
    /// Prefix of every Redis key (tests and shared Redis servers).
    pub redis_key_prefix: String,
    /// Lifetime of a cached product.
    pub cache_ttl: Duration,
    /// `PRODUCT_HOST`, `PRODUCT_PORT`, `PRODUCT_MAX_IN_FLIGHT`,
    /// `PRODUCT_REQUEST_TIMEOUT_MS`.
    pub http: HttpSettings,
    pub pipeline: PipelineSettings,
}

/// Where the service's Redis keys begin unless `REDIS_KEY_PREFIX` says
/// otherwise: never empty, so the service's Redis user can be limited to
/// its keys ([`crate::cache::acl`]).
pub const DEFAULT_KEY_PREFIX: &str = "order-pipeline:";

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::read(&Settings::new(&platform::settings::Environment))
    }

    pub fn read(settings: &Settings<'_>) -> Result<Self, ConfigError> {
        let redis_url = settings.required_secret("REDIS_URL")?;
        redis::Client::open(redis_url.as_str()).map_err(|error| ConfigError::Invalid {
            name: "REDIS_URL".into(),
            expected: "a redis:// URL",
            reason: error.to_string(),
        })?;
        Ok(Config {
            database: DatabaseSettings::read(settings, "product")?,
            redis_url,
            redis_key_prefix: settings.optional(
                "REDIS_KEY_PREFIX",
                "a key prefix",
                DEFAULT_KEY_PREFIX.to_owned(),
            )?,
            cache_ttl: Duration::from_secs(settings.optional_in(
                "PRODUCT_CACHE_TTL_SECS",
                "a number of seconds, at least 1",
                300u64,
                1..,
            )?),
            http: HttpSettings::read(settings, "product", 9330)?,
            pipeline: PipelineSettings::read(settings)?,
        })
    }
}
