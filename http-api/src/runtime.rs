//! The two runtimes a service runs on: `may` workers for the HTTP
//! coroutines and a tokio runtime for the clients of the stores and broker.
//! Each defaults to one worker per two cores (at least one): a service's
//! two runtimes then have a thread per core between them. More threads per
//! runtime spent more CPU parking and waking each other than they saved
//! (on two cores, one of each cut the order service's CPU per order by a
//! fifth: docs/PERFORMANCE.md). `MAY_WORKERS` and `TOKIO_WORKERS` override
//! them.

use platform::settings::{ConfigError, Environment, Settings};

/// Configures may's workers and builds the tokio runtime.
pub fn start() -> Result<tokio::runtime::Runtime, RuntimeError> {
    let settings = Settings::new(&Environment);
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let per_runtime = (cores / 2).max(1);
    let may_workers = settings.optional_in(
        "MAY_WORKERS",
        "a thread count, at least 1",
        per_runtime,
        1..,
    )?;
    let tokio_workers = settings.optional_in(
        "TOKIO_WORKERS",
        "a thread count, at least 1",
        per_runtime,
        1..,
    )?;
    may::config().set_workers(may_workers);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(tokio_workers)
        .thread_name("tokio")
        .enable_all()
        .build()
        .map_err(RuntimeError::Tokio)?;
    Ok(runtime)
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the tokio runtime could not start: {0}")]
    Tokio(std::io::Error),
}
