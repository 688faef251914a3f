//! A randomized schedule against the real server: sessions take random
//! steps (take a transaction id by writing elsewhere, lock an aggregate
//! and append one to three of its events, open a savepoint and roll it
//! back or release it, commit, abort, pause) while three relays (allowed
//! 16, 4 and 1 claim partitions) run batches at random moments. After a
//! final drain: every committed row was sent, no rolled back row was, the
//! events of each aggregate arrived in commit order, none arrived twice;
//! and after every batch, `outbox_pending` counted exactly the committed
//! rows the relays had not sent yet.
//!
//! The schedule is one sequence of statements, chosen by a seeded
//! generator, so a seed replays it exactly: `SCHEDULE_SEED=n` runs that
//! one (`SCHEDULE_STEPS` sets its length). By default it runs
//! [`DEFAULT_RUNS`] schedules from a seed drawn at random and printed. A
//! session never waits for another (it locks only aggregates no other
//! open transaction holds), so no step blocks; PostgreSQL takes a
//! statement's snapshot and transaction id atomically, so interleaving
//! whole statements reaches every order of ids, snapshots and commits
//! (a row id taken before its transaction id within one statement has its
//! own test, `interleavings`).

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use outbox::relay::{Outcome, Relay, RelayConfig};
use outbox::writer::{EventColumns, NewEvent};
use tokio_postgres::Client;
use uuid::Uuid;

use crate::helpers::TestOutbox;

const SESSIONS: usize = 8;
const AGGREGATES: usize = 12;
const DEFAULT_STEPS: usize = 1000;
const DEFAULT_RUNS: u64 = 8;

/// One event as the schedule appended it.
#[derive(Debug, Clone)]
struct Appended {
    id: Uuid,
    aggregate: usize,
    /// Inside the savepoint open when it was appended.
    in_savepoint: bool,
}

/// A session's open transaction, as the schedule knows it.
#[derive(Debug, Default)]
struct Open {
    appended: Vec<Appended>,
    /// Aggregates locked, and whether inside the open savepoint.
    locked: Vec<(usize, bool)>,
    savepoint: bool,
}

struct Session {
    client: Client,
    open: Option<Open>,
}

