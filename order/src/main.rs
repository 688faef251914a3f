//! `order`: serves the order API, its relay and its consumers.

use order::{config::Config, startup::Application};

fn main() -> anyhow::Result<()> {
    service::telemetry::init();
    let config = Config::from_env()?;
    service::runtime::start()?.block_on(async {
        let application = Application::build(config).await?;
        application
            .run_until_stopped(service::shutdown::signal())
            .await;
        Ok(())
    })
}
