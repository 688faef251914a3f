//! `outbox`: the operator's tool for an outbox. Runs a standalone relay,
//! replays rows, reports what is waiting, and works the dead letters.

mod dead_letters;
mod provision;
mod scrape;

use std::io::IsTerminal;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use outbox::audit::{self, Action};
use outbox::relay::{Publisher, Relay};
use outbox::replay::{self, Filter};
use outbox::retention::Retention;
use outbox::settings::PipelineSettings;
use outbox::topology::{QueueType, Topology};
use outbox::{broker, stats};
use platform::settings::{Environment, Layered, Settings};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[derive(Parser)]
#[command(
    name = "outbox",
    version,
    about = "Relay, replay and inspect a transactional outbox"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a standalone relay (for scale-out: as many as you like per outbox).
    Relay(RelayArgs),
    /// Send matching rows again, published or not.
    Replay(ReplayArgs),
    /// Show pending rows, the oldest one's age, set-aside rows, recent throughput.
    Stats(StatsArgs),
    /// List, show, requeue or purge the service's dead letters.
    DeadLetters(dead_letters::DeadLetterArgs),
    /// Who replayed, requeued or purged what, and when (newest first).
    Actions(dead_letters::ActionsArgs),
    /// Make a service's roles and database on a server, as an administrator.
    Provision(provision::ProvisionArgs),
}

/// Which service's outbox: picks the database setting and the exchange.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Service {
    Order,
    Product,
}

/// Global: a command with subcommands (`dead-letters list`) takes them
/// before or after its subcommand.
#[derive(Args)]
pub(crate) struct Target {
    /// Whose outbox: `order` reads ORDER_DATABASE_URL and publishes to
    /// "orders"; `product` reads PRODUCT_DATABASE_URL and publishes to "products".
    #[arg(long, env = "OUTBOX_SERVICE", value_enum, global = true)]
    service: Option<Service>,
    /// PostgreSQL URL of the outbox's database (overrides --service's setting).
    #[arg(
        long,
        env = "OUTBOX_DATABASE_URL",
        hide_env_values = true,
        global = true
    )]
    database_url: Option<String>,
    /// Exchange to publish to (overrides --service's), without namespace.
    #[arg(long, global = true)]
    exchange: Option<String>,
}

#[derive(Args)]
struct Broker {
    /// The broker's URL; without it, AMQP_URL, or the file AMQP_URL_FILE
    /// names (a URL on the command line shows in `ps`).
    #[arg(long, env = "AMQP_URL", hide_env_values = true)]
    amqp_url: Option<String>,
    /// Prefix of every exchange and queue name.
    #[arg(long, env = "AMQP_NAMESPACE", default_value = "")]
    amqp_namespace: String,
    #[arg(long, env = "AMQP_QUEUE_TYPE", default_value = "quorum")]
    amqp_queue_type: QueueType,
}

/// The relay reads its RELAY_* settings from the environment, as the
/// services do (.env.example documents them).
#[derive(Args)]
struct RelayArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    broker: Broker,
    /// Serve `/metrics` (Prometheus) and `/healthz` on this address, e.g.
    /// 127.0.0.1:9464 (none when unset).
    #[arg(long, env = "RELAY_METRICS_ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
}

#[derive(Args)]
struct ReplayArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    broker: Broker,
    /// Rows created at or after this instant (RFC 3339, e.g. 2026-11-24T10:00:00Z).
    #[arg(long, value_parser = parse_time)]
    since: Option<OffsetDateTime>,
    /// Rows created before this instant (RFC 3339).
    #[arg(long, value_parser = parse_time)]
    until: Option<OffsetDateTime>,
    /// Rows of this aggregate (order or product id).
    #[arg(long)]
    aggregate: Option<String>,
    /// Rows of this event type (e.g. order.created).
    #[arg(long)]
    event_type: Option<String>,
    /// Rows with id at or above this.
    #[arg(long)]
    from_id: Option<i64>,
    /// Rows with id at or below this.
    #[arg(long)]
    to_id: Option<i64>,
    /// List the matching rows and send nothing.
    #[arg(long)]
    dry_run: bool,
    /// Allow a replay with no filter at all (every row in the outbox).
    #[arg(long)]
    all: bool,
    /// Replay rows older than the consumer's inbox window
    /// (INBOX_RETENTION_HOURS) too: their ids may have left its inbox, and
    /// they would apply again.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct StatsArgs {
    #[command(flatten)]
    target: Target,
    /// Also count messages the broker dead-lettered that the services have
    /// not drained into their tables yet.
    #[arg(long, env = "AMQP_URL", hide_env_values = true)]
    amqp_url: Option<String>,
    #[arg(long, env = "AMQP_NAMESPACE", default_value = "")]
    amqp_namespace: String,
}