/// What the schedule did, to be checked against what arrived.
#[derive(Default)]
struct Ledger {
    /// Per aggregate, its committed events in commit order.
    committed: HashMap<usize, Vec<Uuid>>,
    rolled_back: HashSet<Uuid>,
    committed_rows: i64,
    published: i64,
    log: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_schedules_send_every_committed_row_once_in_commit_order() {
    let steps = std::env::var("SCHEDULE_STEPS")
        .ok()
        .and_then(|steps| steps.parse().ok())
        .unwrap_or(DEFAULT_STEPS);
    let seeds: Vec<u64> = match std::env::var("SCHEDULE_SEED") {
        Ok(seed) => vec![seed.parse().expect("SCHEDULE_SEED is a number")],
        Err(_) => {
            let base = fastrand::u64(..1 << 40);
            (base..base + DEFAULT_RUNS).collect()
        }
    };
    for seed in seeds {
        let started = Instant::now();
        let outcome = tokio::spawn(run(seed, steps)).await;
        match outcome {
            Ok(Ok(rows)) => eprintln!(
                "schedule seed {seed}: {steps} steps, {rows} committed rows, sent as they should be ({:?})",
                started.elapsed()
            ),
            Ok(Err(failure)) => panic!(
                "schedule seed {seed} failed (replay: SCHEDULE_SEED={seed} SCHEDULE_STEPS={steps}): {failure}"
            ),
            Err(panicked) => panic!(
                "schedule seed {seed} panicked (replay: SCHEDULE_SEED={seed} SCHEDULE_STEPS={steps}): {panicked}"
            ),
        }
    }
}

/// Runs one schedule; the number of committed rows, or what went wrong
/// (with the schedule's last steps).
async fn run(seed: u64, steps: usize) -> Result<i64, String> {
    let outbox = TestOutbox::new().await;
    let client = platform::db::connect(&outbox.database).await.unwrap();
    client
        .batch_execute("CREATE TABLE elsewhere (session int, at timestamptz DEFAULT now())")
        .await
        .unwrap();
    let mut sessions = Vec::new();
    for _ in 0..SESSIONS {
        sessions.push(Session {
            client: platform::db::connect(&outbox.database).await.unwrap(),
            open: None,
        });
    }
    let mut relays: Vec<Relay> = [16, 4, 1]
        .into_iter()
        .map(|claim_partitions| {
            outbox.relay(RelayConfig {
                batch_size: 50,
                claim_partitions,
                ..outbox.relay_config()
            })
        })
        .collect();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut ledger = Ledger::default();
    let outcome = async {
        for _ in 0..steps {
            if rng.u8(..100) < 15 {
                relay_step(&outbox, &mut relays, &mut rng, &mut ledger).await?;
            } else {
                let which = rng.usize(..SESSIONS);
                session_step(&mut sessions, which, &mut rng, &mut ledger).await;
            }
        }
        // Every session ends its transaction, one way or the other.
        for which in 0..SESSIONS {
            if sessions[which].open.is_some() {
                let commit = rng.bool();
                end(&mut sessions, which, commit, &mut ledger).await;
            }
        }
        drain(&outbox, &mut relays, &mut ledger).await?;
        check_arrivals(&outbox, &ledger).await
    }
    .await;
    let outcome = outcome.map(|()| ledger.committed_rows).map_err(|failure| {
        let tail = ledger.log.len().saturating_sub(40);
        format!(
            "{failure}\nthe last steps:\n  {}",
            ledger.log[tail..].join("\n  ")
        )
    });
    drop(sessions);
    drop(client);
    outbox.cleanup().await;
    outcome
}

/// One batch of a random relay; then `outbox_pending` must count exactly
/// the committed rows not sent yet.
async fn relay_step(
    outbox: &TestOutbox,
    relays: &mut [Relay],
    rng: &mut fastrand::Rng,
    ledger: &mut Ledger,
) -> Result<(), String> {
    let which = rng.usize(..relays.len());
    let outcome = relays[which]
        .try_publish_batch()
        .await
        .map_err(|error| format!("relay {which}: {error}"))?;
    if let Outcome::Published(report) = outcome {
        ledger.published += report.published as i64;
    }
    ledger.log.push(format!("relay {which}: {outcome:?}"));
    let pending = outbox.count("SELECT count(*) FROM outbox_pending").await;
    let unsent = ledger.committed_rows - ledger.published;
    if pending != unsent {
        return Err(format!(
            "outbox_pending counts {pending} rows, but {unsent} committed rows are not sent yet"
        ));
    }
    Ok(())
}

/// Runs each relay until it finds nothing; then nothing may be pending.
async fn drain(
    outbox: &TestOutbox,
    relays: &mut [Relay],
    ledger: &mut Ledger,
) -> Result<(), String> {
    for (which, relay) in relays.iter_mut().enumerate() {
        loop {
            match relay.try_publish_batch().await {
                Ok(Outcome::Published(report)) => ledger.published += report.published as i64,
                Ok(Outcome::Empty) => break,
                other => return Err(format!("relay {which} draining: {other:?}")),
            }
        }
    }
    ledger.log.push("drained".into());
    let pending = outbox.count("SELECT count(*) FROM outbox_pending").await;
    if pending != 0 || ledger.published != ledger.committed_rows {
        return Err(format!(
            "drained, {pending} rows still pending, {} of {} committed rows sent",
            ledger.published, ledger.committed_rows
        ));
    }
    Ok(())
}

/// Whether another session's open transaction holds `aggregate`.
fn held_by_other(sessions: &[Session], which: usize, aggregate: usize) -> bool {
    sessions.iter().enumerate().any(|(other, session)| {
        other != which
            && session
                .open
                .as_ref()
                .is_some_and(|open| open.locked.iter().any(|(locked, _)| *locked == aggregate))
    })
}

async fn session_step(
    sessions: &mut [Session],
    which: usize,
    rng: &mut fastrand::Rng,
    ledger: &mut Ledger,
) {
    if sessions[which].open.is_none() {
        sessions[which].client.batch_execute("BEGIN").await.unwrap();
        sessions[which].open = Some(Open::default());
        ledger.log.push(format!("s{which}: begin"));
        return;
    }
    match rng.u8(..100) {
        0..=14 => {
            let session = which as i32;
            sessions[which]
                .client
                .execute("INSERT INTO elsewhere (session) VALUES ($1)", &[&session])
                .await
                .unwrap();
            ledger.log.push(format!("s{which}: write elsewhere"));
        }
        15..=54 => {
            let aggregate = rng.usize(..AGGREGATES);
            if held_by_other(sessions, which, aggregate) {
                ledger
                    .log
                    .push(format!("s{which}: pause (a{aggregate} is held)"));
                return;
            }
            let count = rng.usize(1..=3);
            append(&mut sessions[which], which, aggregate, count, ledger).await;
        }
        55..=64 => {
            let session = &mut sessions[which];
            let open = session.open.as_mut().unwrap();
            if !open.savepoint {
                session.client.batch_execute("SAVEPOINT s").await.unwrap();
                open.savepoint = true;
                ledger.log.push(format!("s{which}: savepoint"));
            }
        }
        65..=72 => rollback_savepoint(&mut sessions[which], which, ledger).await,
        73..=77 => {
            let session = &mut sessions[which];
            let open = session.open.as_mut().unwrap();
            if open.savepoint {
                session
                    .client
                    .batch_execute("RELEASE SAVEPOINT s")
                    .await
                    .unwrap();
                open.savepoint = false;
                open.appended
                    .iter_mut()
                    .for_each(|row| row.in_savepoint = false);
                open.locked.iter_mut().for_each(|lock| lock.1 = false);
                ledger.log.push(format!("s{which}: release savepoint"));
            }
        }
        78..=89 => end(sessions, which, true, ledger).await,
        90..=94 => end(sessions, which, false, ledger).await,
        _ => ledger.log.push(format!("s{which}: pause")),
    }
}

/// Locks `aggregate` (as its writers do, before taking an id) and appends
/// `count` of its events in one statement (the writer's own).
async fn append(
    session: &mut Session,
    which: usize,
    aggregate: usize,
    count: usize,
    ledger: &mut Ledger,
) {
    let name = format!("a{aggregate}");
    session
        .client
        .execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&name])
        .await
        .unwrap();
    let events: Vec<NewEvent> = (0..count)
        .map(|_| {
            NewEvent::new(&name, "order.created", &serde_json::json!({ "amount": 1 })).unwrap()
        })
        .collect();
    let columns = EventColumns::of(&events);
    session
        .client
        .execute(&outbox::writer::insert_sql(1), &columns.params())
        .await
        .unwrap();
    let open = session.open.as_mut().unwrap();
    let in_savepoint = open.savepoint;
    open.locked.push((aggregate, in_savepoint));
    open.appended.extend(events.iter().map(|event| Appended {
        id: event.id,
        aggregate,
        in_savepoint,
    }));
    ledger
        .log
        .push(format!("s{which}: lock a{aggregate}, append {count}"));
}

