//! The product service's settings, read from the environment once at start.

use std::time::Duration;

use outbox::settings::PipelineSettings;
use service::config::{ConfigError, Settings};

/// Everything the service needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    pub database: tokio_postgres::Config,
    pub database_pool_size: usize,
    pub redis_url: String,
    /// Prefix of every Redis key (tests and shared Redis servers).
    pub redis_key_prefix: String,
    /// Lifetime of a cached product.
    pub cache_ttl: Duration,
    pub host: String,
    /// 0 picks a free port (tests read the real one from the application).
    pub port: u16,
    /// Work in flight on the stores before requests get 503.
    pub max_in_flight: usize,
    pub request_timeout: Duration,
    pub pipeline: PipelineSettings,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::read(&Settings::new(&service::config::Environment))
    }

    pub fn read(settings: &Settings<'_>) -> Result<Self, ConfigError> {
        let database_url =
            settings.required::<String>("PRODUCT_DATABASE_URL", "a postgres:// URL")?;
        let redis_url = settings.required::<String>("REDIS_URL", "a redis:// URL")?;
        redis::Client::open(redis_url.as_str()).map_err(|error| ConfigError::Invalid {
            name: "REDIS_URL".into(),
            expected: "a redis:// URL",
            reason: error.to_string(),
        })?;
        Ok(Config {
            database: service::db::named(
                service::db::parse_url("PRODUCT_DATABASE_URL", &database_url)?,
                "product",
            ),
            database_pool_size: settings
                .optional("PRODUCT_DATABASE_POOL_SIZE", "a connection count", 16usize)?
                .max(2),
            redis_url,
            redis_key_prefix: settings.optional(
                "REDIS_KEY_PREFIX",
                "a key prefix",
                String::new(),
            )?,
            cache_ttl: Duration::from_secs(settings.optional_in(
                "PRODUCT_CACHE_TTL_SECS",
                "a number of seconds, at least 1",
                300u64,
                1..,
            )?),
            host: settings.optional("PRODUCT_HOST", "an address to bind", "0.0.0.0".to_owned())?,
            port: settings.required("PRODUCT_PORT", "a port number")?,
            max_in_flight: settings.optional_in(
                "PRODUCT_MAX_IN_FLIGHT",
                "a request count, at least 1",
                4096usize,
                1..,
            )?,
            request_timeout: settings.millis("PRODUCT_REQUEST_TIMEOUT_MS", 5000)?,
            pipeline: PipelineSettings::read(settings)?,
        })
    }
}
