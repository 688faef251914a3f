//! `product`: serves the product API (the default), or `product reconcile`
//! rebuilds the Redis stock counters from PostgreSQL.

use clap::{Parser, Subcommand};
use product::{config::Config, reconcile};

#[derive(Parser)]
#[command(version, about = "The product service")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API, the stock consumer and the relay (the default).
    Serve,
    /// Rebuild the Redis stock counters from PostgreSQL and report drift.
    Reconcile,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    platform::telemetry::init();
    platform::tls::install_crypto_provider();
    let config = Config::from_env()?;
    http_api::runtime::start()?.block_on(async {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => {
                product::startup::build(config)
                    .await?
                    .run_until_stopped(platform::shutdown::signal())
                    .await
            }
            Command::Reconcile => reconcile::run(&config).await?.print(),
        }
        Ok(())
    })
}