fn parse_time(text: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|error| format!("{text:?} is not an RFC 3339 time: {error}"))
}

impl Broker {
    /// The broker settings as settings a [`PipelineSettings`] reads.
    fn as_settings(&self) -> Vec<(&'static str, String)> {
        let queue_type = match self.amqp_queue_type {
            QueueType::Quorum => "quorum",
            QueueType::Classic => "classic",
        };
        let mut settings = vec![
            ("AMQP_NAMESPACE", self.amqp_namespace.clone()),
            ("AMQP_QUEUE_TYPE", queue_type.to_owned()),
        ];
        settings.extend(self.amqp_url.clone().map(|url| ("AMQP_URL", url)));
        settings
    }

    /// The broker's URL: the flag or AMQP_URL, else AMQP_URL_FILE's.
    fn url(&self) -> anyhow::Result<String> {
        match &self.amqp_url {
            Some(url) => Ok(url.clone()),
            None => Ok(Settings::new(&Environment).required_secret("AMQP_URL")?),
        }
    }
}

impl Target {
    pub(crate) fn database(&self) -> anyhow::Result<tokio_postgres::Config> {
        let environment = Settings::new(&Environment);
        let given = match &self.database_url {
            Some(url) => Some(url.clone()),
            None => environment.secret("OUTBOX_DATABASE_URL")?,
        };
        let (name, url) = match (given, self.service) {
            (Some(url), _) => ("--database-url", url),
            (None, Some(service)) => {
                let name = match service {
                    Service::Order => "ORDER_DATABASE_URL",
                    Service::Product => "PRODUCT_DATABASE_URL",
                };
                let url = environment
                    .required_secret(name)
                    .context("needed by --service")?;
                (name, url)
            }
            (None, None) => bail!("say which outbox: --service order|product, or --database-url"),
        };
        Ok(platform::db::parse_url(name, &url)?)
    }

    fn exchange(&self, namespace: &str) -> anyhow::Result<String> {
        let base = match (&self.exchange, self.service) {
            (Some(exchange), _) => exchange.clone(),
            (None, Some(Service::Order)) => "orders".to_owned(),
            (None, Some(Service::Product)) => "products".to_owned(),
            (None, None) => bail!("say which exchange: --service order|product, or --exchange"),
        };
        Ok(format!("{namespace}{base}"))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    platform::telemetry::init();
    platform::tls::install_crypto_provider();
    match Cli::parse().command {
        Command::Relay(args) => relay(args).await,
        Command::Replay(args) => replay(args).await,
        Command::Stats(args) => print_stats(args).await,
        Command::DeadLetters(args) => dead_letters::run(args).await,
        Command::Actions(args) => dead_letters::actions(args).await,
        Command::Provision(args) => provision::run(args).await,
    }
}

async fn relay(args: RelayArgs) -> anyhow::Result<()> {
    let database = args.target.database()?;
    let exchange = args.target.exchange(&args.broker.amqp_namespace)?;
    let flags = args.broker.as_settings();
    let flags: Vec<(&str, &str)> = flags
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect();
    let settings = PipelineSettings::read(&Settings::new(&Layered(&flags, &Environment)))?;
    let pool = platform::db::pool(&database, 4)?;
    let connection_name = format!("standalone relay {exchange} (pid {})", std::process::id());
    let config = settings.relay_config(&exchange, &connection_name);
    let metrics = platform::metrics::Metrics::new();
    let relay_metrics = outbox::metrics::RelayMetrics::register(metrics.registry())?;
    let stop = platform::shutdown::Signal::new();
    let mut tasks = Vec::new();
    if let Some(addr) = args.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot serve metrics on {addr}"))?;
        tracing::info!(addr = %listener.local_addr()?, "serving /metrics");
        tasks.push(tokio::spawn(scrape::serve(listener, metrics, stop.clone())));
    }
    tracing::info!(database = %platform::db::describe(&database), broker = %broker::describe(&settings.amqp_url), %exchange, "standalone relay starting");
    tasks.push(tokio::spawn(stats::keep_gauges(
        pool.clone(),
        relay_metrics.clone(),
        stop.clone(),
    )));
    let relay = Relay::new(pool, settings.topology(), config, relay_metrics);
    let mut running = tokio::spawn(relay.run(stop.clone()));
    // The relay runs until the signal; should it end by itself (a panic),
    // the process ends with it rather than serve metrics of a dead relay.
    let ended_by_itself = tokio::select! {
        _ = platform::shutdown::signal() => false,
        _ = &mut running => true,
    };
    stop.cancel();
    if ended_by_itself {
        bail!("the relay stopped by itself");
    }
    running.await?;
    for task in tasks {
        task.await?;
    }
    tracing::info!("standalone relay stopped");
    Ok(())
}

async fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let filter = Filter {
        since: args.since,
        until: args.until,
        aggregate_id: args.aggregate.clone(),
        event_type: args.event_type.clone(),
        from_id: args.from_id,
        to_id: args.to_id,
    };
    if filter.is_unbounded() && !args.all {
        bail!(
            "refusing to replay the whole outbox: give a filter (--since, --until, --aggregate, --event-type, --from-id/--to-id) or --all"
        );
    }
    let database = args.target.database()?;
    let client = platform::db::connect(&database).await?;
    let matching = replay::count(&client, &filter).await?;
    let inbox_window = Retention::read(&Settings::new(&Environment))?.inbox;
    let too_old = replay::count_older_than(&client, &filter, inbox_window).await?;
    let too_old_warning = format!(
        "{too_old} of them were created more than {} hours ago, before the consumer's inbox window \
         (INBOX_RETENTION_HOURS): their ids may have left its inbox, and they would apply again",
        inbox_window.as_secs() / 3600
    );
    if args.dry_run {
        let rows = replay::page(&client, &filter, 0, 10_000).await?;
        for row in &rows {
            println!(
                "{}\t{}\t{}\t{}\t{}",
                row.id,
                row.created_at.format(&Rfc3339)?,
                row.event_type,
                row.aggregate_id,
                row.message_id
            );
        }
        if matching > rows.len() as i64 {
            println!("… and {} more", matching - rows.len() as i64);
        }
        println!("dry run: {matching} rows match; nothing sent");
        if too_old > 0 {
            println!("{too_old_warning}; replaying them takes --force");
        }
        return Ok(());
    }
    if too_old > 0 && !args.force {
        bail!(
            "refusing to replay: {too_old_warning}. Narrow the filter (--since), or pass --force if they never applied"
        );
    }
    let exchange = args.target.exchange(&args.broker.amqp_namespace)?;
    let publisher = Publisher::connect(&args.broker.url()?, "outbox replay", None).await?;
    let bar = progress_bar(matching as u64);
    let report = replay::replay(&client, &publisher, &exchange, &filter, 500, |done| {
        bar.set_position(done)
    })
    .await;
    bar.finish_and_clear();
    publisher.close().await;
    let report = report?;
    if report.sent > 0 {
        let selection = format!("{filter} to {exchange}");
        audit::record(
            &client,
            Action::Replay,
            &selection,
            report.sent,
            &audit::account(),
        )
        .await?;
    }
    println!(
        "replayed {} rows to {exchange}; {} refused",
        report.sent, report.refused
    );
    if report.refused > 0 {
        bail!("{} rows were refused by the broker", report.refused);
    }
    Ok(())
}

