//! The two runtimes a service runs on: `may` workers for the HTTP
//! coroutines and a tokio runtime for the clients of the stores and broker.
//! Both default to one worker per core; `MAY_WORKERS` and `TOKIO_WORKERS`
//! override them.

use crate::config::{ConfigError, Environment, Settings};

/// Configures may's workers and builds the tokio runtime.
pub fn start() -> Result<tokio::runtime::Runtime, RuntimeError> {
    let settings = Settings::new(&Environment);
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let may_workers = settings
        .optional("MAY_WORKERS", "a thread count", cores)?
        .max(1);
    let tokio_workers = settings
        .optional("TOKIO_WORKERS", "a thread count", cores)?
        .max(1);
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
