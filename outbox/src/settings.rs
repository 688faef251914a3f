//! The pipeline settings both services read from the environment: broker,
//! relay, consumers and retention. The `outbox` tool reads the same names.

use std::time::Duration;

use platform::settings::{ConfigError, Settings};

use crate::consumer::ConsumerConfig;
use crate::relay::RelayConfig;
use crate::retention::Retention;
use crate::topology::{QueueType, Topology};

/// Broker, relay, consumer and retention settings.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    pub amqp_url: crate::broker::BrokerUrl,
    /// Prefix of every exchange and queue name (`AMQP_NAMESPACE`).
    pub namespace: String,
    pub queue_type: QueueType,
    /// Whether the service runs its relays in-process (`RELAY_ENABLED`).
    pub relay_enabled: bool,
    /// Relays the service runs in-process (`RELAY_WORKERS`, default 1):
    /// each has its own broker connection; while one waits for confirms
    /// another claims. Two send 97% of a channel's ceiling where one sends
    /// 63%, but on a machine short of CPU the second relay costs the
    /// requests more than it gains (docs/PERFORMANCE.md).
    pub relay_workers: usize,
    pub relay_batch_size: usize,
    pub relay_claim_partitions: i64,
    pub relay_events_per_message: usize,
    pub relay_poll_interval: Duration,
    pub relay_max_attempts: i32,
    pub relay_linger: Duration,
    /// Longest wait for a batch's publisher confirms (`RELAY_CONFIRM_TIMEOUT_MS`).
    pub relay_confirm_timeout: Duration,
    pub consumer_prefetch: u16,
    pub consumer_linger: Duration,
    pub retention: Retention,
    /// Queues left unused this long are deleted by the broker
    /// (`AMQP_QUEUE_EXPIRES_MS`; for tests and throwaway environments).
    pub queue_expires: Option<Duration>,
}

impl PipelineSettings {
    pub fn read(settings: &Settings<'_>) -> Result<Self, ConfigError> {
        let relay_workers = settings.optional_in(
            "RELAY_WORKERS",
            "a relay count from 1 to 16",
            1usize,
            1..=16,
        )?;
        let amqp_url = settings.required_secret("AMQP_URL")?;
        crate::broker::parse_url("AMQP_URL", &amqp_url)?;
        let retention = Retention::read(settings)?;
        Ok(PipelineSettings {
            amqp_url: crate::broker::BrokerUrl::new(&amqp_url),
            namespace: settings.optional("AMQP_NAMESPACE", "a name prefix", String::new())?,
            queue_type: settings.optional(
                "AMQP_QUEUE_TYPE",
                "quorum or classic",
                QueueType::Quorum,
            )?,
            relay_enabled: settings.optional("RELAY_ENABLED", "true or false", true)?,
            relay_workers,
            relay_batch_size: settings.optional_in(
                "RELAY_BATCH_SIZE",
                "a row count, at least 1",
                1000usize,
                1..,
            )?,
            // Unset, the partitions are shared evenly between this process's relays.
            relay_claim_partitions: settings.optional_in(
                "RELAY_CLAIM_PARTITIONS",
                "a partition count from 1 to 16",
                16 / relay_workers as i64,
                1..=16,
            )?,
            relay_events_per_message: settings.optional_in(
                "RELAY_EVENTS_PER_MESSAGE",
                "an event count, at least 1",
                1usize,
                1..,
            )?,
            relay_poll_interval: settings.millis("RELAY_POLL_INTERVAL_MS", 500)?,
            relay_max_attempts: settings.optional_in(
                "RELAY_MAX_ATTEMPTS",
                "an attempt count, at least 1",
                5i32,
                1..,
            )?,
            consumer_prefetch: settings.optional_in(
                "CONSUMER_PREFETCH",
                "a count from 1 to 65535",
                256u16,
                1..,
            )?,
            relay_linger: settings.millis("RELAY_LINGER_MS", 35)?,
            relay_confirm_timeout: settings.millis("RELAY_CONFIRM_TIMEOUT_MS", 10_000)?,
            consumer_linger: settings.millis("CONSUMER_LINGER_MS", 2)?,
            retention,
            queue_expires: Some(settings.optional::<u64>(
                "AMQP_QUEUE_EXPIRES_MS",
                "a number of milliseconds",
                0,
            )?)
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis),
        })
    }

    pub fn topology(&self) -> Topology {
        let topology = Topology::new(&self.namespace, self.queue_type);
        match self.queue_expires {
            Some(idle) => topology.expiring_after(idle),
            None => topology,
        }
    }

    /// The relay of a service whose events go to `exchange`.
    pub fn relay_config(&self, exchange: &str, connection_name: &str) -> RelayConfig {
        RelayConfig {
            connection_name: connection_name.to_owned(),
            batch_size: self.relay_batch_size,
            claim_partitions: self.relay_claim_partitions,
            events_per_message: self.relay_events_per_message,
            poll_interval: self.relay_poll_interval,
            max_attempts: self.relay_max_attempts,
            linger: self.relay_linger,
            confirm_timeout: self.relay_confirm_timeout,
            ..RelayConfig::new(&self.amqp_url, exchange)
        }
    }

    /// The consumer of `queue`.
    pub fn consumer_config(&self, queue: &str, connection_name: &str) -> ConsumerConfig {
        ConsumerConfig {
            connection_name: connection_name.to_owned(),
            prefetch: self.consumer_prefetch,
            linger: self.consumer_linger,
            ..ConsumerConfig::new(&self.amqp_url, queue)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: (&str, &str) = ("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f");

    fn read(pairs: &[(&'static str, &'static str)]) -> Result<PipelineSettings, ConfigError> {
        let mut source = vec![URL];
        source.extend_from_slice(pairs);
        PipelineSettings::read(&Settings::new(&source))
    }

    #[test]
    fn relay_settings_out_of_range_stop_the_start_naming_the_setting() {
        for (name, value) in [
            ("RELAY_WORKERS", "0"),
            ("RELAY_WORKERS", "17"),
            ("RELAY_CLAIM_PARTITIONS", "0"),
            ("RELAY_CLAIM_PARTITIONS", "32"),
            ("RELAY_BATCH_SIZE", "0"),
            ("RELAY_EVENTS_PER_MESSAGE", "0"),
            ("RELAY_MAX_ATTEMPTS", "0"),
            ("CONSUMER_PREFETCH", "0"),
        ] {
            let error = read(&[(name, value)])
                .map(|_| ())
                .expect_err(&format!("{name}={value} was accepted"));
            assert!(error.to_string().starts_with(name), "{error}");
        }
        let settings = read(&[("RELAY_WORKERS", "4")]).unwrap();
        assert_eq!(
            (settings.relay_workers, settings.relay_claim_partitions),
            (4, 4)
        );
    }
}
