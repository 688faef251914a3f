//! `order`: serves the order API, its relay and its consumers.

use order::config::Config;

fn main() -> anyhow::Result<()> {
    platform::telemetry::init();
    platform::tls::install_crypto_provider();
    let config = Config::from_env()?;
    http_api::runtime::start()?.block_on(async {
        order::startup::build(config)
            .await?
            .run_until_stopped(platform::shutdown::signal())
            .await;
        Ok(())
    })
}
