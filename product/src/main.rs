//! `product`: serves the product API (the default), `product reconcile`
//! rebuilds the Redis stock counters from PostgreSQL, `product
//! provision-redis` makes the service's Redis user.

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
    /// Make (or reset) the service's Redis user, the one REDIS_URL names,
    /// with its password: the keys under REDIS_KEY_PREFIX and the commands
    /// the service runs, nothing else. Connects as REDIS_ADMIN_URL (or the
    /// file REDIS_ADMIN_URL_FILE names).
    ProvisionRedis,
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
            Command::ProvisionRedis => provision_redis(&config).await?,
        }
        Ok(())
    })
}

async fn provision_redis(config: &Config) -> anyhow::Result<()> {
    let settings = platform::settings::Settings::new(&platform::settings::Environment);
    let admin_url = settings.required_secret("REDIS_ADMIN_URL")?;
    let service = redis::Client::open(config.redis_url.as_str())?;
    let service = service.get_connection_info().redis_settings();
    let Some(user) = service.username() else {
        anyhow::bail!("REDIS_URL names no user (redis://user:password@host:port) to make");
    };
    let mut admin = redis::Client::open(admin_url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let done = product::cache::acl::provision(
        &mut admin,
        user,
        service.password(),
        &config.redis_key_prefix,
    )
    .await?;
    println!(
        "Redis user {user}: keys {}*, {} commands",
        config.redis_key_prefix,
        product::cache::acl::COMMANDS.len()
    );
    if !done.saved {
        println!(
            "  the server has no ACL file (aclfile): a restart forgets the user; run this again after one"
        );
    }
    Ok(())
}
