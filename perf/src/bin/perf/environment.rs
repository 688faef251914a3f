//! Where the tool finds the pipeline: the settings of `.env`, the two
//! services' URLs, their stores; and reading and writing its JSON files.

use std::path::Path;

use anyhow::Context;
use perf::invariants::Stores;
use perf::report;
use serde_json::Value;

pub(crate) fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("{name} is not set (load .env.example first)"))
}

/// The database a `*_DATABASE_URL` (or its `_FILE`) names.
pub(crate) fn database(name: &str) -> anyhow::Result<tokio_postgres::Config> {
    let url = platform::settings::Settings::new(&platform::settings::Environment)
        .required_secret(name)?;
    Ok(platform::db::parse_url(name, &url)?)
}

/// A service's database as its owner reaches it (`ORDER` reads
/// `ORDER_DATABASE_OWNER_URL`, or its `_FILE`), else as its runtime role
/// (one role doing both): what writes in bulk and vacuums, as `fill` does.
pub(crate) fn owner_database(service: &str) -> anyhow::Result<tokio_postgres::Config> {
    let owner = format!("{service}_DATABASE_OWNER_URL");
    match platform::settings::Settings::new(&platform::settings::Environment).secret(&owner)? {
        Some(url) => Ok(platform::db::parse_url(&owner, &url)?),
        None => database(&format!("{service}_DATABASE_URL")),
    }
}

/// The server as its administrator reaches it (`DATABASE_ADMIN_URL`, or
/// its `_FILE`), else as `ORDER_DATABASE_URL`'s role: for the measures
/// that make scratch databases of their own.
pub(crate) fn admin_database() -> anyhow::Result<tokio_postgres::Config> {
    match platform::settings::Settings::new(&platform::settings::Environment)
        .secret("DATABASE_ADMIN_URL")?
    {
        Some(url) => Ok(platform::db::parse_url("DATABASE_ADMIN_URL", &url)?),
        None => database("ORDER_DATABASE_URL"),
    }
}

pub(crate) async fn stores() -> anyhow::Result<Stores> {
    let prefix = std::env::var("REDIS_KEY_PREFIX").unwrap_or_default();
    Stores::connect(
        &database("ORDER_DATABASE_URL")?,
        &database("PRODUCT_DATABASE_URL")?,
        &platform::settings::Settings::new(&platform::settings::Environment)
            .required_secret("REDIS_URL")?,
        &prefix,
    )
    .await
}

/// Where the product service answers: `PRODUCT_URL`, else its default port.
pub(crate) fn product_url() -> String {
    std::env::var("PRODUCT_URL").unwrap_or_else(|_| "http://127.0.0.1:3000".into())
}

/// Where the order service answers: `ORDER_URL`, else `ORDER_PORT`.
pub(crate) fn order_url() -> String {
    std::env::var("ORDER_URL").unwrap_or_else(|_| {
        format!(
            "http://127.0.0.1:{}",
            std::env::var("ORDER_PORT").unwrap_or("8080".into())
        )
    })
}

/// Where the order service's admin listener answers (`/metrics`,
/// `/readyz`): `ORDER_ADMIN_URL`, else `ORDER_ADMIN_PORT` on 127.0.0.1.
pub(crate) fn order_admin_url() -> String {
    admin_url("ORDER", 9380)
}

/// Where the product service's admin listener answers: `PRODUCT_ADMIN_URL`,
/// else `PRODUCT_ADMIN_PORT` on 127.0.0.1.
pub(crate) fn product_admin_url() -> String {
    admin_url("PRODUCT", 9330)
}

fn admin_url(prefix: &str, default_port: u16) -> String {
    std::env::var(format!("{prefix}_ADMIN_URL")).unwrap_or_else(|_| {
        let port = std::env::var(format!("{prefix}_ADMIN_PORT"));
        format!(
            "http://127.0.0.1:{}",
            port.unwrap_or(default_port.to_string())
        )
    })
}

/// Both services' metrics, every pipeline process's CPU, both databases'
/// counters: what a run's report compares before and after.
pub(crate) async fn snapshot() -> anyhow::Result<report::page::Snapshot> {
    platform::tls::install_crypto_provider();
    let http = reqwest::Client::new();
    let order = metrics_text(&http, &order_admin_url()).await?;
    let product = metrics_text(&http, &product_admin_url()).await?;
    let cpu = perf::cpu::CpuSnapshot::take(&perf::cpu::pipeline_processes())?;
    let orders = database("ORDER_DATABASE_URL")?;
    let products = database("PRODUCT_DATABASE_URL")?;
    let names = [
        orders.get_dbname().unwrap_or("orders"),
        products.get_dbname().unwrap_or("products"),
    ];
    let client = platform::db::connect(&orders).await?;
    let databases = perf::pgstat::snapshot(&client, &names).await?;
    let wal = Some(perf::pgstat::wal(&client).await?);
    Ok(report::page::Snapshot {
        order,
        product,
        cpu,
        databases,
        wal,
    })
}

/// A service's `/metrics` text; `base` is its admin listener's URL.
pub(crate) async fn metrics_text(http: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    let response = http.get(format!("{base}/metrics")).send().await?;
    Ok(response.text().await?)
}

pub(crate) fn write_json(path: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_vec_pretty(value)?)
        .with_context(|| format!("writing {}", path.display()))
}

pub(crate) fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}