fn progress_bar(total: u64) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} rows ({per_sec}, eta {eta})")
    {
        bar.set_style(style);
    }
    bar
}

async fn print_stats(args: StatsArgs) -> anyhow::Result<()> {
    let database = args.target.database()?;
    let client = platform::db::connect(&database).await?;
    let stats = stats::collect(&client).await?;
    println!("outbox of {}", platform::db::describe(&database));
    println!("  pending rows:            {}", stats.pending.rows);
    match stats.oldest_pending_at {
        Some(at) => println!(
            "  oldest pending:          {:.1}s old (created {})",
            stats.pending.oldest_age_seconds,
            at.format(&Rfc3339)?
        ),
        None => println!("  oldest pending:          none"),
    }
    println!("  set aside:               {}", stats.pending.set_aside);
    println!("  sent of last minute's:   {}", stats.published_last_minute);
    println!("  rows kept (estimate):    {}", stats.total_rows);
    let waiting = outbox::dead_letters::waiting(&client).await?;
    println!(
        "  dead letters:            {} (`outbox dead-letters list`)",
        waiting.iter().map(|(_, count)| count).sum::<i64>()
    );
    for (queue, count) in waiting {
        println!("    {queue}: {count}");
    }
    let amqp_url = match &args.amqp_url {
        Some(url) => Some(url.clone()),
        None => Settings::new(&Environment).secret("AMQP_URL")?,
    };
    if let Some(url) = &amqp_url {
        // Bounded: a broker that stops answering mid-way (seen once: a
        // channel left closing after a refused passive declare) must not
        // hold the operator's command.
        let asked = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            dead_lettered(url, &args.amqp_namespace),
        )
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within 10 s")));
        match asked {
            Ok(counts) => {
                for (queue, count) in counts.into_iter().filter(|(_, count)| *count > 0) {
                    println!("  not drained yet from {queue}: {count}");
                }
            }
            Err(error) => println!("  broker dead-letter queues: unknown ({error})"),
        }
    }
    if stats.pending.set_aside > 0 {
        println!(
            "\nset-aside rows (replay them with `outbox replay --from-id N --to-id N` once fixed):"
        );
        for row in client
            .query("SELECT id, event_type, aggregate_id, attempts, last_error FROM outbox_refused WHERE set_aside_at IS NOT NULL ORDER BY id LIMIT 20", &[])
            .await?
        {
            let (id, kind, aggregate, attempts, error): (i64, String, String, i32, Option<String>) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?, row.try_get(4)?);
            println!("  {id}\t{kind}\t{aggregate}\tattempts {attempts}\t{}", error.unwrap_or_default());
        }
    }
    Ok(())
}

/// Message counts of the dead-letter queues.
async fn dead_lettered(url: &str, namespace: &str) -> anyhow::Result<Vec<(String, u32)>> {
    let connection = broker::connect(url, "outbox stats").await?;
    let counts = Topology::new(namespace, QueueType::Quorum)
        .dead_letter_counts(&connection)
        .await?;
    let _ = connection.close(200, "done".into()).await;
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(args: &[&str]) -> Cli {
        Cli::try_parse_from(args).unwrap_or_else(|error| panic!("{args:?}: {error}"))
    }

    #[test]
    fn the_outbox_is_named_before_or_after_a_subcommand() {
        for args in [
            &["outbox", "dead-letters", "list", "--service", "product"][..],
            &["outbox", "dead-letters", "--service", "product", "list"],
            &[
                "outbox",
                "dead-letters",
                "requeue",
                "--id",
                "12",
                "--service",
                "product",
                "--dry-run",
            ],
        ] {
            let Command::DeadLetters(dead_letters) = parsed(args).command else {
                panic!("{args:?} is not dead-letters");
            };
            assert!(
                matches!(dead_letters.target.service, Some(Service::Product)),
                "{args:?}"
            );
        }
        let Command::Stats(stats) = parsed(&["outbox", "stats", "--service", "order"]).command
        else {
            panic!("not stats");
        };
        assert!(matches!(stats.target.service, Some(Service::Order)));
    }
}