async fn rollback_savepoint(session: &mut Session, which: usize, ledger: &mut Ledger) {
    let open = session.open.as_mut().unwrap();
    if !open.savepoint {
        return;
    }
    session
        .client
        .batch_execute("ROLLBACK TO SAVEPOINT s; RELEASE SAVEPOINT s")
        .await
        .unwrap();
    let (gone, kept): (Vec<_>, Vec<_>) = open.appended.drain(..).partition(|row| row.in_savepoint);
    ledger.rolled_back.extend(gone.iter().map(|row| row.id));
    open.appended = kept;
    // Locks taken inside the savepoint go with it.
    open.locked.retain(|(_, in_savepoint)| !in_savepoint);
    open.savepoint = false;
    ledger.log.push(format!(
        "s{which}: roll back the savepoint ({} rows)",
        gone.len()
    ));
}

async fn end(sessions: &mut [Session], which: usize, commit: bool, ledger: &mut Ledger) {
    let session = &mut sessions[which];
    let open = session.open.take().unwrap();
    session
        .client
        .batch_execute(if commit { "COMMIT" } else { "ROLLBACK" })
        .await
        .unwrap();
    if commit {
        for row in &open.appended {
            ledger
                .committed
                .entry(row.aggregate)
                .or_default()
                .push(row.id);
        }
        ledger.committed_rows += open.appended.len() as i64;
    } else {
        ledger
            .rolled_back
            .extend(open.appended.iter().map(|row| row.id));
    }
    ledger.log.push(format!(
        "s{which}: {} ({} rows)",
        if commit { "commit" } else { "abort" },
        open.appended.len()
    ));
}

/// What reached the queue against what was committed.
async fn check_arrivals(outbox: &TestOutbox, ledger: &Ledger) -> Result<(), String> {
    let expected = ledger.committed_rows as usize;
    let arrived = outbox
        .take_events(&outbox.topology.order_created_queue(), expected)
        .await;
    let mut seen = HashSet::new();
    let mut by_aggregate: HashMap<usize, Vec<Uuid>> = HashMap::new();
    for event in &arrived {
        if !seen.insert(event.id) {
            return Err(format!("{} arrived twice", event.id));
        }
        if ledger.rolled_back.contains(&event.id) {
            return Err(format!("{} was rolled back, yet sent", event.id));
        }
        let aggregate = event.aggregate_id[1..].parse::<usize>().unwrap();
        by_aggregate.entry(aggregate).or_default().push(event.id);
    }
    for (aggregate, committed) in &ledger.committed {
        let sent = by_aggregate.get(aggregate).cloned().unwrap_or_default();
        if &sent != committed {
            let missing = committed.iter().filter(|id| !seen.contains(id)).count();
            return Err(format!(
                "a{aggregate}: {} committed, {} arrived, {missing} never; in commit order: {}",
                committed.len(),
                sent.len(),
                sent.iter()
                    .filter(|id| committed.contains(id))
                    .eq(committed.iter())
            ));
        }
    }
    if arrived.len() != expected {
        return Err(format!("{} arrived, {expected} committed", arrived.len()));
    }
    Ok(())
}
