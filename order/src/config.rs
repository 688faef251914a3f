//! The order service's settings, read from the environment once at start.

use std::time::Duration;

use outbox::settings::PipelineSettings;
use service::config::{ConfigError, Settings};

use crate::store::redrive::RedriveConfig;
use crate::store::writer::WriterConfig;

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

#[derive(Debug, Clone)]
pub struct Config {
    pub database: tokio_postgres::Config,
    pub database_pool_size: usize,
    pub host: String,
    /// 0 picks a free port (tests read the real one from the application).
    pub port: u16,
    /// The product service, asked about products the replica has not seen.
    pub product_url: String,
    pub writer: WriterConfig,
    /// Work in flight on the stores (reads, replica misses) before 503.
    pub max_in_flight: usize,
    /// Longest a request waits for its commit or read before 503.
    pub request_timeout: Duration,
    /// Orders PENDING longer than this have their `order.created` sent again.
    pub redrive: RedriveConfig,
    pub pipeline: PipelineSettings,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::read(&Settings::new(&service::config::Environment))
    }

    pub fn read(settings: &Settings<'_>) -> Result<Self, ConfigError> {
        let database_url =
            settings.required::<String>("ORDER_DATABASE_URL", "a postgres:// URL")?;
        let product_url =
            settings.required::<String>("PRODUCT_URL", "an http:// URL of the product service")?;
        if !product_url.starts_with("http://") && !product_url.starts_with("https://") {
            return Err(ConfigError::Invalid {
                name: "PRODUCT_URL".into(),
                expected: "an http:// URL of the product service",
                reason: "it does not start with http:// or https://".into(),
            });
        }
        let request_timeout = settings.millis("ORDER_REQUEST_TIMEOUT_MS", 5000)?;
        Ok(Config {
            database: service::db::named(
                service::db::parse_url("ORDER_DATABASE_URL", &database_url)?,
                "order",
            ),
            database_pool_size: settings.optional_in(
                "ORDER_DATABASE_POOL_SIZE",
                "a connection count, at least 2",
                16usize,
                2..,
            )?,
            host: settings.optional("ORDER_HOST", "an address to bind", "0.0.0.0".to_owned())?,
            port: settings.required("ORDER_PORT", "a port number")?,
            product_url: product_url.trim_end_matches('/').to_owned(),
            writer: WriterConfig {
                statement_timeout: request_timeout,
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
            max_in_flight: settings.optional_in(
                "ORDER_MAX_IN_FLIGHT",
                "a request count, at least 1",
                4096usize,
                1..,
            )?,
            request_timeout,
            redrive: RedriveConfig {
                after: redrive_after(settings)?,
                page: 500,
            },
            pipeline: PipelineSettings::read(settings)?,
        })
    }
}
