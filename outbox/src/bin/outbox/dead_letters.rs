//! `outbox dead-letters`: list, show, requeue and purge a service's dead
//! letters (its `dead_letters` table).

use anyhow::bail;
use clap::{Args, Subcommand};
use outbox::audit;
use outbox::dead_letters::operate::{self, DeadLetterRow, Selection};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::Target;

#[derive(Args)]
pub(crate) struct DeadLetterArgs {
    #[command(flatten)]
    pub(crate) target: Target,
    #[command(subcommand)]
    command: DeadLetterCommand,
}

#[derive(Subcommand)]
enum DeadLetterCommand {
    /// One line per dead letter: id, queue, event id, AMQP message id, type,
    /// count, first and last time, reason.
    List {
        /// Also those already requeued.
        #[arg(long)]
        all: bool,
        /// At most this many, oldest first.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// One dead letter in full, body included.
    Show { id: i64 },
    /// Send dead letters back to their own queue (through the outbox, under
    /// their original id: the consumer applies each at most once).
    Requeue {
        #[command(flatten)]
        which: Which,
        /// Say what would be requeued, and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Required with --all (unless --dry-run): every dead letter goes
        /// back at once.
        #[arg(long)]
        yes: bool,
    },
    /// Delete dead letters for good.
    Purge {
        #[command(flatten)]
        which: Which,
        /// Required: a purge cannot be undone.
        #[arg(long)]
        yes: bool,
    },
}

/// Which dead letters: exactly one of these.
#[derive(Args)]
#[group(required = true, multiple = false)]
struct Which {
    /// These ids (repeat the flag for several).
    #[arg(long = "id")]
    ids: Vec<i64>,
    /// Those of this event type.
    #[arg(long = "type")]
    event_type: Option<String>,
    /// All of them.
    #[arg(long)]
    all: bool,
}

impl Which {
    fn selection(&self) -> Selection {
        if self.all {
            Selection::All
        } else if let Some(event_type) = &self.event_type {
            Selection::EventType(event_type.clone())
        } else {
            Selection::Ids(self.ids.clone())
        }
    }
}

pub(crate) async fn run(args: DeadLetterArgs) -> anyhow::Result<()> {
    let database = args.target.database()?;
    let mut client = platform::db::connect(&database).await?;
    match args.command {
        DeadLetterCommand::List { all, limit } => {
            let rows = operate::list(&client, all, limit).await?;
            println!("id\tqueue\tevent id\tamqp message id\ttype\tcount\tfirst\tlast\treason");
            for row in &rows {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}{}",
                    row.id,
                    row.queue,
                    row.message_id.map_or("-".to_owned(), |id| id.to_string()),
                    transport_id(row),
                    row.event_type.as_deref().unwrap_or("-"),
                    row.count,
                    time(row.first_at)?,
                    time(row.last_at)?,
                    row.reason,
                    if row.requeued_at.is_some() {
                        "\t(requeued)"
                    } else {
                        ""
                    },
                );
            }
            println!("{} dead letters", rows.len());
        }
        DeadLetterCommand::Show { id } => match operate::show(&client, id).await? {
            Some(row) => print_row(&row)?,
            None => bail!("no dead letter {id}"),
        },
        DeadLetterCommand::Requeue {
            which,
            dry_run,
            yes,
        } => {
            if which.all && !dry_run && !yes {
                bail!(
                    "requeue --all sends every dead letter back at once: look first with --dry-run, then add --yes"
                );
            }
            let account = audit::account();
            let report =
                operate::requeue(&mut client, &which.selection(), dry_run, &account).await?;
            let verb = if dry_run { "would requeue" } else { "requeued" };
            for row in &report.requeued {
                println!(
                    "{verb} {}\t{}\t{}",
                    row.id,
                    row.queue,
                    row.event_type.as_deref().unwrap_or("-")
                );
            }
            for row in &report.not_events {
                println!("not an event, left as it is: {} ({})", row.id, row.reason);
            }
            println!(
                "{verb} {} dead letters to their queues{}",
                report.requeued.len(),
                if dry_run {
                    "; nothing changed"
                } else {
                    " through the outbox"
                }
            );
        }
        DeadLetterCommand::Purge { which, yes } => {
            if !yes {
                bail!("a purge deletes dead letters for good: add --yes");
            }
            let purged = operate::purge(&mut client, &which.selection(), &audit::account()).await?;
            println!("purged {purged} dead letters");
        }
    }
    Ok(())
}

/// `outbox actions`: the record of replays, requeues and purges.
#[derive(Args)]
pub(crate) struct ActionsArgs {
    #[command(flatten)]
    target: Target,
    /// At most this many, newest first.
    #[arg(long, default_value_t = 50)]
    limit: i64,
}

pub(crate) async fn actions(args: ActionsArgs) -> anyhow::Result<()> {
    let client = platform::db::connect(&args.target.database()?).await?;
    let rows = audit::recent(&client, args.limit).await?;
    println!("id\tat\taction\trows\trole\taccount\tselection");
    for row in &rows {
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}",
            row.id,
            time(row.at)?,
            row.action,
            row.rows,
            row.by_role,
            row.by_account,
            row.selection
        );
    }
    println!("{} actions", rows.len());
    Ok(())
}

fn print_row(row: &DeadLetterRow) -> anyhow::Result<()> {
    println!("id:           {}", row.id);
    println!("queue:        {}", row.queue);
    println!(
        "event id:     {}",
        row.message_id.map_or("-".to_owned(), |id| id.to_string())
    );
    println!("amqp id:      {}", transport_id(row));
    println!("type:         {}", row.event_type.as_deref().unwrap_or("-"));
    println!(
        "aggregate:    {}",
        row.aggregate_id.as_deref().unwrap_or("-")
    );
    println!("reason:       {}", row.reason);
    println!("by:           {}", row.source);
    println!("count:        {}", row.count);
    println!("first:        {}", time(row.first_at)?);
    println!("last:         {}", time(row.last_at)?);
    match row.requeued_at {
        Some(at) => println!("requeued:     {}", time(at)?),
        None => println!("requeued:     no"),
    }
    let body = serde_json::from_str::<serde_json::Value>(&row.body)
        .and_then(|json| serde_json::to_string_pretty(&json))
        .unwrap_or_else(|_| row.body.clone());
    println!("body:\n{body}");
    Ok(())
}

/// The AMQP message id as its sender set it, with control characters
/// escaped: it is the sender's text, printed in a tab-separated line.
fn transport_id(row: &DeadLetterRow) -> String {
    row.transport_id
        .as_deref()
        .map_or("-".to_owned(), |id| id.escape_debug().to_string())
}

fn time(at: OffsetDateTime) -> anyhow::Result<String> {
    Ok(at.format(&Rfc3339)?)
}
