//! The order service's settings, read from the environment once at start.

use std::time::Duration;

use http_api::lifecycle::HttpSettings;
use outbox::settings::PipelineSettings;
use platform::db::DatabaseSettings;
use platform::settings::{ConfigError, Settings};

use crate::store::redrive::RedriveConfig;
use crate::store::writer::WriterConfig;

#[derive(Debug, Clone)]
pub struct Config {
    /// `ORDER_DATABASE_URL`, `ORDER_DATABASE_POOL_SIZE`.
    pub database: DatabaseSettings,
    /// `ORDER_HOST`, `ORDER_PORT`, `ORDER_MAX_IN_FLIGHT`,
    /// `ORDER_REQUEST_TIMEOUT_MS` (also how long a request waits for its
    /// commit).
    pub http: HttpSettings,
    /// The product service, asked about products the replica has not seen.
    pub product_url: String,
    pub writer: WriterConfig,
    /// Orders PENDING longer than this have their `order.created` sent again.
    pub redrive: RedriveConfig,
    pub pipeline: PipelineSettings,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::read(&Settings::new(&platform::settings::Environment))
    }

    pub fn read(settings: &Settings<'_>) -> Result<Self, ConfigError> {
        let http = HttpSettings::read(settings, "order", 9380)?;
        Ok(Config {
            database: DatabaseSettings::read(settings, "order")?,
            product_url: product_url(settings)?,
            writer: WriterConfig {
                statement_timeout: http.request_timeout,
                writers: settings.optional_in(
                    "ORDER_WRITERS",
                    "a task count, at least 1",
                    1usize,
                    1..,
                )?,
                max_batch: settings.optional_in(
                    "ORDER_WRITER_BATCH",
                    "an order count, at least 1",
                    256usize,
                    1..,
                )?,
                linger: settings.millis("ORDER_WRITER_LINGER_MS", 4)?,
                capacity: settings.optional_in(
                    "ORDER_QUEUE_CAPACITY",
                    "an order count, at least 1",
                    4096usize,
                    1..,
                )?,
            },
            redrive: RedriveConfig {
                after: redrive_after(settings)?,
                page: 5000,
                // Queued up to the request timeout, then committed within
                // the statement timeout (the same) and the answer grace.
                settled: http.request_timeout * 2 + Duration::from_secs(2),
            },
            pipeline: PipelineSettings::read(settings)?,
            http,
        })
    }
}

/// `PRODUCT_URL`, an http(s) URL without its trailing slash.
fn product_url(settings: &Settings<'_>) -> Result<String, ConfigError> {
    const EXPECTED: &str = "an http:// URL of the product service";
    let url = settings.required::<String>("PRODUCT_URL", EXPECTED)?;
    if !url.starts_with("http://") && !url.starts_with("https://") {
        return Err(ConfigError::Invalid {
            name: "PRODUCT_URL".into(),
            expected: EXPECTED,
            reason: "it does not start with http:// or https://".into(),
        });
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// `ORDER_REDRIVE_AFTER_SECS`: at least a second.
fn redrive_after(settings: &Settings<'_>) -> Result<Duration, ConfigError> {
    const NAME: &str = "ORDER_REDRIVE_AFTER_SECS";
    let seconds: u64 = settings.optional(NAME, "a whole number of seconds, 1 or more", 60)?;
    if seconds == 0 {
        return Err(ConfigError::Invalid {
            name: NAME.into(),
            expected: "a whole number of seconds, 1 or more",
            reason: "0 would re-drive every order at once".into(),
        });
    }
    Ok(Duration::from_secs(seconds))
}
