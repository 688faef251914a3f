//! `perf`: the measuring tools `make load` runs, one subcommand each.

mod environment;
mod hold;
mod load;
mod machine;
mod verify;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use perf::{invariants, report};

use environment::{database, env, owner_database, product_url, snapshot, stores, write_json};
use load::LoadArgs;

#[derive(Parser)]
#[command(
    name = "perf",
    about = "Measure the pipeline: ceilings, load-run seeding, invariants, reports"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure PostgreSQL and RabbitMQ ceilings on this machine.
    Ceilings {
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Measure the relay draining committed rows, beside the broker ceiling.
    Relay {
        #[arg(long, default_value_t = 20_000)]
        rows: usize,
        /// Comma-separated packing factors to measure.
        #[arg(long, default_value = "1,50")]
        events_per_message: String,
        /// Runs per figure; the median is reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Relays draining at once (each its own connection).
        #[arg(long, default_value_t = 1)]
        relays: usize,
    },
    /// Create the products of a load run and write their initial stock.
    Seed {
        #[arg(long, default_value_t = 100)]
        products: usize,
        #[arg(long, default_value_t = 1_000_000)]
        stock: i64,
        #[arg(long, default_value_t = 10_000)]
        hot_stock: i64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Grow both databases by decided orders, their reservations and their
    /// sent events, as weeks of traffic would (services stopped).
    Fill {
        /// Orders to add.
        #[arg(long, default_value_t = 2_000_000)]
        orders: i64,
        /// Only add what is missing to reach --orders.
        #[arg(long)]
        up_to: bool,
        /// Days the orders are spread over, before an hour ago.
        #[arg(long, default_value_t = 30)]
        days: i64,
    },
    /// Save both services' /metrics, the CPU time of every process of the
    /// pipeline (from /proc) and both databases' counters.
    Scrape {
        #[arg(long)]
        out: PathBuf,
    },
    /// Open-loop load at a constant rate, or stepped up (a ramp); latency
    /// from each request's planned send time; a JSON summary for `report`.
    Load(LoadArgs),
    /// Print the plans of the relay's statements on a service's outbox
    /// (generic, as prepared, with their buffers; rolled back after).
    RelayPlans {
        /// `order` (ORDER_DATABASE_URL) or `product` (PRODUCT_DATABASE_URL).
        #[arg(long, default_value = "order")]
        service: String,
        #[arg(long, default_value_t = 1000)]
        batch_size: i64,
    },
    /// Wait until no order is PENDING and both outboxes are empty.
    Drain {
        #[arg(long, default_value_t = 120)]
        timeout_secs: u64,
    },
    /// Wait for the pipeline to drain, then check every invariant.
    Check {
        #[arg(long)]
        seed: PathBuf,
        #[arg(long, default_value_t = 120)]
        timeout_secs: u64,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print the load report of a run directory; fails if a threshold failed.
    Report {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Check that every order k6 saw accepted (its log of Location headers)
    /// exists and is decided: nothing acknowledged was lost.
    VerifyAccepted {
        #[arg(long)]
        log: PathBuf,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Hold many connections open (half idle, half sending a request one
    /// byte at a time) and measure how the service answers others meanwhile.
    HoldConnections {
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// The same service's admin listener, whose /metrics tells its memory.
        #[arg(long, default_value = "http://127.0.0.1:9380")]
        admin_url: String,
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// Count the pipeline's dead letters: in both services' tables, and in
    /// the broker's dead-letter queues.
    DeadLetters {
        #[arg(long, env = "AMQP_NAMESPACE", default_value = "")]
        namespace: String,
    },
    /// Until stopped, write one JSON line a second of where the machine's
    /// time went: busy, stolen and waited-for time, the CPU of each process
    /// of the pipeline and of the rest, the services' busiest threads.
    SampleMachine {
        #[arg(long)]
        out: PathBuf,
    },
    /// Serve HTTP no-ops on the services' server core (the HTTP ceiling).
    NoopServer {
        #[arg(long, default_value_t = 9099)]
        port: u16,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    platform::tls::install_crypto_provider();
    if let Command::NoopServer { port } = cli.command {
        return machine::noop_server(port);
    }
    if let Command::SampleMachine { out } = &cli.command {
        return machine::sample_machine(out);
    }
    if let Command::Load(args) = cli.command {
        // One thread does all of it: no wake-ups across threads, the least
        // CPU per request taken from the pipeline being measured.
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(load::load(args));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Ceilings { seconds, out } => machine::ceilings(seconds, out).await,
            Command::Relay {
                rows,
                events_per_message,
                runs,
                relays,
            } => machine::relay(rows, &events_per_message, runs, relays).await,
            Command::Seed {
                products,
                stock,
                hot_stock,
                out,
            } => {
                let orders = platform::db::connect(&database("ORDER_DATABASE_URL")?).await?;
                let product_url = product_url();
                let seed =
                    perf::seed::seed(&product_url, &orders, products, stock, hot_stock).await?;
                write_json(&out, &seed)?;
                println!(
                    "seeded {} products and a hot one ({})",
                    seed.products.len(),
                    seed.hot
                );
                Ok(())
            }
            Command::Scrape { out } => write_json(&out, &snapshot().await?),
            Command::Fill {
                orders,
                up_to,
                days,
            } => {
                // As the owners: the fill ends with a VACUUM ANALYZE,
                // which only a table's owner may run.
                let order_db = platform::db::connect(&owner_database("ORDER")?).await?;
                let product_db = platform::db::connect(&owner_database("PRODUCT")?).await?;
                let held = perf::fill::order_count(&order_db).await?;
                let missing = if up_to { orders - held } else { orders };
                if missing > 0 {
                    // Product 0 does not exist: the seeded products' stock
                    // and the invariants over them are left alone.
                    perf::fill::fill(&order_db, &product_db, missing, 0, days).await?;
                }
                println!(
                    "the order database holds about {} orders",
                    perf::fill::order_count(&order_db).await?
                );
                Ok(())
            }
            Command::Load(_) => Ok(()),
            Command::RelayPlans {
                service,
                batch_size,
            } => {
                let setting = match service.as_str() {
                    "order" => "ORDER_DATABASE_URL",
                    "product" => "PRODUCT_DATABASE_URL",
                    other => anyhow::bail!("--service is order or product, not {other}"),
                };
                let mut client = platform::db::connect(&database(setting)?).await?;
                for (name, plan) in outbox::relay::plans(&mut client, batch_size).await? {
                    println!("-- {name}\n{plan}\n");
                }
                Ok(())
            }
            Command::Drain { timeout_secs } => {
                let stores = stores().await?;
                let (drained, waited) =
                    invariants::wait_for_drain(&stores, Duration::from_secs(timeout_secs)).await?;
                println!("drained: {drained} after {:.1}s", waited.as_secs_f64());
                anyhow::ensure!(drained, "the pipeline did not drain in {timeout_secs}s");
                Ok(())
            }
            Command::Check {
                seed,
                timeout_secs,
                out,
            } => verify::check(&seed, timeout_secs, out).await,
            Command::Report { dir } => {
                anyhow::ensure!(report::page::print(&dir)?, "the run failed a threshold");
                Ok(())
            }
            Command::VerifyAccepted { log, out } => verify::verify_accepted(&log, out).await,
            Command::HoldConnections {
                url,
                admin_url,
                count,
                seconds,
            } => hold::hold_connections(&url, &admin_url, count, seconds).await,
            Command::DeadLetters { namespace } => {
                let databases = [
                    ("orders", database("ORDER_DATABASE_URL")?),
                    ("products", database("PRODUCT_DATABASE_URL")?),
                ];
                let counts =
                    perf::invariants::dead_letters(&env("AMQP_URL")?, &namespace, &databases)
                        .await?;
                let total: u64 = counts.iter().map(|(_, count)| count).sum();
                for (queue, count) in &counts {
                    println!("{queue}: {count}");
                }
                println!("dead letters: {total}");
                Ok(())
            }
            Command::NoopServer { .. } | Command::SampleMachine { .. } => Ok(()),
        }
    })
}
